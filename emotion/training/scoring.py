"""Scoring a model on clip windows, shared by training's validation and `main.py --evaluate`: predictions per
window, their average per clip, the metrics, and the report files (JSON and confusion PNG) in a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion.training.clips import ClipDataset
from emotion.training.metrics import classification_metrics, ccc, save_confusion_png, write_json


def model_input(crops: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of uint8 crops on `device` as the model's float input (see emotion.model.crops_to_tensor)."""
    from emotion.model import crops_to_tensor

    return crops_to_tensor(crops.to(device, non_blocking=True))


def batch_signals(batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor | None:
    """A ClipDataset batch's face signals (B, T, G) on `device`, None when its cache holds none."""
    signals = batch.get("signals")
    return None if signals is None else signals.to(device, non_blocking=True)


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device, amp: bool = False) -> dict[str, np.ndarray]:
    """Run the model over a loader of ClipDataset batches -> per item: clip (n,), probs (n, 7) averaged over the
    window's steps, va_pred and va_true (n, T, 2), item (n,) positions in the loader's order."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"clip": [], "probs": [], "va_pred": [], "va_true": []}
    for batch in loader:
        x = model_input(batch["crops"], device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            out = model(x, batch["landmarks"].to(device, non_blocking=True), batch_signals(batch, device))
        parts["clip"].append(batch["clip"].numpy())
        parts["probs"].append(torch.softmax(out["logits"].float(), dim=-1).mean(dim=1).cpu().numpy())
        parts["va_pred"].append(torch.stack([out["valence"], out["arousal"]], dim=-1).float().cpu().numpy())
        parts["va_true"].append(batch["va"].numpy())
    result = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    result["item"] = np.arange(len(result["clip"]))
    return result


def summarize(pred: dict[str, np.ndarray], clip_labels: list[int]) -> dict[str, Any]:
    """Metrics of predictions from `predict`: each clip's windows are averaged into one category prediction;
    valence/arousal CCC over every annotated frame of every window."""
    clips = pred["clip"].astype(np.int64)
    metrics: dict[str, Any] = {}
    if clips.size:
        unique = np.unique(clips)
        probs = np.stack([pred["probs"][clips == c].mean(axis=0) for c in unique])
        labels = np.asarray([clip_labels[c] for c in unique])
        keep = labels >= 0
        if keep.any():
            metrics.update(classification_metrics(labels[keep], probs[keep].argmax(axis=1)))
        va_true, va_pred = pred["va_true"].reshape(-1, 2), pred["va_pred"].reshape(-1, 2)
        for d, name in enumerate(("valence", "arousal")):
            valid = ~np.isnan(va_true[:, d])
            if valid.sum() >= 2:
                metrics[f"ccc_{name}"] = ccc(va_pred[valid, d], va_true[valid, d])
                metrics[f"frames_{name}"] = int(valid.sum())
    return metrics


def score(model: torch.nn.Module, dataset: ClipDataset, batch_size: int, device: torch.device) -> dict[str, Any]:
    """The metrics of a model on every window of a dataset, in this process."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    return summarize(predict(model, loader, device), [c.record.label for c in dataset.clips])


def write_report(result: dict[str, Any], json_path: Path, png_path: Path, title: str) -> Path:
    """Write the confusion PNG (when there are categories; its path goes into result) and then result as JSON."""
    if "confusion" in result:
        png = save_confusion_png(result["confusion"], png_path, title, result.get("columns"))
        result["confusion_png"] = str(png)
    return write_json(json_path, result)


def next_run_dir(runs_dir: str | Path, name: str) -> Path:
    """runs_dir/<name>-N with the smallest N >= 1 not taken yet (created)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            path = runs_dir / f"{name}-{n}"
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
