"""Running a model (STNet or a zoo architecture) on a stream of frames: the per-track ring buffer, the ONNX Runtime
and eager PyTorch streamers, and the process's PyTorch thread setting."""

from emotion.runtime.ring import RingBuffer
from emotion.runtime.streamers import (
    BACKENDS,
    Backend,
    OnnxStreamer,
    Streamer,
    TorchStreamer,
    create_streamer,
    onnxruntime_available,
)
from emotion.runtime.threads import set_threads

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxStreamer",
    "RingBuffer",
    "Streamer",
    "TorchStreamer",
    "create_streamer",
    "onnxruntime_available",
    "set_threads",
]
