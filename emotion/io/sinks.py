"""Where results go: a streaming JSON array that is valid on disk after every frame, CSV rows, an annotated video,
and `ResultSinks`, the set of them that one run writes."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import stat
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.results import FrameResult
from emotion.signals import BLENDSHAPE_NAMES, GAZE_NAMES, POSE_NAMES, FaceSignals
from emotion.io.video import H264Config, VideoWriter
from emotion.worker import OrderedWorker


OUTPUT_SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"),
    "video": (".mp4", ".avi", ".mov", ".m4v"),  # what VideoWriter encodes (H.264 for all but .avi)
}
"""The file types each encoded output can be written as (lower case, with the dot). JSON and CSV are text under any
name (`--json /dev/stdout` included)."""

NAME_MAX = 255
"""Longest file name (bytes) the usual file systems take."""


def check_output_type(path: str | Path, kind: str) -> Path:
    """Refuse, before anything is opened, an output whose suffix is not one that `kind` ("image" or "video") can be
    encoded as, and a video name OpenCV cannot take (not valid UTF-8)."""
    p = Path(path)
    suffixes = OUTPUT_SUFFIXES[kind]
    if p.suffix.lower() not in suffixes:
        raise EmotionError(
            f"cannot write the {kind} output {p}: {p.suffix or 'no'} file type", fix=f"use one of {', '.join(suffixes)}"
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
    """Create the parent folder of an output file and check that it can be written (and, given `kind`, "image" or
    "video", that its type is one that kind can be encoded as: `check_output_type`)."""
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


class AppendFile:
    """A file written by appends that keeps its last complete state on disk.

    Each append is one positioned write of the new bytes plus a tail (JSON's closing bracket) over the previous tail,
    so a crash or a kill loses at most the append in flight. A failed or short write (a full disk) cuts the file
    back to its last complete state and raises EmotionError. The file is locked while open (where the OS has
    `fcntl`), so a second run writing the same file is refused instead of interleaving with this one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = -1
        self._end, self._tail = 0, b""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EmotionError(f"cannot write {self.path}: {exc.strerror}", fix="choose another output path") from None
        try:
            _lock(fd, self.path)
            if stat.S_ISREG(os.fstat(fd).st_mode):  # not a device such as /dev/full
                os.ftruncate(fd, 0)
        except OSError as exc:
            os.close(fd)
            raise EmotionError(f"cannot write {self.path}: {exc.strerror}", fix="choose another output path") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def append(self, data: bytes, tail: bytes = b"") -> None:
        """Write `data` then `tail` where the previous tail began; the next append replaces `tail`."""
        try:
            written = os.pwrite(self._fd, data + tail, self._end)
            if written != len(data) + len(tail):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            self._restore()
            raise EmotionError(
                f"cannot write {self.path}: {exc.strerror}",
                fix="free some space and run again; the file holds everything written before, complete",
            ) from None
        self._end += len(data)
        self._tail = tail

    def _restore(self) -> None:
        """Cut the file back to its last complete state (truncating first frees the space the tail needs)."""
        try:
            os.ftruncate(self._fd, self._end)
            os.pwrite(self._fd, self._tail, self._end)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


def _lock(fd: int, path: Path) -> None:
    """Hold an exclusive lock on the open file, or refuse: another process is writing it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise EmotionError(
            f"another run is writing {path} at this moment", fix="wait for it to finish, or write to another file"
        ) from None


class JsonWriter(AppendFile):
    """A JSON list of records (frame results or plain dicts) that is a complete, valid document on disk after every
    record (see AppendFile)."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.append(b"[\n", b"]\n")
        self.count = 0

    def write(self, record: FrameResult | dict) -> None:
        record = record if isinstance(record, dict) else record.to_dict()
        text = ("" if self.count == 0 else ",\n") + json.dumps(record, separators=(", ", ": "))
        self.append(text.encode(), b"\n]\n")
        self.count += 1


def _cells(values) -> list[str]:
    """Numbers to 4 decimals; NaN or infinity as an empty cell, as JSON has null."""
    return [f"{v:.4f}" if math.isfinite(v) else "" for v in values]


class CsvWriter(AppendFile):
    """One row per face per frame (and one row with empty face fields for a frame without faces); a frame's rows are
    written whole or not at all (see AppendFile). With `signals`, the smoothed face signals follow in SIGNAL_COLUMNS
    (empty for a face without them)."""

    COLUMNS = ["frame", "time", "face_id", "x", "y", "w", "h", "emotion", "confidence", "valence", "arousal"] + [
        f"p_{name}" for name in LABELS
    ] + ["source"]
    SIGNAL_COLUMNS = [f"bs_{name}" for name in BLENDSHAPE_NAMES] + [f"head_{name}" for name in POSE_NAMES] + [
        f"gaze_{name}" for name in GAZE_NAMES
    ]

    def __init__(self, path: str | Path, signals: bool = False):
        super().__init__(path)
        self.signals = signals
        self.columns = self.COLUMNS + (self.SIGNAL_COLUMNS if signals else [])
        self._append_rows([self.columns])

    def write(self, result: FrameResult) -> None:
        head = [result.frame, f"{result.time:.4f}"]
        rows = [head + [""] * (len(self.columns) - 2)] if not result.faces else []
        for face in result.faces:
            cells = _cells([face.confidence, face.valence, face.arousal, *face.probabilities])
            rows.append(head + [face.track_id, *face.box, face.emotion if face.finite else "", *cells, face.source])
            if self.signals:
                rows[-1] += self._signal_cells(face.signals)
        self._append_rows(rows)

    def _signal_cells(self, signals: FaceSignals | None) -> list[str]:
        """The SIGNAL_COLUMNS of one face (empty without signals), from Python floats (faster than numpy scalars)."""
        if signals is None:
            return [""] * len(self.SIGNAL_COLUMNS)
        return _cells(np.concatenate([signals.blendshapes, signals.head_pose, signals.gaze], dtype=np.float64).tolist())

    def _append_rows(self, rows: list[list]) -> None:
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        self.append(text.getvalue().encode("utf-8"))


def default_json_path(output: Path | None, source: Path) -> Path:
    """`<output name>_results.json` beside the output video, or `<source name>_results.json` in the working folder."""
    name = fit_name((output or source).stem + "_results", ".json")
    return output.with_name(name) if output else Path(name)


class ResultSinks:
    """The outputs of one run: JSON and CSV of every result, and the annotated video, encoded on its own thread.

    With `realtime`, the video is padded with repeats of the previous frame so it plays at the source's speed when a
    live view skipped frames (a gap longer than MAX_FILL, such as a pause, is not replayed); otherwise every frame is
    written once. The video opens at `size` (width, height) when given, else at the first frame's size. `h264` sets
    how an .mp4 is encoded (None: MPEG-4 Part 2). `signals` adds the face signals' columns to the CSV.
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
        h264: H264Config | None = H264Config(),
        signals: bool = False,
    ):
        self.video_path, self.json_path, self.csv_path = video, json_path, csv_path
        self.fps, self.realtime, self._timer, self._h264 = fps, realtime, timer, h264
        self._writer: VideoWriter | None = None
        self._encoder: OrderedWorker | None = None
        self._sinks: list[JsonWriter | CsvWriter] = []
        self._t0 = self._last_t = 0.0
        self.frames_written = 0
        try:
            self._sinks = [JsonWriter(json_path)] if json_path else []
            self._sinks += [CsvWriter(csv_path, signals)] if csv_path else []
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
        paths = [prepare_output(video, overwrite, "video") if video else None]
        paths += [prepare_output(p, overwrite) if p else None for p in (json_path, csv_path)]
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
        self._writer = VideoWriter(self.video_path, self.fps, size, self._h264)
        self._encoder = OrderedWorker(self._encode, "encode")

    def _encode(self, image: np.ndarray) -> None:
        t0 = time.perf_counter()
        self._writer.write(image)
        if self._timer is not None:
            self._timer.add("encode", (time.perf_counter() - t0) * 1000.0)

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued frames, then close the video, JSON and CSV (safe to call again).

        A video that cannot be read back whole (its writer failed, e.g. on a full disk) is removed and reported with
        EmotionError, so no broken file is ever reported as written.
        """
        try:
            if self._encoder is not None:
                self._encoder.close(raise_error)
        finally:
            writer, self._writer = self._writer, None
            try:
                if writer is not None:
                    writer.close()
            finally:
                for sink in self._sinks:
                    sink.close()
            if writer is not None and self.frames_written and not _readable_video(self.video_path):
                self.video_path.unlink(missing_ok=True)
                lost, self.video_path = self.video_path, None
                problem = f"the annotated video {lost} could not be completed (the disk may be full) and was removed"
                if raise_error:
                    raise EmotionError(problem, fix="free some space and run again; the JSON and CSV hold every frame")
                print(f"warning: {problem}", file=sys.stderr, flush=True)  # closing after an interrupt or an error


def _readable_video(path: Path) -> bool:
    """Whether a written video opens and yields its first frame (a file cut short by a failed writer does not)."""
    try:
        if path.stat().st_size == 0:
            return False
    except OSError:
        return False
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
