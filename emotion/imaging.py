"""Pixel conversions in one place: what counts as an image, and BGR, gray and RGB views of it as uint8."""

from __future__ import annotations

import cv2
import numpy as np

from emotion.errors import EmotionError


def check_image(image: object) -> np.ndarray:
    """`image` if it is an image array (H x W, H x W x 1, 3 or 4; integer or float pixels), else EmotionError."""
    if image is None:
        raise EmotionError(
            "no image: got None, which is what cv2.imread returns for a missing or unreadable file",
            fix="check the file's path, or read it with emotion.io.files.read_image for a precise error",
        )
    if not isinstance(image, np.ndarray):
        raise EmotionError(f"not an image: got {type(image).__name__}", fix="pass a NumPy array of BGR pixels, H x W x 3")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or 0 in image.shape:
        raise EmotionError(
            f"not an image: an array of shape {image.shape}",
            fix="pass H x W (gray), H x W x 3 (BGR) or H x W x 4 (BGRA) pixels",
        )
    if image.dtype.kind not in "uif":
        raise EmotionError(f"not an image: an array of {image.dtype} values", fix="pass integer or float pixels")
    return image


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Convert a grayscale, BGRA or 16-bit image to 8-bit BGR; BGR uint8 passes through unchanged."""
    check_image(image)
    if image.dtype != np.uint8:
        scale = 255.0 / max(float(image.max()), 1.0) if image.dtype.kind == "f" else 255.0 / np.iinfo(image.dtype).max
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """8-bit grayscale (H, W) of any image `to_bgr` accepts."""
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] == 1):
        return image.reshape(image.shape[:2])
    return cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """8-bit RGB (H, W, 3) of any image `to_bgr` accepts, as MediaPipe wants it."""
    return cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2RGB)
