"""What the tests (and the benchmarks) share: where the shared data is, the real command line in a subprocess and
its error contract, small clips, and a private Xvfb display with xdotool."""

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared test data not found at {SHARED}")


def cli(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """`python main.py ARGS...`, capturing text output."""
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        **kwargs,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 2, exactly one line on stderr starting with 'error:' and containing `words`, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def start_until(*args, json_path, frames: int = 100, timeout: float = 120) -> subprocess.Popen:
    """`python main.py ARGS...` started in the background, returned once `json_path` holds `frames` frames."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if json_path.exists() and json_path.read_text().count('"frame"') >= frames:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return proc


def count_frames(video) -> int:
    """Frames that can actually be decoded from a video file (not what its header claims)."""
    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def write_clip(path, frames: int = 30, size=(160, 120), fps: float = 10) -> None:
    """A small MJPG clip of flat grey frames (no faces) for tests about files rather than faces."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 8) % 256, np.uint8))
    writer.release()


def xdotool(display: str, *args) -> str:
    """Run xdotool on `display`; its standard output."""
    out = subprocess.run(
        ["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def start_xvfb(screen: str = "1280x800x24") -> tuple[subprocess.Popen, str]:
    """Xvfb on a random free display number (low numbers may be taken by other sessions on the same machine)."""
    for _ in range(10):
        display = f":{random.randint(200, 5000)}"
        if Path(f"/tmp/.X{display[1:]}-lock").exists():
            continue
        server = subprocess.Popen(
            ["Xvfb", display, "-screen", "0", screen, "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while server.poll() is None and time.monotonic() < deadline:
            if xdotool(display, "getdisplaygeometry"):
                return server, display
            time.sleep(0.1)
        server.kill()
        server.wait()
    raise RuntimeError("could not start Xvfb (apt-get install xvfb xdotool)")


def probe_video(path: Path) -> dict:
    """The first video stream of a file as FFmpeg (PyAV) reads it: codec name, frame count, size, fps, seconds."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "codec": stream.codec_context.name,
            "frames": stream.frames,
            "size": (stream.width, stream.height),
            "fps": float(stream.average_rate),
            "seconds": float(stream.duration * stream.time_base),
        }


def read_frames(path) -> list[np.ndarray]:
    """Every frame OpenCV decodes from a video file."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames
