"""Dataset adapters: a dataset on disk (folder, CSV manifest, RAVDESS, CREMA-D, Oulu-CASIA, Aff-Wild2) -> ClipRecords,
and labelled photo folders (`DIR/<label>/*.jpg`, scored one image at a time by `--evaluate`).

Every clip adapter turns its layout into one ClipRecord per video or frame folder, with the label, valence/arousal,
subject and split the dataset gives, and lists the files it passed over with the reason. `detect_layout` tells the
two kinds apart from what the folders hold.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError
from emotion.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from emotion.labels import LABELS

FORMATS = ("auto", "folder", "csv", "ravdess", "cremad", "oulu", "affwild")
LAYOUTS = ("auto", "photos", "clips")

# fmt: off
LABEL_ALIASES: dict[str, int] = {
    **{name: i for i, name in enumerate(LABELS)},
    "anger": 0, "ang": 0, "an": 0,
    "disgusted": 1, "dis": 1, "di": 1,
    "fearful": 2, "afraid": 2, "scared": 2, "fea": 2, "fe": 2,
    "happiness": 3, "joy": 3, "hap": 3, "ha": 3,
    "neu": 4, "ne": 4,
    "sadness": 5, "sa": 5,
    "surprised": 6, "sur": 6, "su": 6,
}
# fmt: on
"""Lower-case category names used by common datasets (AFEW, Oulu-CASIA, CK+, CREMA-D, JAFFE codes, FER2013 and
AffectNet folder names) -> LABELS index."""

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


def label_index(name: str | int) -> int | None:
    """A category name (any case, common synonyms) or index 0-6 -> LABELS index; None if it is not a category."""
    if isinstance(name, int) or str(name).strip().isdigit():
        value = int(name)
        return value if 0 <= value < len(LABELS) else None
    return LABEL_ALIASES.get(str(name).strip().lower())


@dataclass(frozen=True)
class ClipRecord:
    """One labelled clip of a dataset: a video file or a folder of frames (in the photos layout: one image)."""

    source: str  # path of the video file, of the folder holding the clip's frames in name order, or of the photo
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
        raise ValueError(f"format 'csv' needs a .csv manifest file, got the folder {path}")
    if fmt != "csv" and not path.is_dir():
        raise ValueError(f"format '{fmt}' needs a dataset folder, got the file {path}")
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


def _photo_folder(root: Path, folder: Path) -> bool:
    """Whether `folder` is where the photos layout keeps images: `root/<label>/` or `root/<split>/<label>/`."""
    parts = folder.relative_to(root).parts
    return len(parts) == 1 or (len(parts) == 2 and _norm_split(parts[0]) is not None)


def detect_layout(path: str | Path) -> str:
    """'photos' when the images sit directly in label folders (`DIR/<label>/*.jpg`, also under `DIR/<split>/`) and
    nothing else is a clip; 'clips' for a manifest, videos or deeper frame folders (the clip adapters above).

    Decided from what the folders hold, never from their names alone; a folder holding neither, or both, raises
    EmotionError with the fix.
    """
    path = Path(path)
    if not path.exists():
        raise EmotionError(f"dataset not found: {path}", fix="check the path")
    if path.is_file():
        return "clips"
    folders = {p.parent for p in _files(path, IMAGE_SUFFIXES)} - {path}
    photos = sorted(f for f in folders if _photo_folder(path, f))
    clips = _files(path, VIDEO_SUFFIXES)[:1] + sorted(folders - set(photos))[:1]
    if photos and clips:
        raise EmotionError(
            f"{path} holds both photos directly in label folders (such as {photos[0].relative_to(path)}/) and clips "
            f"(such as {clips[0].relative_to(path)}), so it is unclear whether to score images or clips",
            fix="pass layout='photos' to score each image on its own or layout='clips' for videos and frame folders",
            cli_fix="pass --layout photos to score each image on its own or --layout clips for videos and frame "
            "folders",
        )
    if photos:
        return "photos"
    if clips:
        return "clips"
    raise EmotionError(
        f"no labelled images or videos in {path}",
        fix=f"photos go in {path / '<label>'}/*.jpg, clips in {path / '<label>'}/*.mp4 or one folder of frames each; "
        f"labels: {', '.join(LABELS)} or a synonym",
    )


def scan_photos(root: str | Path) -> DatasetScan:
    """Labelled photos `root/<label>/*.jpg|png|...`, optionally under `root/<train|val|test>/`: one record per image,
    its label from its folder; images anywhere else are passed over with the reason."""
    root = Path(root)
    if not root.is_dir():
        raise EmotionError(
            f"the photos layout needs a folder of label folders, got {root}", fix="give the folder that holds them"
        )
    records, skipped = [], []
    for path in _files(root, IMAGE_SUFFIXES):
        if path.parent == root or not _photo_folder(root, path.parent):
            skipped.append((str(path), "not directly in a label folder (<label>/ or <split>/<label>/)"))
            continue
        parts = path.parent.relative_to(root).parts
        label = label_index(parts[-1])
        if label is None:
            skipped.append((str(path), f"in the folder '{parts[-1]}', which is not a category name"))
            continue
        records.append(ClipRecord(str(path), label, split=_norm_split(parts[0]) if len(parts) == 2 else None))
    if not records:
        reasons = "; ".join(f"{Path(p).name}: {why}" for p, why in skipped[:3])
        raise EmotionError(
            f"no labelled photos in {root}" + (f" ({reasons})" if reasons else ""),
            fix=f"put them in {root / '<label>'}/ with a label of {', '.join(LABELS)} or a synonym",
        )
    return DatasetScan("photos", records, skipped)
