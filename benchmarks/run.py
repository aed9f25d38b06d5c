"""Speed of our pipeline against the limit of this machine: `python -m benchmarks.run` prints a table and writes
benchmarks/results.json (the README's "Measured on this machine" quotes it).

All figures come from one run of this script, interleaved repeat by repeat, each the median of `--repeats` runs, so
their ratios hold on a noisy machine. Videos: ../shared/data/videos/WolfgangLanger_Pexels.mp4 (640x360, one face)
and a 1280x720 upscaled copy written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from tests.support import ROOT, SHARED, crowd_frames, read_frames

VIDEO = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
RESULTS = ROOT / "benchmarks" / "results.json"
STAGES = ("decode", "face", "crop/align", "signals", "model", "smoothing", "draw", "encode")
RATES = ("decode", "mesh", "json", "json_no_signals", "video", "video_mp4v")  # figures 1 to 4, fps
ENCODERS = ("encode_h264", "encode_mp4v")  # figure 9: emotion.io.sinks.VideoWriter alone on the decoded frames

STARTUP_CODE = """
import json, time
t0 = time.time()
import cv2
from emotion.cli import build_parser
from emotion.recognizer import EmotionRecognizer
from emotion.jobs import run_video
from emotion.runtime import set_threads
t1 = time.time()
set_threads(1)
rec = EmotionRecognizer()
t2 = time.time()
frame = cv2.imread({image!r})
rec.step(frame)
t3 = time.time()
print(json.dumps({{"start": t0, "imports": t1 - t0, "model": t2 - t1, "mediapipe": t3 - t2, "ready": t3,
                  "backend": rec.backend}}))
"""
"""Child process of the start-up figure: import, model + backend, MediaPipe graphs and the first frame."""


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs."""

    repeats: int = 5  # runs per figure; every figure is the median
    upscale: tuple[int, int] = (1280, 720)  # px, size of the upscaled copy of the video
    model_steps: int = 200  # model calls timed per face count and repeat
    face_counts: tuple[int, ...] = (1, 4, 16)  # faces per frame for the model-cost figure
    many_faces: int = 20  # faces tiled into the synthetic crowd frame
    many_frames: int = 60  # frames of the synthetic crowd clip
    train_clips: int = 1000  # cached 16-frame clips for the training figure
    train_threads: int = 1  # PyTorch threads for the training figure (1 is the fastest on this busy 2-core CPU)
    train: bool = True  # run the training figure (a minute or two)


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def av_version() -> str | None:
    """PyAV's version, None without it (the video writer then falls back to mp4v)."""
    try:
        import av
    except ImportError:
        return None
    return av.__version__


def machine() -> dict:
    """The machine and software the figures were taken on."""
    import mediapipe
    import torch

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mediapipe": mediapipe.__version__,
        "onnxruntime": ort_version,
        "av": av_version(),
        "opencv": cv2.__version__,
        "load_average_start": round(os.getloadavg()[0], 2),
    }


def upscaled_copy(source: Path, size: tuple[int, int], folder: Path) -> tuple[Path, str]:
    """Write the video resized to `size` as MPEG-4 part 2 ('mp4v': this OpenCV build has no H.264 encoder)."""
    cap = cv2.VideoCapture(str(source))
    path = folder / "upscaled.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS) or 25.0, size)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC))
    writer.release()
    cap.release()
    return path, "mp4v"


def decode_fps(path: Path) -> float:
    """Figure 1: frames per second of OpenCV reading the whole file."""
    t0 = time.perf_counter()
    n = len(read_frames(path))
    return n / (time.perf_counter() - t0)


def mesh_fps(frames: list[np.ndarray]) -> float:
    """Figure 2: MediaPipe FaceMesh alone in tracking mode (one face) on decoded frames, BGR->RGB included."""
    import mediapipe as mp

    from emotion.graphs import quiet_native_stderr

    with quiet_native_stderr():
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)
        mesh.process(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB))
        mesh.reset()
        t0 = time.perf_counter()
        for frame in frames:
            mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        seconds = time.perf_counter() - t0
        mesh.close()
    return len(frames) / seconds


def pipeline(recognizer, path: Path, folder: Path, video: bool, mp4v: bool = False) -> tuple[float, dict[str, float]]:
    """Figures 3 and 4: `--video` processing rate (JSON only, or JSON + annotated H.264 video, or with `mp4v` the
    MPEG-4 Part 2 writer used before H.264) and its stage times."""
    from emotion.io.video import H264Config
    from emotion.jobs import run_video

    out = folder / "annotated.mp4" if video else None
    summary = run_video(recognizer, path, out, folder / "results.json", progress=False,
                        h264=None if mp4v else H264Config())
    return summary.fps, dict(summary.stages_ms)


def real_face_crops(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` real face crops (count, 1, 64, 64) in [-1, 1] and their landmarks, from the shared photos."""
    from emotion.align import CropSpec
    from emotion.face import FaceAnalyzer, FaceConfig
    from emotion.io.files import read_image
    from emotion.model import crops_to_tensor

    crops, landmarks = [], []
    with FaceAnalyzer(FaceConfig(max_faces=20), static=True) as analyzer:
        for name in ("multi_face.jpg", "group.jpeg", "happy-baby.jpeg", "sad-baby.jpeg", "surprised.jpeg"):
            image = read_image(SHARED / "images" / name)
            for face in analyzer(image):
                crops.append(CropSpec()(image, face.landmarks))
                landmarks.append(face.landmarks_norm)
    reps = -(-count // len(crops))
    x = crops_to_tensor(np.stack((crops * reps)[:count])).numpy()
    return x, np.stack((landmarks * reps)[:count]).astype(np.float32)


def model_ms_per_face(streamer, faces: int, steps: int) -> float:
    """Figure 6: one model call for `faces` faces whose ring buffers are full, in ms per face."""
    crops, landmarks = real_face_crops(faces)
    ids = list(range(faces))
    state = streamer.init_state()
    for _ in range(streamer.config.window):
        streamer.step(state, crops, landmarks, ids)
    t0 = time.perf_counter()
    for _ in range(steps):
        streamer.step(state, crops, landmarks, ids)
    return (time.perf_counter() - t0) * 1000.0 / steps / faces


def startup_seconds() -> dict:
    """Figure 7: from launching Python to the first processed frame (imports, model, MediaPipe), in a new process."""
    code = STARTUP_CODE.format(image=str(SHARED / "images" / "neutral.jpeg"))
    launched = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    parts = json.loads(proc.stdout.strip().splitlines()[-1])
    parts["total"] = parts["ready"] - launched
    parts["interpreter"] = parts["start"] - launched
    return parts


def training_seconds(clips: int, threads: int) -> dict | None:
    """Figure 8: seconds per epoch over `clips` cached 16-frame clips, from benchmarks.train_speed if present."""
    try:
        from benchmarks.train_speed import measure_epoch
    except ImportError:
        return None
    return measure_epoch(clips=clips, threads=threads)


def crowd_run(frames: list[np.ndarray], max_faces: int) -> dict:
    """`max_faces` faces per frame through the streaming recognizer: fps, faces found, ms per frame by thirds."""
    from emotion.face import FaceConfig
    from emotion.recognizer import EmotionRecognizer

    with EmotionRecognizer(face_config=FaceConfig(max_faces=max_faces)) as rec:
        times, found = [], []
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            found.append(len(rec.step(frame, i, i / 25.0).faces))
            times.append((time.perf_counter() - t0) * 1000.0)
    third = len(times) // 3
    return {
        "fps_after_first_frame": (len(times) - 1) / (sum(times[1:]) / 1000.0),
        "faces_per_frame_median": median(found),
        "faces_per_frame_min": min(found[1:]),
        "ms_per_frame_by_third": [median(times[k * third : (k + 1) * third]) for k in range(3)],
        "ms_per_face_by_third": [
            median([t / max(n, 1) for t, n in zip(times[k * third : (k + 1) * third], found[k * third :])])
            for k in range(3)
        ],
        "stages_ms": {k: round(v, 2) for k, v in rec.timer.mean().items()},
    }


def run(config: BenchConfig) -> dict:
    import torch

    from benchmarks.encode import encode
    from emotion.face import FaceConfig
    from emotion.io.video import H264Config
    from emotion.recognizer import EmotionRecognizer
    from emotion.runtime import OnnxStreamer, TorchStreamer, set_threads

    if not VIDEO.is_file():
        raise SystemExit(f"the benchmark needs {VIDEO} (the shared test data beside the repository)")
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big, codec = upscaled_copy(VIDEO, config.upscale, folder)
        videos = {"640x360": VIDEO, f"{config.upscale[0]}x{config.upscale[1]}": big}
        print(f"videos: {VIDEO.name} and its {config.upscale[0]}x{config.upscale[1]} copy ({codec}); "
              f"{config.repeats} repeats", flush=True)
        raw: dict[str, dict[str, list]] = {
            name: {k: [] for k in (*RATES, "stages", *ENCODERS)}
            for name in videos
        }
        set_threads(1)  # as the command line does
        recognizer = EmotionRecognizer()
        plain = EmotionRecognizer(face_config=FaceConfig(signals=False))
        for r in range(config.repeats):
            for name, path in videos.items():
                frames = read_frames(path)
                raw[name]["decode"].append(decode_fps(path))
                raw[name]["mesh"].append(mesh_fps(frames))
                fps, _ = pipeline(recognizer, path, folder, video=False)
                raw[name]["json"].append(fps)
                raw[name]["json_no_signals"].append(pipeline(plain, path, folder, video=False)[0])
                for mp4v in (False, True) if r % 2 == 0 else (True, False):  # alternate which goes first
                    fps, stages = pipeline(recognizer, path, folder, video=True, mp4v=mp4v)
                    raw[name]["video_mp4v" if mp4v else "video"].append(fps)
                    if not mp4v:
                        raw[name]["stages"].append(stages)
                for encoder, h264 in (("encode_h264", H264Config()), ("encode_mp4v", None)):
                    raw[name][encoder].append(encode(frames, folder / "encoded.mp4", 24.0, h264))
                del frames
            print(f"  repeat {r + 1}/{config.repeats} done (load {os.getloadavg()[0]:.1f})", flush=True)
        recognizer.close()
        plain.close()

    per_video = {}
    for name, runs in raw.items():
        fig = {k: median(runs[k]) for k in RATES}
        fig["json_vs_mesh"] = fig["json"] / fig["mesh"]
        fig["json_no_signals_vs_mesh"] = fig["json_no_signals"] / fig["mesh"]
        fig["video_vs_mesh"] = fig["video"] / fig["mesh"]
        fig["video_mp4v_vs_mesh"] = fig["video_mp4v"] / fig["mesh"]
        fig["stages_ms"] = {s: median([st[s] for st in runs["stages"] if s in st]) for s in STAGES}
        fig["runs"] = {k: [round(v, 1) for v in runs[k]] for k in RATES}
        for encoder in ENCODERS:
            fig[encoder] = {k: median([r[k] for r in runs[encoder]]) for k in ("ms", "cpu_ms", "mb")}
        per_video[name] = fig

    from emotion.model import default_model

    model = default_model()
    streamers = {"onnx": OnnxStreamer(model), "torch": TorchStreamer(model, torch.device("cpu"))}
    model_cost = {b: {n: [] for n in config.face_counts} for b in streamers}
    for _ in range(config.repeats):
        for backend, streamer in streamers.items():
            for n in config.face_counts:
                steps = config.model_steps if backend == "onnx" else max(20, config.model_steps // 5)
                model_cost[backend][n].append(model_ms_per_face(streamer, n, steps))
    model_ms = {b: {str(n): median(v) for n, v in costs.items()} for b, costs in model_cost.items()}

    startups = [startup_seconds() for _ in range(config.repeats)]
    startup = {k: median([s[k] for s in startups]) for k in ("total", "interpreter", "imports", "model", "mediapipe")}
    startup["backend"] = startups[0]["backend"]

    crowd = crowd_run(crowd_frames(config.many_faces, config.many_frames), config.many_faces)
    train = training_seconds(config.train_clips, config.train_threads) if config.train else None
    info["load_average_end"] = round(os.getloadavg()[0], 2)
    return {
        "machine": info,
        "config": asdict(config),
        "upscaled_codec": codec,
        "videos": per_video,
        "model_ms_per_face": model_ms,
        "startup_s": startup,
        "crowd": crowd,
        "training": train,
    }


def table(results: dict) -> list[str]:
    """The figures as a text table (also pasted into the README)."""
    videos = results["videos"]
    names = list(videos)
    w = 44
    lines = [f"{'figure':<{w}}" + "".join(f"{n:>14}" for n in names)]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:<{w}}" + "".join(f"{v:>14}" for v in values))

    row("1 decode only (OpenCV), fps", [f"{videos[n]['decode']:.0f}" for n in names])
    row("2 face mesh alone (tracking), fps", [f"{videos[n]['mesh']:.0f}" for n in names])
    row("3 --video, JSON only, fps (% of 2)",
        [f"{videos[n]['json']:.0f} ({videos[n]['json_vs_mesh']:.0%})" for n in names])
    row("3b the same, --no-signals",
        [f"{videos[n]['json_no_signals']:.0f} ({videos[n]['json_no_signals_vs_mesh']:.0%})" for n in names])
    row("4 --video + annotated video, fps (% of 2)",
        [f"{videos[n]['video']:.0f} ({videos[n]['video_vs_mesh']:.0%})" for n in names])
    row("4b the same, mp4v writer (before H.264)",
        [f"{videos[n]['video_mp4v']:.0f} ({videos[n]['video_mp4v_vs_mesh']:.0%})" for n in names])
    for stage in STAGES:
        row(f"5 ms/frame: {stage}", [f"{videos[n]['stages_ms'][stage]:.2f}" for n in names])
    for encoder, label in (("encode_h264", "H.264"), ("encode_mp4v", "mp4v, before")):
        row(f"9 encode alone, ms/frame (CPU): {label}",
            [f"{videos[n][encoder]['ms']:.2f} ({videos[n][encoder]['cpu_ms']:.2f})" for n in names])
    cost = results["model_ms_per_face"]
    counts = list(cost["onnx"])
    lines.append("")
    lines.append(f"{'6 model ms per face, faces in the frame':<{w}}" + "".join(f"{c:>10}" for c in counts))
    for backend, values in cost.items():
        lines.append(f"{'  ' + backend:<{w}}" + "".join(f"{values[c]:>10.2f}" for c in counts))
    s = results["startup_s"]
    lines.append("")
    lines.append(
        f"7 start-up to the first frame: {s['total']:.2f} s (interpreter {s['interpreter']:.2f}, imports "
        f"{s['imports']:.2f}, model + {s['backend']} backend {s['model']:.2f}, MediaPipe + first frame "
        f"{s['mediapipe']:.2f})"
    )
    t = results["training"]
    lines.append(
        "8 training: not measured (--no-train, or benchmarks/train_speed.py missing)" if t is None else
        f"8 training: {t['seconds_per_epoch']:.1f} s per epoch over {t['clips']} cached {t['frames_per_clip']}-frame "
        f"clips ({t['backbone']}, batch {t['batch_size']}, {t['threads']} threads)"
    )
    c = results["crowd"]
    frame_ms = ", ".join(f"{v:.0f}" for v in c["ms_per_frame_by_third"])
    face_ms = ", ".join(f"{v:.1f}" for v in c["ms_per_face_by_third"])
    lines.append(
        f"{results['config']['many_faces']} faces in a frame (--max-faces {results['config']['many_faces']}): "
        f"{c['fps_after_first_frame']:.1f} fps, {c['faces_per_frame_median']:.0f} faces found per frame "
        f"(min {c['faces_per_frame_min']}); by thirds of the clip, ms per frame {frame_ms}, per face {face_ms}"
    )
    m = results["machine"]
    lines.append("")
    lines.append(
        f"{m['date']}, {m['cores']} cores {m['cpu']}, Python {m['python']}, torch {m['torch']}, mediapipe "
        f"{m['mediapipe']}, onnxruntime {m['onnxruntime']}, OpenCV {m['opencv']}, PyAV {m.get('av')}; load average "
        f"{m['load_average_start']} at the start, {m['load_average_end']} at the end"
    )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=BenchConfig.repeats, help="runs per figure (median)")
    p.add_argument("--no-train", action="store_true", help="skip the training figure")
    p.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file (default: {RESULTS.relative_to(ROOT)})")
    args = p.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    results = run(BenchConfig(repeats=args.repeats, train=not args.no_train))
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print("\n".join(table(results)))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
