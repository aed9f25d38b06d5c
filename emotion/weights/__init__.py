"""The weights shipped inside the package (see README.md here): found the same way in a checkout, a wheel or an sdist.

The top-level `models/` folder is not part of the package: it is where training writes the user's checkpoints.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The installed path of the shipped file `name` (e.g. 'fer2013_mini_xception.pt'); it may be missing."""
    return FOLDER / name
