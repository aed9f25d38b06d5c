"""The real-time window (`main.py --realtime`): the pipeline's live loop shown in a window, with keys and a status line.

The source keeps only its newest frame (the latest-frame policy), so the window never shows stale frames and latency
does not grow; the pipeline runs inline so each frame is shown as soon as it is drawn. Object boxes come from a
background YOLO thread that the loop never waits for. `headless` runs the same loop without a window.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from emotion.errors import EmotionError
from emotion.io.sinks import ResultSinks, prepare_output
from emotion.io.sources import Captured, FrameSource
from emotion.app.config import RealtimeConfig
from emotion.objects import ObjectDetector
from emotion.overlay import draw_text_line
from emotion.pipeline import Pipeline, RunSummary
from emotion.recognizer import EmotionRecognizer
from emotion.results import FrameResult
from emotion.text import plural

HELP = "q/Esc quit  space pause  s screenshot  r record  o objects  b/p/g signals  h help"
SIGNAL_KEYS = {"b": "blendshapes", "p": "pose", "g": "gaze"}  # keys that toggle what --show draws
KEY_ESC = 27


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
    """The window around the pipeline's live loop: show each frame, keys, status line, screenshots, recordings."""

    def __init__(self, recognizer: EmotionRecognizer, source: FrameSource, config: RealtimeConfig = RealtimeConfig()):
        self.rec = recognizer
        self.source = source
        self.config = config
        self.pipeline = Pipeline(recognizer, draw=True, overlay=config.overlay, threaded=False)
        self.pipeline.status = self._status
        self.pipeline.on_frame = self._on_frame
        if not config.headless:
            self.pipeline.on_idle = self._on_idle
        self.paused = False
        self.show_help = config.show_help and not config.headless
        self.objects_on = config.objects
        self.detector: ObjectDetector | None = None
        self.recording: ResultSinks | None = None
        self._outputs: list[Path] = []
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
        self._next_report = 0.0

    def run(self) -> RunSummary:
        """Run until the source ends, q/Esc, the window is closed, `max_frames`, Ctrl-C or SIGTERM."""
        cfg = self.config
        try:
            if cfg.output or cfg.json_path or cfg.csv_path:
                sinks = ResultSinks.create(cfg.output, cfg.json_path, cfg.csv_path, self.source.fps, cfg.overwrite,
                                           realtime=True, signals=self.rec.face_config.signals)  # fmt: skip
                self.pipeline.outputs.append(sinks)
            if self.objects_on:
                self._start_objects()
            if not cfg.headless:
                self._open_window()
            self._next_report = time.perf_counter() + 5.0
            summary = self.pipeline.run(self.source, max_frames=cfg.max_frames)
        finally:
            self._shutdown()
        summary.outputs += self._outputs
        if self.detector is not None:
            if self.detector.error and not self._object_error_shown:
                print(self.detector.error, file=sys.stderr, flush=True)
            summary.notes.append(self.detector.summary())
        return summary

    def _on_frame(self, cap: Captured, result: FrameResult, annotated: np.ndarray) -> bool:
        now = time.perf_counter()
        if self._last_clock is not None:
            rate = 1.0 / max(now - self._last_clock, 1e-6)
            self._fps = rate if self._fps == 0 else 0.9 * self._fps + 0.1 * rate
        self._last_clock = now
        self._last_result = result
        if self.detector is not None and self.detector.error and not self._object_error_shown:
            self._object_error_shown = True
            self._notify(self.detector.error, sys.stderr)
        if self.config.headless:
            if self.config.progress and now > self._next_report:
                self._next_report = now + 5.0
                faces = plural(len(result.faces), "face")
                print(f"frame {cap.index}: {faces}, {self._fps:.1f} fps", file=sys.stderr, flush=True)
            return True
        return self._show(annotated, wait_ms=1) and self._wait_while_paused()

    def _on_idle(self) -> bool:
        """No new frame yet: keep the window responsive (and refresh its notices now and then)."""
        stale = time.perf_counter() - self._shown_at > 0.1
        return self._show(self._last_shown if stale else None, wait_ms=1) and self._wait_while_paused()

    def _wait_while_paused(self) -> bool:
        while self.paused:
            if not self._show(self._last_shown, wait_ms=30):
                return False
        return True

    def _status(self) -> str:
        last = self.rec.timer.last
        for k in ("face", "model", "draw"):
            if k in last:
                old = self._stage_ema.get(k)
                self._stage_ema[k] = last[k] if old is None else 0.8 * old + 0.2 * last[k]
        lat = self.pipeline.summary.latency_ms[-15:]
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
        if self.source.status:
            notes.append(self.source.status)
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
            self.source.pause(self.paused)
        elif key in (ord("s"), ord("S")):
            self._screenshot()
        elif key in (ord("r"), ord("R")):
            self._toggle_recording()
        elif key in (ord("o"), ord("O")):
            self.objects_on = not self.objects_on
            if self.objects_on:
                self._start_objects()
            self.pipeline.objects = self.detector if self.objects_on else None
            self._notify("object boxes " + ("on" if self.objects_on else "off"))
        elif key in (ord("h"), ord("H")):
            self.show_help = not self.show_help
        elif 0 <= key < 128 and chr(key).lower() in SIGNAL_KEYS:
            self._toggle_signal(SIGNAL_KEYS[chr(key).lower()])
        return True

    def _toggle_signal(self, name: str) -> None:
        """Draw one face signal (`blendshapes`, `pose` or `gaze`) or stop drawing it, when the face stage computes them."""
        if not self.rec.face_config.signals:
            self._notify(f"no {name} to show: the face signals are off")
            return
        overlay = self.pipeline.overlay
        on = name not in overlay.show
        show = (*overlay.show, name) if on else tuple(n for n in overlay.show if n != name)
        self.pipeline.overlay = dataclasses.replace(overlay, show=show)
        self._notify(f"{name} {'on' if on else 'off'}")

    def _start_objects(self) -> None:
        if self.detector is None:
            self.detector = ObjectDetector(self.config.object_config)
        elif self.detector.error:
            self._object_error_shown = False
        self.pipeline.objects = self.detector

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
        self._outputs += [path, path.with_suffix(".json")]
        self._notify(f"saved screenshot {path}")

    def _toggle_recording(self) -> None:
        if self.recording is not None:
            self.recording.close()
            self.pipeline.outputs.remove(self.recording)
            self._notify(f"recording saved: {self.recording.video_path}")
            self.recording = None
            return
        video = _unique(prepare_output(self.config.save_dir / f"emotion_{_stamp()}.mp4"))
        json_path = video.with_name(video.stem + "_results.json")
        self.recording = ResultSinks.create(video, json_path, None, self.source.fps, overwrite=True, realtime=True)
        self.pipeline.outputs.append(self.recording)
        self._outputs += self.recording.paths
        self._notify(f"recording to {video} (r stops)")

    def _shutdown(self) -> None:
        for closer in (self.recording, self.detector, self.source):
            if closer is not None:
                closer.close()
        if self._window_open:
            cv2.destroyWindow(self.config.window)
            cv2.waitKey(1)


def run_realtime(
    recognizer: EmotionRecognizer, source: FrameSource, config: RealtimeConfig = RealtimeConfig()
) -> RunSummary:
    """Run the live loop on an opened source until it ends or the user quits; closes the source."""
    return RealtimeApp(recognizer, source, config).run()
