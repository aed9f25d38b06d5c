"""Training augmentation that moves crops, landmarks and face signals together: flip with mirrored landmark order
and mirrored signals, small affine (its rotation turns the head's roll too), brightness/contrast and landmark jitter,
one random draw per clip."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emotion.signals import BLENDSHAPE_NAMES, SIGNAL_DIM


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


def _swap_sides(name: str) -> str:
    return name.replace("Left", "\0").replace("Right", "Left").replace("\0", "Right")


SIGNAL_MIRROR: tuple[int, ...] = tuple(BLENDSHAPE_NAMES.index(_swap_sides(n)) for n in BLENDSHAPE_NAMES) + tuple(
    range(len(BLENDSHAPE_NAMES), SIGNAL_DIM)
)
"""Index in FaceSignals.vector() of each signal's mirror image: a blendshape of the person's left side takes its
right twin's place (eyeBlinkLeft <-> eyeBlinkRight, jawLeft <-> jawRight); pose and gaze keep their places and
SIGNAL_FLIP turns their signs."""

SIGNAL_FLIP = np.array([1.0] * len(BLENDSHAPE_NAMES) + [-1.0, 1.0, -1.0, -1.0, 1.0], np.float32)
"""Sign of each mirrored signal: a mirror image turns the head's yaw and roll and the gaze's yaw the other way."""

ROLL = len(BLENDSHAPE_NAMES) + 2
"""Index of the head's roll (units of 90 degrees) in FaceSignals.vector()."""


def mirror_signals(signals: np.ndarray) -> np.ndarray:
    """Face signals (..., G) of the horizontally mirrored image (all-zero vectors, faces without signals, stay zero)."""
    return signals[..., list(SIGNAL_MIRROR)] * SIGNAL_FLIP


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

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all: every draw leaves the clip as it is, and windows are taken at stride 1."""
        return cls(flip=0, rotate=0, scale=0, shift=0, brightness=0, contrast=0, landmark_jitter=0, max_stride=1)


def augment_clip(
    crops: np.ndarray,
    landmarks: np.ndarray,
    aug: AugmentConfig,
    rng: np.random.Generator,
    signals: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Flip, small affine and brightness/contrast for crops (T, S, S[, 3]) uint8, and the same flip and affine for
    landmarks (T, L, 3): crop and normalised landmarks share their axes up to scale and shift, so the crop's linear
    map applies to landmark x, y as it is. Face signals (T, G), when given, are mirrored with the flip and their
    roll turned with the rotation (frames without signals stay all zero). -> crops, landmarks, signals."""
    crops, landmarks = crops.copy(), landmarks.astype(np.float32, copy=True)
    signals = None if signals is None else signals.astype(np.float32, copy=True)
    if rng.random() < aug.flip:
        crops = np.ascontiguousarray(crops[:, :, ::-1])
        landmarks = landmarks[:, list(MIRROR)]
        landmarks[..., 0] *= -1
        if signals is not None:
            signals = mirror_signals(signals)
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
    if signals is not None:  # the crop turned counter-clockwise by `angle` degrees: so did the head in it
        present = np.abs(signals).max(axis=-1) > 0
        signals[present, ROLL] += angle / 90.0
    landmarks += rng.normal(0.0, aug.landmark_jitter, landmarks.shape).astype(np.float32)
    gain = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
    offset = rng.uniform(-aug.brightness, aug.brightness) * 255.0
    mean = crops.mean()
    crops = np.clip((crops.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)
    return crops, landmarks, signals
