"""Files that appear whole or not at all, for checkpoints, caches, exports and metrics a kill must not corrupt."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new `.<name>.<random>.tmp` in `folder`, opened for writing with mode 0666 less the umask, as open() makes.

    tempfile.mkstemp would give 0600, which the rename would carry over to the finished file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {folder / name}")


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write that replaces `path` only once complete, with the usual permissions (0644 under umask 022).

    It is written as `.<name>.<random>.tmp` in the same folder, flushed to disk, then renamed over `path`; on any
    error (or a KeyboardInterrupt) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
