"""Capture-to-display latency of `main.py --realtime` in a real window (Xvfb), and the README screenshot.

    python -m benchmarks.realtime_latency                          # Wolfgang clip at its own frame rate
    python -m benchmarks.realtime_latency --headless               # same loop without a window
    python -m benchmarks.realtime_latency --screenshot docs/screenshot.png --at-frame 100

Latency runs from the moment the capture thread has a decoded frame to the moment the annotated frame has been
handed to the window (imshow plus its event loop), per frame; the app prints median and p95 at the end. Needs Xvfb
and xdotool for the window (apt-get install xvfb xdotool).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support import ROOT, SHARED, start_xvfb

CLIP = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"


def frames_in(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def key(display: str, window: str, name: str) -> None:
    subprocess.run(["xdotool", "key", "--window", window, name], env={**os.environ, "DISPLAY": display},
                   capture_output=True, timeout=30)


def small_png(src: Path, dst: Path, limit: int = 300_000) -> None:
    """Write `src` to `dst` as a PNG under `limit` bytes (palette-quantised if the full-colour PNG is larger)."""
    from PIL import Image

    image = Image.open(src).convert("RGB")
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.save(dst, optimize=True)
    if dst.stat().st_size > limit:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dst, optimize=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(CLIP), help="video file (default: the shared Wolfgang clip)")
    p.add_argument("--frames", type=int, default=400, help="window: quit after about this many processed frames")
    p.add_argument("--headless", action="store_true", help="measure the loop without a window")
    p.add_argument("--objects", metavar="WEIGHTS", help="also run YOLO object boxes with these weights")
    p.add_argument("--screenshot", type=Path, help="save the window at --at-frame to this PNG (< 300 KB)")
    p.add_argument("--at-frame", type=int, default=100, help="frame to take the screenshot at")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="realtime_latency_"))
    cmd = [sys.executable, str(ROOT / "main.py"), "--realtime", "--source", args.source, "--json",
           str(work / "live.json"), "--save-dir", str(work), "--no-progress"]
    cmd += ["--objects", "--yolo-weights", args.objects] if args.objects else []
    server, display = (None, None) if args.headless else start_xvfb("1920x1080x24")
    env = {**os.environ, "DISPLAY": display} if display else {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.Popen(cmd + (["--headless"] if args.headless else []), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=work)
    try:
        window = None
        while window is None and not args.headless and proc.poll() is None:
            out = subprocess.run(["xdotool", "search", "--name", "^emotion$"], env=env, capture_output=True, text=True)
            window = out.stdout.split()[-1] if out.stdout.split() else None
            time.sleep(0.2)
        shot_taken = args.screenshot is None
        while proc.poll() is None:
            n = frames_in(work / "live.json")
            if not shot_taken and n >= args.at_frame:
                key(display, window, "s")
                shot_taken = True
            if n >= args.frames and window:  # headless runs play the whole clip
                key(display, window, "q")
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None:
            server.terminate()
    match = re.search(r"median (\d+) ms, p95 (\d+) ms", out)
    if not match:
        print(out, err, file=sys.stderr)
        return 1
    first = next(line for line in out.splitlines() if "frames shown" in line)
    mode = "headless (capture to written)" if args.headless else "window (capture to display)"
    print(f"{mode}: median {match[1]} ms, p95 {match[2]} ms; {first}")
    if args.screenshot:
        shots = sorted(work.glob("emotion_*.png"))
        if not shots:
            print("no screenshot was saved", file=sys.stderr)
            return 1
        small_png(shots[0], args.screenshot)
        print(f"wrote {args.screenshot} ({args.screenshot.stat().st_size // 1000} KB) from {shots[0].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
