"""Seconds per training epoch over synthetic cached 16-frame clips (no face stage): `python -m benchmarks.train_speed`.

The clips are written straight into the face-stage cache, so the number covers what an epoch costs once
preprocessing is done: cache reads, sampling, augmentation, forward, backward and the optimizer step.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from emotion.training.cache import PrepConfig
from emotion.training.synthetic import make_synthetic_dataset
from emotion.training.train import TrainConfig, run


def measure_epoch(
    clips: int = 1000,
    frames: int = 16,
    batch_size: int = 16,
    threads: int = 2,
    backbone: str = "mini_xception",
    crop_size: int = 64,
    epochs: int = 1,
    loader_workers: int = 0,
    frozen_backbone: bool = False,
    signal_stream: bool = True,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Train `epochs` epochs on `clips` synthetic cached clips (7 classes, no validation) and time them.

    frozen_backbone times epochs with the frame CNN frozen (--freeze-backbone-epochs): no backward through it;
    signal_stream False times a model without the face-signal stream (--no-signal-stream).
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp_path = Path(tmp)
        prep = PrepConfig(crop_size=crop_size, in_chans=1, signals=signal_stream)
        per_class = math.ceil(clips / 7)
        t0 = time.perf_counter()
        manifest = make_synthetic_dataset(
            tmp_path / "syn", tmp_path / "cache", per_class, tuple(range(7)), frames, prep, val_fraction=0.0
        )
        setup = time.perf_counter() - t0
        config = TrainConfig(
            data=str(manifest),
            cache_dir=str(tmp_path / "cache"),
            models_dir=str(tmp_path / "models"),
            runs_dir=str(tmp_path / "runs"),
            name="speed",
            epochs=epochs,
            batch_size=batch_size,
            threads=threads,
            backbone=backbone,
            crop_size=crop_size,
            from_scratch=backbone != "mini_xception",
            loader_workers=loader_workers,
            freeze_backbone_epochs=epochs if frozen_backbone else 0,
            signal_stream=signal_stream,
            val_split=0.0,
            progress=False,
        )
        result = run(config)
    seconds = [h["seconds"] for h in result["history"]]
    return {
        "clips": per_class * 7,
        "frames_per_clip": frames,
        "batch_size": batch_size,
        "threads": threads,
        "backbone": backbone,
        "crop_size": crop_size,
        "loader_workers": loader_workers,
        "frozen_backbone": frozen_backbone,
        "signal_stream": signal_stream,
        "epochs": epochs,
        "seconds_per_epoch": min(seconds),
        "seconds_per_epoch_all": seconds,
        "clips_per_second": per_class * 7 / min(seconds),
        "dataset_setup_seconds": setup,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backbone", default="mini_xception")
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--loader-workers", type=int, default=0)
    p.add_argument("--frozen-backbone", action="store_true", help="time epochs with the frame CNN frozen")
    p.add_argument("--no-signal-stream", action="store_true", help="time a model without the face-signal stream")
    a = p.parse_args()
    r = measure_epoch(
        a.clips, 16, a.batch_size, a.threads, a.backbone, a.crop_size, a.epochs, a.loader_workers, a.frozen_backbone,
        not a.no_signal_stream,
    )  # fmt: skip
    print(
        f"{r['seconds_per_epoch']:.1f} s per epoch for {r['clips']} cached {r['frames_per_clip']}-frame clips "
        f"({r['clips_per_second']:.1f} clips/s; {r['backbone']} {r['crop_size']}px, batch {r['batch_size']}, "
        f"{r['threads']} threads, {r['loader_workers']} loader workers"
        f"{', frozen backbone' if r['frozen_backbone'] else ''}"
        f"{'' if r['signal_stream'] else ', no signal stream'}; load average {r['load_average']:.1f})"
    )


if __name__ == "__main__":
    main()
