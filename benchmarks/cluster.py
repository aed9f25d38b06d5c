"""A batch of videos on one process against Ray: `python -m benchmarks.cluster` prints videos per minute and frames per
second of `main.py --video FOLDER` (JSON only) and of the same with `--cluster local --workers 2`, Ray's start-up
overhead and the peak memory of each Ray worker.

The folder holds 8 links to the shared clips in turn (3 + 3 + 2 of the Wolfgang Langer clip, face_noface.mov and
single_face.mp4; 2,067 frames). Each run is the real command line in a new process, timed from launch to exit; the
runs alternate (`--repeat`). A worker's peak RSS is VmHWM of its process (`ray::VideoWorker`) read from /proc while it
runs. The start-up overhead is measured on its own: `ray.init` of a local Ray, then 2 workers up to a loaded model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support import ROOT, SHARED

CLIPS = ["WolfgangLanger_Pexels.mp4", "face_noface.mov", "single_face.mp4"]


def clip_folder(target: Path, count: int = 8) -> Path:
    """`count` links to the shared clips, in turn."""
    target.mkdir()
    for i in range(count):
        name = CLIPS[i % len(CLIPS)]
        (target / f"{i:02d}_{name}").symlink_to(SHARED / "videos" / name)
    return target


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _worker_peaks(root: int, peaks: dict[int, float], done: threading.Event) -> None:
    """Peak RSS (MB) of each Ray worker under `root`, polled until `done`."""
    while not done.wait(0.25):
        for pid in _descendants(root):
            try:
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::VideoWorker"):
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
            if hwm:
                peaks[pid] = max(peaks.get(pid, 0.0), int(hwm.split()[1]) / 1024)


def run_batch(folder: Path, out: Path, cluster: bool) -> dict:
    """One run of the command line over `folder`: seconds, frames and the workers' peak RSS."""
    args = [sys.executable, str(ROOT / "main.py"), "--video", str(folder), "--no-progress"]
    if cluster:
        args += ["--cluster", "local", "--workers", "2"]
    out.mkdir()
    peaks: dict[int, float] = {}
    done = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_worker_peaks, args=(proc.pid, peaks, done), daemon=True)
    if cluster:
        watcher.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {stderr}")
    frames = sum(len(json.loads(p.read_text())) for p in out.glob("*_results.json"))
    return {"seconds": seconds, "frames": frames, "videos": len(list(out.glob("*_results.json"))),
            "worker_peak_mb": sorted(peaks.values()), "table": stdout}  # fmt: skip


def ray_startup(workers: int = 2) -> dict:
    """Seconds for `ray.init` of a local Ray and then for `workers` workers to load their model, in a new process."""
    code = f"""
import json, time
t0 = time.perf_counter()
import ray
from emotion.cluster import VideoWorker, WorkerConfig
t1 = time.perf_counter()
ray.init(address="local", num_cpus={workers}, include_dashboard=False, log_to_driver=False)
t2 = time.perf_counter()
actor = ray.remote(num_cpus=1, max_concurrency=2)(VideoWorker)
ray.get([a.ready.remote() for a in [actor.remote(WorkerConfig()) for _ in range({workers})]])
t3 = time.perf_counter()
ray.shutdown()
print(json.dumps({{"imports": t1 - t0, "ray_init": t2 - t1, "workers_ready": t3 - t2}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternating (default 2)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"single": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = clip_folder(Path(tmp) / "clips")
        for k in range(args.repeat):
            for name in results:
                results[name].append(run_batch(folder, Path(tmp) / f"{name}{k}", cluster=name == "ray"))
    startup = ray_startup()
    rows = []
    for name, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        frames, videos = runs[0]["frames"], runs[0]["videos"]
        rows.append((name, videos, frames, seconds, videos / seconds * 60, frames / seconds))
    print(f"{'run':<8} {'videos':>6} {'frames':>6} {'seconds':>8} {'videos/min':>10} {'fps':>7}")
    for name, videos, frames, seconds, vpm, fps in rows:
        print(f"{name:<8} {videos:>6} {frames:>6} {seconds:>8.1f} {vpm:>10.1f} {fps:>7.1f}")
    print(f"ray / single: {rows[1][5] / rows[0][5]:.2f}x (median of {args.repeat} runs each, launch to exit)")
    print(f"all runs, seconds: single {[round(r['seconds'], 1) for r in results['single']]}, "
          f"ray {[round(r['seconds'], 1) for r in results['ray']]}")  # fmt: skip
    peaks = [mb for r in results["ray"] for mb in r["worker_peak_mb"]]
    print(f"worker peak RSS, MB: {', '.join(f'{mb:.0f}' for mb in peaks)}")
    print(f"Ray start-up: imports {startup['imports']:.1f} s, ray.init (local) {startup['ray_init']:.1f} s, "
          f"2 workers loaded {startup['workers_ready']:.1f} s")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("last Ray run's table:\n" + results["ray"][-1]["table"])


if __name__ == "__main__":
    main()
