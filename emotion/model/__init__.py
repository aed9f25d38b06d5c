"""Emotion models: the spatio-temporal STNet, the model zoo's architectures, their layers and backbones, the
architecture and backbone registries and checkpoint files."""

from emotion.model.backbones import BackboneConfig, crops_to_tensor
from emotion.model.checkpoint import AFFECT_SOURCES, CheckpointError, default_model, load_checkpoint, save_checkpoint
from emotion.model.clip import ClipConfig, ClipModel
from emotion.model.registry import arch_config, create_model, list_archs, list_models, register_arch, register_model
from emotion.model.stnet import CACHE_KEYS, FrameCache, ModelConfig, STNet

__all__ = [
    "AFFECT_SOURCES",
    "CACHE_KEYS",
    "BackboneConfig",
    "CheckpointError",
    "ClipConfig",
    "ClipModel",
    "FrameCache",
    "ModelConfig",
    "STNet",
    "arch_config",
    "create_model",
    "crops_to_tensor",
    "default_model",
    "list_archs",
    "list_models",
    "load_checkpoint",
    "register_arch",
    "register_model",
    "save_checkpoint",
]
