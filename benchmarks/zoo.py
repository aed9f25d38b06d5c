"""Every architecture of the model zoo side by side: `python -m benchmarks.zoo` (README "Model zoo").

Per architecture, each in its own process (so its peak memory is its own): parameters; CPU milliseconds of one
forward over a 16-frame 64x64 clip at batch 1 and 16 (eval mode, median of repeats); training seconds per epoch and
validation accuracy after a few epochs on a separable synthetic cached dataset; the same on clips cut from the shared
videos (a sanity check that the loss goes down and predictions follow labels, not a measure of accuracy); and the
process's peak resident memory. Results go to benchmarks/zoo.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from emotion.model import create_model
from emotion.training.cache import PrepConfig, preprocess
from emotion.training.config import ARCHS
from emotion.training.datasets import load_dataset
from emotion.training.synthetic import make_synthetic_dataset
from emotion.training.train import TrainConfig, new_model_config, run
from tests.support import SHARED, synthetic_training

VIDEOS = SHARED / "videos"
CLIP_FRAMES = 24
CUTS = (
    ("WolfgangLanger_Pexels.mp4", "sad", 0, 190),
    ("WolfgangLanger_Pexels.mp4", "happy", 265, 471),
    ("face_noface.mov", "happy", 0, 71),
)
"""(video, label, first frame, last frame) of the shared videos' labelled parts (their README), cut into clips."""


def cut_clips(folder: Path) -> Path | None:
    """The labelled parts of the shared videos as CLIP_FRAMES-frame MJPG clips with a manifest (every third clip of
    each part held out for validation); None without the shared data."""
    if not VIDEOS.is_dir():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for video, label, first, last in CUTS:
        cap = cv2.VideoCapture(str(VIDEOS / video))
        frames = []
        for i in range(last + 1):
            ok, frame = cap.read()
            if not ok:
                break
            if i >= first:
                frames.append(frame)
        cap.release()
        for k, start in enumerate(range(0, len(frames) - CLIP_FRAMES + 1, CLIP_FRAMES)):
            name = f"{Path(video).stem}_{label}_{k:02d}.avi"
            h, w = frames[0].shape[:2]
            writer = cv2.VideoWriter(str(folder / name), cv2.VideoWriter_fourcc(*"MJPG"), 24, (w, h))
            for frame in frames[start : start + CLIP_FRAMES]:
                writer.write(frame)
            writer.release()
            rows.append(f"{name},{label},{'val' if k % 3 == 1 else 'train'}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def forward_ms(model: torch.nn.Module, batch: int, repeats: int) -> float:
    """Median milliseconds of one eval-mode forward of `model` over `batch` clips of its window and crops."""
    model.eval()
    c = model.config
    x = torch.rand(batch, c.window, c.in_chans, c.crop_size, c.crop_size) * 2 - 1
    lm = torch.rand(batch, c.window, c.landmarks, c.landmark_dims)
    times = []
    with torch.inference_mode():
        model(x, lm)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x, lm)
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def train_on(arch: str, manifest: Path, cache: Path, workdir: Path, name: str, epochs: int) -> dict[str, Any]:
    """Train `epochs` epochs (no early stop) -> seconds per epoch, first and last training loss, validation accuracy
    of the last epoch's model."""
    settings = {"epochs": epochs, "batch_size": 8, "lr": 2e-3, "patience": 0, "signal_stream": False}
    config = synthetic_training(
        workdir, (manifest, cache), name=f"{arch}-{name}", arch=arch, threads=torch.get_num_threads(), **settings
    )
    history = run(config)["history"]
    return {
        "epoch_seconds": float(np.median([h["seconds"] for h in history])),
        "loss_first": history[0]["train_loss"],
        "loss_last": history[-1]["train_loss"],
        "accuracy": history[-1].get("accuracy"),
    }


def measure(arch: str, workdir: Path, epochs: int, repeats: int) -> dict[str, Any]:
    """Everything measured of one architecture, in this process."""
    torch.manual_seed(0)
    model = create_model(new_model_config(TrainConfig(data="-", arch=arch, signal_stream=False)))
    result: dict[str, Any] = {
        "arch": arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "causal": model.causal,
        "ms_batch1": forward_ms(model, 1, repeats),
        "ms_batch16": forward_ms(model, 16, max(3, repeats // 4)),
    }
    result["synthetic"] = train_on(arch, workdir / "syn" / "manifest.csv", workdir / "cache", workdir, "syn", epochs)
    clips = workdir / "clips" / "manifest.csv"
    if clips.is_file():
        result["clips"] = train_on(arch, clips, workdir / "cache", workdir, "clips", epochs)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def prepare(workdir: Path, archs: list[str]) -> None:
    """The synthetic dataset (3 separable classes x 16 clips, written into the cache) and the shared videos' clips
    run through the face stage once for every preprocessing the architectures need."""
    make_synthetic_dataset(workdir / "syn", workdir / "cache", 16, prep=PrepConfig(crop_size=64))
    manifest = cut_clips(workdir / "clips")
    if manifest is None:
        print(f"shared videos not found at {VIDEOS}: the table has no clip columns")
        return
    records = load_dataset(manifest).records
    preps = {PrepConfig.of_model(new_model_config(TrainConfig(data="-", arch=a, signal_stream=False))) for a in archs}
    for prep in preps:
        preprocess(records, workdir / "cache", prep, workers=2, progress=False)


def table(results: list[dict[str, Any]]) -> list[str]:
    """The README's Markdown table."""
    lines = [
        "| `--arch` | parameters | causal | ms / clip, batch 1 | ms / clip, batch 16 | s / epoch | peak MB "
        "| synthetic: loss first -> last, val acc | video clips: loss first -> last, val acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def learned(part: dict[str, Any] | None) -> str:
        if part is None:
            return "-"
        acc = "-" if part["accuracy"] is None else f"{part['accuracy']:.2f}"
        return f"{part['loss_first']:.2f} -> {part['loss_last']:.2f}, {acc}"

    for r in results:
        lines.append(
            f"| `{r['arch']}` | {r['parameters'] / 1e6:.2f} M | {'yes' if r['causal'] else 'no'} | "
            f"{r['ms_batch1']:.0f} | {r['ms_batch16'] / 16:.0f} | {r['synthetic']['epoch_seconds']:.1f} | "
            f"{r['peak_mb']:.0f} | {learned(r['synthetic'])} | {learned(r.get('clips'))} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS, metavar="ARCH")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs per dataset (default 6)")
    parser.add_argument("--repeats", type=int, default=20, help="timed forward passes at batch 1 (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    parser.add_argument("--output", default=str(Path(__file__).with_name("zoo.json")), metavar="JSON")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # measure one architecture in this process
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        result = measure(args.one, Path(args.workdir), args.epochs, args.repeats)
        Path(args.output).write_text(json.dumps(result))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.archs)
        for arch in args.archs:
            out = workdir / f"{arch}.json"
            command = [sys.executable, "-m", "benchmarks.zoo", "--one", arch, "--workdir", tmp, "--output", str(out)]
            command += ["--epochs", str(args.epochs), "--repeats", str(args.repeats), "--threads", str(args.threads)]
            t0 = time.perf_counter()
            subprocess.run(command, check=True)
            results.append(json.loads(out.read_text()))
            print(f"{arch}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    report = {"threads": args.threads, "epochs": args.epochs, "results": results}
    Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
