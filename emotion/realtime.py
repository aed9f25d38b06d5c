"""The real-time window (`main.py --realtime`): live emotion overlay on a camera, video file or stream.

A capture thread keeps only the newest frame (a one-frame buffer), so processing never works on stale frames and
latency does not grow; the loop runs the emotion pipeline on that frame, draws it, records it when asked and shows it.
Object boxes come from a background YOLO thread that the loop never waits for. `headless` runs the same loop
without a window.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from emotion.objects import ObjectConfig, ObjectDetector
from emotion.overlay import OverlayConfig, draw_boxes, draw_frame, draw_text_line
from emotion.recognizer import EmotionRecognizer
from emotion.results import FrameResult
from emotion.sinks import CsvWriter, JsonWriter, VideoWriter, prepare_output
from emotion.errors import EmotionError
from emotion.sources import VideoSource
from emotion.text import plural

def display_problem() -> str | None:
    """Why no window can open here, or None; checked first because OpenCV's Qt aborts the process without one."""
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "no display to open a window on (DISPLAY is not set)"
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return f"the display name DISPLAY={display} is not valid"
    if host not in ("", "unix"):
        try:
            socket.create_connection((host, 6000 + int(number)), timeout=2.0).close()
            return None
        except OSError:
            return f"cannot connect to the display DISPLAY={display}"
    for address in (f"/tmp/.X11-unix/X{number}", f"\0/tmp/.X11-unix/X{number}"):  # file, then Linux abstract socket
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2.0)
            try:
                s.connect(address)
                return None
            except OSError:
                continue
    return f"cannot connect to the display DISPLAY={display}"


HELP = "q/Esc quit  space pause  s screenshot  r record  o objects  h help"
KEY_ESC = 27


@dataclass(frozen=True)
class Captured:
    """One frame from the capture thread."""

    index: int  # frame number in the source (file frame index; count of frames read for cameras and streams)
    time: float  # s, position in a file, or time since the first frame for cameras and streams
    captured_at: float  # time.perf_counter() right after the frame was read, for latency
    frame: np.ndarray  # BGR uint8


class LatestFrame:
    """A one-frame buffer: `put` replaces an unread frame (counted in `dropped`), `take` returns the newest one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Captured | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: Captured, wait: bool = False) -> bool:
        """Store `item`; with `wait`, first block until the previous frame was taken (lossless). False once closed."""
        with self._cond:
            while wait and self._item is not None and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def take(self, timeout: float) -> Captured | None:
        """The newest unread frame, waiting at most `timeout` s for one; None when there is none."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and drained: no frame will come any more."""
        with self._cond:
            return self._closed and self._item is None


def parse_source(text: str | int) -> int | str:
    """A camera index for digits ('0', '1'), else the text itself (a video file or a stream URL)."""
    s = str(text).strip()
    return int(s) if s.isdigit() else s


def _quiet_open(target: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture without OpenCV's own log lines about missing cameras (we report problems ourselves)."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)
    try:
        return cv2.VideoCapture(target)
    finally:
        cv2.setLogLevel(level)


class FrameGrabber:
    """Reads a camera, a video file or a stream on its own thread into a `LatestFrame`.

    Files play at their own frame rate with `sync` (frames the loop is too slow for are skipped) or, without it,
    every frame as fast as the loop takes them. A camera that stops delivering ends the run with `error`; a stream
    is reopened until `reconnect_timeout` s have passed without a frame.
    """

    def __init__(self, source: str | int, sync: bool = True, reconnect_timeout: float = 30.0, stall_timeout: float = 5.0):
        self.source = parse_source(source)
        self.sync = sync
        self.reconnect_timeout = reconnect_timeout
        self.stall_timeout = stall_timeout
        self.buffer = LatestFrame()
        self.error: str | None = None  # why the source stopped early
        self.status: str | None = None  # a passing condition to show, such as a reconnection
        self.reconnects = 0
        self._video: VideoSource | None = None
        self._cap: cv2.VideoCapture | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        if isinstance(self.source, int):
            self.kind = "camera"
            self._cap = _quiet_open(self.source)
            if not self._cap.isOpened():
                raise EmotionError(
                    f"no camera at index {self.source}",
                    fix="connect a webcam, or open another camera index, a video file or a stream URL",
                    cli_fix="connect a webcam, or pass --source with another camera index, a video file or a stream URL",
                )
            self.name = f"camera {self.source}"
        elif "://" in self.source:
            self.kind = "stream"
            self._cap = _quiet_open(self.source)
            if not self._cap.isOpened():
                raise EmotionError(f"cannot open the stream {self.source} (check the URL and that the stream is up)")
            self.name = self.source
        else:
            self.kind = "file"
            self._video = VideoSource(self.source)
            self.name = self._video.info.path.name
        if self._video is not None:
            self.fps = self._video.info.fps
        else:
            fps = self._cap.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if 1 <= fps <= 240 else 30.0
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> "FrameGrabber":
        """Start capturing (a file's clock starts now); calling it again does nothing."""
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()
        return self

    def read(self, timeout: float = 0.1) -> Captured | None:
        """The newest frame not read yet, or None if none came within `timeout` s."""
        return self.buffer.take(timeout)

    @property
    def finished(self) -> bool:
        return self.buffer.finished

    def pause(self, paused: bool) -> None:
        """Hold a file where it is (cameras and streams keep running: the loop just shows the last frame)."""
        if paused:
            self._running.clear()
        else:
            self._running.set()

    def _run(self) -> None:
        try:
            if self._video is not None:
                self._run_file()
            else:
                self._run_live()
        except Exception as exc:  # a broken decoder must end the run with a message, not hang it
            self.error = f"reading {self.name} failed: {exc}"
        finally:
            self.buffer.close()

    def _run_file(self) -> None:
        t0 = time.perf_counter()
        for index, t, frame in self._video:
            if not self._running.is_set():
                held = time.perf_counter()
                while not self._running.wait(0.1) and not self._stop.is_set():
                    pass
                t0 += time.perf_counter() - held
            if self._stop.is_set():
                return
            if self.sync:
                delay = t0 + t - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    return
            if not self.buffer.put(Captured(index, t, time.perf_counter(), frame), wait=not self.sync):
                return

    def _run_live(self) -> None:
        start = None
        index = 0
        last_ok = time.perf_counter()
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            now = time.perf_counter()
            if ok and frame is not None:
                start = now if start is None else start
                last_ok = now
                self.status = None
                if not self.buffer.put(Captured(index, now - start, now, frame)):
                    return
                index += 1
                continue
            if self.kind == "camera":
                if now - last_ok > self.stall_timeout:
                    self.error = f"{self.name} stopped delivering frames (check that it is connected and not in use)"
                    return
                self._stop.wait(0.02)
                continue
            if not self._reconnect(last_ok):
                return

    def _reconnect(self, last_ok: float) -> bool:
        """Reopen a lost stream with growing pauses until it delivers again or `reconnect_timeout` runs out."""
        self._cap.release()
        wait = 0.25
        while not self._stop.is_set():
            if time.perf_counter() - last_ok > self.reconnect_timeout:
                self.error = f"the stream {self.name} was lost and did not come back within {self.reconnect_timeout:g} s"
                return False
            self.reconnects += 1
            self.status = f"stream lost, reconnecting (attempt {self.reconnects})"
            self._cap = _quiet_open(self.name)
            if self._cap.isOpened():
                return True
            self._stop.wait(wait)
            wait = min(wait * 2, 4.0)
        return False

    def close(self) -> None:
        self._stop.set()
        self._running.set()
        self.buffer.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self._cap is not None:
            self._cap.release()
        if self._video is not None:
            self._video.close()


class Recorder:
    """Annotated video plus its JSON (and CSV) of a live run; the video is padded with repeats to play in real time."""

    MAX_FILL = 1.0  # s, longest gap filled with copies of the previous frame (a pause is not replayed)

    def __init__(self, video: Path | None, json_path: Path | None, csv_path: Path | None, fps: float):
        self.video_path, self.json_path, self.csv_path = video, json_path, csv_path
        self.fps = fps
        self._writer: VideoWriter | None = None
        self._sinks = []
        try:
            self._sinks = ([JsonWriter(json_path)] if json_path else []) + ([CsvWriter(csv_path)] if csv_path else [])
        except OSError as exc:
            self.close()
            raise EmotionError(f"cannot write {exc.filename}: {exc.strerror} (choose another output path)") from None
        self._t0: float | None = None
        self._last_t = 0.0
        self.frames_written = 0

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.video_path, self.json_path, self.csv_path) if p]

    def write(self, annotated: np.ndarray, result: FrameResult, t: float) -> None:
        for sink in self._sinks:
            sink.write(result)
        if self.video_path is None:
            return
        h, w = annotated.shape[:2]
        if self._writer is None:
            self._writer = VideoWriter(self.video_path, self.fps, (w, h))
            self._t0 = self._last_t = t
        elif (w, h) != self._writer.size:
            annotated = cv2.resize(annotated, self._writer.size)
        if t - self._last_t > self.MAX_FILL:
            self._t0 += t - self._last_t - 1.0 / self.fps
        due = int(round((t - self._t0) * self.fps)) + 1
        for _ in range(max(due - self.frames_written, 1)):
            self._writer.write(annotated)
            self.frames_written += 1
        self._last_t = t

    def close(self) -> None:
        for sink in [*self._sinks, self._writer]:
            if sink is not None:
                sink.close()


@dataclass(frozen=True)
class RealtimeConfig:
    """How the live loop runs and what it writes."""

    headless: bool = False  # no window: run the same loop for servers, writing only the asked-for outputs
    output: Path | None = None  # annotated video of the whole session (.mp4 or .avi)
    json_path: Path | None = None  # per-frame JSON of the whole session
    csv_path: Path | None = None  # one CSV row per face per frame for the whole session
    overwrite: bool = True  # replace existing output files
    save_dir: Path = Path("captures")  # folder for screenshots (s) and recordings (r)
    objects: bool = False  # start with YOLO object boxes on (o toggles them)
    object_config: ObjectConfig = ObjectConfig()  # the YOLO model used for object boxes
    show_help: bool = True  # the key help line at the bottom (h toggles it)
    window: str = "emotion"  # window title
    max_frames: int | None = None  # stop after this many processed frames (None: until the source ends or q)
    progress: bool = True  # headless: a status line on stderr every few seconds


@dataclass
class RealtimeSummary:
    """What a live run did, printed at the end."""

    source: str
    frames: int = 0  # frames processed and shown
    frames_with_faces: int = 0
    faces: int = 0
    dropped: int = 0  # frames the capture replaced before the loop could take them
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)  # capture to display (to written, headless), per frame
    stages_ms: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why the source stopped early

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def latency(self) -> tuple[float, float]:
        """Median and 95th percentile of the capture-to-display latency in ms (0, 0 without frames)."""
        if not self.latency_ms:
            return 0.0, 0.0
        return float(np.median(self.latency_ms)), float(np.percentile(self.latency_ms, 95))

    def lines(self) -> list[str]:
        med, p95 = self.latency()
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stages_ms.items())
        return [
            f"{self.source}: {plural(self.frames, 'frame')} shown in {self.seconds:.1f} s ({self.fps:.1f} fps), "
            f"{self.dropped} skipped to stay live, faces in {plural(self.frames_with_faces, 'frame')}",
            f"  latency capture to display: median {med:.0f} ms, p95 {p95:.0f} ms",
            f"  ms per frame: {stages}",
            *[f"  {note}" for note in self.notes],
            *[f"  wrote {p}" for p in self.outputs],
        ]


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _unique(path: Path) -> Path:
    """`path`, or `path` with _2, _3, ... before the suffix when it exists."""
    n, p = 2, path
    while p.exists():
        p = path.with_name(f"{path.stem}_{n}{path.suffix}")
        n += 1
    return p


class RealtimeApp:
    """The live loop: newest frame -> emotion step -> draw -> record -> show -> keys."""

    def __init__(self, recognizer: EmotionRecognizer, grabber: FrameGrabber, config: RealtimeConfig = RealtimeConfig()):
        self.rec = recognizer
        self.grabber = grabber
        self.config = config
        self.summary = RealtimeSummary(grabber.name)
        self.paused = False
        self.show_help = config.show_help and not config.headless
        self.objects_on = config.objects
        self.detector: ObjectDetector | None = None
        self.session: Recorder | None = None
        self.recording: Recorder | None = None
        self._notice: tuple[str, float] | None = None
        self._object_error_shown = False
        self._fps = 0.0
        self._stage_ema: dict[str, float] = {}
        self._last_shown: np.ndarray | None = None
        self._last_result: FrameResult | None = None
        self._last_clock: float | None = None
        self._shown_frame: np.ndarray | None = None
        self._sized = False
        self._window_open = False
        self._shown_at = 0.0

    def run(self) -> RealtimeSummary:
        """Run until the source ends, q/Esc, the window is closed, `max_frames`, Ctrl-C or SIGTERM."""
        cfg = self.config
        self.rec.reset()
        t0 = time.perf_counter()
        try:
            if cfg.output or cfg.json_path or cfg.csv_path:
                video = prepare_output(cfg.output, cfg.overwrite) if cfg.output else None
                jpath = prepare_output(cfg.json_path, cfg.overwrite) if cfg.json_path else None
                cpath = prepare_output(cfg.csv_path, cfg.overwrite) if cfg.csv_path else None
                self.session = Recorder(video, jpath, cpath, self.grabber.fps)
                self.summary.outputs += self.session.paths
            if self.objects_on:
                self._start_objects()
            if not cfg.headless:
                self._open_window()
            self.grabber.start()
            self._loop()
        finally:
            self.summary.seconds = time.perf_counter() - t0
            self._shutdown()
        self.summary.stages_ms = self.rec.timer.mean()
        self.summary.dropped = self.grabber.buffer.dropped
        self.summary.error = self.grabber.error
        if self.detector is not None:
            if self.detector.error and not self._object_error_shown:
                print(self.detector.error, file=sys.stderr, flush=True)
            self.summary.notes.append(self.detector.summary())
        return self.summary

    def _loop(self) -> None:
        cfg = self.config
        next_report = time.perf_counter() + 5.0
        while True:
            if self.paused:
                if not self._show(self._last_shown, wait_ms=30):
                    return
                continue
            cap = self.grabber.read(timeout=0.004 if self._window_open else 0.25)
            if cap is None:
                if self.grabber.finished:
                    return
                stale = time.perf_counter() - self._shown_at > 0.1  # refresh notices while no frame comes
                if self._window_open and not self._show(self._last_shown if stale else None, wait_ms=1):
                    return
                continue
            annotated = self._process(cap)
            if not cfg.headless:
                if not self._show(annotated, wait_ms=1):
                    self._record_latency(cap)
                    return
            self._record_latency(cap)
            if cfg.max_frames and self.summary.frames >= cfg.max_frames:
                return
            if cfg.headless and cfg.progress and time.perf_counter() > next_report:
                next_report = time.perf_counter() + 5.0
                n = len(self._last_result.faces)
                print(f"frame {cap.index}: {plural(n, 'face')}, {self._fps:.1f} fps", file=sys.stderr, flush=True)

    def _record_latency(self, cap: Captured) -> None:
        self.summary.latency_ms.append((time.perf_counter() - cap.captured_at) * 1000.0)

    def _process(self, cap: Captured) -> np.ndarray:
        """Emotion step, overlay, object boxes and recording for one frame; returns the annotated frame."""
        result = self.rec.step(cap.frame, cap.index, cap.time)
        self.summary.frames += 1
        self.summary.faces += len(result.faces)
        self.summary.frames_with_faces += bool(result.faces)
        now = time.perf_counter()
        if self._last_clock is not None:
            rate = 1.0 / max(now - self._last_clock, 1e-6)
            self._fps = rate if self._fps == 0 else 0.9 * self._fps + 0.1 * rate
        self._last_clock = now
        self._last_result = result
        if self.detector is not None and self.detector.error and not self._object_error_shown:
            self._object_error_shown = True
            self._notify(self.detector.error, sys.stderr)
        img = cap.frame
        with self.rec.timer("draw"):
            if self.objects_on and self.detector is not None:
                self.detector.submit(img, cap.index)
                draw_boxes(img, self.detector.boxes, self.detector.names)
            draw_frame(img, result, OverlayConfig(), status=self._status())
        for recorder in (self.session, self.recording):
            if recorder is not None:
                recorder.write(img, result, cap.time)
        return img

    def _status(self) -> str:
        last = self.rec.timer.last
        for k in ("face", "model", "draw"):
            if k in last:
                old = self._stage_ema.get(k)
                self._stage_ema[k] = last[k] if old is None else 0.8 * old + 0.2 * last[k]
        lat = self.summary.latency_ms[-15:]
        e = self._stage_ema
        text = (
            f"{self._fps:.1f} fps | face {e.get('face', 0):.0f} ms  model {e.get('model', 0):.0f} ms  "
            f"draw {e.get('draw', 0):.0f} ms | latency {np.median(lat) if lat else 0:.0f} ms"
        )
        if self.objects_on and self.detector is not None:
            text += f" | objects {self.detector.mean_ms:.0f} ms" if self.detector.ready else " | objects loading"
        if self.recording is not None:
            text += " | REC"
        return text

    def _notify(self, text: str, stream=None) -> None:
        """A message shown under the status line for a few seconds, and printed (to stdout by default)."""
        self._notice = (text, time.perf_counter() + 4.0)
        print(text, file=stream or sys.stdout, flush=True)

    def _decorate(self, img: np.ndarray) -> np.ndarray:
        """Add the window-only lines (notices, pause mark, help) to a frame about to be shown."""
        notes = []
        if self._notice and time.perf_counter() < self._notice[1]:
            notes.append(self._notice[0])
        if self.grabber.status:
            notes.append(self.grabber.status)
        if self.paused:
            notes.append("PAUSED (space resumes)")
        for row, text in enumerate(notes, start=1):
            draw_text_line(img, text, row, (80, 220, 255))
        if self.show_help:
            draw_text_line(img, HELP, -1, (255, 255, 255))
        return img

    def _open_window(self) -> None:
        flags = cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
        try:
            cv2.namedWindow(self.config.window, flags)
        except cv2.error as exc:
            raise EmotionError(
                f"cannot open a window: {exc.err.strip() or 'no display'}",
                fix="use headless=True on machines without a screen",
                cli_fix="use --headless on machines without a screen",
            ) from None
        self._window_open = True

    def _show(self, img: np.ndarray | None, wait_ms: int) -> bool:
        """Show `img` (plus notices and help) and handle one key; False when the user quits or closes the window."""
        if self.config.headless:
            time.sleep(wait_ms / 1000.0)
            return True
        if img is not None:
            self._last_shown = img
            shown = self._decorate(img.copy())
            if not self._sized:
                h, w = img.shape[:2]
                k = min(1.0, 1600 / w, 900 / h)
                cv2.resizeWindow(self.config.window, int(w * k), int(h * k))
                self._sized = True
            with self.rec.timer("show"):
                cv2.imshow(self.config.window, shown)
            self._shown_frame = shown
            self._shown_at = time.perf_counter()
        key = cv2.waitKey(wait_ms)
        if self._shown_frame is not None and cv2.getWindowProperty(self.config.window, cv2.WND_PROP_VISIBLE) < 1:
            return False
        return self._key(key & 0xFF if key >= 0 else -1)

    def _key(self, key: int) -> bool:
        if key in (ord("q"), ord("Q"), KEY_ESC):
            return False
        if key == ord(" "):
            self.paused = not self.paused
            self.grabber.pause(self.paused)
        elif key in (ord("s"), ord("S")):
            self._screenshot()
        elif key in (ord("r"), ord("R")):
            self._toggle_recording()
        elif key in (ord("o"), ord("O")):
            self.objects_on = not self.objects_on
            if self.objects_on:
                self._start_objects()
            self._notify("object boxes " + ("on" if self.objects_on else "off"))
        elif key in (ord("h"), ord("H")):
            self.show_help = not self.show_help
        return True

    def _start_objects(self) -> None:
        if self.detector is None:
            self.detector = ObjectDetector(self.config.object_config)
        elif self.detector.error:
            self._object_error_shown = False

    def _screenshot(self) -> None:
        """Save what the window shows as PNG, with the frame's results as JSON beside it."""
        if self._last_shown is None:
            return
        folder = self.config.save_dir
        path = _unique(prepare_output(folder / f"emotion_{_stamp()}_frame{self._last_result.frame}.png"))
        if not cv2.imwrite(str(path), self._shown_frame if self._shown_frame is not None else self._last_shown):
            self._notify(f"could not save a screenshot in {folder}")
            return
        path.with_suffix(".json").write_text(json.dumps(self._last_result.to_dict(), indent=1) + "\n", encoding="utf-8")
        self.summary.outputs += [path, path.with_suffix(".json")]
        self._notify(f"saved screenshot {path}")

    def _toggle_recording(self) -> None:
        if self.recording is not None:
            self.recording.close()
            self._notify(f"recording saved: {self.recording.video_path}")
            self.recording = None
            return
        video = _unique(prepare_output(self.config.save_dir / f"emotion_{_stamp()}.mp4"))
        self.recording = Recorder(video, video.with_name(video.stem + "_results.json"), None, self.grabber.fps)
        self.summary.outputs += self.recording.paths
        self._notify(f"recording to {video} (r stops)")

    def _shutdown(self) -> None:
        for closer in (self.recording, self.session, self.detector, self.grabber):
            if closer is not None:
                closer.close()
        if self._window_open:
            cv2.destroyWindow(self.config.window)
            cv2.waitKey(1)


def run_realtime(
    recognizer: EmotionRecognizer, grabber: FrameGrabber, config: RealtimeConfig = RealtimeConfig()
) -> RealtimeSummary:
    """Run the live loop on an opened source until it ends or the user quits; closes the grabber."""
    return RealtimeApp(recognizer, grabber, config).run()
