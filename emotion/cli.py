"""Command line: a thin layer over `emotion.recognizer`, `emotion.jobs` and `emotion.app`. `python main.py --help`
explains it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from emotion import __version__
from emotion.interrupts import ignore_signals, signals_held, stop_on_signals, stop_requested
from emotion.labels import LABELS
from emotion.text import plural

EPILOG = """examples:
  python main.py --demo                                  annotate a built-in clip, no files needed
  python main.py --image photo.jpg --output photo_annotated.png
  python main.py --image a.jpg b.png --output annotated/ --json faces.json
  python main.py --video in.mp4 --output out.mp4         writes out.mp4 and out_results.json
  python main.py --video in.mp4 --json in.json --csv in.csv   JSON/CSV only, no video
  python main.py --image photos/ --output annotated/     every image in a folder
  python main.py --video clips/ --output annotated/      every video in a folder (JSON only without --output)
  python main.py --train --data clips/ --epochs 20 --name mine   fine-tune on clips/<label>/*.mp4
  python main.py --evaluate --data test/ --weights models/mine/best.pt   accuracy, UAR, F1, confusion matrix
  torchrun --nproc_per_node 2 main.py --train --data clips/ --name mine   the same on 2 processes (DDP)
  python main.py --realtime                              live window on the default webcam
  python main.py --export onnx --weights models/mine/best.pt   models/mine/best.onnx, which ONNX Runtime then runs
  python main.py --realtime --source clip.mp4 --objects  a video file in the window, with YOLO object boxes
  python main.py --realtime --headless --source rtsp://host/stream --output live.mp4   no window (servers)

window keys (--realtime): q or Esc quit, space pause, s screenshot, r record, o object boxes, h help line.

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
        "files, with a summary table at the end",
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
        "image",
    )
    out.add_argument("--csv", metavar="PATH", help="also write one CSV row per face per frame (--video, --realtime)")
    out.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_model_options(model: argparse._ArgumentGroup) -> None:
    from emotion.configargs import add_options
    from emotion.face import FaceConfig
    from emotion.smoothing import SmoothingConfig

    model.add_argument("--weights", metavar="PATH", help="a checkpoint written by training (default: the pretrained model)")
    model.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)")
    add_options(model, SmoothingConfig)
    model.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="PyTorch CPU threads (default: 1 for --image/--video/--demo, fastest here; one per core and process for "
        "--train/--evaluate)",
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
        help="score a checkpoint (--weights, default the pretrained model) on a labelled dataset (--data): accuracy, "
        "UAR, macro F1, confusion matrix (printed and PNG), valence/arousal CCC; JSON in --output (default runs/evaluate-N)",
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


def training_config(args: argparse.Namespace):
    """The TrainConfig (--train) or EvalConfig (--evaluate) of the parsed options."""
    from emotion.configargs import from_namespace
    from emotion.training.config import EvalConfig, TrainConfig

    return from_namespace(TrainConfig if args.train else EvalConfig, args)


def _train_or_evaluate(args: argparse.Namespace) -> int:
    """--train / --evaluate: build the config from the options and hand over to the training package."""
    from emotion.errors import EmotionError
    from emotion.model import CheckpointError

    try:
        config = training_config(args)
        if args.train:
            from emotion.training.train import run
        else:
            from emotion.training.evaluate import run
        run(config)
        return 0
    except (ValueError, CheckpointError) as exc:
        raise EmotionError(str(exc)) from None


def _export(args: argparse.Namespace) -> int:
    """--export: write the streaming step of the model as ONNX or TorchScript."""
    from emotion.model.export import default_export_path, export_model
    from emotion.model import CheckpointError, default_model, load_checkpoint
    from emotion.errors import EmotionError
    from emotion.io.paths import check_distinct
    from emotion.io.sinks import prepare_output

    target = args.output or default_export_path(args.weights, args.export)
    check_distinct([args.weights] if args.weights else [], [target])
    target = prepare_output(target, args.overwrite)
    try:
        model = default_model() if args.weights is None else load_checkpoint(args.weights)[0]
    except CheckpointError as exc:
        raise EmotionError(str(exc)) from None
    path = export_model(model, args.export, target)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


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
    _check_batch_args(p, args)
    _stage_configs(p, args)


def _stage_configs(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Build the configs of the stages from their options (refusing bad values now, before anything loads), kept on
    `args` as face_config, smoothing_config and object_config."""
    from emotion.configargs import from_namespace
    from emotion.face import FaceConfig
    from emotion.objects import ObjectConfig
    from emotion.smoothing import SmoothingConfig

    try:
        args.face_config = from_namespace(FaceConfig, args)
        args.smoothing_config = from_namespace(SmoothingConfig, args)
        args.object_config = from_namespace(ObjectConfig, args)
    except ValueError as exc:
        p.error(str(exc))


def _check_batch_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A folder or several inputs write one result per input, so --output must name a folder, not a file."""
    output = Path(args.output) if args.output else None
    looks_like_file = output is not None and output.suffix != "" and not output.is_dir()
    if args.video and Path(args.video).is_dir():
        if args.json or args.csv or args.objects:
            p.error("--json, --csv and --objects are for a single video; a folder of videos gets one "
                    "<video name>_results.json per video (beside its annotated copy with --output FOLDER)")  # fmt: skip
        if looks_like_file:
            p.error(f"--output {output} names a file, but a folder of videos needs an output folder "
                    "(for example --output annotated/)")  # fmt: skip
    if args.image and looks_like_file and (len(args.image) > 1 or any(Path(i).is_dir() for i in args.image)):
        p.error(f"--output {output} names a file, but several images need an output folder "
                "(for example --output annotated/)")  # fmt: skip


def _check_output_types(args: argparse.Namespace) -> None:
    """Refuse an output file of a type its mode cannot write, before anything loads or is opened."""
    from emotion.io.sinks import check_output_type

    if not (args.image or args.video or args.realtime):
        return
    output = Path(args.output) if args.output else None
    if output is not None and not output.is_dir():
        if args.image and output.suffix:
            check_output_type(output, "image")
        elif not args.image and not (args.video and Path(args.video).is_dir()):
            check_output_type(output, "video")


def run(args: argparse.Namespace) -> int:
    if args.train or args.evaluate:
        return _train_or_evaluate(args)
    if args.export:
        return _export(args)
    source = _open_live_source(args) if args.realtime else None  # a missing camera fails before the model loads
    with signals_held():  # loading the model imports C extensions: a Ctrl-C comes after it, cleanly
        from emotion.recognizer import EmotionRecognizer
        from emotion.runtime import set_threads

        set_threads(args.threads or 1)
        recognizer = EmotionRecognizer(
            weights=args.weights,
            device=args.device,
            face_config=args.face_config,
            smoothing=args.smoothing_config,
            threads=args.threads or 1,
            backend=args.backend,
        )
    with recognizer:
        if args.image:
            return _images(recognizer, args)
        if source is not None:
            return _realtime(recognizer, source, args)
        if args.video and Path(args.video).is_dir():
            return _video_folder(recognizer, args)
        return _video(recognizer, args)


def _images(recognizer, args: argparse.Namespace) -> int:
    """--image: one line per image as it is done, each face with the model's probability of the emotion shown; an
    image that cannot be read gets its reason on its line, the others go on, and the run ends with one error."""
    from emotion.errors import EmotionError
    from emotion.jobs import run_images

    from emotion.pipeline import nonfinite_warning

    failed: list[EmotionError] = []
    total = broken = 0
    for path, rec, error in run_images(recognizer, args.image, args.output, args.json, overwrite=args.overwrite):
        total += 1
        if error is not None:
            failed.append(error)
            print(f"{path}: failed: {error.cli_message()}", flush=True)
            continue
        faces = "; ".join(
            f"face #{f['id']} {f['emotion']} (probability {f['confidence']:.2f})" if _valid(f) else
            f"face #{f['id']} no valid output" for f in rec["faces"]
        )  # fmt: skip
        broken += sum(not _valid(f) for f in rec["faces"])
        print(f"{rec['image']}: {faces or 'no face'}", flush=True)
    if broken:
        print(f"warning: {nonfinite_warning(broken)}", file=sys.stderr)
    if total == 1 and failed:
        raise failed[0]
    if failed:
        raise EmotionError(
            f"{len(failed)} of {plural(total, 'image')} could not be read (reasons above); the others were processed",
            fix="fix or remove those files",
        )
    return 0


def _valid(face: dict) -> bool:
    """Whether a face's JSON record holds the model's outputs (null where they were NaN or infinite)."""
    return None not in (face["emotion"], face["confidence"], face["valence"], face["arousal"])


def _video_folder(recognizer, args: argparse.Namespace) -> int:
    """--video DIR: every video in the folder, then the summary table."""
    from emotion.errors import EmotionError
    from emotion.jobs import batch_table, run_batch

    rows = run_batch(recognizer, args.video, args.output, args.overwrite, progress=not args.no_progress)
    print("\n".join(batch_table(rows)))
    failed = sum(r.error is not None for r in rows)
    if failed:
        raise EmotionError(f"{failed} of {plural(len(rows), 'video')} failed (reasons in the table above)")
    return 0


def _video(recognizer, args: argparse.Namespace) -> int:
    """--video FILE and --demo: one video through the pipeline, with object boxes if asked."""
    from emotion.io.sinks import default_json_path, prepare_output
    from emotion.jobs import make_demo_clip, run_video

    detector = _object_detector(args, recognizer, wait=True) if args.objects else None
    try:
        source, output = args.video, args.output
        if args.demo:
            folder = Path(args.output or "demo_output")
            output = folder / "demo_annotated.mp4"
            for path in (folder / "demo_input.mp4", output, default_json_path(output, output)):
                prepare_output(path, args.overwrite)  # refuse before writing anything
            source = make_demo_clip(folder / "demo_input.mp4", overwrite=args.overwrite)
        summary = run_video(recognizer, source, output, args.json, args.csv, overwrite=args.overwrite,
                            progress=not args.no_progress, objects=detector)  # fmt: skip
    finally:
        if detector is not None:
            detector.close()
    print("\n".join(summary.lines()))
    if detector is not None and not detector.error:
        print("  " + detector.summary())
    return 0


def _object_config(args: argparse.Namespace, recognizer):
    """The YOLO settings of the options, on the recognizer's device."""
    return dataclasses.replace(args.object_config, device=str(recognizer.device))


def _object_detector(args: argparse.Namespace, recognizer, wait: bool):
    """Start YOLO for --objects; a video run waits for it to load, and a model that cannot load is reported once."""
    from emotion.objects import ObjectDetector

    detector = ObjectDetector(_object_config(args, recognizer))
    if wait:
        detector.wait(timeout=120.0)
        if detector.error:
            print(detector.error, file=sys.stderr)
    return detector


def _open_live_source(args: argparse.Namespace):
    """--realtime's source under the latest-frame policy, after checking that a window can open (unless headless)."""
    from emotion.app.realtime import display_problem
    from emotion.errors import EmotionError
    from emotion.io.sources import open_source

    problem = None if args.headless else display_problem()
    if problem:
        raise EmotionError(problem, cli_fix="use --headless to run without a window")
    if args.no_sync:  # every frame of a file, as fast as the loop takes them
        return open_source(args.source or "0", policy="lossless", depth=1)
    return open_source(args.source or "0", policy="latest", sync=True)


def _realtime(recognizer, source, args: argparse.Namespace) -> int:
    """--realtime: the live loop in a window (or headless), then its summary."""
    from emotion.app.config import RealtimeConfig
    from emotion.app.realtime import run_realtime
    from emotion.configargs import from_namespace
    from emotion.errors import EmotionError
    from emotion.io.paths import check_distinct
    from emotion.io.sinks import default_json_path

    output = Path(args.output) if args.output else None
    json_path = Path(args.json) if args.json else (default_json_path(output, Path(source.name)) if output else None)
    check_distinct([source.video.info.path] if source.video else [], [output, json_path, args.csv])
    config = from_namespace(
        RealtimeConfig,
        args,
        output=output,
        json_path=json_path,
        csv_path=Path(args.csv) if args.csv else None,
        overwrite=args.overwrite,
        objects=args.objects,
        object_config=_object_config(args, recognizer),
        progress=not args.no_progress,
    )
    summary = run_realtime(recognizer, source, config)
    print("\n".join(summary.lines()))
    if summary.error:
        raise EmotionError(summary.error)
    return 0


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
