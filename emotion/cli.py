"""Command line: a thin layer over `emotion.recognizer` and `emotion.runner`. `python main.py --help` explains it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from emotion.labels import LABELS

EPILOG = """examples:
  python main.py --demo                                  annotate a built-in clip, no files needed
  python main.py --image photo.jpg --output photo_annotated.png
  python main.py --image a.jpg b.png --output annotated/ --json faces.json
  python main.py --video in.mp4 --output out.mp4         writes out.mp4 and out_results.json
  python main.py --video in.mp4 --json in.json --csv in.csv   JSON/CSV only, no video

exit codes: 0 success, 2 bad input or settings (one line on stderr says what and how to fix it), 130 interrupted.
labels: """ + ", ".join(LABELS) + """; valence and arousal in [-1, 1]."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion",
        description="Recognise facial emotion (7 categories, valence, arousal) for every face in images and videos.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--image", nargs="+", metavar="PATH", help="one or more image files to classify")
    mode.add_argument(
        "--video",
        metavar="PATH",
        help="a video file to process frame by frame, or a folder: every video in it is annotated into the "
        "--output folder, continuing past bad files, with a summary table at the end",
    )
    mode.add_argument("--demo", action="store_true", help="build a short clip from a bundled photo and process it")

    out = p.add_argument_group("outputs")
    out.add_argument(
        "--output",
        metavar="PATH",
        help="annotated result: a video file for --video (.mp4 or .avi); an image file, or a folder for several "
        "images, for --image; the output folder for --demo (default: demo_output)",
    )
    out.add_argument(
        "--json",
        metavar="PATH",
        help="per-frame JSON (--video default: <output name>_results.json beside --output, or "
        "<video name>_results.json here without --output); per-image JSON for --image",
    )
    out.add_argument("--csv", metavar="PATH", help="also write one CSV row per face per frame (--video)")
    out.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    model = p.add_argument_group("model")
    model.add_argument("--weights", metavar="PATH", help="a checkpoint written by training (default: the pretrained model)")
    model.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)")
    model.add_argument(
        "--smoothing",
        type=int,
        default=5,
        metavar="N",
        help="smooth the shown emotion per face over about N frames; 1 turns it off (default: 5). "
        "The JSON keeps the raw model output under 'raw' as well",
    )
    model.add_argument("--smoothing-mode", choices=("ema", "mean"), default="ema", help="exponential or moving average")
    model.add_argument(
        "--threads", type=int, default=1, metavar="N", help="PyTorch CPU threads for the model (default: 1, fastest here)"
    )
    model.add_argument("--max-faces", type=int, default=10, metavar="N", help="most faces per frame, largest first (default: 10)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.smoothing < 1:
        p.error("--smoothing must be 1 or more")
    if args.threads < 1:
        p.error("--threads must be 1 or more")
    if args.max_faces < 1:
        p.error("--max-faces must be 1 or more")
    if args.csv and not args.video:
        p.error("--csv works with --video")


def run(args: argparse.Namespace) -> int:
    from emotion.face import FaceConfig
    from emotion.sources import EmotionError
    from emotion.recognizer import EmotionRecognizer
    from emotion.runner import batch_table, make_demo_clip, run_batch, run_images, run_video
    from emotion.smoothing import SmoothingConfig

    recognizer = EmotionRecognizer(
        weights=args.weights,
        device=args.device,
        face_config=FaceConfig(max_faces=args.max_faces),
        smoothing=SmoothingConfig(args.smoothing, args.smoothing_mode),
        threads=args.threads,
    )
    with recognizer:
        if args.image:
            records = run_images(recognizer, args.image, args.output, args.json, overwrite=args.overwrite)
            for rec in records:
                faces = ", ".join(f"#{f['id']} {f['emotion']} {f['confidence']:.0%}" for f in rec["faces"]) or "no face"
                print(f"{rec['image']}: {faces}")
            return 0
        if args.video and Path(args.video).is_dir():
            if not args.output or args.json or args.csv:
                raise EmotionError(
                    "for a folder of videos give --output FOLDER (each video's JSON goes beside its annotated copy; "
                    "--json and --csv are for single videos)"
                )
            rows = run_batch(recognizer, args.video, args.output, args.overwrite, progress=not args.no_progress)
            print("\n".join(batch_table(rows)))
            failed = sum(r.error is not None for r in rows)
            if failed:
                raise EmotionError(f"{failed} of {len(rows)} videos failed (reasons in the table above)")
            return 0
        if args.demo:
            folder = Path(args.output or "demo_output")
            clip = make_demo_clip(folder / "demo_input.mp4")
            summary = run_video(
                recognizer, clip, folder / "demo_annotated.mp4", args.json, overwrite=True, progress=not args.no_progress
            )
        else:
            summary = run_video(
                recognizer,
                args.video,
                args.output,
                args.json,
                args.csv,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
        print("\n".join(summary.lines()))
    return 0


def _interrupt(signum, frame) -> None:
    """SIGTERM ends a run like Ctrl-C does, so outputs are closed and stay valid."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    from emotion.sources import EmotionError

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except EmotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: outputs written so far are complete and valid", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
