"""Emotion models: the spatio-temporal STNet, its layers and backbones, the backbone registry and checkpoint files."""

from emotion.model.backbones import BackboneConfig, crops_to_tensor
from emotion.model.checkpoint import AFFECT_SOURCES, CheckpointError, default_model, load_checkpoint, save_checkpoint
from emotion.model.registry import create_model, list_models, register_model
from emotion.model.stnet import CACHE_KEYS, FrameCache, ModelConfig, STNet

__all__ = [
    "AFFECT_SOURCES",
    "CACHE_KEYS",
    "BackboneConfig",
    "CheckpointError",
    "FrameCache",
    "ModelConfig",
    "STNet",
    "create_model",
    "crops_to_tensor",
    "default_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
