"""Memory stays flat over long videos: `python -m benchmarks.memory` prints peak RSS for a video and a 10x longer one.

Each run is the real command line (`main.py --video ...`) in a new process; its peak RSS comes from the kernel
(wait4's ru_maxrss) and its RSS over time from /proc. The long video is the short one played 10 times in a row,
written to a temporary folder. Target: the 10x longer video grows peak RSS by less than 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

from benchmarks.run import read_frames
from tests.support import ROOT, SHARED

VIDEO = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
LIMIT_MB = 50.0


def repeated_video(source: Path, times: int, target: Path) -> Path:
    """`source` played `times` times in a row, as one MPEG-4 file."""
    frames = read_frames(source)
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(times):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return target


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def measure(args: list[str], sample_every: float = 0.5) -> dict:
    """Run `main.py ARGS` to the end: peak RSS (MB), seconds, and RSS samples over time."""
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    command = [sys.executable, str(ROOT / "main.py"), *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(sample_every):
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append((round(time.perf_counter() - t0, 1), round(rss, 1)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"main.py {' '.join(args)} failed ({proc.returncode}): {stderr.strip()}")
    return {
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "seconds": time.perf_counter() - t0,
        "rss_samples": samples,
        "summary": stdout.strip().splitlines()[0] if stdout.strip() else "",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--times", type=int, default=10, help="how many times longer the long video is (default: 10)")
    p.add_argument("--video-output", action="store_true", help="also write the annotated video (--output)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    a = p.parse_args()
    if not VIDEO.is_file():
        raise SystemExit(f"the memory test needs {VIDEO} (the shared test data beside the repository)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        long = repeated_video(VIDEO, a.times, folder / f"x{a.times}.mp4")
        for name, path in (("short", VIDEO), (f"x{a.times}", long)):
            args = ["--video", path, "--json", folder / f"{name}.json", "--no-progress", "--overwrite"]
            if a.video_output:
                args += ["--output", folder / f"{name}_annotated.mp4"]
            r = measure([str(x) for x in args])
            frames = len(json.loads((folder / f"{name}.json").read_text()))
            results[name] = {**r, "frames": frames}
            trace = ", ".join(f"{rss:.0f}" for _, rss in r["rss_samples"][:: max(1, len(r["rss_samples"]) // 12)])
            print(f"{name:>5}: {frames} frames in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.1f} MB "
                  f"(RSS over the run, MB: {trace})", flush=True)
    growth = results[f"x{a.times}"]["peak_rss_mb"] - results["short"]["peak_rss_mb"]
    verdict = "within" if growth < LIMIT_MB else "OVER"
    print(f"peak RSS growth for a {a.times}x longer video: {growth:+.1f} MB ({verdict} the {LIMIT_MB:.0f} MB target)")
    if a.json:
        a.json.write_text(json.dumps({"growth_mb": growth, "runs": results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
