"""The face-stage cache: each clip's largest face track (aligned crops, normalised landmarks and, for a model with a
signal stream, face signals) as one compressed .npz.

`preprocess` runs the face stage once per clip, in worker processes, keyed by a hash of the file's bytes and the
preprocessing settings, so later epochs, runs and evaluations never run MediaPipe again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from emotion.align import DEFAULT_MARGIN, CropSpec
from emotion.atomic import atomic_open
from emotion.formats import IMAGE_SUFFIXES
from emotion.text import plural
from emotion.training.datasets import ClipRecord

CACHE_VERSION = 2
"""Part of every cache key: bump it when the cached arrays change meaning, so old entries are never reused.
2: PrepConfig.signals (entries of a signal-stream model hold the face signals)."""


@dataclass(frozen=True)
class PrepConfig:
    """Face-stage settings of preprocessing; part of the cache key. The crop fields match the model's (`of_model`), so
    training crops are the crops the recognizer hands the same model at inference."""

    crop_size: int = 64  # px, side of the cached square crops (the model's crop_size)
    in_chans: int = 1  # 1: grayscale crops, 3: BGR crops (the model's in_chans)
    crop_margin: float = DEFAULT_MARGIN  # the model's crop_margin, crop_framing and crop_rotate (see CropSpec)
    crop_framing: str = "brows"
    crop_rotate: bool = True
    max_faces: int = 10  # faces per frame the face stage follows; the largest track is kept
    max_side: int = 1920  # px; longer frames are downscaled for MediaPipe, as at inference
    signals: bool = False  # the face stage adds face signals (FaceConfig.signals), cached as `signals` (F, G)

    @classmethod
    def of_model(cls, config) -> PrepConfig:
        """The preprocessing whose crops (and, for a signal stream, face signals) a model (its ModelConfig) takes."""
        crop = CropSpec.of(config)
        return cls(crop.size, crop.in_chans, crop.margin, crop.framing, crop.rotate, signals=config.signals > 0)


@dataclass(frozen=True)
class CachedClip:
    """A record whose face track is in the cache."""

    record: ClipRecord
    path: str  # the .npz cache file
    frames: int  # frames with the face (F); 0 for a face-less clip


@dataclass
class PrepSummary:
    """Counts of one preprocessing pass; `lines()` is what training and evaluation print."""

    total: int = 0
    cached: int = 0  # found in the cache, face stage not run
    processed: int = 0  # face stage run now
    no_face: int = 0  # no face in any frame: skipped
    unreadable: int = 0  # could not be opened or decoded: skipped
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, reason) of the skipped ones

    def skip(self, source: str, reason: str, no_face: bool = False) -> None:
        """Count a clip left out (unreadable, or without a face) and keep the reason for the report."""
        if no_face:
            self.no_face += 1
        else:
            self.unreadable += 1
        self.failures.append((source, reason))

    def lines(self) -> list[str]:
        usable = self.total - self.no_face - self.unreadable
        out = [
            (
                f"preprocessing: {plural(self.total, 'clip')}, {usable} usable ({self.cached} from the cache, "
                f"{self.processed} run through the face stage), {self.no_face} without a face, {self.unreadable} "
                "unreadable"
            )
        ]
        out += [f"  skipped {Path(s).name}: {why}" for s, why in self.failures[:10]]
        if len(self.failures) > 10:
            out.append(f"  ... and {len(self.failures) - 10} more")
        return out


def content_hash(source: str | Path, memo: dict[str, list] | None = None) -> str:
    """sha1 of a file's bytes, or of a frame folder's names and bytes; memo maps path -> [size, mtime_ns, hash]."""
    p = Path(source)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = str(p.resolve())
    if memo is not None and key in memo and memo[key][0] == stamp:
        return memo[key][1]
    h = hashlib.sha1()
    for f in files:
        h.update(f.name.encode() if p.is_dir() else b"")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    if memo is not None:
        memo[key] = [stamp, digest]
    return digest


def cache_key(file_hash: str, prep: PrepConfig, face: str) -> str:
    """Cache entry name: hash of the source's content hash, the preprocessing settings and the face choice."""
    text = json.dumps([CACHE_VERSION, file_hash, asdict(prep), face], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.npz"


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """np.savez_compressed atomically (see emotion.atomic)."""
    path = Path(path)
    with atomic_open(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def _frames_of(source: Path) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) of a video file or of a frame folder (in name order); a video's unreadable frames are
    skipped with their index, so later frames keep the index their per-frame labels use."""
    from emotion.io.files import VideoSource, read_image

    if source.is_dir():
        images = sorted(f for f in source.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        yield from enumerate(read_image(f) for f in images)
        return
    video = VideoSource(source)
    try:
        for index, _, frame in video:
            yield index, frame
    finally:
        video.close()


_ANALYZERS: dict[PrepConfig, Any] = {}


def _analyzer(prep: PrepConfig):
    """One video-mode FaceAnalyzer per process and config, reset for every clip."""
    from emotion.face import FaceAnalyzer, FaceConfig

    if prep not in _ANALYZERS:
        config = FaceConfig(max_faces=prep.max_faces, max_side=prep.max_side, signals=prep.signals)
        _ANALYZERS[prep] = FaceAnalyzer(config, static=False)
    analyzer = _ANALYZERS[prep]
    analyzer.reset()
    return analyzer


def extract_track(source: str | Path, prep: PrepConfig, face: str = "largest") -> dict[str, np.ndarray]:
    """Run the face stage over a clip and keep one face: the track with the largest summed box area, or the
    left-/right-most face of each frame. -> crops (F, S, S[, 3]) uint8, landmarks (F, L, 3) float16 (normalised
    as at inference), frames (F,) int32 frame indices, total () frames read; with prep.signals also signals (F, G)
    float32, FaceSignals.vector() of each frame (all zero where the face stage gave the face none)."""
    from emotion.signals import SIGNAL_DIM

    analyzer = _analyzer(prep)
    crop = CropSpec.of(prep)
    tracks: dict[Any, dict[str, list]] = {}
    total = 0
    for index, frame in _frames_of(Path(source)):
        total += 1
        faces = analyzer(frame)
        if face in ("left", "right") and faces:
            centre = [f.box[0] + f.box[2] / 2 for f in faces]
            faces = [faces[int(np.argmin(centre) if face == "left" else np.argmax(centre))]]
        for f in faces:
            key = face if face in ("left", "right") else f.track_id
            t = tracks.setdefault(key, {"crops": [], "landmarks": [], "signals": [], "frames": [], "area": 0.0})
            t["crops"].append(crop(frame, f.landmarks))
            t["landmarks"].append(f.landmarks_norm)
            t["signals"].append(np.zeros(SIGNAL_DIM, np.float32) if f.signals is None else f.signals.vector())
            t["frames"].append(index)
            t["area"] += float(f.box[2] * f.box[3])
    shape = (prep.crop_size, prep.crop_size) + ((3,) if prep.in_chans == 3 else ())
    empty: dict[str, list] = {"crops": [], "landmarks": [], "signals": [], "frames": []}
    best = max(tracks.values(), key=lambda t: t["area"]) if tracks else empty
    arrays = {
        "crops": np.asarray(best["crops"], np.uint8).reshape(-1, *shape),
        "landmarks": np.asarray(best["landmarks"], np.float16).reshape(-1, 468, 3),
        "frames": np.asarray(best["frames"], np.int32),
        "total": np.array(total),
    }
    if prep.signals:
        arrays["signals"] = np.asarray(best["signals"], np.float32).reshape(-1, SIGNAL_DIM)
    return arrays


def _extract_to_cache(source: str, prep: PrepConfig, face: str, path: str) -> tuple[str, int, str]:
    """Worker job: extract one clip into the cache -> ('ok' | 'noface' | 'error', face frames, reason)."""
    try:
        arrays = extract_track(source, prep, face)
    except Exception as exc:  # noqa: BLE001 - any failure on one clip skips that clip, reported with its reason
        return "error", 0, " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    write_npz(path, **arrays)
    frames = len(arrays["frames"])
    return ("ok" if frames else "noface"), frames, ""


def _init_worker() -> None:
    """Preprocessing worker process: one thread each for PyTorch and OpenCV, so N workers use N cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ.setdefault("GLOG_minloglevel", "2")


def _load_memo(cache_dir: Path) -> dict[str, list]:
    try:
        return json.loads((cache_dir / "hashes.json").read_text())
    except (OSError, ValueError):
        return {}


def _save_memo(cache_dir: Path, memo: dict[str, list]) -> None:
    with atomic_open(cache_dir / "hashes.json") as f:
        f.write(json.dumps(memo).encode())


def preprocess(
    records: list[ClipRecord],
    cache_dir: str | Path,
    prep: PrepConfig = PrepConfig(),
    workers: int = 1,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> tuple[list[CachedClip], PrepSummary]:
    """Make sure every record's face track is cached; returns the usable clips (in record order) and a summary.

    Only uncached clips run the face stage, in `workers` processes (1: in this process). Unreadable and face-less
    clips are counted and left out. `shard` (rank, world) runs only every world-th uncached clip (distributed).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo = _load_memo(cache_dir)
    summary = PrepSummary(total=len(records))
    paths = _locate(records, cache_dir, prep, memo, summary)
    todo = [i for i, path in enumerate(paths) if path is not None and not path.is_file()]
    summary.cached = sum(path is not None for path in paths) - len(todo)
    if shard[0] == 0 or not todo:
        _save_memo(cache_dir, memo)
    mine = todo[shard[0] :: shard[1]]
    jobs = [(records[i].source, prep, records[i].face, str(paths[i])) for i in mine]
    results = dict(zip(mine, _run_face_stage(jobs, workers, progress), strict=True))
    summary.processed = len(todo)
    clips = []
    for i, r in enumerate(records):
        if paths[i] is None:
            continue
        status = results.get(i)
        if status is not None and status[0] == "error":
            summary.skip(r.source, status[2])
        elif not paths[i].is_file():
            summary.skip(r.source, "not in the cache (another process did not write it)")
        elif (frames := status[1] if status is not None else _cached_frames(paths[i])) == 0:
            summary.skip(r.source, "no face found in any frame", no_face=True)
        else:
            clips.append(CachedClip(r, str(paths[i]), frames))
    return clips, summary


def _locate(
    records: list[ClipRecord], cache_dir: Path, prep: PrepConfig, memo: dict[str, list], summary: PrepSummary
) -> list[Path | None]:
    """Each record's cache file (None for a source that cannot be read, counted in the summary)."""
    paths: list[Path | None] = []
    for r in records:
        try:
            paths.append(cache_path(cache_dir, cache_key(content_hash(r.source, memo), prep, r.face)))
        except OSError as exc:
            paths.append(None)
            summary.skip(r.source, f"cannot read ({exc.strerror or exc})")
    return paths


def _run_face_stage(jobs: list[tuple], workers: int, progress: bool) -> list[tuple[str, int, str]]:
    """_extract_to_cache for every job, in this process or in `workers` spawned ones; results in job order."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="clip", desc="face stage", disable=not progress or not jobs)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = []
            for job in jobs:
                results.append(_extract_to_cache(*job))
                bar.update()
            return results
        with ProcessPoolExecutor(min(workers, len(jobs)), get_context("spawn"), initializer=_init_worker) as pool:
            futures = {pool.submit(_extract_to_cache, *job): k for k, job in enumerate(jobs)}
            done: dict[int, tuple[str, int, str]] = {}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                bar.update()
            return [done[k] for k in range(len(jobs))]
    finally:
        bar.close()


def _cached_frames(path: Path) -> int:
    with np.load(path) as z:
        return int(z["frames"].shape[0])
