"""The command line's jobs over the public API: a video, images, a folder of videos, and the built-in demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

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
) -> RunSummary:
    """Process a whole video file: annotated video (if `output`), per-frame JSON (always), CSV (if `csv_path`).

    `objects` (an `emotion.objects.ObjectDetector`) adds its latest object boxes under the faces of the video.
    `h264` sets how an .mp4 is encoded; None writes MPEG-4 Part 2 (mp4v), the writer before H.264.
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


@dataclass
class BatchRow:
    """One video of a batch: its summary, or the reason it failed."""

    source: Path
    summary: RunSummary | None = None
    error: str | None = None


def run_batch(
    recognizer: EmotionRecognizer,
    folder: str | Path,
    output_dir: str | Path | None,
    overwrite: bool = False,
    progress: bool = True,
    overlay: OverlayConfig = OverlayConfig(),
) -> list[BatchRow]:
    """Process every video in `folder`, continuing past bad files: annotated into `output_dir`
    (<name>_annotated.mp4 + <name>_annotated_results.json), or without `output_dir` JSON only,
    <name>_results.json in the working folder. <name> is the file's stem, or `unique_stems`' longer name where two
    videos share a stem (talk.mp4 and talk.avi: talk_mp4, talk_avi)."""
    folder = Path(folder)
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise EmotionError(f"no video files in {folder}", fix=f"it needs {', '.join(sorted(VIDEO_SUFFIXES))} files")
    output_dir = Path(output_dir) if output_dir is not None else None
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise EmotionError(
            f"the output for a folder of videos must be a folder, but {output_dir} is a file", fix="give a folder name"
        )
    rows = []
    names = unique_stems(videos)
    for path, name in zip(tqdm(videos, unit="video", desc="videos", disable=not progress), names):
        row = BatchRow(path)
        try:
            output = output_dir / fit_name(f"{name}_annotated", ".mp4") if output_dir is not None else None
            json_path = None if output_dir is not None else Path(fit_name(f"{name}_results", ".json"))
            row.summary = run_video(
                recognizer, path, output, json_path, overwrite=overwrite, progress=False, overlay=overlay
            )
        except EmotionError as exc:
            row.error = str(exc)
        rows.append(row)
    return rows


def batch_table(rows: list[BatchRow]) -> list[str]:
    """The end-of-batch summary: one line per video with its outcome, frames, faces and seconds."""
    width = max(len(r.source.name) for r in rows)
    lines = [f"{'video':<{width}}  {'result':<9} {'frames':>7} {'faces':>7} {'seconds':>8}  reason"]
    for r in rows:
        s = r.summary
        if s:
            lines.append(f"{r.source.name:<{width}}  {'processed':<9} {s.frames:>7} {s.faces:>7} {s.seconds:>8.1f}")
        else:
            lines.append(f"{r.source.name:<{width}}  {'failed':<9} {'-':>7} {'-':>7} {'-':>8}  {r.error}")
    done = sum(r.summary is not None for r in rows)
    lines.append(f"{done} of {plural(len(rows), 'video')} processed")
    return lines
