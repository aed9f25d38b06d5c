"""Input files: still images and video files opened with clear errors instead of OpenCV's silent failures."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from emotion.errors import EmotionError
from emotion.formats import IMAGE_SUFFIXES
from emotion.imaging import to_bgr


def check_file(path: str | Path, what: str) -> Path:
    """Return `path` if it is an existing, readable regular file, else raise EmotionError naming the problem and the
    fix. A named pipe or device is refused without opening it (reading one would wait forever)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise EmotionError(f"{what} not found: {p} (check the path)") from None
    except OSError as exc:
        raise EmotionError(f"cannot read {what} {p}: {exc.strerror.lower()} (check the path and its permissions)") from None
    if stat.S_ISDIR(mode):
        raise EmotionError(f"{what} is a directory, not a file: {p} (give a file inside it)")
    if not stat.S_ISREG(mode):
        raise EmotionError(
            f"{what} is not a regular file: {p} (a named pipe, device or socket cannot be read; give a file)"
        )
    if not os.access(p, os.R_OK):
        raise EmotionError(f"cannot read {what} {p}: permission denied (check the file's permissions)")
    return p


def _read_error(p: Path, what: str, exc: OSError) -> EmotionError:
    """The one-line error for a file that passed `check_file` but could not be read."""
    return EmotionError(f"cannot read {what} {p}: {exc.strerror.lower()} (check the file and its permissions)")


def image_files(paths: list[str | Path]) -> list[Path]:
    """The image files named by `paths`, where a folder stands for the images directly in it (sorted by name); a
    named file that does not exist is refused here, before any image is decoded."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(check_file(path, "image"))
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise EmotionError(f"no image files in the folder {path}", fix=f"it needs {', '.join(sorted(IMAGE_SUFFIXES))} files")
        files += found
    return files


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8, turned upright as its EXIF orientation says (as phones save photos);
    grayscale and 16-bit files are converted and an alpha channel is dropped."""
    p = check_file(path, "image")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise _read_error(p, "image", exc) from None
    image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if data.size else None
    if image is None:
        raise EmotionError(
            f"cannot decode image {p}: not an image or an unsupported format (use JPEG, PNG, BMP, WebP or TIFF)"
        )
    return to_bgr(image)


def _opencv_name(p: Path, fd: int) -> str:
    """The name OpenCV opens `p` by: the path itself, or for a name that is not valid UTF-8 (which crashes OpenCV)
    the already open descriptor `fd` through /proc/self/fd."""
    name = str(p)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        if not os.path.isdir("/proc/self/fd"):
            raise EmotionError(f"cannot open {p}: the file name is not valid UTF-8 (rename the file)") from None
        return f"/proc/self/fd/{fd}"
    return name


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares about itself."""

    path: Path
    fps: float  # frames per second the container declares (25 when it declares none)
    width: int  # px
    height: int  # px
    frame_count: int  # as declared by the container; 0 when unknown


class VideoSource:
    """Iterates over the frames of a video file as (index, time in seconds, BGR frame), turned upright as the
    file's rotation metadata says (phones record sideways and flag it).

    A frame's time is its timestamp in the container, so a variable frame rate keeps real times; a container without
    timestamps gives index / fps. An unreadable frame in the middle is skipped and its index recorded in `skipped`;
    after the loop, `truncated` tells whether the file ended well before the frame count its container declares.
    """

    MAX_BAD_RUN = 25  # consecutive unreadable frames after which the video is taken to have ended

    def __init__(self, path: str | Path):
        p = check_file(path, "video")
        if p.stat().st_size == 0:
            raise EmotionError(f"video file is empty: {p} (re-export or re-download it)")
        try:
            self._fd = os.open(p, os.O_RDONLY)
        except OSError as exc:
            raise _read_error(p, "video", exc) from None
        self._cap = cv2.VideoCapture(_opencv_name(p, self._fd))
        if not self._cap.isOpened():
            self.close()
            raise EmotionError(f"cannot open {p} as a video: not a video or an unsupported codec (convert it to MP4/H.264)")
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # off by default in OpenCV 4.11's FFmpeg backend
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and fps > 0 else 25.0
        ok, first = self._cap.read()
        if not ok or first is None:
            self.close()
            raise EmotionError(f"video has no readable frames: {p} (the file is empty, truncated or not a video)")
        self._first: np.ndarray | None = first
        self._first_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        self.info = VideoInfo(
            path=p,
            fps=float(fps),
            width=first.shape[1],
            height=first.shape[0],
            frame_count=max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
        )
        self.skipped: list[int] = []
        self.frames_read = 0

    @property
    def truncated(self) -> bool:
        """True when fewer frames could be read than the container declares (beyond a small counting slack)."""
        declared = self.info.frame_count
        return declared > 0 and declared - (self.frames_read + len(self.skipped)) > max(2, declared // 100)

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        index, bad_run, last = 0, 0, -math.inf
        frame, ms = self._first, self._first_ms
        self._first = None
        while True:
            if frame is not None:
                self.skipped.extend(range(index - bad_run, index))
                bad_run = 0
                self.frames_read += 1
                last = ms / 1000.0 if math.isfinite(ms) and ms / 1000.0 > last else max(index / self.info.fps, last)
                yield index, last, to_bgr(frame)
            else:
                bad_run += 1
                if bad_run >= self.MAX_BAD_RUN or (self.info.frame_count and index >= self.info.frame_count):
                    return
            index += 1
            ok, frame = self._cap.read()
            ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            if not ok:
                frame = None

    def close(self) -> None:
        self._cap.release()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
