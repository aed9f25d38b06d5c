"""The command line's jobs over the public API: a video, images, a folder or manifest of videos (each video through
`run_job`, on this machine or on a Ray worker), and the built-in demo."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from emotion.atomic import atomic_open
from emotion.errors import EmotionError
from emotion.formats import VIDEO_SUFFIXES
from emotion.io.files import read_image
from emotion.io.paths import check_distinct, unique_stems
from emotion.io.sinks import (
    H264Config, JsonWriter, ResultSinks, VideoWriter, default_json_path, fit_name, prepare_output, write_image,
)
from emotion.io.sources import ImageList, open_source
from emotion.overlay import OverlayConfig, check_signals, draw_frame
from emotion.pipeline import Pipeline, RunSummary
from emotion.recognizer import EmotionRecognizer
from emotion.text import plural


def run_video(
    recognizer: EmotionRecognizer,
    source: str | Path,
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    overwrite: bool = True,
    progress: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
    objects=None,
    h264: H264Config | None = H264Config(),
    stop: Callable[[], bool] | None = None,
) -> RunSummary:
    """Process a whole video file: annotated video (if `output`), per-frame JSON (always), CSV (if `csv_path`).

    `objects` (an `emotion.objects.ObjectDetector`) adds its latest object boxes under the faces of the video.
    `h264` sets how an .mp4 is encoded; None writes MPEG-4 Part 2 (mp4v), the writer before H.264. `stop()`
    returning True ends the run after the current frame, its outputs closed valid (a cluster worker asked to stop).
    """
    if output:
        check_signals(overlay, recognizer.face_config.signals)  # before any file is opened
    video = open_source(source, "lossless", on_decode=lambda ms: recognizer.timer.add("decode", ms))
    try:
        info = video.video.info
        json_path = json_path or default_json_path(Path(output) if output else None, info.path)
        check_distinct([info.path], [output, json_path, csv_path])
        out = prepare_output(output, overwrite, "video") if output else None
        jpath = prepare_output(json_path, overwrite)
        cpath = prepare_output(csv_path, overwrite) if csv_path else None
        sinks = ResultSinks(
            out, jpath, cpath, fps=info.fps, timer=recognizer.timer, h264=h264, signals=recognizer.face_config.signals
        )
        pipeline = Pipeline(recognizer, [sinks], draw=out is not None, objects=objects, overlay=overlay)
        if stop is not None:
            pipeline.on_frame = lambda *_: not stop()
        return pipeline.run(video, progress=progress)
    finally:
        video.close()


def run_images(
    recognizer: EmotionRecognizer,
    paths: list[str | Path],
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    overwrite: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
) -> Iterator[tuple[Path, dict | None, EmotionError | None]]:
    """Classify every face of each image (a folder stands for the images in it), one image at a time; write annotated
    copies (a file for one image file, a folder for several) and the JSON list, valid on disk after every image.

    Missing files and the outputs are checked before any image is read; the images are then decoded and processed as
    the returned iterator is consumed, yielding (path, record, None) per image, or (path, None, error) for an image
    that cannot be decoded, which is left out of the JSON while the others go on.
    """
    source = ImageList(paths)
    several = len(source.paths) > 1 or any(Path(p).is_dir() for p in paths)
    if output and several and Path(output).suffix and not Path(output).is_dir():
        raise EmotionError(f"output {output} names a file, but there are several images", fix="give a folder name")
    out_dir = Path(output) if output and (several or Path(output).suffix == "") else None
    names = unique_stems(source.paths)
    if out_dir:
        targets = [out_dir / fit_name(f"{name}_annotated", ".png") for name in names]
    else:
        targets = [output] * len(source.paths)
    check_distinct(source.paths, [*filter(None, targets), json_path])
    if any(targets):
        check_signals(overlay, recognizer.face_config.signals)
    targets = [prepare_output(target, overwrite, "image") if target else None for target in targets]
    jpath = prepare_output(json_path, overwrite) if json_path else None
    return _image_records(recognizer, source, targets, jpath, overlay)


def _image_records(
    recognizer: EmotionRecognizer,
    source: ImageList,
    targets: list[Path | None],
    json_path: Path | None,
    overlay: OverlayConfig,
) -> Iterator[tuple[Path, dict | None, EmotionError | None]]:
    """The loop of `run_images`: decode, classify, draw and record one image, then the next."""
    writer = JsonWriter(json_path) if json_path else None
    try:
        for (path, image), target in zip(source, targets):
            if isinstance(image, EmotionError):
                yield path, None, image
                continue
            result = recognizer.predict_image(image)
            record = {"image": str(path), **result.to_dict()}
            del record["frame"], record["time"]
            if writer:
                writer.write(record)
            if target:
                write_image(target, draw_frame(image, result, overlay))
            yield path, record, None
    finally:
        if writer:
            writer.close()


def demo_photo() -> Path:
    """The demo's photo: the portrait of Grace Hopper that matplotlib (a MediaPipe dependency) ships as sample data.

    A frontal face the tool reads right (neutral). ultralytics' `zidane.jpg`, used before, has a second face, a man
    looking on, that the FER2013 network misreads as sad.
    """
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def zoom_frames(still: np.ndarray, frames: int, size: tuple[int, int], focus_x: float = 0.5) -> Iterator[np.ndarray]:
    """`frames` frames of `size` (w, h) that zoom slowly (1x to 1.25x) into `still`, centred at `focus_x` of its
    width and 30 % of its height."""
    h, w = still.shape[:2]
    for i in range(frames):
        zoom = 1.0 + 0.25 * i / max(frames - 1, 1)
        cw, ch = w / zoom, h / zoom
        x0, y0 = (w - cw) * focus_x, (h - ch) * 0.3
        m = np.float32([[size[0] / cw, 0, -x0 * size[0] / cw], [0, size[1] / ch, -y0 * size[1] / ch]])
        yield cv2.warpAffine(still, m, size, flags=cv2.INTER_LINEAR)


def make_demo_clip(path: Path, frames: int = 72, fps: float = 24.0, overwrite: bool = False) -> Path:
    """Write a short clip (`frames` at `fps`) that slowly zooms into `demo_photo()`."""
    size = (640, 720)
    writer = VideoWriter(prepare_output(path, overwrite), fps, size)
    try:
        for frame in zoom_frames(read_image(demo_photo()), frames, size):
            writer.write(frame)
    finally:
        writer.close()
    return path


@dataclass(frozen=True)
class BatchJob:
    """One video of a batch and where its outputs go: the annotated video (or None, JSON only), the JSON, the CSV (or
    None), and the done-marker written after them."""

    source: Path
    output: Path | None
    json_path: Path
    csv_path: Path | None = None

    @property
    def marker(self) -> Path:
        """`<json name>.done`: written atomically once the video's outputs are complete, so `--resume` can skip it."""
        return self.json_path.with_name(fit_name(self.json_path.name, ".done"))


@dataclass
class BatchRow:
    """One video of a batch: its summary, or the reason it failed; `done` holds the marker of an earlier run that
    completed it (then it was skipped), and `stopped` says a stop request cut it short or it never started (its
    outputs are incomplete or absent)."""

    source: Path
    summary: RunSummary | None = None
    error: str | None = None
    done: dict | None = None
    stopped: bool = False
    retried: int = 0  # times its worker died before it was processed (on a cluster)


def read_manifest(path: str | Path) -> list[tuple[Path, str | None]]:
    """The (video, output name or None) pairs of a manifest: CSV rows `path[,name]` (a first row `path,name` is a
    header) or JSON lines `{"path": ..., "name": ...}`; blank lines are skipped, relative paths are relative to the
    manifest's folder. A name replaces the video's stem in its output names."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EmotionError(f"manifest not found: {path}", fix="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EmotionError(f"cannot read the manifest {path}: {exc}", fix="give a UTF-8 CSV or JSON lines file") from None
    entries = []
    rows = _jsonl_rows(path, text) if path.suffix.lower() == ".jsonl" else _csv_rows(text)
    for line, video, name in rows:
        if not video:
            raise EmotionError(f"{path} line {line} has no video path", fix="give each line a path")
        if name is not None and (not name or Path(name).name != name or name in (".", "..")):
            raise EmotionError(f"{path} line {line}: output name {name!r} is not a plain file name",
                               fix="give a name without folders, or none")  # fmt: skip
        entries.append((path.parent / Path(video).expanduser(), name))
    if not entries:
        raise EmotionError(f"the manifest {path} lists no videos", fix="give one video path per line")
    return entries


def _csv_rows(text: str) -> Iterator[tuple[int, str, str | None]]:
    import csv

    for line, cells in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in cells]
        if not any(cells) or (line == 1 and cells[0].lower() == "path"):
            continue
        yield line, cells[0], (cells[1] or None) if len(cells) > 1 else None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, str, str | None]]:
    import json

    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EmotionError(f"{path} line {line} is not JSON: {exc.msg}", fix='write {"path": "video.mp4"}') from None
        if not isinstance(item, dict) or not isinstance(item.get("path", ""), str) or not isinstance(
            item.get("name") or "", str
        ):
            raise EmotionError(f"{path} line {line} is not an object with a string path",
                               fix='write {"path": "video.mp4", "name": "optional output name"}')  # fmt: skip
        yield line, item.get("path", ""), item.get("name")


def batch_jobs(videos: str | Path, output_dir: str | Path | None, csv: bool = False) -> list[BatchJob]:
    """The jobs of a folder of videos or a manifest: annotated into `output_dir` (<name>_annotated.mp4 +
    <name>_annotated_results.json), or without `output_dir` JSON only, <name>_results.json in the working folder;
    with `csv`, each JSON has a CSV of the same name beside it (<...>_results.csv).
    <name> is the manifest's output name, else the file's stem, or `unique_stems`' longer name where two videos share
    a stem (talk.mp4 and talk.avi: talk_mp4, talk_avi)."""
    videos = Path(videos)
    if videos.is_dir():
        paths = sorted(p for p in videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise EmotionError(f"no video files in {videos}", fix=f"it needs {', '.join(sorted(VIDEO_SUFFIXES))} files")
        given: list[str | None] = [None] * len(paths)
    else:
        paths, given = map(list, zip(*read_manifest(videos)))
    output_dir = Path(output_dir) if output_dir is not None else None
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise EmotionError(
            f"the output for a folder of videos must be a folder, but {output_dir} is a file", fix="give a folder name"
        )
    names = [g or n for g, n in zip(given, unique_stems(paths))]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise EmotionError(f"two videos of the manifest would write the same outputs: {', '.join(twice)}",
                           fix="give each its own output name")  # fmt: skip
    jobs = []
    for path, name in zip(paths, names):
        output = output_dir / fit_name(f"{name}_annotated", ".mp4") if output_dir is not None else None
        json_path = default_json_path(output, path) if output else Path(fit_name(f"{name}_results", ".json"))
        jobs.append(BatchJob(path, output, json_path, json_path.with_suffix(".csv") if csv else None))
    return jobs


def run_job(
    recognizer: EmotionRecognizer,
    job: BatchJob,
    overwrite: bool = False,
    overlay: OverlayConfig = OverlayConfig(),
    marker: bool = False,
    stop: Callable[[], bool] | None = None,
) -> BatchRow:
    """One video of a batch, on this machine or on a cluster worker: its outputs, then (if `marker`) its done-marker,
    written atomically once they are complete. An EmotionError (a bad file) becomes the row's error; a stale marker
    is removed first, so an interrupted rerun never looks complete. `stop()` returning True ends the video early,
    its outputs closed valid but incomplete (no marker)."""
    row = BatchRow(job.source)
    with contextlib.suppress(OSError):
        job.marker.unlink()
    try:
        row.summary = run_video(recognizer, job.source, job.output, job.json_path, job.csv_path, overwrite=overwrite,
                                progress=False, overlay=overlay, stop=stop)  # fmt: skip
    except EmotionError as exc:
        row.error = str(exc)
        return row
    row.stopped = stop is not None and stop()
    if marker and not row.stopped:
        write_marker(job, row.summary)
    return row


def write_marker(job: BatchJob, summary: RunSummary) -> None:
    """The done-marker of a finished video: what it produced, so a resumed batch can list it without rereading it."""
    import json

    record = {"video": str(job.source), "frames": summary.frames, "faces": summary.faces,
              "seconds": round(summary.seconds, 3), "outputs": [str(p) for p in summary.outputs]}  # fmt: skip
    with atomic_open(job.marker) as f:
        f.write(json.dumps(record).encode())


def finished(job: BatchJob) -> dict | None:
    """The done-marker of `job` when it and every output it lists are on disk, else None (the video is redone)."""
    import json

    try:
        record = json.loads(job.marker.read_text())
        outputs = [Path(p) for p in record["outputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if all(p.is_file() for p in outputs) else None


def run_batch(
    recognizer: EmotionRecognizer,
    videos: str | Path,
    output_dir: str | Path | None,
    overwrite: bool = False,
    progress: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
    resume: bool = False,
    csv: bool = False,
) -> list[BatchRow]:
    """Process every video of a folder or manifest (`batch_jobs`; with `csv` a CSV beside each JSON) one at a time,
    continuing past bad files.

    With `resume`, each finished video gets a done-marker, a video with one from an earlier run is skipped, and the
    incomplete outputs of the others are replaced."""
    rows = []
    for job in tqdm(batch_jobs(videos, output_dir, csv), unit="video", desc="videos", disable=not progress):
        done = finished(job) if resume else None
        if done is not None:
            rows.append(BatchRow(job.source, done=done))
            continue
        rows.append(run_job(recognizer, job, overwrite or resume, overlay, marker=resume))
    return rows


def batch_table(rows: list[BatchRow], elapsed: float | None = None) -> list[str]:
    """The end-of-batch summary: one line per video with its outcome, frames, faces and seconds; given the batch's
    `elapsed` seconds, also each video's frames per second and the aggregate rate of the videos processed."""
    width = max(len(r.source.name) for r in rows)
    rate = elapsed is not None
    lines = [f"{'video':<{width}}  {'result':<9} {'frames':>7} {'faces':>7} {'seconds':>8}"
             + (f" {'fps':>7}" if rate else "") + "  reason"]  # fmt: skip
    for r in rows:
        numbers, reason = ("-", "-", "-", "-"), r.error
        if r.summary is not None:
            s = r.summary
            numbers = (s.frames, s.faces, f"{s.seconds:.1f}", f"{s.fps:.1f}")
        elif r.done is not None:
            numbers = (r.done["frames"], r.done["faces"], f"{r.done['seconds']:.1f}", "-")
        if r.stopped:
            result = "stopped"
            reason = reason or ("stopped before the end: outputs incomplete, no done-marker" if r.summary else
                                "not started: the batch was stopped")  # fmt: skip
        else:
            result = "done" if r.done is not None else "processed" if r.summary is not None else "failed"
            reason = "done in an earlier run" if r.done is not None else reason
            if r.retried and r.summary is not None:
                reason = f"retried after its worker died ({plural(r.retried, 'time')})"
        line = f"{r.source.name:<{width}}  {result:<9} {numbers[0]:>7} {numbers[1]:>7} {numbers[2]:>8}"
        line += f" {numbers[3]:>7}" if rate else ""
        lines.append(line + (f"  {reason}" if reason else ""))
    processed = [r for r in rows if r.summary is not None and not r.stopped]
    earlier = sum(r.done is not None for r in rows)
    lines.append(f"{len(processed)} of {plural(len(rows), 'video')} processed"
                 + (f", {earlier} done in an earlier run" if earlier else ""))  # fmt: skip
    if rate:
        frames = sum(r.summary.frames for r in processed)
        lines.append(f"{len(processed) / elapsed * 60:.1f} videos per minute, {frames / elapsed:.1f} frames per "
                     f"second over the batch's {elapsed:.1f} s")  # fmt: skip
    return lines
