"""Every frame source behind one factory: video files, cameras, streams and image lists, read on a capture thread.

`open_source(spec, policy)` opens what `spec` names and reads it on its own thread into a `FrameBuffer`: the
"lossless" policy hands over every frame of a file in order (the reader waits for the consumer, a few frames ahead),
the "latest" policy keeps only the newest frame (a live view never works on stale frames and latency does not grow).
Cameras and streams are always read under the latest policy: their frames cannot wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from emotion.errors import EmotionError
from emotion.io.files import VideoSource, image_files, read_image

Policy = Literal["lossless", "latest"]
LOSSLESS_DEPTH = 4  # frames decoded ahead of the consumer in the lossless policy


@dataclass(frozen=True)
class Captured:
    """One frame from a source."""

    index: int  # frame number in the source (file frame index; count of frames read for cameras and streams)
    time: float  # s, position in a file, or time since the first frame for cameras and streams
    captured_at: float  # time.perf_counter() right after the frame was read, for latency
    frame: np.ndarray  # BGR uint8


class FrameBuffer:
    """A bounded buffer of frames between the capture thread and the consumer.

    `put` with `wait` blocks while the buffer is full (lossless); without it the oldest unread frame is replaced
    (counted in `dropped`). `take` returns the oldest frame held, or None after `timeout` s.
    """

    def __init__(self, depth: int = 1):
        self._cond = threading.Condition()
        self._items: deque[Captured] = deque()
        self._depth = depth
        self._closed = False
        self.dropped = 0

    def put(self, item: Captured, wait: bool = False) -> bool:
        """Store `item`; False once the buffer is closed."""
        with self._cond:
            while wait and len(self._items) >= self._depth and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            if len(self._items) >= self._depth:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def take(self, timeout: float) -> Captured | None:
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and emptied: no frame will come any more."""
        with self._cond:
            return self._closed and not self._items


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


class FrameSource:
    """A camera, video file or stream read on its own thread into a `FrameBuffer` (see the module docstring).

    With `sync`, a file plays at its own frame rate (under the latest policy, frames the consumer is too slow for
    are skipped); without it every frame comes as fast as it is taken. A camera that stops delivering ends the source
    with `error`; a stream is reopened until `reconnect_timeout` s have passed without a frame. `on_decode(ms)` is
    told the time each file frame took to decode; `depth` is the buffer's size (default 4 lossless, 1 latest).
    """

    def __init__(
        self,
        source: str | int | Path,
        policy: Policy = "lossless",
        sync: bool = False,
        reconnect_timeout: float = 30.0,
        stall_timeout: float = 5.0,
        on_decode: Callable[[float], None] | None = None,
        depth: int | None = None,
    ):
        self.source = parse_source(source) if not isinstance(source, Path) else str(source)
        self.policy, self.sync = policy, sync
        self.reconnect_timeout, self.stall_timeout = reconnect_timeout, stall_timeout
        self.on_decode = on_decode
        self.buffer = FrameBuffer(depth or (LOSSLESS_DEPTH if policy == "lossless" else 1))
        self.error: str | None = None  # why the source stopped early
        self.status: str | None = None  # a passing condition to show, such as a reconnection
        self.reconnects = 0
        self.video: VideoSource | None = None
        self._cap: cv2.VideoCapture | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._open()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def _open(self) -> None:
        if isinstance(self.source, int):
            self.kind, self.name = "camera", f"camera {self.source}"
            self._cap = _quiet_open(self.source)
            if not self._cap.isOpened():
                raise EmotionError(
                    f"no camera at index {self.source}",
                    fix="connect a webcam, or open another camera index, a video file or a stream URL",
                    cli_fix="connect a webcam, or pass --source with another camera index, a video file or a stream URL",
                )
        elif "://" in self.source:
            self.kind, self.name = "stream", self.source
            self._cap = _quiet_open(self.source)
            if not self._cap.isOpened():
                raise EmotionError(f"cannot open the stream {self.source}", fix="check the URL and that the stream is up")
        else:
            self.kind = "file"
            self.video = VideoSource(self.source)
            self.name = self.video.info.path.name
        if self.video is not None:
            self.fps = self.video.info.fps
        else:
            fps = self._cap.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if 1 <= fps <= 240 else 30.0

    def start(self) -> FrameSource:
        """Start capturing (a synced file's clock starts now); calling it again does nothing."""
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()
        return self

    def read(self, timeout: float = 0.1) -> Captured | None:
        """The next frame (the newest one under the latest policy), or None if none came within `timeout` s."""
        return self.buffer.take(timeout)

    @property
    def finished(self) -> bool:
        return self.buffer.finished

    def pause(self, paused: bool) -> None:
        """Hold a file where it is (cameras and streams keep running: a live view just shows its last frame)."""
        if paused:
            self._running.clear()
        else:
            self._running.set()

    def _put(self, index: int, t: float, frame: np.ndarray) -> bool:
        wait = self.policy == "lossless" and self.kind == "file"
        return self.buffer.put(Captured(index, t, time.perf_counter(), frame), wait=wait)

    def _run(self) -> None:
        try:
            if self.video is not None:
                self._run_file()
            else:
                self._run_live()
        except Exception as exc:  # a broken decoder must end the run with a message, not hang it
            self.error = f"reading {self.name} failed: {exc}"
        finally:
            self.buffer.close()

    def _run_file(self) -> None:
        t0 = time.perf_counter()
        frames = iter(self.video)
        while True:
            started = time.perf_counter()
            item = next(frames, None)
            if item is None:
                return
            if self.on_decode is not None:
                self.on_decode((time.perf_counter() - started) * 1000.0)
            index, t, frame = item
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
            if not self._put(index, t, frame):
                return

    def _run_live(self) -> None:
        start, index, last_ok = None, 0, time.perf_counter()
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            now = time.perf_counter()
            if ok and frame is not None:
                start = now if start is None else start
                last_ok = now
                self.status = None
                if not self._put(index, now - start, frame):
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
        """Stop the capture thread and release the device or file (safe to call more than once)."""
        self._stop.set()
        self._running.set()
        self.buffer.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self._cap is not None:
            self._cap.release()
        if self.video is not None:
            self.video.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageList:
    """Still images (files, or folders standing for the images in them): the paths are listed at once, the images
    read one at a time as they are taken, an image that cannot be read given as its EmotionError instead."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = image_files(paths)
        self.name = f"{len(self.paths)} images"

    def __iter__(self) -> Iterator[tuple[Path, np.ndarray | EmotionError]]:
        for path in self.paths:
            try:
                yield path, read_image(path)
            except EmotionError as exc:
                yield path, exc


def open_source(
    spec: str | int | Path | Sequence[str | Path], policy: Policy = "lossless", sync: bool = False, **options
) -> FrameSource | ImageList:
    """The source `spec` names: a list of image paths or folders, or a camera index, stream URL or video file."""
    if isinstance(spec, (list, tuple)):
        return ImageList(spec)
    return FrameSource(spec, policy=policy, sync=sync, **options)
