"""Memory stays flat over long videos and many photos: `python -m benchmarks.memory` prints peak RSS for a video and a
10x longer one, then for `--image` over 20 and 200 photos.

Each run is the real command line (`main.py --video ...`, `main.py --image ...`) in a new process; its peak RSS comes
from the kernel (wait4's ru_maxrss) and its RSS over time from /proc. The long video is the short one played 10 times
in a row, the photos are copies of the shared photos, all written to a temporary folder. Target: the 10x longer video,
and 10x more photos, grow peak RSS by less than 50 MB.
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

import shutil

import cv2

from benchmarks.run import read_frames
from tests.support import ROOT, SHARED

VIDEO = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
PHOTOS = SHARED / "images"
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


def photo_folder(count: int, target: Path) -> Path:
    """`count` photos in `target`: the shared photos copied round-robin under new names."""
    sources = sorted(PHOTOS.iterdir())
    target.mkdir()
    for i in range(count):
        source = sources[i % len(sources)]
        shutil.copyfile(source, target / f"{i:04d}{source.suffix}")
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


def video_runs(folder: Path, times: int, video_output: bool) -> tuple[dict, float]:
    """The video and its `times` times longer copy: their runs, and the peak RSS growth (MB)."""
    results = {}
    long = repeated_video(VIDEO, times, folder / f"x{times}.mp4")
    for name, path in (("short", VIDEO), (f"x{times}", long)):
        args = ["--video", path, "--json", folder / f"{name}.json", "--no-progress", "--overwrite"]
        if video_output:
            args += ["--output", folder / f"{name}_annotated.mp4"]
        r = measure([str(x) for x in args])
        frames = len(json.loads((folder / f"{name}.json").read_text()))
        results[name] = {**r, "frames": frames}
        trace = ", ".join(f"{rss:.0f}" for _, rss in r["rss_samples"][:: max(1, len(r["rss_samples"]) // 12)])
        print(f"{name:>5}: {frames} frames in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.1f} MB "
              f"(RSS over the run, MB: {trace})", flush=True)
    return results, results[f"x{times}"]["peak_rss_mb"] - results["short"]["peak_rss_mb"]


def photo_runs(folder: Path, counts: list[int]) -> tuple[dict, float]:
    """`--image` over folders of `counts` photos with JSON and annotated copies: the runs, and the peak RSS growth."""
    results = {}
    for count in counts:
        out = folder / f"photos{count}.json"
        args = ["--image", photo_folder(count, folder / f"photos{count}"), "--json", out,
                "--output", folder / f"annotated{count}"]
        r = measure([str(x) for x in args])
        results[f"photos{count}"] = {**r, "images": len(json.loads(out.read_text()))}
        print(f"{count:>5} photos: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.1f} MB", flush=True)
    return results, results[f"photos{counts[-1]}"]["peak_rss_mb"] - results[f"photos{counts[0]}"]["peak_rss_mb"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["video", "photos"], help="run only the video or only the photo comparison")
    p.add_argument("--times", type=int, default=10, help="how many times longer the long video is (default: 10)")
    p.add_argument("--video-output", action="store_true", help="also write the annotated video (--output)")
    p.add_argument("--photos", type=int, nargs=2, default=[20, 200], metavar=("FEW", "MANY"),
                   help="photo counts of the two --image runs (default: 20 200)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    a = p.parse_args()
    if not VIDEO.is_file() or not PHOTOS.is_dir():
        raise SystemExit(f"the memory test needs {VIDEO} and {PHOTOS} (the shared test data beside the repository)")
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        comparisons = []
        if a.only != "photos":
            figures["runs"], figures["growth_mb"] = video_runs(folder, a.times, a.video_output)
            comparisons.append((f"a {a.times}x longer video", figures["growth_mb"]))
        if a.only != "video":
            figures["photo_runs"], figures["photo_growth_mb"] = photo_runs(folder, a.photos)
            comparisons.append((f"{a.photos[1]} photos instead of {a.photos[0]}", figures["photo_growth_mb"]))
    for what, growth in comparisons:
        verdict = "within" if growth < LIMIT_MB else "OVER"
        print(f"peak RSS growth for {what}: {growth:+.1f} MB ({verdict} the {LIMIT_MB:.0f} MB target)")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
