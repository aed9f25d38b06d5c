"""PyTorch's CPU threads: a process-wide setting the application chooses, never a side effect of a constructor."""

from __future__ import annotations

import torch

from emotion.errors import EmotionError


def set_threads(threads: int) -> None:
    """Run PyTorch's CPU operations on `threads` intra-op threads in this whole process (torch.set_num_threads).

    The command line sets 1 (its --threads default) before it builds the recognizer: the eager model's per-frame
    tensors are tiny and MediaPipe keeps another core busy, so more threads only add hand-offs (README, "Measured on
    this machine"). ONNX Runtime's threads are a per-session option instead (EmotionRecognizer(threads=...)).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise EmotionError(f"threads must be a whole number of 1 or more, got {threads!r}")
    torch.set_num_threads(threads)
