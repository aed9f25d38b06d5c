"""Where results go: a streaming JSON array that is valid on disk after every frame, CSV rows, an annotated video,
and `ResultSinks`, the set of them that one run writes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.results import FrameResult
from emotion.worker import OrderedWorker


OUTPUT_SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"),
    "video": (".mp4", ".avi"),
    "json": (".json",),
    "csv": (".csv",),
}
"""The file types each kind of output can be written as (lower case, with the dot)."""

NAME_MAX = 255
"""Longest file name (bytes) the usual file systems take."""


def check_output_type(path: str | Path, kind: str) -> Path:
    """Refuse, before anything is opened, an output whose suffix is not one that `kind` ("image", "video", "json",
    "csv") can be written as, and a video name OpenCV cannot take (not valid UTF-8)."""
    p = Path(path)
    suffixes = OUTPUT_SUFFIXES[kind]
    if p.suffix.lower() not in suffixes:
        label = kind.upper() if kind in ("json", "csv") else kind
        raise EmotionError(
            f"cannot write the {label} output {p}: {p.suffix or 'no'} file type",
            fix=f"use {suffixes[0]}" if len(suffixes) == 1 else f"use one of {', '.join(suffixes)}",
        )
    if kind == "video":
        try:
            str(p).encode("utf-8")
        except UnicodeEncodeError:
            raise EmotionError(
                f"cannot write the video output {p}: the name is not valid UTF-8", fix="choose another name"
            ) from None
    return p


def fit_name(stem: str, suffix: str) -> str:
    """`stem + suffix`, with the stem shortened and a hash of it added when the name would be too long for the file
    system, so a long input name still gives a valid (and distinct) output name."""
    name = stem + suffix
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    end = "-" + hashlib.sha1(os.fsencode(stem)).hexdigest()[:8] + suffix
    short = stem[: NAME_MAX - len(end)]
    while len(os.fsencode(short + end)) > NAME_MAX:  # whole characters only, however many bytes each takes
        short = short[:-1]
    return short + end


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode `image` by the suffix of `path` and write the bytes (OpenCV's own writer cannot take every name the OS
    allows)."""
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise EmotionError(f"cannot encode image {path}", fix=f"use one of {', '.join(OUTPUT_SUFFIXES['image'])}")
    try:
        path.write_bytes(data.tobytes())
    except OSError as exc:
        raise EmotionError(f"cannot write {path}: {exc.strerror}", fix="choose another output path") from None


def prepare_output(path: str | Path, overwrite: bool = True, kind: str | None = None) -> Path:
    """Create the parent folder of an output file and check that it can be written (and, given `kind`, that its
    type is one that kind can be written as: `check_output_type`)."""
    p = Path(path) if kind is None else check_output_type(path, kind)
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
            values = [face.confidence, face.valence, face.arousal, *face.probabilities]
            cells = [f"{v:.4f}" if np.isfinite(v) else "" for v in values]  # NaN/inf: empty, as JSON has null
            self._w.writerow(head + [face.track_id, *face.box, face.emotion if face.finite else "", *cells])

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


def default_json_path(output: Path | None, source: Path) -> Path:
    """`<output name>_results.json` beside the output video, or `<source name>_results.json` in the working folder."""
    name = fit_name((output or source).stem + "_results", ".json")
    return output.with_name(name) if output else Path(name)


class ResultSinks:
    """The outputs of one run: JSON and CSV of every result, and the annotated video, encoded on its own thread.

    With `realtime`, the video is padded with repeats of the previous frame so it plays at the source's speed when a
    live view skipped frames (a gap longer than MAX_FILL, such as a pause, is not replayed); otherwise every frame is
    written once. The video opens at `size` (width, height) when given, else at the first frame's size.
    """

    MAX_FILL = 1.0  # s, longest gap filled with copies of the previous frame

    def __init__(
        self,
        video: Path | None,
        json_path: Path | None,
        csv_path: Path | None,
        fps: float,
        size: tuple[int, int] | None = None,
        realtime: bool = False,
        timer=None,
    ):
        self.video_path, self.json_path, self.csv_path = video, json_path, csv_path
        self.fps, self.realtime, self._timer = fps, realtime, timer
        self._writer: VideoWriter | None = None
        self._encoder: OrderedWorker | None = None
        self._sinks: list[JsonWriter | CsvWriter] = []
        self._t0 = self._last_t = 0.0
        self.frames_written = 0
        try:
            self._sinks = ([JsonWriter(json_path)] if json_path else []) + ([CsvWriter(csv_path)] if csv_path else [])
            if video is not None and size is not None:
                self._open_video(size)
        except OSError as exc:
            self.close()
            raise EmotionError(f"cannot write {exc.filename}: {exc.strerror}", fix="choose another output path") from None
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, video, json_path, csv_path, fps: float, overwrite: bool, **options) -> ResultSinks:
        """Check each given path with `prepare_output` (folders made, existing files refused without `overwrite`)."""
        paths = [
            prepare_output(p, overwrite, kind) if p else None
            for p, kind in ((video, "video"), (json_path, "json"), (csv_path, "csv"))
        ]
        return cls(*paths, fps=fps, **options)

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.video_path, self.json_path, self.csv_path) if p]

    def write_result(self, result: FrameResult) -> None:
        for sink in self._sinks:
            sink.write(result)

    def write_frame(self, image: np.ndarray, t: float) -> None:
        """Queue the annotated frame shown at time `t` (s); the caller must not change `image` afterwards."""
        if self.video_path is None:
            return
        if self._writer is None:
            self._open_video(image.shape[1::-1])
        if self.frames_written == 0:
            self._t0 = self._last_t = t
        copies = 1
        if self.realtime:
            if t - self._last_t > self.MAX_FILL:
                self._t0 += t - self._last_t - 1.0 / self.fps
            copies = max(int(round((t - self._t0) * self.fps)) + 1 - self.frames_written, 1)
            self._last_t = t
        for _ in range(copies):
            self._encoder.put(image)
        self.frames_written += copies

    def _open_video(self, size: tuple[int, int]) -> None:
        self._writer = VideoWriter(self.video_path, self.fps, size)
        self._encoder = OrderedWorker(self._encode, "encode")

    def _encode(self, image: np.ndarray) -> None:
        t0 = time.perf_counter()
        self._writer.write(image)
        if self._timer is not None:
            self._timer.add("encode", (time.perf_counter() - t0) * 1000.0)

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued frames, then close the video, JSON and CSV (safe to call again)."""
        try:
            if self._encoder is not None:
                self._encoder.close(raise_error)
        finally:
            if self._writer is not None:
                self._writer.close()
            for sink in self._sinks:
                sink.close()
