"""Evaluation: accuracy, UAR, WAR, macro F1, confusion matrix (text and PNG) and valence/arousal CCC.

`predict` runs a model over ClipDataset windows; `summarize` averages each clip's windows into one prediction and
computes the metrics; `run` is `main.py --evaluate`: dataset -> face-stage cache -> metrics JSON and confusion PNG.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from emotion.atomic import atomic_open
from emotion.labels import LABELS
from emotion.text import plural


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(LABELS)) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows are the true category, columns the predicted one."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...] = LABELS) -> dict[str, Any]:
    """Accuracy (= WAR, recall weighted by class size), UAR (mean recall over the classes present in y_true),
    macro F1 (over the classes present in y_true or y_pred), per-class precision/recall/F1/support, confusion."""
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix)
    recall = np.divide(hits, support, out=np.zeros(len(labels)), where=support > 0)
    precision = np.divide(hits, predicted, out=np.zeros(len(labels)), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(labels)), where=denom > 0)
    present = support > 0
    seen = present | (predicted > 0)
    total = int(support.sum())
    accuracy = float(hits.sum() / total) if total else float("nan")
    return {
        "clips": total,
        "accuracy": accuracy,
        "war": accuracy,
        "uar": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[seen].mean()) if seen.any() else float("nan"),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion": matrix.tolist(),
    }


def ccc(pred: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor) -> float:
    """Lin's concordance correlation coefficient 2 cov / (var_p + var_t + (mean_p - mean_t)^2); NaN for < 2 values."""
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
    if p.size < 2:
        return float("nan")
    cov = ((p - p.mean()) * (t - t.mean())).mean()
    denom = p.var() + t.var() + (p.mean() - t.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def format_confusion(matrix: np.ndarray | list, labels: tuple[str, ...] = LABELS) -> str:
    """The confusion matrix as a text table (rows true, columns predicted): each column is as wide as its label or its
    largest count, counts right-aligned under their label, so columns line up whatever the labels and counts."""
    corner = "true \\ predicted"
    rows = [[corner, *labels]] + [[name, *map(str, row)] for name, row in zip(labels, np.asarray(matrix), strict=True)]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return "\n".join(
        r[0].ljust(widths[0]) + "".join("  " + cell.rjust(w) for cell, w in zip(r[1:], widths[1:], strict=True))
        for r in rows
    )


def confusion_image(matrix: np.ndarray | list, labels: tuple[str, ...] = LABELS, title: str = "") -> np.ndarray:
    """A BGR picture of the confusion matrix: cells shaded by row-normalised recall, with counts and percentages."""
    matrix = np.asarray(matrix, np.float64)
    n, cell, left, top = len(labels), 72, 110, 70 if title else 40
    h, w = top + n * cell + 70, left + n * cell + 20
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    if title:
        cv2.putText(img, title, (10, 26), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(n):
        for j in range(n):
            x0, y0 = left + j * cell, top + i * cell
            shade = round(255 * (1 - share[i, j]))
            color = (255, shade, shade) if i != j else (shade, 255, shade)
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), color, -1)
            cv2.rectangle(img, (x0, y0), (x0 + cell - 1, y0 + cell - 1), (200, 200, 200), 1)
            ink = (255, 255, 255) if share[i, j] > 0.6 and i != j else (0, 0, 0)
            cv2.putText(img, str(int(matrix[i, j])), (x0 + 8, y0 + 30), font, 0.55, ink, 1, cv2.LINE_AA)
            if rows[i, 0] > 0:
                cv2.putText(img, f"{share[i, j]:.0%}", (x0 + 8, y0 + 56), font, 0.45, ink, 1, cv2.LINE_AA)
        cv2.putText(img, labels[i], (8, top + i * cell + cell // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(
            img, labels[i][:8], (left + i * cell + 4, top + n * cell + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    cv2.putText(img, "rows: true category, columns: predicted", (left, h - 20), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def save_confusion_png(matrix: np.ndarray | list, path: str | Path, title: str = "") -> Path:
    """Write confusion_image as a PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), confusion_image(matrix, title=title)):
        raise OSError(f"cannot write {path}")
    return path


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device, amp: bool = False) -> dict[str, np.ndarray]:
    """Run the model over a loader of ClipDataset batches -> per item: clip (n,), probs (n, 7) averaged over the
    window's steps, va_pred and va_true (n, T, 2), item (n,) positions in the loader's order."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"clip": [], "probs": [], "va_pred": [], "va_true": []}
    for batch in loader:
        x = _crops(batch["crops"], device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            out = model(x, batch["landmarks"].to(device, non_blocking=True))
        parts["clip"].append(batch["clip"].numpy())
        parts["probs"].append(torch.softmax(out["logits"].float(), dim=-1).mean(dim=1).cpu().numpy())
        parts["va_pred"].append(torch.stack([out["valence"], out["arousal"]], dim=-1).float().cpu().numpy())
        parts["va_true"].append(batch["va"].numpy())
    result = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()}
    result["item"] = np.arange(len(result["clip"]))
    return result


def _crops(crops: torch.Tensor, device: torch.device) -> torch.Tensor:
    from emotion.inputs import crops_to_tensor

    return crops_to_tensor(crops.to(device, non_blocking=True))


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


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    """Human-readable lines: the headline numbers and the confusion matrix."""
    lines = []
    if "accuracy" in metrics:
        lines.append(
            f"clips {metrics['clips']}  accuracy (WAR) {metrics['accuracy']:.3f}  UAR {metrics['uar']:.3f}  "
            f"macro F1 {metrics['macro_f1']:.3f}"
        )
    for name in ("valence", "arousal"):
        if f"ccc_{name}" in metrics:
            lines.append(f"CCC {name} {metrics[f'ccc_{name}']:.3f} over {plural(metrics[f'frames_{name}'], 'frame')}")
    if "confusion" in metrics:
        lines += ["confusion matrix (rows true, columns predicted):", format_confusion(metrics["confusion"])]
    return lines


def _json_safe(value: Any) -> Any:
    """NaN -> None so the JSON file is standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON atomically (see emotion.atomic)."""
    path = Path(path)
    with atomic_open(path) as f:
        f.write((json.dumps(_json_safe(data), indent=2) + "\n").encode())
    return path


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


@dataclass(frozen=True)
class EvalConfig:
    """Settings of `main.py --evaluate`."""

    data: str  # dataset folder or CSV manifest
    weights: str | None = None  # checkpoint to evaluate; None: the pretrained default model
    format: str = "auto"  # dataset layout, see emotion.data.FORMATS
    split: str = "all"  # clips to evaluate: all, train, val or test (val as held out in training, see below)
    val_split: float | None = None  # fraction held out as val when the data fixes none; None: the checkpoint's
    seed: int | None = None  # seed of that split; None: the checkpoint's training seed (else 0)
    cache_dir: str = "~/.cache/emotion/clips"  # face-stage cache folder (shared with training)
    output: str | None = None  # folder for metrics.json and confusion.png; None: runs/evaluate-N
    json: str | None = None  # metrics JSON path overriding <output>/metrics.json
    runs_dir: str = "runs"  # parent of the default output folder
    batch_size: int = 16  # windows per forward pass
    windows: int = 4  # evaluation windows per clip, averaged into one prediction
    workers: int = 1  # face-stage processes for clips not cached yet
    device: str = "auto"  # auto, cpu or cuda
    threads: int = 0  # PyTorch CPU threads; 0: one per core
    progress: bool = True  # show progress bars


def run(config: EvalConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset: prints the metrics and confusion matrix, writes JSON and a PNG."""
    from emotion.recognizer import resolve_device

    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    try:
        return _evaluate(config, device)
    finally:
        torch.set_num_threads(threads)


def _evaluate(config: EvalConfig, device: torch.device) -> dict[str, Any]:
    from emotion.data import ClipDataset, PrepConfig, assign_splits, load_dataset, preprocess
    from emotion.model import default_model, load_checkpoint

    if config.weights:
        model, model_config, extra = load_checkpoint(config.weights, device)
    else:
        model, extra = default_model(device), {}
        model_config = model.config
    trained = extra.get("train_config", {}) if isinstance(extra, dict) else {}
    val_split = config.val_split if config.val_split is not None else float(trained.get("val_split", 0.2))
    seed = config.seed if config.seed is not None else int(trained.get("seed", 0))
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
    dataset = ClipDataset(clips, model_config.window, windows=config.windows)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size)
    pred = predict(model, loader, device)
    metrics = summarize(pred, [c.record.label for c in clips])
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
    if "confusion" in metrics:
        title = f"{Path(config.weights).name if config.weights else 'pretrained'} on {Path(config.data).name}"
        result["confusion_png"] = str(save_confusion_png(metrics["confusion"], out_dir / "confusion.png", title))
    json_path = write_json(Path(config.json) if config.json else out_dir / "metrics.json", result)
    print("\n".join(metric_lines(metrics)))
    print(
        f"metrics: {json_path}"
        + (f"  confusion matrix: {result['confusion_png']}" if "confusion_png" in result else "")
    )
    result["json"] = str(json_path)
    return result
