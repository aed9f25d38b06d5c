"""The one streaming loop: source -> face stage -> model -> smoothing -> sinks, used by every mode.

`--video`, `--demo`, the batch over a folder, `--realtime --headless` and the real-time window all run `Pipeline.run`.
Threaded (files): decoding on the source's capture thread, the face stage on the calling thread, and the model,
smoothing, JSON/CSV and drawing on a model thread, with the video encoded on one more; bounded queues keep frame
order and memory flat. Inline (live views): everything after capture runs on the calling thread, so a window can
show each frame as soon as it is drawn.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emotion.errors import EmotionError
from emotion.interrupts import signals_held
from emotion.io.sinks import ResultSinks
from emotion.io.sources import Captured, FrameSource
from emotion.overlay import OverlayConfig, check_signals, draw_boxes, draw_frame
from emotion.recognizer import EmotionRecognizer
from emotion.results import FrameResult
from emotion.text import plural
from emotion.worker import OrderedWorker


@dataclass
class RunSummary:
    """What one run over a source produced, printed at the end and returned to API callers."""

    source: str
    live: bool = False  # a live view (the pipeline inline): frames may be skipped, latency is reported
    frames: int = 0  # frames processed
    frames_with_faces: int = 0
    faces: int = 0  # face detections over all frames
    dropped: int = 0  # frames a live source replaced before the loop could take them
    seconds: float = 0.0
    emotions: Counter = field(default_factory=Counter)  # largest face's emotion -> frames
    latency_ms: list[float] = field(default_factory=list)  # capture to done (to shown in a window), per frame
    stages_ms: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # indices of unreadable frames that were skipped
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why a live source stopped early
    nonfinite: int = 0  # face detections whose model outputs were NaN or infinite (written as null)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.faces += len(result.faces)
        self.nonfinite += sum(not face.finite for face in result.faces)
        if result.faces:
            self.frames_with_faces += 1
            if result.main_face.finite:
                self.emotions[result.main_face.emotion] += 1

    def latency(self) -> tuple[float, float]:
        """Median and 95th percentile of the capture-to-done latency in ms (0, 0 without frames)."""
        if not self.latency_ms:
            return 0.0, 0.0
        return float(np.median(self.latency_ms)), float(np.percentile(self.latency_ms, 95))

    def lines(self) -> list[str]:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stages_ms.items())
        with_faces = f"faces in {plural(self.frames_with_faces, 'frame')}"
        if self.live:
            med, p95 = self.latency()
            head = [
                f"{self.source}: {plural(self.frames, 'frame')} shown in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                f"{self.dropped} skipped to stay live, {with_faces}",
                f"  latency capture to display: median {med:.0f} ms, p95 {p95:.0f} ms",
            ]
        else:
            top = ", ".join(f"{k} {n / max(self.frames_with_faces, 1):.0%}" for k, n in self.emotions.most_common())
            head = [
                f"{self.source}: {plural(self.frames, 'frame')} in {self.seconds:.1f} s ({self.fps:.1f} fps), "
                f"{with_faces} ({plural(self.faces, 'face detection')})",
                f"  largest face's emotion: {top + ' of the frames with a face' if top else 'no face found'}",
            ]
        skipped = [f"  skipped {plural(len(self.skipped), 'unreadable frame')}: {_ranges(self.skipped)}"]
        return [
            *head,
            f"  ms per frame: {stages}",
            *(skipped if self.skipped else []),
            *([f"  warning: {nonfinite_warning(self.nonfinite)}"] if self.nonfinite else []),
            *[f"  {note}" for note in self.notes],
            *[f"  wrote {p}" for p in self.outputs],
        ]


def nonfinite_warning(faces: int) -> str:
    """The warning for face detections whose model outputs were NaN or infinite."""
    return (f"the model gave NaN or infinite outputs for {plural(faces, 'face detection')}, written as null: the "
            "weights are broken (retrain or use another checkpoint)")  # fmt: skip


def _ranges(indices: list[int]) -> str:
    """'3, 7-9, 12' for [3, 7, 8, 9, 12]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class Pipeline:
    """Runs a recognizer over a source into sinks (see the module docstring).

    `outputs` may change between frames in inline mode (the window starts and stops recordings). Hooks for a live
    view: `status()` gives the line drawn at the top of each frame, `on_frame(captured, result, annotated)` runs
    after each frame and `on_idle()` while no frame comes; either returns False to stop.
    """

    def __init__(
        self,
        recognizer: EmotionRecognizer,
        outputs: list[ResultSinks] | None = None,
        draw: bool = False,
        objects=None,
        overlay: OverlayConfig = OverlayConfig(),
        threaded: bool = True,
    ):
        if draw:
            check_signals(overlay, recognizer.face_config.signals)
        self.rec = recognizer
        self.outputs = list(outputs or [])
        self.draw = draw
        self.objects = objects  # an emotion.objects.ObjectDetector whose latest boxes are drawn, or None
        self.overlay = overlay
        self.threaded = threaded
        self.status: Callable[[], str] | None = None
        self.on_frame: Callable[[Captured, FrameResult, np.ndarray], bool] | None = None
        self.on_idle: Callable[[], bool] | None = None
        self.summary = RunSummary("")
        self._stop = False
        self._bar = None

    def run(self, source: FrameSource, max_frames: int | None = None, progress: bool = False) -> RunSummary:
        """Process `source` until it ends, a hook says stop, `max_frames`, or Ctrl-C; closes the outputs (not the
        source). Raises EmotionError for a video file that ends well before the frames it declares."""
        self.summary = summary = RunSummary(source.name, live=not self.threaded)
        summary.outputs += [p for out in self.outputs for p in out.paths]
        total = source.video.info.frame_count if source.video is not None and not summary.live else 0
        self._bar = tqdm(total=total or None, unit="frame", desc=source.name, disable=not progress)
        self._stop = False
        self.rec.reset()
        worker = OrderedWorker(self._finish, "model") if self.threaded else None
        t0 = time.perf_counter()
        try:
            self._loop(source, worker, max_frames)
        except BaseException:
            self._close(worker, t0, raise_error=False)
            raise
        self._close(worker, t0, raise_error=True)
        self._finish_summary(source)
        return summary

    def _close(self, worker: OrderedWorker | None, t0: float, raise_error: bool) -> None:
        """Finish the queued frames and close the outputs, with stop signals held so that a second Ctrl-C (or a
        SIGTERM/SIGHUP) cannot leave a half-written video; the frames still queued for encoding count in the time."""
        with signals_held():
            try:
                if worker is not None:
                    worker.close(raise_error)
                for out in self.outputs:
                    out.close(raise_error)
            finally:
                self.summary.seconds = time.perf_counter() - t0
                if worker is not None:
                    worker.close(raise_error=False)
                for out in self.outputs:
                    out.close(raise_error=False)
                self._bar.close()

    def _loop(self, source: FrameSource, worker: OrderedWorker | None, max_frames: int | None) -> None:
        source.start()
        handed = 0
        while not self._stop:
            cap = source.read(0.004 if self.on_idle is not None else 0.25)
            if cap is None:
                if source.finished or (self.on_idle is not None and not self.on_idle()):
                    return
                continue
            frame, faces = self.rec.detect(cap.frame)
            cap = dataclasses.replace(cap, frame=frame)  # the frame as BGR, as the face stage saw it
            if worker is not None:
                worker.put(cap, faces)
            else:
                self._finish(cap, faces)
            handed += 1
            if max_frames and handed >= max_frames:
                return

    def _finish(self, cap: Captured, faces: list) -> None:
        """Model, smoothing, sinks, drawing and the frame hook for one frame (on the model thread when threaded)."""
        result = self.rec.classify(cap.frame, faces, cap.index, cap.time)
        self.summary.add(result)
        image = cap.frame
        if self.draw:
            with self.rec.timer("draw"):
                if self.objects is not None:
                    self.objects.submit(image, cap.index)
                    draw_boxes(image, self.objects.boxes, self.objects.names)
                draw_frame(image, result, self.overlay, status=self.status() if self.status else None)
        with signals_held():  # inline on the main thread, a stop between the two writes lost the frame's video frame
            for out in self.outputs:
                out.write_result(result)
                if self.draw:
                    out.write_frame(image, cap.time)
        if self.on_frame is not None and not self.on_frame(cap, result, image):
            self._stop = True
        self.summary.latency_ms.append((time.perf_counter() - cap.captured_at) * 1000.0)
        self._bar.update(1)

    def _finish_summary(self, source: FrameSource) -> None:
        summary = self.summary
        summary.stages_ms = self.rec.timer.mean()
        summary.dropped = source.buffer.dropped
        summary.error = source.error
        video = source.video
        if video is None:
            return
        if source.error and not summary.live:
            raise EmotionError(source.error)
        summary.skipped = video.skipped
        if video.truncated and source.finished:  # the file ended by itself, not by a stop
            raise EmotionError(
                f"{video.info.path.name} ended after {video.frames_read} of {video.info.frame_count} frames: the file "
                "is truncated or corrupt",
                fix="re-download or re-encode it; results for the frames read are in "
                + ", ".join(str(p) for p in summary.outputs),
            )
