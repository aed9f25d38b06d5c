"""Command line: the options (from the stages' config dataclasses where they configure one) and their checks;
`emotion.commands` runs each mode through the public API. `python main.py --help` explains it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emotion import __version__
from emotion.interrupts import ignore_signals, signals_held, stop_on_signals, stop_requested
from emotion.labels import LABELS

EPILOG = """examples:
  python main.py --demo                                  annotate a built-in clip, no files needed
  python main.py --image photo.jpg --output photo_annotated.png
  python main.py --image a.jpg b.png --output annotated/ --json faces.json
  python main.py --video in.mp4 --output out.mp4         writes out.mp4 and out_results.json
  python main.py --video in.mp4 --json in.json --csv in.csv   JSON/CSV only, no video
  python main.py --image photos/ --output annotated/     every image in a folder
  python main.py --video clips/ --output annotated/      every video in a folder (JSON only without --output)
  python main.py --video list.csv --output out/ --cluster local --workers 2 --resume   a manifest on Ray, resumable
  python main.py --train --data clips/ --epochs 20 --name mine   fine-tune on clips/<label>/*.mp4
  python main.py --train --data clips/ --arch r2plus1d --name r21d   another architecture of the model zoo
  python main.py --evaluate --data test/ --weights models/mine/best.pt   accuracy, UAR, F1, confusion matrix
  python main.py --evaluate --data photos/               photos/<label>/*.jpg, each image scored on its own
  torchrun --nproc_per_node 2 main.py --train --data clips/ --name mine   the same on 2 processes (DDP)
  python main.py --realtime                              live window on the default webcam
  python main.py --export onnx --weights models/mine/best.pt   models/mine/best.onnx, which ONNX Runtime then runs
  python main.py --realtime --source clip.mp4 --objects  a video file in the window, with YOLO object boxes
  python main.py --realtime --headless --source rtsp://host/stream --output live.mp4   no window (servers)

window keys (--realtime): q or Esc quit, space pause, s screenshot, r record, o object boxes, b / p / g blendshapes,
head pose, gaze on or off (as --show; needs the face signals), h help line.

exit codes: 0 success, 2 bad input or settings (one line on stderr says what and how to fix it), 130 interrupted (Ctrl-C, SIGTERM or SIGHUP; outputs are closed valid).
labels: """ + ", ".join(LABELS) + """; valence and arousal in [-1, 1]."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one `error:` line with the fix, not the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; options that configure a stage come from its config dataclass (emotion.configargs)."""
    p = Parser(
        prog="emotion",
        description="Recognise facial emotion (7 categories, valence, arousal) for every face in images and videos.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"emotion {__version__}")
    mode = p.add_mutually_exclusive_group(required=True)
    _add_modes(mode)
    _add_live_options(p)
    _add_output_options(p.add_argument_group("outputs"))
    _add_batch_options(p.add_argument_group("many videos (--video FOLDER or MANIFEST)"))
    _add_model_options(p.add_argument_group("model"))
    _add_training_arguments(p, mode)
    return p


def _add_modes(mode: argparse._MutuallyExclusiveGroup) -> None:
    mode.add_argument(
        "--image",
        nargs="+",
        metavar="PATH",
        help="one or more image files to classify, or folders: every image in a folder (not its subfolders); read one "
        "at a time and turned upright by their EXIF orientation; an image that cannot be read is reported and skipped",
    )
    mode.add_argument(
        "--video",
        metavar="PATH",
        help="a video file to process frame by frame, or a folder: every video in it is processed (annotated into "
        "the --output folder, or JSON only, <video name>_results.json here, without --output), continuing past bad "
        "files, with a summary table at the end; or a manifest listing the videos (.csv rows path[,name], or .jsonl "
        'lines {"path": ..., "name": ...}; relative paths from its folder; name replaces the video name in its '
        "outputs)",
    )
    mode.add_argument("--demo", action="store_true", help="build a short clip from a bundled photo and process it")
    mode.add_argument(
        "--export",
        choices=("onnx", "torchscript"),
        help="write the model's streaming step (the model of --weights, else the default) to --output, else beside "
        "the checkpoint (models/mine/best.onnx or .torchscript.pt) or, for the default model, to models/stnet.onnx "
        "here, and exit; an existing file needs --overwrite. The shipped ONNX file is regenerated with --export onnx "
        "--output emotion/weights/stnet.onnx --overwrite",
    )
    mode.add_argument(
        "--realtime",
        action="store_true",
        help="live window on a webcam, video file or stream (--source) with per-face panels, FPS and latency",
    )


def _add_live_options(p: argparse.ArgumentParser) -> None:
    from emotion.app.config import RealtimeConfig
    from emotion.configargs import add_options
    from emotion.objects import ObjectConfig

    live = p.add_argument_group("real time (--realtime)")
    live.add_argument(
        "--source", metavar="SRC", help="camera index (0 = default webcam), video file or stream URL (default: 0)"
    )
    add_options(live, RealtimeConfig)
    objects = p.add_argument_group("object boxes")
    objects.add_argument(
        "--objects",
        action="store_true",
        help="also draw YOLO boxes of people and objects, computed on a background thread (--realtime, --video, --demo)",
    )
    add_options(objects, ObjectConfig)


def _add_output_options(out: argparse._ArgumentGroup) -> None:
    from emotion.configargs import add_options
    from emotion.overlay import OverlayConfig

    out.add_argument(
        "--output",
        metavar="PATH",
        help="annotated result: a video file for --video (.mp4: H.264, which browsers play; .avi: MJPG; same size and "
        "frame rate as the input, an odd width or height loses its last column or row); an image file (.png, .jpg, "
        ".jpeg, .bmp, .webp, .tif, .tiff), or a folder for several images, for --image; the output folder for --demo "
        "(default: demo_output); for --realtime a video of the whole session",
    )
    out.add_argument(
        "--json",
        metavar="PATH",
        help="per-frame JSON (--video default: <output name>_results.json beside --output, or "
        "<video name>_results.json here without --output); per-image JSON for --image; valid after every frame or "
        "image; with the face signals each face also has blendshapes, head_pose and gaze (README 'JSON format')",
    )
    out.add_argument(
        "--csv",
        metavar="PATH",
        help="also write one CSV row per face per frame (--video, --realtime); with the face signals also their "
        "columns, bs_<blendshape>, head_yaw/pitch/roll, gaze_yaw/pitch",
    )
    add_options(out, OverlayConfig)
    out.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_batch_options(batch: argparse._ArgumentGroup) -> None:
    batch.add_argument(
        "--csv-per-video",
        action="store_true",
        help="with --video FOLDER or a manifest: also write each video's CSV (the rows of --csv) beside its JSON, "
        "<name>_results.csv",
    )
    batch.add_argument(
        "--cluster",
        metavar="WHERE",
        help="process the videos on Ray (pip install \"emotion[cluster]\"): local (a Ray started on this machine for "
        "this run), auto (the cluster this machine has joined) or an address (ray://HOST:10001, or the head's "
        "HOST:6379); one worker per --workers holds the model, each video is a task, outputs as without --cluster "
        "plus a done-marker per finished video (<json name>.done), and the table adds fps and the aggregate rate",
    )
    batch.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --cluster: Ray workers, one model each (default: one per CPU of the cluster); with --train or "
        "--evaluate: face-stage processes for preprocessing (default 1)",
    )
    batch.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="a video whose worker dies is retried on a new worker up to N times, then listed as failed (--cluster; "
        "default: 2)",
    )
    batch.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="LAST_PT",
        help="with --video FOLDER or a manifest (no value): skip the videos a previous run finished (they have a "
        "done-marker) and redo the others, replacing their incomplete outputs; every finished video gets a marker. "
        "With --train: continue a run exactly where it stopped (default file: models/NAME/last.pt); a run that did "
        "all its epochs goes on with a larger --epochs, one stopped early with a larger --patience (or 0)",
    )


def _add_model_options(model: argparse._ArgumentGroup) -> None:
    from emotion.configargs import add_options
    from emotion.face import FaceConfig
    from emotion.smoothing import SmoothingConfig

    model.add_argument(
        "--weights",
        metavar="PATH",
        help="a checkpoint written by training, of any --arch (default: the pretrained model); a model of the zoo "
        "(any but stnet) runs over each face's last 16 frames (the first repeated while fewer are seen) and reports "
        "the newest",
    )
    model.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)")
    add_options(model, SmoothingConfig)
    model.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="PyTorch CPU threads (default: 1 for --image/--video/--demo and --evaluate of photos, fastest here; one "
        "per core and process for --train and --evaluate of clips)",
    )
    model.add_argument(
        "--backend",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="model runtime: onnx (ONNX Runtime, CPU, ~5x faster here), torch (eager PyTorch, any device); auto "
        "takes onnx on the CPU when onnxruntime is installed (default: auto)",
    )
    add_options(model, FaceConfig)


def _add_training_arguments(p: argparse.ArgumentParser, mode: argparse._MutuallyExclusiveGroup) -> None:
    """--train and --evaluate with the options their configs declare (see README, 'Training and evaluation')."""
    from emotion.configargs import add_options
    from emotion.training.config import EvalConfig, TrainConfig

    mode.add_argument("--train", action="store_true", help="train the model on a labelled dataset (--data)")
    mode.add_argument(
        "--evaluate",
        action="store_true",
        help="score a checkpoint (--weights, default the pretrained model) on labelled clips or photos (--data, see "
        "--layout): accuracy, UAR, macro F1, recall per category, confusion matrix (printed and PNG), valence/arousal "
        "CCC of clips, photos without a face; JSON in --output (default runs/evaluate-N), with every photo's "
        "prediction",
    )
    add_options(p.add_argument_group("training and evaluation (--train, --evaluate)"), TrainConfig, EvalConfig)


def _check_training_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Which options go with --train and --evaluate; the values themselves are checked by their configs."""
    training = args.train or args.evaluate
    if training and not args.data:
        p.error("--train and --evaluate need --data (a dataset folder or CSV manifest)")
    if args.data and not training:
        p.error("--data works with --train and --evaluate")
    if training and (args.csv or args.overwrite):
        p.error("--csv and --overwrite are not used by --train/--evaluate")
    if args.train and (args.output or args.json):
        p.error("--train writes models/NAME/ and runs/NAME-N; --output and --json are for --evaluate")
    if args.train and args.layout:
        p.error("--layout is for --evaluate; --train reads clips (videos, frame folders or a manifest)")


def training_config(args: argparse.Namespace):
    """The TrainConfig (--train) or EvalConfig (--evaluate) of the parsed options."""
    from emotion.configargs import from_namespace
    from emotion.training.config import EvalConfig, TrainConfig

    return from_namespace(TrainConfig if args.train else EvalConfig, args)


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be 1 or more")
    if args.csv and not (args.video or args.realtime):
        p.error("--csv works with --video and --realtime")
    if not args.realtime and (args.source is not None or args.no_sync or args.headless or args.save_dir):
        p.error("--source, --no-sync, --headless and --save-dir work with --realtime")
    if args.objects and args.image:
        p.error("--objects works with --realtime, --video and --demo")
    if args.objects and args.video and not args.output:
        p.error("--objects draws boxes on the annotated video: add --output")
    if args.show and not (args.image or args.video or args.demo or args.realtime):
        p.error("--show works with --image, --video, --demo and --realtime")
    if args.show and (args.image or args.video) and not args.output:
        p.error("--show draws on the annotated image or video: add --output")
    _check_batch_args(p, args)
    _stage_configs(p, args)
    if args.overlay_config.show and not args.face_config.signals:
        from emotion.errors import EmotionError

        raise EmotionError(f"--show {','.join(args.overlay_config.show)} needs the face signals", fix=_signals_fix())


def _signals_fix() -> str:
    """How to turn the face signals on: the flag of FaceConfig.signals (--no-signals while they default to on)."""
    import dataclasses

    from emotion.configargs import option_name
    from emotion.face import FaceConfig

    field = next(f for f in dataclasses.fields(FaceConfig) if f.name == "signals")
    return ("drop " if field.default else "add ") + option_name(field)


def _stage_configs(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Build the configs of the stages from their options (refusing bad values now, before anything loads), kept on
    `args` as face_config, smoothing_config, object_config and overlay_config."""
    from emotion.configargs import from_namespace
    from emotion.face import FaceConfig
    from emotion.objects import ObjectConfig
    from emotion.overlay import OverlayConfig
    from emotion.smoothing import SmoothingConfig

    try:
        args.face_config = from_namespace(FaceConfig, args)
        args.smoothing_config = from_namespace(SmoothingConfig, args)
        args.object_config = from_namespace(ObjectConfig, args)
        args.overlay_config = from_namespace(OverlayConfig, args)
    except ValueError as exc:
        p.error(str(exc))


def _check_batch_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A folder or several inputs write one result per input, so --output must name a folder, not a file; the
    options of a batch go with a folder or manifest of videos."""
    from emotion.formats import is_batch

    output = Path(args.output) if args.output else None
    looks_like_file = output is not None and output.suffix != "" and not output.is_dir()
    batch = bool(args.video) and is_batch(args.video)
    training = args.train or args.evaluate  # --workers and --resume are also TrainConfig's (preprocessing, last.pt)
    if args.csv_per_video and not batch:
        p.error("--csv-per-video works with --video FOLDER or a manifest (.csv, .jsonl); one video takes --csv PATH")
    if (args.cluster or (args.resume and not training)) and not batch:
        p.error("--cluster and --resume work with --video FOLDER or a manifest (.csv, .jsonl)")
    if args.resume not in (None, "auto") and not training:
        p.error("--resume takes a file (LAST_PT) with --train only; for videos give it alone: --resume")
    if ((args.workers is not None and not training) or args.retries is not None) and not args.cluster:
        p.error("--workers and --retries work with --cluster (and --workers with --train, --evaluate)")
    if args.workers is not None and args.workers < 1:
        p.error("--workers must be 1 or more")
    if args.retries is not None and args.retries < 0:
        p.error("--retries must be 0 or more")
    if batch:
        if args.json or args.csv or args.objects:
            p.error("--json, --csv and --objects are for a single video; a folder of videos gets one "
                    "<video name>_results.json per video (beside its annotated copy with --output FOLDER), and "
                    "with --csv-per-video a <video name>_results.csv beside it")  # fmt: skip
        if looks_like_file:
            p.error(f"--output {output} names a file, but a folder of videos needs an output folder "
                    "(for example --output annotated/)")  # fmt: skip
    if args.image and looks_like_file and (len(args.image) > 1 or any(Path(i).is_dir() for i in args.image)):
        p.error(f"--output {output} names a file, but several images need an output folder "
                "(for example --output annotated/)")  # fmt: skip


def _check_output_types(args: argparse.Namespace) -> None:
    """Refuse an output file of a type its mode cannot write, before anything loads or is opened."""
    from emotion.formats import is_batch
    from emotion.io.sinks import check_output_type

    if not (args.image or args.video or args.realtime):
        return
    output = Path(args.output) if args.output else None
    if output is not None and not output.is_dir():
        if args.image and output.suffix:
            check_output_type(output, "image")
        elif not args.image and not (args.video and is_batch(args.video)):
            check_output_type(output, "video")


def main(argv: list[str] | None = None) -> int:
    stop_on_signals()  # first, so Ctrl-C while the heavy modules load ends as cleanly as during a run
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if hasattr(sys.stdout, "reconfigure"):  # file names that are not valid UTF-8 are printed as the bytes they are
        sys.stdout.reconfigure(errors="surrogateescape")
    from emotion.errors import EmotionError

    try:
        with signals_held():  # a Ctrl-C inside a C extension's import would print its own traceback: deliver it after
            parser = build_parser()
            args = parser.parse_args(argv)
            _check_args(parser, args)
            _check_training_args(parser, args)
            _check_output_types(args)
        from emotion.commands import run

        return run(args)
    except EmotionError as exc:
        print(f"error: {exc.cli_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:  # the reader of stdout went away (`emotion ... | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:
        if not stop_requested():
            raise
        return _interrupted()  # Ctrl-C inside a C extension's import surfaces as ImportError


def _interrupted() -> int:
    """The end of an interrupted run: later signals ignored, one line, exit code 130."""
    ignore_signals()
    _say("interrupted: outputs written so far are complete and valid")
    return 130


def _say(line: str) -> None:
    """One line on stderr, if there still is one (after SIGHUP the terminal may be gone)."""
    try:
        print(line, file=sys.stderr)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
