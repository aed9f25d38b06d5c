"""Registry of per-frame backbones by name; `create_model(config)` wraps the named one in an STNet."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from emotion.model.stnet import ModelConfig, STNet, WideCNN
from emotion.model.xception import INPUT_SIZE, MiniXception, load_pretrained_backbone

BackboneBuilder = Callable[[ModelConfig, bool], nn.Module]
"""(config, pretrained) -> a module with num_features, forward_features and forward_head (see stnet.FrameBackbone)."""

_BACKBONES: dict[str, BackboneBuilder] = {}


def register_model(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator registering a backbone builder under `name` (the value of ModelConfig.backbone)."""

    def decorate(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_BACKBONES)


def create_model(config: ModelConfig | None = None, pretrained: bool = False) -> STNet:
    """Build STNet with config.backbone (ModelConfig() if None); pretrained loads the backbone's shipped weights."""
    config = ModelConfig() if config is None else config
    if config.backbone not in _BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; registered: {', '.join(list_models())}")
    return STNet(config, _BACKBONES[config.backbone](config, pretrained))


@register_model("mini_xception")
def mini_xception(config: ModelConfig, pretrained: bool) -> nn.Module:
    """FER2013 mini-Xception on 64x64 grayscale crops; pretrained loads the shipped weights (emotion.weights)."""
    if config.in_chans != 1 or config.crop_size != INPUT_SIZE:
        raise ValueError(f"mini_xception takes 1-channel {INPUT_SIZE}x{INPUT_SIZE} crops (in_chans=1, crop_size=64)")
    return load_pretrained_backbone() if pretrained else MiniXception(num_classes=config.num_classes)


@register_model("wide_cnn")
def wide_cnn(config: ModelConfig, pretrained: bool) -> nn.Module:
    """Wider residual CNN for training from scratch (e.g. 112x112 crops, in_chans 1 or 3); no pretrained weights."""
    if pretrained:
        raise ValueError("wide_cnn has no pretrained weights; train it from scratch (pretrained=False)")
    if config.crop_size % 16:
        raise ValueError(f"wide_cnn needs crop_size divisible by 16, got {config.crop_size}")
    return WideCNN(in_chans=config.in_chans, num_classes=config.num_classes)
