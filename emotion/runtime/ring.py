"""The per-track ring buffer both streamers keep: the last `window` packed frame rows of every face track."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


class RingBuffer:
    """Per-track history of the last `window` packed frame rows (F,), float32, in one preallocated array per track.

    Rows are kept right-aligned (the newest last), so a track's history is a view and a full buffer is the window the
    exported step takes. numpy storage serves both runtimes: ONNX Runtime reads it directly, eager PyTorch through
    torch.from_numpy without a copy.
    """

    def __init__(self, window: int, features: int) -> None:
        self.window = window
        self.features = features
        self._rows: dict[Hashable, np.ndarray] = {}
        self._length: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, track: Hashable) -> bool:
        return track in self._rows

    def history(self, track: Hashable) -> int:
        """Frames currently buffered for a track (0 if unknown), at most `window`."""
        return self._length.get(track, 0)

    def frames(self, track: Hashable) -> np.ndarray:
        """The buffered rows of a track, oldest first: (history, F), a view."""
        n = self._length.get(track, 0)
        return self._rows[track][self.window - n :] if n else np.zeros((0, self.features), np.float32)

    def push(self, track: Hashable, row: np.ndarray) -> None:
        """Append one frame's row to a track, dropping the oldest beyond the window."""
        buf = self._rows.get(track)
        if buf is None:
            buf = self._rows[track] = np.zeros((self.window, self.features), np.float32)
            self._length[track] = 0
        buf[:-1] = buf[1:]
        buf[-1] = row
        self._length[track] = min(self._length[track] + 1, self.window)

    def batches(self, tracks: Sequence[Hashable]) -> list[tuple[list[int], np.ndarray]]:
        """Tracks grouped by history length: [(positions in `tracks`, their rows stacked (B, T, F)), ...].

        The temporal head then runs once per group over exactly each track's frames: no track is ever padded.
        """
        groups: dict[int, list[int]] = {}
        for i, track in enumerate(tracks):
            groups.setdefault(self.history(track), []).append(i)
        return [(rows, np.stack([self.frames(tracks[i]) for i in rows])) for rows in groups.values()]

    def retain(self, tracks: Sequence[Hashable]) -> None:
        """Forget every track not in `tracks` (e.g. faces that left the picture)."""
        keep = set(tracks)
        for track in [t for t in self._rows if t not in keep]:
            self.drop(track)

    def drop(self, track: Hashable) -> None:
        """Forget one track; a later frame with the same id starts a new history."""
        self._rows.pop(track, None)
        self._length.pop(track, None)

    def clear(self) -> None:
        """Forget all tracks."""
        self._rows.clear()
        self._length.clear()
