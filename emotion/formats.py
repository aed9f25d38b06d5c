"""The file suffixes that count as images and as videos, the one definition every module uses."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm", ".pbm"}
)
"""Still images OpenCV decodes (lower case, with the dot)."""

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp"}
)
"""Video containers looked for in folders and datasets (lower case, with the dot)."""

MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl"})
"""A `--video` file with one of these suffixes is a manifest, a list of videos (`emotion.jobs.read_manifest`)."""


def is_batch(video: str | Path) -> bool:
    """Whether `--video` names many videos: a folder or a manifest."""
    return Path(video).is_dir() or Path(video).suffix.lower() in MANIFEST_SUFFIXES
