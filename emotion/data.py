"""Training data: dataset adapters, a face-stage cache per clip, clip sampling, augmentation, samplers and splits.

Every adapter turns a dataset on disk into ClipRecords (one per video or frame folder). `preprocess` runs the face
stage once per clip and caches the largest track's aligned crops and normalised landmarks as a compressed .npz keyed
by a hash of the file and the preprocessing settings, so epochs never run MediaPipe. ClipDataset samples T-frame
windows from the cache with temporal jitter and augmentation that moves crops and landmarks together.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from emotion.atomic import atomic_open
from emotion.labels import CIRCUMPLEX, LABELS
from emotion.text import plural

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
FORMATS = ("auto", "folder", "csv", "ravdess", "cremad", "oulu", "affwild")
SPLITS = ("train", "val", "test")
CACHE_VERSION = 1
"""Part of every cache key: bump it when the cached arrays change meaning, so old entries are never reused."""

# fmt: off
LABEL_ALIASES: dict[str, int] = {
    **{name: i for i, name in enumerate(LABELS)},
    "anger": 0, "ang": 0, "an": 0,
    "disgusted": 1, "dis": 1, "di": 1,
    "fearful": 2, "afraid": 2, "fea": 2, "fe": 2,
    "happiness": 3, "joy": 3, "hap": 3, "ha": 3,
    "neu": 4, "ne": 4,
    "sadness": 5, "sa": 5,
    "surprised": 6, "sur": 6, "su": 6,
}
# fmt: on
"""Lower-case category names used by common datasets (AFEW, Oulu-CASIA, CK+, CREMA-D, JAFFE codes) -> LABELS index."""

RAVDESS_EMOTIONS: dict[str, int] = {"01": 4, "02": 4, "03": 3, "04": 5, "05": 0, "06": 2, "07": 1, "08": 6}
"""RAVDESS emotion code (third field) -> LABELS index; 02 'calm' has no category of its own and counts as neutral."""

CREMAD_EMOTIONS: dict[str, int] = {"ANG": 0, "DIS": 1, "FEA": 2, "HAP": 3, "NEU": 4, "SAD": 5}
"""CREMA-D emotion code (third field of the file name) -> LABELS index."""

_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_NO_VALUE = -5.0  # Aff-Wild2 marks frames without a valence/arousal annotation with -5

# fmt: off
MIRROR: tuple[int, ...] = (
    0, 1, 2, 248, 4, 5, 6, 249, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 250, 251, 252, 253, 254, 255, 256,
    257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278,
    279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300,
    301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 322,
    323, 94, 324, 325, 326, 327, 328, 329, 330, 331, 332, 333, 334, 335, 336, 337, 338, 339, 340, 341, 342, 343,
    344, 345, 346, 347, 348, 349, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 360, 361, 362, 363, 364, 365,
    366, 367, 368, 369, 370, 371, 372, 373, 374, 375, 376, 377, 378, 379, 151, 152, 380, 381, 382, 383, 384, 385,
    386, 387, 388, 389, 390, 164, 391, 392, 393, 168, 394, 395, 396, 397, 398, 399, 175, 400, 401, 402, 403, 404,
    405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 195, 419, 197, 420, 199, 200, 421, 422,
    423, 424, 425, 426, 427, 428, 429, 430, 431, 432, 433, 434, 435, 436, 437, 438, 439, 440, 441, 442, 443, 444,
    445, 446, 447, 448, 449, 450, 451, 452, 453, 454, 455, 456, 457, 458, 459, 460, 461, 462, 463, 464, 465, 466,
    467, 3, 7, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72,
    73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,
    123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144,
    145, 146, 147, 148, 149, 150, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 165, 166, 167, 169, 170,
    171, 172, 173, 174, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193,
    194, 196, 198, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219,
    220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241,
    242, 243, 244, 245, 246, 247,
)
# fmt: on
"""Face-mesh index of each landmark's mirror image (left <-> right; the 28 midline points map to themselves), so a
horizontally flipped face keeps its semantic landmark order. Derived once by optimal assignment of the x-mirrored mesh
onto itself over five real frontal faces, summed; tests check it against MediaPipe on a flipped photo."""


def label_index(name: str | int) -> int | None:
    """A category name (any case, common synonyms) or index 0-6 -> LABELS index; None if it is not a category."""
    if isinstance(name, int) or str(name).strip().isdigit():
        value = int(name)
        return value if 0 <= value < len(LABELS) else None
    return LABEL_ALIASES.get(str(name).strip().lower())


@dataclass(frozen=True)
class ClipRecord:
    """One labelled clip of a dataset: a video file or a folder of frames."""

    source: str  # path of the video file, or of the folder holding the clip's frames in name order
    label: int = -1  # index into LABELS; -1 when the clip has no category (dimensional data only)
    valence: float | None = None  # [-1, 1], one valence for the whole clip; None when not annotated
    arousal: float | None = None  # [-1, 1], one arousal for the whole clip; None when not annotated
    va_file: str | None = None  # per-frame 'valence,arousal' lines (Aff-Wild2 style), overrides the clip values
    subject: str | None = None  # person id, for subject-independent splits; None when the dataset does not say
    split: str | None = None  # 'train', 'val' or 'test' when the dataset fixes it, else None (see assign_splits)
    face: str = "largest"  # which face to keep: 'largest' track, or the 'left' / 'right' face of each frame


@dataclass
class DatasetScan:
    """What an adapter found: usable records and the files it passed over, with the reason."""

    format: str
    records: list[ClipRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was not used)


def _files(root: Path, suffixes: frozenset[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def _norm_split(name: str | None) -> str | None:
    """'train', 'val' or 'test' from a split name or a folder named after one ('Val_AFEW', 'Train_Set'); else None."""
    if not name:
        return None
    name = name.strip().lower()
    return _SPLIT_ALIASES.get(name) or _SPLIT_ALIASES.get(re.split(r"[_\- ]", name)[0])


def scan_folder(root: str | Path) -> DatasetScan:
    """`root/<label>/*.mp4|avi|...` (AFEW's layout), optionally under `root/<train|val|test>/`; frame folders too."""
    root = Path(root)
    records, skipped = [], []
    for path in _files(root, VIDEO_SUFFIXES) + _frame_folders(root):
        parts = path.relative_to(root).parts[:-1]
        label = label_index(parts[-1]) if parts else None
        if label is None:
            skipped.append((str(path), f"its folder '{parts[-1] if parts else root.name}' is not a category name"))
            continue
        split = _norm_split(parts[-2]) if len(parts) >= 2 else None
        records.append(ClipRecord(str(path), label, split=split))
    return DatasetScan("folder", records, skipped)


def _frame_folders(root: Path) -> list[Path]:
    """Folders that directly hold two or more image files (one clip of frames each)."""
    counts = Counter(p.parent for p in _files(root, IMAGE_SUFFIXES))
    return sorted(d for d, n in counts.items() if n >= 2)


def _float_or_none(text: str | None) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def scan_csv(path: str | Path) -> DatasetScan:
    """A manifest with a header `path,label[,valence,arousal][,split][,subject][,va_file]`; paths relative to it.

    label is a category name or index (empty for dimensional-only rows); valence/arousal in [-1, 1]; split is
    train, val or test.
    """
    path = Path(path)
    records, skipped = [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower() for c in reader.fieldnames or ()}
        if "path" not in columns or not ({"label", "valence", "va_file"} & columns):
            raise ValueError(
                f"{path}: the header needs 'path' and 'label' (or 'valence,arousal'), got {sorted(columns)}"
            )
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            source = path.parent / row["path"]
            try:
                label = -1 if not row.get("label") else label_index(row["label"])
                valence, arousal = _float_or_none(row.get("valence")), _float_or_none(row.get("arousal"))
            except ValueError as exc:
                skipped.append((str(source), f"bad value in the manifest ({exc})"))
                continue
            if label is None:
                skipped.append((str(source), f"label '{row['label']}' is not one of {', '.join(LABELS)}"))
                continue
            va_file = str(path.parent / row["va_file"]) if row.get("va_file") else None
            if label < 0 and valence is None and va_file is None:
                skipped.append((str(source), "no label and no valence/arousal"))
                continue
            split = row.get("split") or None
            if split and _norm_split(split) is None:
                skipped.append((str(source), f"split '{split}' is not train, val or test"))
                continue
            records.append(
                ClipRecord(
                    str(source), label, valence, arousal, va_file, row.get("subject") or None, _norm_split(split)
                )
            )
    return DatasetScan("csv", records, skipped)


def scan_ravdess(root: str | Path) -> DatasetScan:
    """RAVDESS `MM-VC-EE-II-SS-RR-AA.mp4` (modality, channel, emotion, intensity, statement, repetition, actor).

    Audio-only files (modality 03) are skipped; emotion 02 'calm' maps to neutral; the actor is the subject.
    """
    records, skipped = [], []
    for path in _files(Path(root), VIDEO_SUFFIXES):
        m = _RAVDESS_NAME.match(path.stem)
        if m is None or m.group(3) not in RAVDESS_EMOTIONS:
            skipped.append((str(path), "name is not a RAVDESS code MM-VC-EE-II-SS-RR-AA"))
        elif m.group(1) == "03":
            skipped.append((str(path), "audio-only RAVDESS file"))
        else:
            records.append(ClipRecord(str(path), RAVDESS_EMOTIONS[m.group(3)], subject=f"actor{m.group(7)}"))
    return DatasetScan("ravdess", records, skipped)


def scan_cremad(root: str | Path) -> DatasetScan:
    """CREMA-D `1001_DFA_ANG_XX.flv` (actor, sentence, emotion ANG/DIS/FEA/HAP/NEU/SAD, level); actor = subject."""
    records, skipped = [], []
    for path in _files(Path(root), VIDEO_SUFFIXES):
        m = _CREMAD_NAME.match(path.stem)
        if m is None or m.group(3) not in CREMAD_EMOTIONS:
            skipped.append((str(path), "name is not a CREMA-D code 1001_DFA_ANG_XX"))
        else:
            records.append(ClipRecord(str(path), CREMAD_EMOTIONS[m.group(3)], subject=m.group(1)))
    return DatasetScan("cremad", records, skipped)


def scan_oulu(root: str | Path) -> DatasetScan:
    """Oulu-CASIA style image sequences: `<subject>/<Label>/*.jpeg` (one folder of frames per clip), or
    `<Label>/<clip>/*.jpeg` without subjects."""
    root = Path(root)
    records, skipped = [], []
    for folder in _frame_folders(root):
        label, parent = label_index(folder.name), folder.parent
        if label is not None:
            subject = parent.name if parent != root else None
            records.append(ClipRecord(str(folder), label, subject=subject))
        elif parent != root and label_index(parent.name) is not None:
            records.append(ClipRecord(str(folder), label_index(parent.name)))
        else:
            skipped.append((str(folder), "neither the folder nor its parent is a category name"))
    return DatasetScan("oulu", records, skipped)


def scan_affwild(root: str | Path) -> DatasetScan:
    """Aff-Wild2 style valence/arousal: `<name>.txt` with a `valence,arousal` line per frame (-5: not annotated)
    next to or anywhere under root from `<name>.mp4|avi`; `<name>_left/_right.txt` annotate one of two faces.

    The annotation's folder gives the split when it names one (Train_Set -> train, Validation_Set -> val).
    """
    root = Path(root)
    videos = {p.stem: p for p in _files(root, VIDEO_SUFFIXES)}
    records, skipped = [], []
    for ann in _files(root, frozenset({".txt"})):
        stem, face = ann.stem, "largest"
        for side in ("left", "right"):
            if stem.endswith(f"_{side}"):
                stem, face = stem[: -len(side) - 1], side
        video = videos.get(ann.stem) or videos.get(stem)
        if video is None:
            skipped.append((str(ann), "no video with the same name"))
            continue
        records.append(
            ClipRecord(str(video), va_file=str(ann), subject=stem, split=_norm_split(ann.parent.name), face=face)
        )
    return DatasetScan("affwild", records, skipped)


def read_va_file(path: str | Path) -> np.ndarray:
    """Per-frame (n, 2) float32 valence, arousal; NaN where a frame is not annotated (-5 or outside [-1, 1])."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.replace(";", ",").split(",")
        try:
            rows.append([float(parts[0]), float(parts[1])])
        except (ValueError, IndexError):
            continue
    va = np.asarray(rows, np.float32).reshape(-1, 2)
    va[(va == _NO_VALUE).any(axis=1) | (np.abs(va) > 1).any(axis=1)] = np.nan
    return va


def detect_format(path: str | Path) -> str:
    """Guess the layout: a .csv file is a manifest; otherwise look at the names of the files under the folder."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise ValueError(f"{path}: give a dataset folder or a .csv manifest")
    videos = _files(path, VIDEO_SUFFIXES)
    stems = [v.stem for v in videos]
    if stems and sum(bool(_RAVDESS_NAME.match(s)) for s in stems) > len(stems) / 2:
        return "ravdess"
    if stems and sum(bool(_CREMAD_NAME.match(s)) for s in stems) > len(stems) / 2:
        return "cremad"
    for txt in _files(path, frozenset({".txt"}))[:20]:
        with txt.open(encoding="utf-8", errors="replace") as f:
            if f.readline().strip().replace(" ", "").lower() == "valence,arousal":
                return "affwild"
    if videos:
        return "folder"
    folders = _frame_folders(path)
    if folders and any(label_index(f.name) is not None for f in folders):
        return "oulu"
    return "folder"


def load_dataset(path: str | Path, fmt: str = "auto") -> DatasetScan:
    """Scan a dataset with the named adapter (or the detected one); raises ValueError when nothing usable is found."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"dataset not found: {path}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "csv" and not path.is_file():
        raise ValueError(f"--format csv needs a .csv manifest file, got the folder {path}")
    if fmt != "csv" and not path.is_dir():
        raise ValueError(f"--format {fmt} needs a dataset folder, got the file {path}")
    scanners = {
        "folder": scan_folder,
        "csv": scan_csv,
        "ravdess": scan_ravdess,
        "cremad": scan_cremad,
        "oulu": scan_oulu,
        "affwild": scan_affwild,
    }
    scan = scanners[fmt](path)
    if not scan.records:
        reasons = "; ".join(f"{Path(p).name}: {why}" for p, why in scan.skipped[:3])
        raise ValueError(f"no usable clips in {path} as format '{fmt}'" + (f" ({reasons})" if reasons else ""))
    return scan


def assign_splits(records: list[ClipRecord], val_split: float, seed: int = 0) -> list[ClipRecord]:
    """Give every record a split. Fixed splits from the dataset are kept; if none is 'val', a `val_split` fraction
    is held out: whole subjects when every clip names one (subject-independent), else per category (stratified)."""
    if any(r.split == "val" for r in records) or val_split <= 0:
        return [r if r.split else replace(r, split="train") for r in records]
    free = [r for r in records if r.split is None]
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    if free and all(r.subject for r in free):
        subjects = sorted({r.subject for r in free})
        count = min(len(subjects) - 1, max(1, round(val_split * len(subjects)))) if len(subjects) > 1 else 0
        chosen = set(rng.permutation(subjects)[:count].tolist())
        held = {r.source + r.face for r in free if r.subject in chosen}
    else:
        by_label: dict[int, list[str]] = {}
        for r in free:
            by_label.setdefault(r.label, []).append(r.source + r.face)
        for label in sorted(by_label):
            keys = sorted(by_label[label])
            count = min(len(keys) - 1, max(1, round(val_split * len(keys)))) if len(keys) > 1 else 0
            held.update(rng.permutation(keys)[:count].tolist())
    return [r if r.split else replace(r, split="val" if r.source + r.face in held else "train") for r in records]


@dataclass(frozen=True)
class PrepConfig:
    """Face-stage settings of preprocessing; part of the cache key. Match the model (crop_size, in_chans).

    Crops use the face stage's default margin, as the recognizer does, so training crops match inference crops.
    """

    crop_size: int = 64  # px, side of the cached square crops (the model's crop_size)
    in_chans: int = 1  # 1: grayscale crops, 3: BGR crops (the model's in_chans)
    max_faces: int = 10  # faces per frame the face stage follows; the largest track is kept
    max_side: int = 1920  # px; longer frames are downscaled for MediaPipe, as at inference


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
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, reason) of the unreadable ones

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
        config = FaceConfig(max_faces=prep.max_faces, max_side=prep.max_side)
        _ANALYZERS[prep] = FaceAnalyzer(config, static=False)
    analyzer = _ANALYZERS[prep]
    analyzer.reset()
    return analyzer


def extract_track(source: str | Path, prep: PrepConfig, face: str = "largest") -> dict[str, np.ndarray]:
    """Run the face stage over a clip and keep one face: the track with the largest summed box area, or the
    left-/right-most face of each frame. -> crops (F, S, S[, 3]) uint8, landmarks (F, L, 3) float16 (normalised
    as at inference), frames (F,) int32 frame indices, total () frames read."""
    from emotion.inputs import face_crop

    analyzer = _analyzer(prep)
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
            t = tracks.setdefault(key, {"crops": [], "landmarks": [], "frames": [], "area": 0.0})
            t["crops"].append(face_crop(frame, f, prep.crop_size, prep.in_chans))
            t["landmarks"].append(f.landmarks_norm)
            t["frames"].append(index)
            t["area"] += float(f.box[2] * f.box[3])
    shape = (prep.crop_size, prep.crop_size) + ((3,) if prep.in_chans == 3 else ())
    if not tracks:
        return {
            "crops": np.zeros((0, *shape), np.uint8),
            "landmarks": np.zeros((0, 468, 3), np.float16),
            "frames": np.zeros(0, np.int32),
            "total": np.array(total),
        }
    best = max(tracks.values(), key=lambda t: t["area"])
    return {
        "crops": np.stack(best["crops"]).astype(np.uint8),
        "landmarks": np.stack(best["landmarks"]).astype(np.float16),
        "frames": np.asarray(best["frames"], np.int32),
        "total": np.array(total),
    }


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
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    memo = _load_memo(cache_dir)
    summary = PrepSummary(total=len(records))
    paths: list[Path | None] = []
    todo: list[int] = []
    for i, r in enumerate(records):
        try:
            paths.append(cache_path(cache_dir, cache_key(content_hash(r.source, memo), prep, r.face)))
        except OSError as exc:
            paths.append(None)
            summary.unreadable += 1
            summary.failures.append((r.source, f"cannot read ({exc.strerror or exc})"))
            continue
        if paths[-1].is_file():
            summary.cached += 1
        else:
            todo.append(i)
    if shard[0] == 0 or not todo:
        _save_memo(cache_dir, memo)
    mine = todo[shard[0] :: shard[1]]
    results: dict[int, tuple[str, int, str]] = {}
    bar = tqdm(total=len(mine), unit="clip", desc="face stage", disable=not progress or not mine)
    jobs = [(records[i].source, prep, records[i].face, str(paths[i])) for i in mine]
    if workers <= 1 or len(mine) <= 1:
        for i, job in zip(mine, jobs, strict=True):
            results[i] = _extract_to_cache(*job)
            bar.update()
    else:
        with ProcessPoolExecutor(min(workers, len(mine)), get_context("spawn"), initializer=_init_worker) as pool:
            futures = {pool.submit(_extract_to_cache, *job): i for i, job in zip(mine, jobs, strict=True)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    summary.processed = len(todo)
    clips = []
    for i, r in enumerate(records):
        if paths[i] is None:
            continue
        status = results.get(i)
        if status is not None and status[0] == "error":
            summary.unreadable += 1
            summary.failures.append((r.source, status[2]))
            continue
        if not paths[i].is_file():
            summary.unreadable += 1
            summary.failures.append((r.source, "not in the cache (another process did not write it)"))
            continue
        frames = status[1] if status is not None else _cached_frames(paths[i])
        if frames == 0:
            summary.no_face += 1
            summary.failures.append((r.source, "no face found in any frame"))
            continue
        clips.append(CachedClip(r, str(paths[i]), frames))
    return clips, summary


def _cached_frames(path: Path) -> int:
    with np.load(path) as z:
        return int(z["frames"].shape[0])


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; one random draw per clip, applied to all its frames and landmarks alike."""

    flip: float = 0.5  # probability of a horizontal flip (landmarks mirrored and re-indexed with MIRROR)
    rotate: float = 10.0  # degrees, largest in-plane rotation either way
    scale: float = 0.1  # largest relative zoom either way
    shift: float = 0.05  # largest translation either way, fraction of the crop side
    brightness: float = 0.2  # largest brightness change, fraction of the full 0-255 range
    contrast: float = 0.2  # largest relative contrast change either way
    landmark_jitter: float = 0.01  # std of Gaussian noise on normalised landmarks, in eye distances
    max_stride: int = 2  # frames; clips are sampled with a random stride 1..max_stride (temporal jitter)


def augment_clip(
    crops: np.ndarray, landmarks: np.ndarray, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip, small affine and brightness/contrast for crops (T, S, S[, 3]) uint8, and the same flip and affine for
    landmarks (T, L, 3): crop and normalised landmarks share their axes up to scale and shift, so the crop's linear
    map applies to landmark x, y as it is."""
    crops, landmarks = crops.copy(), landmarks.astype(np.float32, copy=True)
    if rng.random() < aug.flip:
        crops = np.ascontiguousarray(crops[:, :, ::-1])
        landmarks = landmarks[:, list(MIRROR)]
        landmarks[..., 0] *= -1
    size = crops.shape[1]
    angle = rng.uniform(-aug.rotate, aug.rotate)
    zoom = 1.0 + rng.uniform(-aug.scale, aug.scale)
    matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, zoom)
    matrix[:, 2] += rng.uniform(-aug.shift, aug.shift, 2) * size
    for t in range(crops.shape[0]):
        crops[t] = cv2.warpAffine(
            crops[t], matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    landmarks[..., :2] = landmarks[..., :2] @ matrix[:, :2].T.astype(np.float32)
    landmarks[..., 2] *= zoom
    landmarks += rng.normal(0.0, aug.landmark_jitter, landmarks.shape).astype(np.float32)
    gain = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
    offset = rng.uniform(-aug.brightness, aug.brightness) * 255.0
    mean = crops.mean()
    crops = np.clip((crops.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)
    return crops, landmarks


def sample_indices(frames: int, window: int, rng: np.random.Generator | None, max_stride: int = 1) -> np.ndarray:
    """Window of `window` positions into F cached frames: a random start and stride 1..max_stride with rng (the
    longest stride that fits at most), the centre with stride 1 without; shorter clips repeat their last frame."""
    if rng is None:
        start = max(0, (frames - window) // 2)
        stride = 1
    else:
        fits = max(1, min(max_stride, (frames - 1) // max(window - 1, 1)))
        stride = int(rng.integers(1, fits + 1))
        start = int(rng.integers(0, max(frames - stride * (window - 1), 1)))
    return np.minimum(start + stride * np.arange(window), frames - 1)


def eval_windows(frames: int, window: int, count: int) -> list[int]:
    """Start positions of up to `count` evaluation windows spread evenly over F frames (the last ends at F)."""
    if frames <= window:
        return [0]
    n = min(count, math.ceil(frames / window))
    return sorted({round(s) for s in np.linspace(0, frames - window, n)})


def clip_va(clip: CachedClip, frames: np.ndarray) -> np.ndarray:
    """(F, 2) float32 valence/arousal of the cached frames; NaN where not annotated."""
    r = clip.record
    va = np.full((len(frames), 2), np.nan, np.float32)
    if r.va_file:
        per_frame = read_va_file(r.va_file)
        inside = frames < len(per_frame)
        va[inside] = per_frame[frames[inside]]
    else:
        if r.valence is not None:
            va[:, 0] = r.valence
        if r.arousal is not None:
            va[:, 1] = r.arousal
    return va


class ClipDataset(Dataset):
    """T-frame windows of cached clips as uint8 crops, float landmarks, a label and per-frame valence/arousal.

    Training (augment given): one random window per clip per epoch, drawn from (seed, epoch, index) so the result
    does not depend on worker processes or on resuming. Evaluation: up to `windows` fixed windows per clip.
    """

    def __init__(
        self,
        clips: list[CachedClip],
        window: int = 16,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        windows: int = 1,
        cache_bytes: int = 2 << 30,
    ) -> None:
        self.clips = clips
        self.window = window
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        if augment is None:
            self.items = [(c, s) for c, clip in enumerate(clips) for s in eval_windows(clip.frames, window, windows)]
        else:
            self.items = [(c, -1) for c in range(len(clips))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        """Category of every item (-1 for none), for class-balanced sampling."""
        return [self.clips[c].record.label for c, _ in self.items]

    def _arrays(self, c: int) -> dict[str, np.ndarray]:
        """Decoded cache entry of clip c, kept in a least-recently-used store of at most cache_bytes."""
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        with np.load(self.clips[c].path) as z:
            arrays = {k: z[k] for k in ("crops", "landmarks", "frames")}
        arrays["va"] = clip_va(self.clips[c], arrays["frames"])
        size = sum(a.nbytes for a in arrays.values())
        while self._cache and self._cached_bytes + size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= sum(a.nbytes for a in old.values())
        if size <= self.cache_bytes:
            self._cache[c] = arrays
            self._cached_bytes += size
        return arrays

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, start = self.items[i]
        arrays = self._arrays(c)
        frames = len(arrays["frames"])
        if self.augment is None:
            idx = np.minimum(start + np.arange(self.window), frames - 1)
            crops, landmarks = arrays["crops"][idx], arrays["landmarks"][idx].astype(np.float32)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            idx = sample_indices(frames, self.window, rng, self.augment.max_stride)
            crops, landmarks = augment_clip(arrays["crops"][idx], arrays["landmarks"][idx], self.augment, rng)
        return {
            "crops": torch.from_numpy(np.ascontiguousarray(crops)),
            "landmarks": torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32)),
            "label": torch.tensor(self.clips[c].record.label, dtype=torch.long),
            "va": torch.from_numpy(arrays["va"][idx]),
            "clip": torch.tensor(c, dtype=torch.long),
        }


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced, with replacement) order per epoch from (seed, epoch), split across ranks.

    Every rank draws the same permutation and takes every world-th index, padded so all ranks get equally many.
    """

    def __init__(
        self,
        labels: list[int],
        shuffle: bool = True,
        balanced: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.labels = labels
        self.shuffle = shuffle
        self.balanced = balanced
        self.seed = seed
        self.rank = rank
        self.world = world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.world)

    def __iter__(self) -> Iterator[int]:
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.balanced:
            counts = Counter(self.labels)
            weights = torch.tensor([1.0 / counts[label] for label in self.labels], dtype=torch.double)
            order = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        order += order[: len(self) * self.world - n]
        return iter(order[self.rank :: self.world])


def make_synthetic_dataset(
    root: str | Path,
    cache_dir: str | Path,
    clips_per_class: int = 8,
    classes: tuple[int, ...] = (0, 3, 5),
    frames: int = 24,
    prep: PrepConfig = PrepConfig(),
    val_fraction: float = 0.25,
    seed: int = 0,
) -> Path:
    """A separable synthetic dataset that is already cached (for tests and benchmarks); returns its manifest.

    Each clip is a small stub source file (distinct bytes, so its own cache key) and a cache entry whose crops show
    a bright square at a height that depends on the class (unchanged by flips), over noise; landmarks are noise
    around a random shape; valence/arousal are the class's circumplex point. The manifest fixes the train/val split.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    s = prep.crop_size
    shape = (frames, s, s) + ((3,) if prep.in_chans == 3 else ())
    base = rng.normal(0, 1, (468, 3)).astype(np.float32)
    rows = []
    for k, label in enumerate(classes):
        for j in range(clips_per_class):
            source = root / f"clip_{label}_{j:04d}.syn"
            source.write_text(f"synthetic clip {label} {j} {seed}\n")
            crops = rng.integers(0, 96, shape).astype(np.uint8)
            y, half = (k + 1) * s // (len(classes) + 1), max(2, s // 8)
            crops[:, y - half : y + half, s // 2 - half : s // 2 + half] = 230
            landmarks = base + rng.normal(0, 0.05, (frames, 468, 3)).astype(np.float32)
            key = cache_key(content_hash(source), prep, "largest")
            write_npz(
                cache_path(cache_dir, key),
                crops=crops,
                landmarks=landmarks.astype(np.float16),
                frames=np.arange(frames, dtype=np.int32),
                total=np.array(frames),
            )
            valence, arousal = CIRCUMPLEX[LABELS[label]]
            split = "val" if j < math.ceil(val_fraction * clips_per_class) else "train"
            rows.append([source.name, LABELS[label], valence, arousal, split])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "valence", "arousal", "split"])
        writer.writerows(rows)
    return manifest
