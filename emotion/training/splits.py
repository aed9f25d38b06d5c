"""Train/validation splits: keep the dataset's own, else hold out whole subjects or a share of each category."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from emotion.training.datasets import ClipRecord

VAL_SPLIT = 0.2
"""Share of subjects (or of each category's clips) held out for validation when neither the dataset nor the user
says otherwise; evaluation of a checkpoint uses the share its training run used."""


def assign_splits(records: list[ClipRecord], val_split: float, seed: int = 0) -> list[ClipRecord]:
    """Give every record a split. Fixed splits from the dataset are kept; if none is 'val', a `val_split` fraction
    is held out: whole subjects when every clip names one (subject-independent), else per category (stratified)."""
    if any(r.split == "val" for r in records) or val_split <= 0:
        return [r if r.split else replace(r, split="train") for r in records]
    free = [r for r in records if r.split is None]
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    if free and all(r.subject for r in free):
        subjects = sorted({r.subject for r in free})
        chosen = set(rng.permutation(subjects)[: _held_count(len(subjects), val_split)].tolist())
        held = {r.source + r.face for r in free if r.subject in chosen}
    else:
        by_label: dict[int, list[str]] = {}
        for r in free:
            by_label.setdefault(r.label, []).append(r.source + r.face)
        for label in sorted(by_label):
            keys = sorted(by_label[label])
            held.update(rng.permutation(keys)[: _held_count(len(keys), val_split)].tolist())
    return [r if r.split else replace(r, split="val" if r.source + r.face in held else "train") for r in records]


def _held_count(n: int, share: float) -> int:
    """How many of n subjects or clips to hold out: the share rounded, at least 1 and never all (none of 1)."""
    return min(n - 1, max(1, round(share * n))) if n > 1 else 0
