"""Optional ultralytics YOLO object boxes (people and objects) computed on a background thread.

The caller offers frames with `submit` and draws whatever `boxes` holds: detection never blocks the emotion loop.
Weights are a `.pt` file (a bare name such as `yolov8n.pt` is downloaded by ultralytics where there is internet) or a
model `.yaml` (an untrained network built offline, for tests). A model that cannot be loaded is reported once in
`error` and the app goes on without boxes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion.configargs import ConfigError, option
from emotion.text import plural

NO_BOXES = np.zeros((0, 6), dtype=np.float32)


@dataclass(frozen=True)
class ObjectConfig:
    """Which YOLO model to run and how."""

    weights: str = option(  # .pt checkpoint (bare names are downloaded by ultralytics) or a model .yaml
        "YOLO .pt weights or a model .yaml (yolov8n.pt is downloaded by ultralytics on first use where there is "
        "internet; without it the run goes on without boxes)",
        "yolov8n.pt",
        name="--yolo-weights",
        metavar="PATH",
    )
    confidence: float = option("smallest object confidence shown", 0.25, name="--yolo-conf", metavar="X")  # [0, 1]
    image_size: int = 320  # px, the network's input side (smaller is faster; 640 finds smaller objects)
    min_interval: float = 0.15  # s, least time between two detections: leaves CPU to the emotion loop
    device: str = "cpu"  # torch device for YOLO: cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        if not 0 <= self.confidence <= 1:
            raise ConfigError("{} must be between 0 and 1", "confidence")


def _quiet_ultralytics() -> None:
    """No start-up network probes, analytics or pip auto-installs, and no log lines from ultralytics."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")


def _check_weights(weights: str) -> None:
    """A path with a folder must exist; bare names may be ultralytics' own (`yolov8n.yaml`, downloadable `.pt`)."""
    p = Path(weights)
    if p.suffix.lower() not in (".pt", ".yaml", ".yml"):
        raise ValueError(f"unsupported YOLO weights {weights} (give a .pt file or a model .yaml)")
    if p.exists():
        return
    if p.parent != Path("."):
        raise FileNotFoundError(f"{weights} not found (check the path)")


def import_yolo():
    """Import ultralytics' YOLO class and what building and running a model imports later (about 1.5 s).

    Call it on the main thread, as native libraries load then. Triton (a GPU compiler pulled in by torch._dynamo,
    which ultralytics imports) is hidden: loading it after MediaPipe has run crashes the process (segfault, measured
    with torch 2.14 and mediapipe 0.10.21), and YOLO does not need it.
    """
    _quiet_ultralytics()
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # an import of triton now raises ImportError, which torch treats as "no triton"
    import torch._dynamo  # noqa: F401
    import torchvision  # noqa: F401
    import ultralytics.models.yolo.detect.predict  # noqa: F401
    import ultralytics.nn.tasks  # noqa: F401
    from ultralytics import YOLO

    return YOLO


def load_yolo(weights: str):
    """Build an ultralytics YOLO model from a .pt or .yaml; raises an exception with a short reason on failure."""
    _check_weights(weights)
    return import_yolo()(weights)


class ObjectDetector:
    """YOLO on a background thread: the newest submitted frame is detected; `boxes` are the latest results.

    Create it on the main thread (it imports ultralytics there, about a second); loading the weights, which may
    download them, and every detection happen on the thread.
    """

    def __init__(self, config: ObjectConfig = ObjectConfig()):
        import_yolo()
        self.config = config
        self.names: dict[int, str] = {}
        self.error: str | None = None  # why the model could not be loaded, once it is known
        self.ready = False  # the model is loaded
        self.runs = 0  # detections done
        self.total_ms = 0.0  # time spent in detections
        self.frame_index = -1  # index of the frame the current boxes come from
        self._boxes = NO_BOXES
        self._pending: tuple[int, np.ndarray] | None = None
        self._busy = True  # until the model is loaded, frames are not taken
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="yolo", daemon=True)
        self._thread.start()

    @property
    def boxes(self) -> np.ndarray:
        """The latest detections as rows of (x1, y1, x2, y2, confidence, class id), px in the frame."""
        return self._boxes

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.runs if self.runs else 0.0

    def submit(self, frame: np.ndarray, index: int = 0) -> bool:
        """Offer a frame; it is copied and taken only when the detector is idle. Returns whether it was taken."""
        with self._lock:
            if self._busy or self._stop:
                return False
            self._pending = (index, frame.copy())
            self._busy = True
            self._wake.notify()
            return True

    def wait(self, timeout: float) -> bool:
        """Block until the model is loaded and idle (or failed), at most `timeout` s; for batch runs and tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.error or (self.ready and not self._busy):
                    return True
            time.sleep(0.01)
        return False

    def _load(self) -> object | None:
        try:
            model = load_yolo(self.config.weights)
            self.names = {int(k): str(v) for k, v in model.names.items()}
            blank = np.zeros((self.config.image_size, self.config.image_size, 3), dtype=np.uint8)
            model.predict(blank, imgsz=self.config.image_size, verbose=False, device=self.config.device)  # warm-up
            return model
        except Exception as exc:  # any failure means: no boxes, and one clear line for the user
            reason = " ".join(str(exc).replace("❌", "").split()) or type(exc).__name__
            hint = " (without internet, copy the .pt file here or pass --yolo-weights PATH)" if "ownload" in reason else ""
            self.error = f"object boxes off: cannot load YOLO weights {self.config.weights}: {reason}{hint}"
            return None

    def _run(self) -> None:
        model = self._load()
        if model is None:
            return
        with self._lock:
            self.ready, self._busy = True, False
        last = 0.0
        while True:
            with self._lock:
                while self._pending is None and not self._stop:
                    self._wake.wait(0.5)
                if self._stop:
                    return
                index, frame = self._pending
                self._pending = None
            pause = self.config.min_interval - (time.monotonic() - last)
            if pause > 0:
                time.sleep(pause)
            last = time.monotonic()
            t0 = time.perf_counter()
            try:
                result = model.predict(
                    frame, imgsz=self.config.image_size, conf=self.config.confidence, verbose=False, device=self.config.device
                )[0]
                boxes = result.boxes.data.cpu().numpy().astype(np.float32) if result.boxes is not None else NO_BOXES
            except Exception as exc:
                self.error = f"object boxes off: YOLO failed on a frame: {exc}"
                return
            with self._lock:
                self._boxes, self.frame_index = boxes, index
                self.runs += 1
                self.total_ms += (time.perf_counter() - t0) * 1000.0
                self._busy = False

    def summary(self) -> str:
        """One line for the end-of-run report."""
        if self.error:
            return self.error
        return f"objects: {plural(self.runs, 'detection')}, {self.mean_ms:.0f} ms each ({self.config.weights})"

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=2.0)
