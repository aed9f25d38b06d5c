"""What each mode of the command line does, once its options are parsed and checked (`emotion.cli`): thin calls
into the public API."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from emotion.cli import training_config
from emotion.formats import is_batch
from emotion.interrupts import signals_held
from emotion.text import plural


def train_or_evaluate(args: argparse.Namespace) -> int:
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


def export(args: argparse.Namespace) -> int:
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


def run(args: argparse.Namespace) -> int:
    if args.train or args.evaluate:
        return train_or_evaluate(args)
    if args.export:
        return export(args)
    if args.cluster:
        return _video_cluster(args)
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
        if args.video and is_batch(args.video):
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
    images = run_images(recognizer, args.image, args.output, args.json, overwrite=args.overwrite,
                        overlay=args.overlay_config)  # fmt: skip
    for path, rec, error in images:
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
    """--video DIR or MANIFEST: every video, one at a time, then the summary table."""
    from emotion.jobs import batch_table, run_batch

    rows = run_batch(recognizer, args.video, args.output, args.overwrite, progress=not args.no_progress,
                     overlay=args.overlay_config, resume=bool(args.resume), csv=args.csv_per_video)  # fmt: skip
    print("\n".join(batch_table(rows)))
    return _batch_outcome(rows)


def _batch_outcome(rows) -> int:
    """0 when every video was processed (or done earlier), else one error naming how many failed."""
    from emotion.errors import EmotionError

    failed = sum(r.error is not None for r in rows)
    if failed:
        raise EmotionError(f"{failed} of {plural(len(rows), 'video')} failed (reasons in the table above)")
    return 0


def _video_cluster(args: argparse.Namespace) -> int:
    """--video DIR or MANIFEST --cluster: the videos as tasks on Ray's workers, then the table with the rates."""
    from emotion.cluster import ClusterConfig, WorkerConfig, absolute, import_ray

    import_ray()  # before anything else: without Ray, one line naming the extra
    from emotion.jobs import batch_jobs, batch_table
    from emotion.cluster import run_cluster

    jobs = [absolute(job) for job in batch_jobs(args.video, args.output, args.csv_per_video)]
    weights = os.path.abspath(args.weights) if args.weights else None  # the workers' working folder is not ours
    config = WorkerConfig(weights=weights, device=args.device, backend=args.backend, threads=args.threads or 1,
                          face=args.face_config, smoothing=args.smoothing_config, overlay=args.overlay_config)  # fmt: skip
    cluster = ClusterConfig(address=args.cluster, workers=args.workers)
    if args.retries is not None:
        cluster = dataclasses.replace(cluster, retries=args.retries)
    try:
        rows, elapsed = run_cluster(jobs, config, cluster, overwrite=args.overwrite, resume=bool(args.resume),
                                    progress=not args.no_progress)  # fmt: skip
    except KeyboardInterrupt as exc:
        if hasattr(exc, "rows"):
            print("\n".join(batch_table(exc.rows, exc.elapsed)))
        raise
    print("\n".join(batch_table(rows, elapsed)))
    return _batch_outcome(rows)


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
                            progress=not args.no_progress, overlay=args.overlay_config, objects=detector)  # fmt: skip
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
    """--realtime's source under the latest-frame policy (every frame of a file without sync), after checking that a
    window can open (unless headless)."""
    from emotion.app.config import RealtimeConfig
    from emotion.app.realtime import display_problem
    from emotion.configargs import from_namespace
    from emotion.errors import EmotionError
    from emotion.io.sources import open_source

    config = from_namespace(RealtimeConfig, args)
    problem = None if config.headless else display_problem()
    if problem:
        raise EmotionError(problem, cli_fix="use --headless to run without a window")
    if not config.sync:  # every frame of a file, as fast as the loop takes them
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
        overlay=args.overlay_config,
        progress=not args.no_progress,
    )
    summary = run_realtime(recognizer, source, config)
    print("\n".join(summary.lines()))
    if summary.error:
        raise EmotionError(summary.error)
    return 0
