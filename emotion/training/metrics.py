"""Metrics of clip predictions: accuracy (WAR), UAR, macro F1, the confusion matrix as text and PNG, and Lin's CCC
for valence and arousal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from emotion.atomic import atomic_open
from emotion.labels import LABELS
from emotion.text import plural


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(LABELS)) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows are the true category, columns the predicted one."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: tuple[str, ...] = LABELS,
    unit: str = "clips",
    none: str | None = None,
) -> dict[str, Any]:
    """Accuracy (= WAR, recall weighted by class size), UAR (mean recall over the classes present in y_true),
    macro F1 (over the classes present in y_true or y_pred), per-class precision/recall/F1/support, confusion; the
    count of items under the key `unit`.

    With `none` (a column name such as "none"), y_pred -1 means no prediction (no face found): such an item counts
    as wrong for accuracy and recall, lowers no category's precision, and is counted in a last confusion column.
    """
    n = len(labels)
    y_pred = np.asarray(y_pred, np.int64)
    if none is None and (y_pred < 0).any():
        raise ValueError("y_pred holds -1 (no prediction): name its confusion column with none=")
    full = confusion_matrix(y_true, np.where(y_pred < 0, n, y_pred), n + 1)[:n]
    matrix = full[:, :n]
    support = full.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    present = support > 0
    seen = present | (predicted > 0)
    total = int(support.sum())
    accuracy = float(hits.sum() / total) if total else float("nan")
    result = {
        unit: total,
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
        "confusion": (matrix if none is None else full).tolist(),
    }
    if none is not None:
        result["columns"] = [*labels, none]
    return result


def ccc(pred: npt.ArrayLike, true: npt.ArrayLike) -> float:
    """Lin's concordance correlation coefficient 2 cov / (var_p + var_t + (mean_p - mean_t)^2); NaN for < 2 values."""
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(true, np.float64).ravel()
    if p.size < 2:
        return float("nan")
    cov = ((p - p.mean()) * (t - t.mean())).mean()
    denom = p.var() + t.var() + (p.mean() - t.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def format_confusion(
    matrix: np.ndarray | list, labels: tuple[str, ...] = LABELS, columns: list[str] | None = None
) -> str:
    """The confusion matrix as a text table (rows true, columns predicted, named `columns` when they are not the
    labels): each column is as wide as its name or its largest count, counts right-aligned under their name, so
    columns line up whatever the labels and counts."""
    corner = "true \\ predicted"
    head = [corner, *(columns or labels)]
    rows = [head] + [[name, *map(str, row)] for name, row in zip(labels, np.asarray(matrix), strict=True)]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return "\n".join(
        r[0].ljust(widths[0]) + "".join("  " + cell.rjust(w) for cell, w in zip(r[1:], widths[1:], strict=True))
        for r in rows
    )


def confusion_image(
    matrix: np.ndarray | list, labels: tuple[str, ...] = LABELS, title: str = "", columns: list[str] | None = None
) -> np.ndarray:
    """A BGR picture of the confusion matrix: cells shaded by row-normalised recall, with counts and percentages;
    `columns` names the columns when they are not the labels (an extra 'none' column)."""
    matrix = np.asarray(matrix, np.float64)
    columns = columns or list(labels)
    n, m, cell, left, top = len(labels), len(columns), 72, 110, 70 if title else 40
    h, w = top + n * cell + 70, left + m * cell + 20
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    if title:
        cv2.putText(img, title, (10, 26), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(n):
        for j in range(m):
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
    for j, name in enumerate(columns):
        cv2.putText(img, name[:8], (left + j * cell + 4, top + n * cell + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "rows: true category, columns: predicted", (left, h - 20), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    return img


def save_confusion_png(
    matrix: np.ndarray | list, path: str | Path, title: str = "", columns: list[str] | None = None
) -> Path:
    """Write confusion_image as a PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), confusion_image(matrix, title=title, columns=columns)):
        raise OSError(f"cannot write {path}")
    return path


def metric_lines(metrics: dict[str, Any], unit: str = "clips") -> list[str]:
    """Human-readable lines: the headline numbers (the count of `unit`), each category's recall and the confusion
    matrix."""
    lines = []
    if "accuracy" in metrics:
        lines.append(
            f"{unit} {metrics[unit]}  accuracy (WAR) {metrics['accuracy']:.3f}  UAR {metrics['uar']:.3f}  "
            f"macro F1 {metrics['macro_f1']:.3f}"
        )
    for name in ("valence", "arousal"):
        if f"ccc_{name}" in metrics:
            lines.append(f"CCC {name} {metrics[f'ccc_{name}']:.3f} over {plural(metrics[f'frames_{name}'], 'frame')}")
    if "confusion" in metrics:
        recalls = [
            f"{name} {c['recall']:.3f} ({metrics['confusion'][i][i]}/{c['support']})"
            for i, (name, c) in enumerate(metrics["per_class"].items())
            if c["support"]
        ]
        lines += [
            "recall per category: " + ", ".join(recalls),
            "confusion matrix (rows true, columns predicted):",
            format_confusion(metrics["confusion"], columns=metrics.get("columns")),
        ]
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
