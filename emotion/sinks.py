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
from emotion.errors import EmotionError


def prepare_output(path: str | Path, overwrite: bool = True) -> Path:
    """Create the parent folder of an output file and check that it can be written."""
    p = Path(path)
    if p.is_dir():
        raise EmotionError(f"output path is a directory: {p} (give a file name such as {p / 'out.mp4'})")
    if p.exists() and not overwrite:
        raise EmotionError(
            f"output file already exists: {p}", fix="pass overwrite=True to replace it", cli_fix="pass --overwrite to replace it"
        )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmotionError(f"cannot create the folder {p.parent}: {exc.strerror} (choose another output path)") from None
    if not os.access(p.parent, os.W_OK):
        raise EmotionError(f"cannot write to the folder {p.parent}: permission denied (choose another output path)")
    return p


class JsonWriter:
    """Writes a JSON list of frame objects that is a complete, valid document on disk after every frame.

    Each frame is written with one positioned write of the object plus the closing bracket, just over the previous
    closing bracket, so a crash or a kill loses at most the frame being written and never leaves broken JSON.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, b"[\n]\n")
        self._end = 2  # byte offset of the closing bracket
        self.count = 0

    def write(self, result: FrameResult) -> None:
        text = ("" if self.count == 0 else ",\n") + json.dumps(result.to_dict(), separators=(", ", ": "))
        data = text.encode()
        os.pwrite(self._fd, data + b"\n]\n", self._end)
        self._end += len(data)
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


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
