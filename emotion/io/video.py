"""The annotated video: H.264 through PyAV for .mp4 (browsers and the usual players open it), MJPG for .avi, and
MPEG-4 Part 2 through OpenCV where H.264 cannot be written."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from emotion.errors import EmotionError


H264_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
BT601 = 6  # FFmpeg's SMPTE 170M (BT.601) code for colour matrix, primaries and transfer: what cv2's BGR->I420 uses
LIMITED_RANGE = 1  # FFmpeg's MPEG (16-235) colour range, also that of cv2's BGR->I420

_notes_shown: set[str] = set()


def _note_once(text: str) -> None:
    """Print `note: text` on stderr the first time this process meets it (a folder of videos gets it once)."""
    if text not in _notes_shown:
        _notes_shown.add(text)
        print(f"note: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class H264Config:
    """How VideoWriter encodes H.264; chosen by measurement (README, "Measured on this machine")."""

    encoder: str = "libx264"  # FFmpeg encoder inside PyAV's wheel
    preset: str = "ultrafast"  # close to mp4v's speed; Constrained Baseline profile, which every player decodes
    crf: int = 25  # constant quality: smaller files than mp4v, at a higher PSNR, on the test clip at 360p and 720p
    params: str = ""  # more x264 options; "deblock=0,0" (loop filter on) gains 0.5-0.7 dB for about 10% more CPU
    threads: int = 1  # encoder threads; more cost as much CPU, which the face stage needs on 2 cores


class _H264File:
    """H.264 (yuv420p, tagged BT.601 limited range) in an MP4 with the index up front (`+faststart`) through PyAV,
    so browsers start playing before the whole file has loaded. `size` must be even; larger frames are cropped to it
    at the right and bottom."""

    def __init__(self, container, path: Path, fps: float, size: tuple[int, int], config: H264Config):
        from av import VideoFrame

        stream = container.add_stream(config.encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.thread_count = config.threads
        stream.options = {"preset": config.preset, "crf": str(config.crf)} | (
            {"x264-params": config.params} if config.params else {}
        )
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = BT601
        ctx.color_range = LIMITED_RANGE
        ctx.open()
        container.start_encoding()  # opens the file now, so a path that cannot be written fails here
        self._container, self._stream, self._path, self._frames, self._failed = container, stream, path, 0, False
        self._size = size
        self._wrap = VideoFrame.from_numpy_buffer  # wraps the I420 array without copying it (0.3 ms a 720p frame)

    def write(self, frame: np.ndarray) -> None:
        w, h = self._size
        yuv = self._wrap(cv2.cvtColor(frame[:h, :w], cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        yuv.pts = self._frames
        self._frames += 1
        try:
            self._container.mux(self._stream.encode(yuv))
        except OSError as exc:  # a full disk: reported as bad output, like a path that cannot be written
            self._failed = True
            raise self._cannot_write(exc) from None

    def release(self) -> None:
        """Flush the encoder's delayed frames and write the index (not after a failed write); first call only."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if not self._failed:
                container.mux(self._stream.encode(None))
        except OSError as exc:
            self._failed = True
            raise self._cannot_write(exc) from None
        finally:
            try:
                container.close()
            except OSError as exc:
                if not self._failed:
                    raise self._cannot_write(exc) from None

    def _cannot_write(self, exc: OSError) -> EmotionError:
        return EmotionError(f"cannot write video {self._path}: {exc.strerror}", fix="free some space or write elsewhere")


def _open_h264(path: Path, fps: float, size: tuple[int, int], config: H264Config) -> tuple[_H264File | None, str]:
    """An H.264 writer for `path` at `size` less an odd last column and row (yuv420p halves both), or None and why
    H.264 cannot be written here."""
    size = (size[0] // 2 * 2, size[1] // 2 * 2)
    if min(size) < 2:
        return None, "H.264 needs frames of at least 2x2 pixels"
    try:
        import av
        from av.codec.codec import UnknownCodecError
    except ImportError:
        return None, "H.264 encoder not available (PyAV is not installed)"
    try:
        av.Codec(config.encoder, "w")
    except UnknownCodecError:
        return None, f"H.264 encoder not available ({config.encoder} is not in PyAV {av.__version__}'s FFmpeg)"
    container = av.open(str(path), "w", options={"movflags": "+faststart"})
    try:
        return _H264File(container, path, fps, size, config), ""
    except OSError as exc:  # the file: a missing folder, no permission
        container.close()
        raise EmotionError(f"cannot write video {path}: {exc.strerror}", fix="choose a writable folder") from None
    except av.FFmpegError as exc:
        container.close()
        return None, f"H.264 encoder not available ({config.encoder} did not open: {exc})"


class VideoWriter:
    """The annotated video, with the source's size and frame rate: H.264 for .mp4 (plays in browsers and the usual
    players), MJPG for .avi, and MPEG-4 Part 2 (mp4v, OpenCV) where H.264 cannot be written (a note says why). An
    odd width or height loses its last column or row in .mp4, as with OpenCV's MPEG-4 writer.

    `h264=None` writes mp4v, as versions before H.264 did. `codec` is FFmpeg's name of the codec written: h264,
    mjpeg or mpeg4.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], h264: H264Config | None = H264Config()):
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        suffix = self.path.suffix.lower()
        self._w = None
        if h264 is not None and suffix in H264_SUFFIXES:
            self._w, reason = _open_h264(self.path, fps, self.size, h264)
            if self._w is None:
                _note_once(f"{reason}; writing MPEG-4 Part 2")
        self.codec = "h264" if self._w is not None else "mjpeg" if suffix == ".avi" else "mpeg4"
        if self._w is None:
            fourcc = "MJPG" if suffix == ".avi" else "mp4v"
            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, self.size)
            if not self._w.isOpened():
                raise EmotionError(
                    f"cannot write video {self.path}", fix="use an .mp4 or .avi file name in a writable folder"
                )

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR frame; one of another size is resized to the video's."""
        if frame.shape[1::-1] != self.size:
            frame = cv2.resize(frame, self.size)
        self._w.write(frame)

    def close(self) -> None:
        """Finish the file (flush the encoder, write the index); safe to call again."""
        self._w.release()
