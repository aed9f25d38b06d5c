"""Result sinks: a streaming JSON array that is valid on disk after every frame, CSV rows, and an annotated video."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np

from emotion.labels import LABELS
from emotion.results import FrameResult
from emotion.sources import EmotionError


def prepare_output(path: str | Path, overwrite: bool = True) -> Path:
    """Create the parent folder of an output file and check that it can be written."""
    p = Path(path)
    if p.is_dir():
        raise EmotionError(f"output path is a directory: {p} (give a file name such as {p / 'out.mp4'})")
    if p.exists() and not overwrite:
        raise EmotionError(f"output file already exists: {p} (pass --overwrite to replace it)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmotionError(f"cannot create the folder {p.parent}: {exc.strerror} (choose another output path)") from None
    if not os.access(p.parent, os.W_OK):
        raise EmotionError(f"cannot write to the folder {p.parent}: permission denied (choose another output path)")
    return p


class JsonWriter:
    """Writes a JSON list of frame objects, rewriting the closing bracket after each frame.

    The file on disk is therefore a complete, valid JSON document after every flush, and a crash or Ctrl-C loses at
    most the frames written since the last flush.
    """

    def __init__(self, path: str | Path, flush_every: int = 30):
        self.path = Path(path)
        self._f = open(self.path, "w", encoding="utf-8")
        self._f.write("[\n]\n")
        self._f.flush()
        self._end = 2  # offset of the closing bracket
        self._count = 0
        self._flush_every = flush_every

    def write(self, result: FrameResult) -> None:
        text = ("" if self._count == 0 else ",\n") + json.dumps(result.to_dict(), separators=(", ", ": "))
        self._f.seek(self._end)
        self._f.write(text)
        self._end = self._f.tell()
        self._f.write("\n]\n")
        self._count += 1
        if self._count % self._flush_every == 0:
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


class CsvWriter:
    """One row per face per frame (and one row with empty face fields for a frame without faces)."""

    COLUMNS = ["frame", "time", "face_id", "x", "y", "w", "h", "emotion", "confidence", "valence", "arousal"] + [
        f"p_{name}" for name in LABELS
    ]

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "w", newline="", encoding="utf-8")
        self._w = csv.writer(self._f)
        self._w.writerow(self.COLUMNS)

    def write(self, result: FrameResult) -> None:
        head = [result.frame, f"{result.time:.4f}"]
        if not result.faces:
            self._w.writerow(head + [""] * (len(self.COLUMNS) - 2))
        for face in result.faces:
            self._w.writerow(
                head
                + [face.track_id, *face.box, face.emotion, f"{face.confidence:.4f}"]
                + [f"{face.valence:.4f}", f"{face.arousal:.4f}"]
                + [f"{p:.4f}" for p in face.probabilities]
            )

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class VideoWriter:
    """An MP4 (mp4v) or AVI (MJPG) writer with the source's size and frame rate."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
        self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._w.isOpened():
            raise EmotionError(f"cannot write video {self.path} (use an .mp4 or .avi file name in a writable folder)")
        self.size = size

    def write(self, frame: np.ndarray) -> None:
        self._w.write(frame)

    def close(self) -> None:
        self._w.release()
