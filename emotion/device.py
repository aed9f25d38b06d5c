"""Where PyTorch runs: one resolution of the `device` setting for inference, training and evaluation."""

from __future__ import annotations

import torch

from emotion.errors import EmotionError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available, else the CPU; asking for CUDA without it is an error."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise EmotionError(f"unknown device '{device}' (use auto, cpu or cuda)")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmotionError(
            f"device '{device}' was asked for but PyTorch sees no CUDA GPU",
            fix="use device 'cpu' or 'auto'",
            cli_fix="use --device cpu or auto",
        )
    return torch.device(device)
