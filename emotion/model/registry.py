"""Registry of per-frame backbones by name; `create_model(config)` wraps the named one in an STNet."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from emotion.model.backbones import BackboneConfig, MiniXception, WideCNN, load_pretrained_backbone
from emotion.model.stnet import ModelConfig, STNet

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


def _check_input(name: str, cfg: BackboneConfig, config: ModelConfig) -> None:
    """ValueError unless config's crop size and channels are what the backbone's pretrained config takes."""
    if config.in_chans not in cfg.in_chans:
        raise ValueError(f"{name} takes in_chans {' or '.join(map(str, cfg.in_chans))}, got {config.in_chans}")
    if cfg.input_size is not None and config.crop_size != cfg.input_size:
        raise ValueError(f"{name} takes {cfg.input_size}x{cfg.input_size} crops (crop_size={cfg.input_size})")
    if config.crop_size % cfg.stride:
        raise ValueError(f"{name} needs crop_size divisible by {cfg.stride}, got {config.crop_size}")


@register_model("mini_xception")
def mini_xception(config: ModelConfig, pretrained: bool) -> nn.Module:
    """FER2013 mini-Xception on 64x64 grayscale crops; pretrained loads the shipped weights (emotion.weights)."""
    _check_input("mini_xception", MiniXception.pretrained_cfg, config)
    return load_pretrained_backbone() if pretrained else MiniXception(num_classes=config.num_classes)


@register_model("wide_cnn")
def wide_cnn(config: ModelConfig, pretrained: bool) -> nn.Module:
    """Wider residual CNN for training from scratch (e.g. 112x112 crops, in_chans 1 or 3); no pretrained weights."""
    if pretrained:
        raise ValueError("wide_cnn has no pretrained weights; train it from scratch (pretrained=False)")
    _check_input("wide_cnn", WideCNN.pretrained_cfg, config)
    return WideCNN(in_chans=config.in_chans, num_classes=config.num_classes)
