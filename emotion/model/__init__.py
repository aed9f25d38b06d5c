"""Emotion models: the spatio-temporal STNet, its backbone registry and checkpoint files."""

from emotion.model.checkpoint import CheckpointError, default_model, load_checkpoint, save_checkpoint
from emotion.model.registry import create_model, list_models, register_model
from emotion.model.stnet import CACHE_KEYS, FrameCache, ModelConfig, STNet, StreamState

__all__ = [
    "CACHE_KEYS",
    "CheckpointError",
    "FrameCache",
    "ModelConfig",
    "STNet",
    "StreamState",
    "create_model",
    "default_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
