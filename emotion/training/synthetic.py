"""A separable synthetic dataset written straight into the face-stage cache, for tests and benchmarks."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Literal

import numpy as np

from emotion.labels import CIRCUMPLEX, LABELS
from emotion.signals import BLENDSHAPE_NAMES, SIGNAL_DIM
from emotion.training.augment import SIGNAL_MIRROR
from emotion.training.cache import PrepConfig, cache_key, cache_path, content_hash, write_npz

Affect = Literal["circumplex", "opposite"]
"""Valence/arousal labels of a synthetic class: its circumplex point, or that point mirrored through the centre
(so that a model which reports the circumplex prior of its probabilities is as wrong as it can be)."""

Cue = Literal["crops", "signals"]
"""What tells a synthetic clip's class: a bright square in its crops, or its face signals' blendshapes (crops then
noise alone)."""

Layout = Literal["csv", "affwild"]
"""A CSV manifest with categories and clip valence/arousal, or Aff-Wild2 style: per-frame `<clip>.txt` beside
`<clip>.mp4` in Train_Set / Validation_Set, valence and arousal only."""


def make_synthetic_dataset(
    root: str | Path,
    cache_dir: str | Path,
    clips_per_class: int = 8,
    classes: tuple[int, ...] = (0, 3, 5),
    frames: int = 24,
    prep: PrepConfig = PrepConfig(),
    val_fraction: float = 0.25,
    seed: int = 0,
    affect: Affect = "circumplex",
    layout: Layout = "csv",
    cue: Cue = "crops",
) -> Path:
    """A separable synthetic dataset that is already cached (for tests and benchmarks); returns its manifest (csv)
    or its folder (affwild).

    Each clip is a small stub source file (distinct bytes, so its own cache key) and a cache entry whose crops show
    a bright square at a height that depends on the class (unchanged by flips), over noise; landmarks are noise
    around a random shape; valence/arousal are the class's `affect` point. The layout fixes the train/val split.
    With prep.signals the entries hold face signals: uniform blendshapes and small angles; with cue "signals" (then
    no square) the blendshapes are noise around an expression of the class (the same on both sides of the face, so
    a flip keeps it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    signal_rng = np.random.default_rng([seed, 1])
    blendshapes = len(BLENDSHAPE_NAMES)
    expressions = signal_rng.uniform(0, 1, (len(classes), SIGNAL_DIM))
    expressions = (expressions + expressions[:, list(SIGNAL_MIRROR)]) / 2
    s = prep.crop_size
    shape = (frames, s, s) + ((3,) if prep.in_chans == 3 else ())
    base = rng.normal(0, 1, (468, 3)).astype(np.float32)
    sign = {"circumplex": 1.0, "opposite": -1.0}[affect]
    rows = []
    for k, label in enumerate(classes):
        valence, arousal = (sign * v for v in CIRCUMPLEX[LABELS[label]])
        for j in range(clips_per_class):
            split = "val" if j < math.ceil(val_fraction * clips_per_class) else "train"
            folder = root if layout == "csv" else root / {"train": "Train_Set", "val": "Validation_Set"}[split]
            folder.mkdir(exist_ok=True)
            source = folder / f"clip_{label}_{j:04d}.{'syn' if layout == 'csv' else 'mp4'}"
            source.write_text(f"synthetic clip {label} {j} {seed}\n")
            crops = rng.integers(0, 96, shape).astype(np.uint8)
            y, half = (k + 1) * s // (len(classes) + 1), max(2, s // 8)
            if cue == "crops":
                crops[:, y - half : y + half, s // 2 - half : s // 2 + half] = 230
            landmarks = base + rng.normal(0, 0.05, (frames, 468, 3)).astype(np.float32)
            arrays = {"crops": crops, "landmarks": landmarks.astype(np.float16)}
            if prep.signals:
                signals = signal_rng.uniform(0, 1, (frames, SIGNAL_DIM)).astype(np.float32)
                if cue == "signals":
                    signals = np.clip(expressions[k] + signal_rng.normal(0, 0.1, signals.shape), 0, 1)
                signals[:, blendshapes:] = signal_rng.normal(0, 0.1, (frames, SIGNAL_DIM - blendshapes))
                arrays["signals"] = signals.astype(np.float32)
            key = cache_key(content_hash(source), prep, "largest")
            write_npz(
                cache_path(cache_dir, key),
                **arrays,
                frames=np.arange(frames, dtype=np.int32),
                total=np.array(frames),
            )
            if layout == "affwild":
                lines = ["valence,arousal"] + [f"{valence:.3f},{arousal:.3f}"] * frames
                source.with_suffix(".txt").write_text("\n".join(lines) + "\n")
            rows.append([source.name, LABELS[label], valence, arousal, split])
    if layout == "affwild":
        return root
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "valence", "arousal", "split"])
        writer.writerows(rows)
    return manifest
