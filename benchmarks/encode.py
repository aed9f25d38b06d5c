"""Speed, size and quality of the annotated-video encoders: `python -m benchmarks.encode` writes the Wolfgang clip
(640x360) and a 1280x720 upscaled copy through emotion.io.video.VideoWriter with each setting, interleaved, and prints
the median ms per frame (wall and process CPU), the file size and the PSNR of the decoded file against the frames
written. H264Config's defaults were chosen with it; `benchmarks.run` reports the default against mp4v (figure 9).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.run import VIDEO, read_frames
from emotion.io.video import H264Config, VideoWriter

SETTINGS: dict[str, H264Config | None] = {
    "mp4v (OpenCV, before H.264)": None,
    "H.264 default (ultrafast crf 25)": H264Config(),
    "ultrafast crf 25, deblock": H264Config(params="deblock=0,0"),
    "ultrafast crf 23": H264Config(crf=23),
    "ultrafast crf 28": H264Config(crf=28),
    "ultrafast crf 25, threads auto": H264Config(threads=0),
    "superfast crf 25": H264Config(preset="superfast"),
    "veryfast crf 25": H264Config(preset="veryfast"),
}


def encode(frames: list[np.ndarray], path: Path, fps: float, h264: H264Config | None) -> dict:
    """Write `frames` with VideoWriter (opening and closing included): ms per frame, wall and process CPU, and MB."""
    wall, cpu = time.perf_counter(), time.process_time()
    writer = VideoWriter(path, fps, frames[0].shape[1::-1], h264)
    for frame in frames:
        writer.write(frame)
    writer.close()
    n = len(frames)
    return {
        "ms": (time.perf_counter() - wall) * 1000.0 / n,
        "cpu_ms": (time.process_time() - cpu) * 1000.0 / n,
        "mb": path.stat().st_size / 1e6,
        "codec": writer.codec,
    }


def psnr(path: Path, frames: list[np.ndarray], every: int = 10) -> float:
    """Mean PSNR in dB of every `every`-th decoded frame against the frame written."""
    cap = cv2.VideoCapture(str(path))
    values, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            values.append(cv2.PSNR(frame, frames[i]))
        i += 1
    cap.release()
    return float(np.mean(values))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per setting (median)")
    args = p.parse_args()
    source = read_frames(VIDEO)
    fps = cv2.VideoCapture(str(VIDEO)).get(cv2.CAP_PROP_FPS)
    print(f"{'setting':<34}{'size':>10}{'ms/frame':>10}{'CPU ms':>8}{'MB':>7}{'PSNR dB':>9}  codec")
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((640, 360), (1280, 720)):
            frames = [cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) if f.shape[1::-1] != size else f
                      for f in source]
            paths = {name: Path(tmp) / f"{i}.mp4" for i, name in enumerate(SETTINGS)}
            runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
            for _ in range(args.repeats):
                for name, h264 in SETTINGS.items():
                    runs[name].append(encode(frames, paths[name], fps, h264))
            for name, results in runs.items():
                quality = psnr(paths[name], frames)
                ms, cpu = (statistics.median(r[k] for r in results) for k in ("ms", "cpu_ms"))
                print(f"{name:<34}{size[0]:>5}x{size[1]:<4}{ms:>10.2f}{cpu:>8.2f}{results[-1]['mb']:>7.2f}"
                      f"{quality:>9.2f}  {results[-1]['codec']}", flush=True)
            del frames


if __name__ == "__main__":
    main()
