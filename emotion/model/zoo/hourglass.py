"""Temporal hourglass architecture `thcnn` (TH-CNN): per-frame CNN features, then a fully convolutional 1D
encoder-decoder over time with skip connections and intermediate supervision at its coarser resolutions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from emotion.model.backbones import frame_backbone
from emotion.model.clip import ClipConfig, ClipHead, ClipModel, register_arch
from emotion.model.zoo.frames import frame_features


@dataclass(frozen=True)
class ThcnnConfig(ClipConfig):
    """`--arch thcnn`: per-frame CNN, then a temporal hourglass (T -> T/2 -> ... -> T/2**levels and back)."""

    arch: ClassVar[str] = "thcnn"

    backbone: str = "mini_xception"  # registry name of the per-frame CNN (pretrained: the FER2013 network)
    dim: int = 128  # D, temporal features per step at every resolution of the hourglass
    levels: int = 2  # halvings of T (clips are padded to a multiple of 2**levels frames, then cropped back)
    kernel: int = 3  # frames, temporal convolution kernel (odd, so stride 1 keeps the length)
    aux_weight: float = 0.5  # weight of the intermediate heads' cross-entropy (aux_logits) beside the final one

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1 or self.levels < 1 or self.kernel < 1 or self.kernel % 2 == 0 or self.aux_weight < 0:
            raise ValueError(
                f"dim, levels >= 1, kernel odd and aux_weight >= 0, got {self.dim}, {self.levels}, {self.kernel}, "
                f"{self.aux_weight}"
            )


class TemporalConv(nn.Module):
    """Conv1d over time with 'same' padding (stride 1 keeps T, stride 2 halves an even T), then a per-step LayerNorm
    over channels, GELU and dropout: (B, T, D) -> (B, T / stride, D)."""

    def __init__(self, dim: int, kernel: int, dropout: float, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(self.conv(rearrange(x, "b t d -> b d t")), "b d t -> b t d")
        return self.dropout(F.gelu(self.norm(y)))


class Thcnn(ClipModel):
    """TH-CNN: frame features (B, T, C) -> (B, T, D) -> per level a residual temporal conv (kept as the skip) and a
    stride-2 conv, a bottleneck conv at T/2**levels, then per level a 2x nearest upsampling plus the skip and a
    residual temporal conv -> per-frame outputs (B, T, D). No dense layer spans time, so any T >= 1 works (padded by
    repeating the last frame, cropped back). In training a linear head on the bottleneck and on every coarser
    decoder output gives `aux_logits`, coarsest first, each cropped to the steps that hold real frames.
    Not causal: every step sees frames on both sides through the hourglass."""

    def __init__(self, config: ThcnnConfig, pretrained: bool = False) -> None:
        super().__init__(config)
        self.backbone = frame_backbone(config, pretrained)
        d, k, p = config.dim, config.kernel, config.dropout
        self.project = nn.Linear(self.backbone.num_features, d)
        self.encode = nn.ModuleList(TemporalConv(d, k, p) for _ in range(config.levels))
        self.down = nn.ModuleList(TemporalConv(d, k, p, stride=2) for _ in range(config.levels))
        self.bottleneck = TemporalConv(d, k, p)
        self.decode = nn.ModuleList(TemporalConv(d, k, p) for _ in range(config.levels))
        self.aux_heads = nn.ModuleList(nn.Linear(d, config.num_classes) for _ in range(config.levels))
        self.head = ClipHead(d, config.num_classes, config.dropout)
        if config.freeze_backbone:
            self.set_backbone_frozen(True)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        t, levels = x.shape[1], self.config.levels
        h = self.project(frame_features(self.backbone, x))
        pad = -t % 2**levels
        if pad:
            h = rearrange(F.pad(rearrange(h, "b t d -> b d t"), (0, pad), mode="replicate"), "b d t -> b t d")
        skips = []
        for encode, down in zip(self.encode, self.down):
            h = h + encode(h)
            skips.append(h)
            h = down(h)
        h = self.bottleneck(h)
        coarse = [h]
        for decode, skip in zip(self.decode, reversed(skips)):
            h = repeat(h, "b t d -> b (t 2) d") + skip
            h = h + decode(h)
            coarse.append(h)
        out = self.head(h[:, :t], self.circumplex, t)
        if self.training:
            steps = [-(-t // 2 ** (levels - i)) for i in range(levels)]
            out["aux_logits"] = tuple(
                head(c[:, :s]) for head, c, s in zip(self.aux_heads, coarse[:-1], steps, strict=True)
            )
            out["aux_weight"] = self.config.aux_weight
        return out


@register_arch(ThcnnConfig)
def thcnn(config: ThcnnConfig, pretrained: bool) -> Thcnn:
    return Thcnn(config, pretrained)
