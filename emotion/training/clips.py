"""Clip windows for training and evaluation: T-frame windows of cached clips with temporal jitter and augmentation,
fixed evaluation windows, and the per-epoch sampler that shuffles, balances and splits them across processes."""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from emotion.training.augment import AugmentConfig, augment_clip
from emotion.training.cache import CachedClip
from emotion.training.datasets import read_va_file


def sample_indices(frames: int, window: int, rng: np.random.Generator | None, max_stride: int = 1) -> np.ndarray:
    """Window of `window` positions into F cached frames: a random start and stride 1..max_stride with rng (the
    longest stride that fits at most), the centre with stride 1 without; shorter clips repeat their last frame."""
    if rng is None:
        start = max(0, (frames - window) // 2)
        stride = 1
    else:
        fits = max(1, min(max_stride, (frames - 1) // max(window - 1, 1)))
        stride = int(rng.integers(1, fits + 1))
        start = int(rng.integers(0, max(frames - stride * (window - 1), 1)))
    return np.minimum(start + stride * np.arange(window), frames - 1)


def eval_windows(frames: int, window: int, count: int) -> list[int]:
    """Start positions of up to `count` evaluation windows spread evenly over F frames (the last ends at F)."""
    if frames <= window:
        return [0]
    n = min(count, math.ceil(frames / window))
    return sorted({round(s) for s in np.linspace(0, frames - window, n)})


def clip_va(clip: CachedClip, frames: np.ndarray) -> np.ndarray:
    """(F, 2) float32 valence/arousal of the cached frames; NaN where not annotated."""
    r = clip.record
    va = np.full((len(frames), 2), np.nan, np.float32)
    if r.va_file:
        per_frame = read_va_file(r.va_file)
        inside = frames < len(per_frame)
        va[inside] = per_frame[frames[inside]]
    else:
        if r.valence is not None:
            va[:, 0] = r.valence
        if r.arousal is not None:
            va[:, 1] = r.arousal
    return va


class ClipDataset(Dataset):
    """T-frame windows of cached clips as uint8 crops, float landmarks, a label, per-frame valence/arousal and, when
    the cache holds them (PrepConfig.signals), per-frame face signals.

    Training (augment given): one random window per clip per epoch, drawn from (seed, epoch, index) so the result
    does not depend on worker processes or on resuming. Evaluation: up to `windows` fixed windows per clip.
    """

    def __init__(
        self,
        clips: list[CachedClip],
        window: int = 16,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        windows: int = 1,
        cache_bytes: int = 2 << 30,
    ) -> None:
        self.clips = clips
        self.window = window
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        if augment is None:
            self.items = [(c, s) for c, clip in enumerate(clips) for s in eval_windows(clip.frames, window, windows)]
        else:
            self.items = [(c, -1) for c in range(len(clips))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        """Category of every item (-1 for none), for class-balanced sampling."""
        return [self.clips[c].record.label for c, _ in self.items]

    def _arrays(self, c: int) -> dict[str, np.ndarray]:
        """Decoded cache entry of clip c, kept in a least-recently-used store of at most cache_bytes."""
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        with np.load(self.clips[c].path) as z:
            arrays = {k: z[k] for k in ("crops", "landmarks", "signals", "frames") if k in z.files}
        arrays["va"] = clip_va(self.clips[c], arrays["frames"])
        size = sum(a.nbytes for a in arrays.values())
        while self._cache and self._cached_bytes + size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= sum(a.nbytes for a in old.values())
        if size <= self.cache_bytes:
            self._cache[c] = arrays
            self._cached_bytes += size
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, start = self.items[i]
        arrays = self._arrays(c)
        frames = len(arrays["frames"])
        if self.augment is None:
            idx = np.minimum(start + np.arange(self.window), frames - 1)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            idx = sample_indices(frames, self.window, rng, self.augment.max_stride)
        crops, landmarks = arrays["crops"][idx], arrays["landmarks"][idx]
        signals = arrays["signals"][idx] if "signals" in arrays else None
        if self.augment is not None:
            crops, landmarks, signals = augment_clip(crops, landmarks, self.augment, rng, signals)
        item = {
            "crops": torch.from_numpy(np.ascontiguousarray(crops)),
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            "label": torch.tensor(self.clips[c].record.label, dtype=torch.long),
            "va": torch.from_numpy(arrays["va"][idx]),
            "clip": torch.tensor(c, dtype=torch.long),
        }
        if signals is not None:
            item["signals"] = torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))
        return item


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced, with replacement) order per epoch from (seed, epoch), split across ranks.

    Every rank draws the same permutation and takes every world-th index, padded so all ranks get equally many.
    """

    def __init__(
        self,
        labels: list[int],
        shuffle: bool = True,
        balanced: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.labels = labels
        self.shuffle = shuffle
        self.balanced = balanced
        self.seed = seed
        self.rank = rank
        self.world = world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.world)

    def __iter__(self) -> Iterator[int]:
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.balanced:
            counts = Counter(self.labels)
            weights = torch.tensor([1.0 / counts[label] for label in self.labels], dtype=torch.double)
            order = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        order += order[: len(self) * self.world - n]
        return iter(order[self.rank :: self.world])
