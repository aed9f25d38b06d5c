"""Batch jobs over the public API: annotate images, annotate a video with JSON/CSV export, and the built-in demo."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emotion.overlay import OverlayConfig, draw_boxes, draw_frame
from emotion.recognizer import EmotionRecognizer, StageTimer
from emotion.results import FrameResult
from emotion.sinks import CsvWriter, JsonWriter, VideoWriter, prepare_output
from emotion.errors import EmotionError
from emotion.sources import VideoSource, image_files, read_image
from emotion.text import plural


@dataclass
class VideoSummary:
    """What one video run produced, printed at the end and returned to API callers."""

    source: Path
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    seconds: float = 0.0
    emotions: Counter = field(default_factory=Counter)  # main-face emotion -> frame count
    stages_ms: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # indices of unreadable frames that were skipped

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        top = ", ".join(f"{name} {n / max(self.frames_with_faces, 1):.0%}" for name, n in self.emotions.most_common())
        top = f"{top} of the frames with a face" if top else ""
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stages_ms.items())
        return [
            f"{self.source.name}: {plural(self.frames, 'frame')} in {self.seconds:.1f} s ({self.fps:.1f} fps), "
            f"faces in {plural(self.frames_with_faces, 'frame')} ({plural(self.faces, 'face detection')})",
            f"  largest face's emotion: {top or 'no face found'}",
            f"  ms per frame: {stages}",
            *(
                [f"  skipped {plural(len(self.skipped), 'unreadable frame')}: {_ranges(self.skipped)}"]
                if self.skipped
                else []
            ),
            *[f"  wrote {p}" for p in self.outputs],
        ]


def _ranges(indices: list[int]) -> str:
    """'3, 7-9, 12' for [3, 7, 8, 9, 12]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class FramePrefetcher:
    """Reads a VideoSource on its own thread, a few frames ahead, so decoding overlaps the face stage and the model.

    Frames come out in order; `close()` stops and joins the thread (call it before closing the video).
    """

    def __init__(self, video: VideoSource, timer: StageTimer | None = None, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(video, timer), name="decode", daemon=True)
        self._thread.start()

    def _run(self, video: VideoSource, timer: StageTimer | None) -> None:
        try:
            frames = iter(video)
            while not self._stop.is_set():
                t0 = time.perf_counter()
                item = next(frames, None)
                if item is not None and timer is not None:
                    timer.add("decode", (time.perf_counter() - t0) * 1000.0)
                self._put(item)
                if item is None:
                    return
        except BaseException as exc:  # handed to the reading thread
            self._error = exc
            self._put(None)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


class OrderedWorker:
    """Calls `work(*item)` for queued items on its own thread, in order (a bounded queue applies back-pressure).

    An exception in `work` is raised on the caller's next `put` or on `close`; `close()` first finishes every queued
    item, so an interrupted run still gets the results of the frames already handed over.
    """

    def __init__(self, work: Callable[..., None], name: str, depth: int = 4):
        self._work = work
        self._error: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._work(*item)
                except BaseException as exc:  # raised on the caller's thread
                    self._error = exc

    def put(self, *item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued items and stop the thread (once); re-raise a failure of `work` if `raise_error`."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


class EncodeThread(OrderedWorker):
    """Writes frames to a VideoWriter on its own thread, in order, overlapping the next frames' work. `close()`
    finishes every queued frame and closes the file, so an interrupted run still leaves a complete, playable video."""

    def __init__(self, writer: VideoWriter, timer: StageTimer | None = None, depth: int = 4):
        self.writer = writer
        self._timer = timer or StageTimer()
        super().__init__(self._encode, "encode", depth)

    def _encode(self, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        self.writer.write(frame)
        self._timer.add("encode", (time.perf_counter() - t0) * 1000.0)

    def write(self, frame: np.ndarray) -> None:
        """Queue a frame; the caller must not change it afterwards."""
        self.put(frame)

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued frames and close the file."""
        try:
            super().close(raise_error)
        finally:
            self.writer.close()


def default_json_path(output: Path | None, source: Path) -> Path:
    """`<output name>_results.json` beside the output video, or `<source name>_results.json` in the working folder."""
    return output.with_name(output.stem + "_results.json") if output else Path(source.stem + "_results.json")


def run_video(
    recognizer: EmotionRecognizer,
    source: str | Path,
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    overwrite: bool = True,
    progress: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
    objects=None,
) -> VideoSummary:
    """Process a whole video: annotated video (if `output`), per-frame JSON (always), CSV (if `csv_path`).

    A pipeline of threads with bounded queues, in frame order: decoding; the face stage (the calling thread); the
    model, smoothing, JSON/CSV and drawing; encoding the annotated video.

    `objects` (an `emotion.objects.ObjectDetector`) adds its latest object boxes under the faces of the video.
    """
    video = VideoSource(source)
    out = prepare_output(output, overwrite) if output else None
    jpath = prepare_output(json_path or default_json_path(out, video.info.path), overwrite)
    cpath = prepare_output(csv_path, overwrite) if csv_path else None
    summary = VideoSummary(video.info.path, outputs=[p for p in (out, jpath, cpath) if p])
    writer, sinks, frames, model = None, [], None, None

    def draw(frame: np.ndarray, result: FrameResult) -> None:
        if objects is not None:
            objects.submit(frame, result.frame)
            draw_boxes(frame, objects.boxes, objects.names)
        draw_frame(frame, result, overlay)

    def classify(frame: np.ndarray, faces: list, index: int, timestamp: float) -> None:
        result = recognizer.classify(frame, faces, index, timestamp)
        for sink in sinks:
            sink.write(result)
        if writer:
            with recognizer.timer("draw"):
                draw(frame, result)
            writer.write(frame)
        summary.frames += 1
        summary.faces += len(result.faces)
        if result.faces:
            summary.frames_with_faces += 1
            summary.emotions[result.main_face.emotion] += 1
        bar.update(1)

    recognizer.reset()
    try:
        if out:
            size = (video.info.width, video.info.height)
            writer = EncodeThread(VideoWriter(out, video.info.fps, size), recognizer.timer)
        sinks = [JsonWriter(jpath)] + ([CsvWriter(cpath)] if cpath else [])
        bar = tqdm(total=video.info.frame_count or None, unit="frame", desc=video.info.path.name, disable=not progress)
        t0 = time.perf_counter()
        frames = FramePrefetcher(video, recognizer.timer)
        model = OrderedWorker(classify, "model")
        for index, timestamp, frame in frames:
            model.put(*recognizer.detect(frame), index, timestamp)
        model.close()
        if writer:
            writer.close()  # the frames still queued count in the time
        summary.seconds = time.perf_counter() - t0
        bar.close()
    finally:
        if frames is not None:
            frames.close()
        if model is not None:
            model.close(raise_error=False)
        for sink in sinks:
            sink.close()
        if writer:
            writer.close(raise_error=False)
        video.close()
    summary.stages_ms = recognizer.timer.mean()
    summary.skipped = video.skipped
    if video.truncated:
        raise EmotionError(
            f"{video.info.path.name} ended after {video.frames_read} of {plural(video.info.frame_count, 'frame')}: "
            "the file is truncated or corrupt (re-download or re-encode it); results for the frames read are in "
            + ", ".join(str(p) for p in summary.outputs)
        )
    return summary


def run_images(
    recognizer: EmotionRecognizer,
    paths: list[str | Path],
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    overwrite: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
) -> list[dict]:
    """Classify every face of each image (a folder stands for the images in it); write annotated copies (a file for
    one image file, a folder for several)."""
    files = image_files(paths)
    images = [(p, read_image(p)) for p in files]
    records = []
    several = len(files) > 1 or any(Path(p).is_dir() for p in paths)
    if output and several and Path(output).suffix and not Path(output).is_dir():
        raise EmotionError(f"output {output} names a file, but there are several images", fix="give a folder name")
    out_dir = Path(output) if output and (several or Path(output).suffix == "") else None
    for path, image in images:
        result = recognizer.predict_image(image)
        record = {"image": str(path), **result.to_dict()}
        del record["frame"], record["time"]
        records.append(record)
        if output:
            target = prepare_output(out_dir / f"{path.stem}_annotated.png" if out_dir else output, overwrite)
            if not cv2.imwrite(str(target), draw_frame(image.copy(), result, overlay)):
                raise EmotionError(f"cannot write image {target} (use a .png or .jpg file name)")
    if json_path:
        target = prepare_output(json_path, overwrite)
        target.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return records


def demo_photo() -> Path:
    """The demo's photo: the portrait of Grace Hopper that matplotlib (a MediaPipe dependency) ships as sample data.

    A frontal face the tool reads right (neutral). ultralytics' `zidane.jpg`, used before, has a shouting face turned
    too far for the face stage (found in 2 of 72 frames) and a second one it misreads as sad.
    """
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def make_demo_clip(path: Path, frames: int = 72, fps: float = 24.0, overwrite: bool = False) -> Path:
    """Write a short clip (`frames` at `fps`) that slowly zooms into `demo_photo()`."""
    still = read_image(demo_photo())
    h, w = still.shape[:2]
    size = (640, 720)
    writer = VideoWriter(prepare_output(path, overwrite), fps, size)
    try:
        for i in range(frames):
            zoom = 1.0 + 0.25 * i / max(frames - 1, 1)
            cw, ch = w / zoom, h / zoom
            x0, y0 = (w - cw) * 0.5, (h - ch) * 0.3
            m = np.float32([[size[0] / cw, 0, -x0 * size[0] / cw], [0, size[1] / ch, -y0 * size[1] / ch]])
            writer.write(cv2.warpAffine(still, m, size, flags=cv2.INTER_LINEAR))
    finally:
        writer.close()
    return path


VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})


@dataclass
class BatchRow:
    """One video of a batch: its summary, or the reason it failed."""

    source: Path
    summary: VideoSummary | None = None
    error: str | None = None


def run_batch(
    recognizer: EmotionRecognizer,
    folder: str | Path,
    output_dir: str | Path | None,
    overwrite: bool = False,
    progress: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
) -> list[BatchRow]:
    """Process every video in `folder`, continuing past bad files: annotated into `output_dir`
    (<name>_annotated.mp4 + <name>_annotated_results.json), or without `output_dir` JSON only,
    <name>_results.json in the working folder."""
    folder = Path(folder)
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise EmotionError(f"no video files in {folder} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    output_dir = Path(output_dir) if output_dir is not None else None
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise EmotionError(
            f"the output for a folder of videos must be a folder, but {output_dir} is a file",
            fix="give a folder name",
        )
    rows = []
    for path in tqdm(videos, unit="video", desc="videos", disable=not progress):
        row = BatchRow(path)
        try:
            output = output_dir / f"{path.stem}_annotated.mp4" if output_dir is not None else None
            row.summary = run_video(recognizer, path, output, overwrite=overwrite, progress=False, overlay=overlay)
        except EmotionError as exc:
            row.error = str(exc)
        rows.append(row)
    return rows


def batch_table(rows: list[BatchRow]) -> list[str]:
    """The end-of-batch summary: one line per video with its outcome, frames, faces and seconds."""
    width = max(len(r.source.name) for r in rows)
    lines = [f"{'video':<{width}}  {'result':<9} {'frames':>7} {'faces':>7} {'seconds':>8}  reason"]
    for r in rows:
        s = r.summary
        if s:
            lines.append(f"{r.source.name:<{width}}  {'processed':<9} {s.frames:>7} {s.faces:>7} {s.seconds:>8.1f}")
        else:
            lines.append(f"{r.source.name:<{width}}  {'failed':<9} {'-':>7} {'-':>7} {'-':>8}  {r.error}")
    done = sum(r.summary is not None for r in rows)
    lines.append(f"{done} of {plural(len(rows), 'video')} processed")
    return lines
