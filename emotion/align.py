"""Face geometry from MediaPipe's 468 landmarks: the eye-aligned tight crop the model sees, and landmarks in a
canonical pose (no translation, scale or roll). Pure numpy and OpenCV, shared by inference and training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from emotion.imaging import to_bgr, to_gray

RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
"""Contour of the subject's right eye (left in the image) in the MediaPipe face mesh."""
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
"""Contour of the subject's left eye (right in the image)."""
BROWS = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
"""Both eyebrows: their highest point is the top of the tight crop."""
CHIN = 152
"""Lowest point of the face oval: the bottom of the tight crop."""
CHEEKS = (234, 454)
"""Widest points of the face oval (near the ears): the sides of the tight crop."""

DEFAULT_MARGIN = 0.1
"""Margin of `align_crop`: 5 % of the tight square on each side, so brows to chin fill the crop as in FER2013
without cutting the brows (on our labelled photos and clips the mini-Xception scored best between 0.1 and 0.2)."""


def _eye_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Eye midpoint (2,), the rotation (2, 2) that makes the eye line horizontal, and the inter-ocular distance."""
    right = landmarks[list(RIGHT_EYE), :2].mean(axis=0)
    left = landmarks[list(LEFT_EYE), :2].mean(axis=0)
    dx, dy = (left - right).astype(np.float64)
    angle = math.atan2(dy, dx)
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, s], [-s, c]])
    return (left + right) / 2.0, rotation, math.hypot(dx, dy)


def crop_square(
    landmarks: np.ndarray, margin: float = DEFAULT_MARGIN, framing: str = "brows", rotate: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
    """The crop square in (eye-level, or with `rotate` False image-axis) coordinates: rotation (2, 2) from image px,
    its centre (2,) and side in px.

    framing "brows": the tight square spans from the top of the brows to the chin vertically and cheek to cheek
    horizontally (whichever is longer), centred on both spans; "mesh": the square around all the landmarks (the
    forehead included). `margin` widens its side by that fraction.
    """
    rotation = _eye_frame(landmarks)[1] if rotate else np.eye(2)
    level = landmarks[:, :2].astype(np.float64) @ rotation.T
    if framing == "mesh":
        (left, top), (right, bottom) = level.min(axis=0), level.max(axis=0)
    else:
        top = level[list(BROWS), 1].min()
        bottom = level[CHIN, 1]
        left, right = np.sort(level[list(CHEEKS), 0])
    centre = np.array([(left + right) / 2.0, (top + bottom) / 2.0])
    side = max(bottom - top, right - left, 1.0) * (1.0 + margin)
    return rotation, centre, float(side)


def crop_matrix(
    landmarks: np.ndarray, size: int = 64, margin: float = DEFAULT_MARGIN, framing: str = "brows", rotate: bool = True
) -> np.ndarray:
    """The (2, 3) affine from image px to px of the (size, size) crop of `align_crop`, e.g. to draw landmarks on it."""
    rotation, centre, side = crop_square(landmarks, margin, framing, rotate)
    scale = size / side
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = (size - 1) / 2.0 - scale * centre
    return matrix


def align_crop(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = 64,
    margin: float = DEFAULT_MARGIN,
    color: bool = False,
    framing: str = "brows",
    rotate: bool = True,
) -> np.ndarray:
    """Eye-level square crop framed brows to chin (FER2013 style): (size, size) gray, or (size, size, 3) BGR if color.

    image is BGR (H, W, 3), BGRA (H, W, 4) or grayscale (H, W) uint8; landmarks (L, 3) or (L, 2) px in that image.
    One affine (rotation, scale, translation, see `crop_matrix`) maps the square to the output; a face much larger
    than the output is first shrunk with INTER_AREA so the result is not aliased. Borders are replicated.
    """
    matrix = crop_matrix(landmarks, size, margin, framing, rotate)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    source = corners @ cv2.invertAffineTransform(matrix).T
    h, w = image.shape[:2]
    x0 = int(np.clip(math.floor(source[:, 0].min()) - 1, 0, w - 1))
    y0 = int(np.clip(math.floor(source[:, 1].min()) - 1, 0, h - 1))
    x1 = int(np.clip(math.ceil(source[:, 0].max()) + 2, x0 + 1, w))
    y1 = int(np.clip(math.ceil(source[:, 1].max()) + 2, y0 + 1, h))
    region = to_bgr(image[y0:y1, x0:x1]) if color else to_gray(image[y0:y1, x0:x1])
    to_image = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    shrink = math.hypot(*matrix[:, 0]) * 2.0
    if shrink < 1.0:
        rw, rh = max(1, round((x1 - x0) * shrink)), max(1, round((y1 - y0) * shrink))
        sx, sy = rw / (x1 - x0), rh / (y1 - y0)
        region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        to_image = to_image @ np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
    region = np.ascontiguousarray(region)
    flags, border = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
    return cv2.warpAffine(region, matrix @ to_image, (size, size), flags=flags, borderMode=border)


@dataclass(frozen=True)
class CropSpec:
    """How a model sees a face: the square crop of `align_crop` with these settings (a model's config holds them)."""

    size: int = 64  # px, side of the square
    in_chans: int = 1  # 1: grayscale, 3: BGR
    margin: float = DEFAULT_MARGIN  # fraction of the square's side added around the face
    framing: str = "brows"  # "brows": brows to chin and cheek to cheek; "mesh": around all the landmarks
    rotate: bool = True  # eyes level

    @classmethod
    def of(cls, config) -> CropSpec:
        """The crop a config with crop_size, in_chans, crop_margin, crop_framing and crop_rotate (a ModelConfig or a
        training PrepConfig) asks for."""
        return cls(config.crop_size, config.in_chans, config.crop_margin, config.crop_framing, config.crop_rotate)

    def __call__(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(size, size) uint8 gray, or (size, size, 3) BGR for in_chans 3."""
        return align_crop(image, landmarks, self.size, self.margin, self.in_chans == 3, self.framing, self.rotate)


def canonical_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks (L, 3) without translation, scale and roll: centred on their centroid (x, y and z), rotated about z
    so the line from the right-eye centre to the left-eye centre points along +x, divided by that eye distance."""
    points = landmarks.astype(np.float64)
    _, rotation, distance = _eye_frame(points)
    centred = points - points.mean(axis=0)
    out = np.empty_like(centred)
    out[:, :2] = centred[:, :2] @ rotation.T
    out[:, 2] = centred[:, 2]
    return (out / max(distance, 1e-6)).astype(np.float32)
