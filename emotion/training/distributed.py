"""This process's place in a `torchrun` job (DistributedDataParallel: gloo on the CPU, NCCL on CUDA), and the
collective steps training needs; without torchrun it is rank 0 of 1 and every step is a no-op."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from emotion.device import resolve_device


class Dist:
    """This process's rank, world size and device; `main` is the process that prints, logs and writes."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            # Generous timeout: ranks wait at a barrier while others finish their share of preprocessing.
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(hours=12))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share_buffers(self, model: torch.nn.Module) -> None:
        """Give every process the main one's buffers (BatchNorm running statistics), so all score the weights the main
        process saves; DDP itself copies them only at the next training forward pass."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the processes (every process gets the same result)."""
        if self.world == 1:
            return values
        gathered = self.gather(values)
        return {k: float(np.mean([g[k] for g in gathered if k in g])) for k in values}

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def merge_predictions(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Predictions of all ranks -> one set in item order, padding duplicates dropped."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _, first = np.unique(merged["item"], return_index=True)
    return {k: v[first] for k, v in merged.items()}
