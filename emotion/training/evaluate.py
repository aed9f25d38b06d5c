"""`main.py --evaluate`: a checkpoint (or the pretrained model) scored on a labelled dataset: dataset -> face-stage
cache -> clip windows -> accuracy, UAR, macro F1, confusion matrix (printed and PNG), valence/arousal CCC, JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from emotion.device import resolve_device
from emotion.labels import LABELS
from emotion.training.cache import PrepConfig, preprocess
from emotion.training.clips import ClipDataset
from emotion.training.config import DEFAULT_SEED, EvalConfig
from emotion.training.datasets import load_dataset
from emotion.training.metrics import metric_lines
from emotion.training.scoring import next_run_dir, score, write_report
from emotion.training.splits import VAL_SPLIT, assign_splits

__all__ = ["EvalConfig", "run"]


def run(config: EvalConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset: prints the metrics and confusion matrix, writes JSON and a PNG."""
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    try:
        return _evaluate(config, device)
    finally:
        torch.set_num_threads(threads)


def _evaluate(config: EvalConfig, device: torch.device) -> dict[str, Any]:
    from emotion.model import default_model, load_checkpoint

    if config.weights:
        model, model_config, extra = load_checkpoint(config.weights, device)
    else:
        model, extra = default_model(device), {}
        model_config = model.config
    trained = extra.get("train_config", {}) if isinstance(extra, dict) else {}
    val_split = config.val_split if config.val_split is not None else float(trained.get("val_split", VAL_SPLIT))
    seed = config.seed if config.seed is not None else int(trained.get("seed", DEFAULT_SEED))
    scan = load_dataset(config.data, config.format)
    records = assign_splits(scan.records, val_split, seed)
    if config.split != "all":
        records = [r for r in records if r.split == config.split]
        if not records:
            raise ValueError(f"no clips in split '{config.split}' of {config.data}")
    prep = PrepConfig(crop_size=model_config.crop_size, in_chans=model_config.in_chans)
    clips, prep_summary = preprocess(
        records, Path(config.cache_dir).expanduser(), prep, config.workers, config.progress
    )
    print("\n".join(prep_summary.lines()))
    if not clips:
        raise ValueError("no clip with a face to evaluate")
    metrics = score(model, ClipDataset(clips, model_config.window, windows=config.windows), config.batch_size, device)
    out_dir = Path(config.output) if config.output else next_run_dir(config.runs_dir, "evaluate")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "data": str(config.data),
        "weights": config.weights or "pretrained default",
        "split": config.split,
        "format": scan.format,
        "labels": list(LABELS),
        "skipped": prep_summary.no_face + prep_summary.unreadable + len(scan.skipped),
        **metrics,
    }
    title = f"{Path(config.weights).name if config.weights else 'pretrained'} on {Path(config.data).name}"
    json_path = Path(config.json) if config.json else out_dir / "metrics.json"
    write_report(result, json_path, out_dir / "confusion.png", title)
    print("\n".join(metric_lines(metrics)))
    print(
        f"metrics: {json_path}"
        + (f"  confusion matrix: {result['confusion_png']}" if "confusion_png" in result else "")
    )
    result["json"] = str(json_path)
    return result
