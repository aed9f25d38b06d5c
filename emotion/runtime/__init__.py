"""Running STNet on a stream of frames: the per-track ring buffer and the ONNX Runtime and eager PyTorch streamers."""

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

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxStreamer",
    "RingBuffer",
    "Streamer",
    "TorchStreamer",
    "create_streamer",
    "onnxruntime_available",
]
