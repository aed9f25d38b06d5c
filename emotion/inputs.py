"""Model inputs from faces: the one place that turns crops and landmarks into tensors, for inference and training."""

from __future__ import annotations

import numpy as np
import torch

from emotion.face import Face, align_crop


def face_crop(frame: np.ndarray, face: Face, crop_size: int, in_chans: int) -> np.ndarray:
    """The face's aligned crop at the model's size: (S, S) uint8 gray for in_chans 1, (S, S, 3) BGR for 3."""
    if in_chans == 1 and face.crop.shape[:2] == (crop_size, crop_size):
        return face.crop
    return align_crop(frame, face.landmarks, size=crop_size, color=in_chans == 3)


def crops_to_tensor(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 crops (..., S, S) gray or (..., S, S, 3) BGR -> float (..., C, S, S) in [-1, 1], as FER2013 was trained."""
    x = torch.as_tensor(crops)
    x = x.unsqueeze(-3) if x.shape[-1] != 3 else x.movedim(-1, -3)
    return x.float() / 127.5 - 1.0
