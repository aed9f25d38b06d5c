"""emotion: facial emotion recognition (7 categories, valence, arousal) for images, videos and live streams.

    from emotion import EmotionRecognizer
    result = EmotionRecognizer().predict_image(bgr_image)
"""

from emotion.labels import LABELS

__version__ = "0.1.0"
__all__ = ["LABELS", "EmotionRecognizer", "EmotionError", "FrameResult", "FaceResult", "__version__"]

_LAZY = {
    "EmotionRecognizer": "emotion.recognizer",
    "EmotionError": "emotion.errors",
    "FrameResult": "emotion.results",
    "FaceResult": "emotion.results",
}


def __getattr__(name: str):
    """Import the heavy modules (torch, MediaPipe) only when their names are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emotion' has no attribute {name!r}")
