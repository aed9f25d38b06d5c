"""The architecture registry (`--arch`): emotion.model.clip.ARCHS, filled by STNet's entry here and by the zoo's
modules; `create_model(config)` builds the architecture of a config. STNet's per-frame CNNs have their own registry
(emotion.model.backbones, re-exported here)."""

from __future__ import annotations

from emotion.model import zoo  # noqa: F401  (registers the zoo's architectures)
from emotion.model.backbones import frame_backbone, list_models, register_model
from emotion.model.clip import ARCHS, ClipConfig, ClipModel, register_arch
from emotion.model.stnet import ModelConfig, STNet

__all__ = [
    "arch_config",
    "create_model",
    "frame_backbone",
    "list_archs",
    "list_models",
    "register_arch",
    "register_model",
]


def list_archs() -> list[str]:
    """Names of the registered architectures (values of `--arch`), STNet first, then sorted."""
    return sorted(ARCHS, key=lambda name: (name != ModelConfig.arch, name))


def arch_config(name: str) -> type[ClipConfig]:
    """The config class of a registered architecture; ValueError naming the registered ones for another name."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(list_archs())}")
    return ARCHS[name][0]


def create_model(config: ClipConfig | None = None, pretrained: bool = False) -> ClipModel:
    """Build the architecture of `config` (ModelConfig(), STNet, if None); pretrained loads the shipped weights of its
    pretrained parts (the FER2013 network), if it has any."""
    config = ModelConfig() if config is None else config
    if type(config) is not arch_config(config.arch):
        raise ValueError(f"{type(config).__name__} is not the config of {config.arch!r}")
    return ARCHS[config.arch][1](config, pretrained)


@register_arch(ModelConfig)
def stnet(config: ModelConfig, pretrained: bool) -> STNet:
    """STNet with the per-frame backbone config.backbone."""
    return STNet(config, frame_backbone(config, pretrained))
