"""What the tests (and the benchmarks) share: where the shared data is, the real command line in a subprocess and
its error contract, small clips, a private Xvfb display with xdotool, and the face-recall cases (the zooming
zidane.jpg clip, images without faces, a mosaic of 20 faces)."""

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


def torchrun(*args, cwd: Path, processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N main.py ARGS...` on a free local port, one thread per process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes)]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(port), str(ROOT / "main.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def synthetic_training(folder: Path, synthetic: tuple[Path, Path], **settings):
    """A quiet one-thread TrainConfig on a synthetic (manifest, cache dir) pair, its checkpoints and runs in `folder`;
    `settings` add to or replace the defaults."""
    from emotion.training.train import TrainConfig

    manifest, cache = synthetic
    values = dict(
        data=str(manifest),
        cache_dir=str(cache),
        models_dir=str(folder / "models"),
        runs_dir=str(folder / "runs"),
        warmup_epochs=0.5,
        threads=1,
        progress=False,
    )
    return TrainConfig(**{**values, **settings})


def assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit code 2, exactly one line on stderr starting with 'error:' and containing `words`, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def signals_args(on: bool) -> list[str]:
    """The command-line arguments that turn the face signals on or off, whichever FaceConfig's default is (the flag
    is --signals while they default to off, --no-signals once they default to on)."""
    import dataclasses

    from emotion.configargs import option_name
    from emotion.face import FaceConfig

    field = next(f for f in dataclasses.fields(FaceConfig) if f.name == "signals")
    return [] if field.default == on else [option_name(field)]


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


def zidane_frames(frames: int = 72) -> list[np.ndarray]:
    """The clip the demo used to make: 72 frames, 960x540, slowly zooming into ultralytics' `zidane.jpg`."""
    import ultralytics

    from emotion.jobs import zoom_frames

    still = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"))
    return list(zoom_frames(still, frames, (960, 540), focus_x=0.55))


def nonface_images(count: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Images without a face: noise, smooth noise, stripes, shapes, text and blurred colour fields."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h, w = int(rng.integers(120, 720)), int(rng.integers(120, 960))
        kind = i % 5
        if kind == 0:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            small = rng.integers(0, 256, (max(h // 40, 2), max(w // 40, 2), 3), dtype=np.uint8)
            image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        elif kind == 2:
            period = int(rng.integers(4, 40))
            stripes = ((np.arange(w) // period) % 2 * 255).astype(np.uint8)
            image = np.repeat(np.tile(stripes, (h, 1))[:, :, None], 3, axis=2)
        elif kind == 3:
            image = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
            for _ in range(12):
                center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                color = tuple(int(c) for c in rng.integers(0, 256, 3))
                cv2.circle(image, center, int(rng.integers(5, max(6, min(h, w) // 3))), color, -1)
        else:
            image = np.full((h, w, 3), 235, np.uint8)
            for row in range(20, h, 30):
                cv2.putText(image, "emotion recall " * 4, (5, row), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 20), 2)
        images.append(image)
    return images


def crowd_frames(faces: int, frames: int) -> list[np.ndarray]:
    """A synthetic clip of `faces` real faces tiled from the shared photos, drifting by a pixel per frame."""
    from emotion.face import FaceAnalyzer, FaceConfig
    from emotion.io.files import read_image

    tiles = []
    with FaceAnalyzer(FaceConfig(max_faces=20), static=True) as analyzer:
        for name in sorted(p.name for p in (SHARED / "images").iterdir()):
            image = read_image(SHARED / "images" / name)
            for face in analyzer(image):
                x, y, w, h = face.box
                side = int(max(w, h) * 1.5)
                cx, cy = x + w // 2, y + h // 2
                x0, y0 = max(cx - side // 2, 0), max(cy - side // 2, 0)
                tile = image[y0 : y0 + side, x0 : x0 + side]
                if min(tile.shape[:2]) >= 48:
                    tiles.append(cv2.resize(tile, (160, 160), interpolation=cv2.INTER_AREA))
    cols = 5
    rows = -(-faces // cols)
    canvas = np.full((rows * 180 + 40, cols * 180 + 40, 3), 90, np.uint8)
    for i in range(faces):
        r, c = divmod(i, cols)
        canvas[20 + r * 180 : 20 + r * 180 + 160, 20 + c * 180 : 20 + c * 180 + 160] = tiles[i % len(tiles)]
    shifts = [np.float32([[1, 0, (i % 8) - 4], [0, 1, (i % 6) - 3]]) for i in range(frames)]
    return [cv2.warpAffine(canvas, m, canvas.shape[1::-1], borderMode=cv2.BORDER_REPLICATE) for m in shifts]
