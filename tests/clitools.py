"""Running the real command line in a subprocess, as a user would, and checking its error contract."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


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


def write_clip(path, frames: int = 30, size=(160, 120)) -> None:
    """A small MJPG clip of flat grey frames (no faces) for tests about files rather than faces."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 8) % 256, np.uint8))
    writer.release()
