"""Video transformers over patch tokens: `timesformer` (divided space-time attention, Bertasius et al. 2021) and
`vivit` (factorised encoder, Arnab et al. 2021, model 2). Both share one pre-norm transformer block, with attention
written as einsum + softmax so that it exports to ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange, reduce, repeat
from torch import nn

from emotion.model.clip import ClipConfig, ClipHead, ClipModel, register_arch
from emotion.model.zoo.frames import per_frame


@dataclass(frozen=True)
class TransformerConfig(ClipConfig):
    """What both video transformers share: patch tokens of each frame, their width and attention heads."""

    patch: int = 8  # px, side of the square patches each frame is cut into (must divide crop_size)
    dim: int = 96  # D, token width
    heads: int = 4  # attention heads (must divide dim)
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, in multiples of dim

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch < 1 or self.crop_size % self.patch:
            raise ValueError(f"patch must divide crop_size ({self.crop_size} px), got {self.patch}")
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"heads must divide dim ({self.dim}), got {self.heads}")


@dataclass(frozen=True)
class TimesformerConfig(TransformerConfig):
    """`--arch timesformer`: divided space-time attention over patch tokens, per-step heads on per-frame CLS tokens."""

    arch: ClassVar[str] = "timesformer"

    depth: int = 4  # divided space-time blocks


@dataclass(frozen=True)
class VivitConfig(TransformerConfig):
    """`--arch vivit`: factorised encoder, a spatial ViT per frame then a temporal transformer over frame tokens."""

    arch: ClassVar[str] = "vivit"

    spatial_depth: int = 4  # blocks of the per-frame spatial transformer
    temporal_depth: int = 2  # blocks of the temporal transformer over the frames' CLS tokens


class Attention(nn.Module):
    """Multi-head self-attention over tokens (N, L, D) -> (N, L, D), as einsum + softmax."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h e) -> three n h l e", three=3, h=self.heads)
        weights = torch.softmax(torch.einsum("nhie,nhje->nhij", q, k) * self.scale, dim=-1)
        mixed = torch.einsum("nhij,nhje->nhie", self.dropout(weights), v)
        return self.dropout(self.proj(rearrange(mixed, "n h l e -> n l (h e)")))


class Block(nn.Module):
    """Pre-norm transformer block over tokens (N, L, D): x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


def block_stack(config: TransformerConfig, depth: int) -> nn.Sequential:
    """`depth` pre-norm blocks of the config's width, heads and MLP ratio."""
    return nn.Sequential(*(Block(config.dim, config.heads, config.mlp_ratio, config.dropout) for _ in range(depth)))


def sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sine-cosine codes (N, dim) of N positions (Vaswani et al. 2017): dim / 2 frequencies, sines then cosines."""
    frequencies = 10000.0 ** -(torch.arange(dim // 2, dtype=torch.float32) / max(dim // 2, 1))
    angles = positions.float()[:, None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_grid(side: int, dim: int) -> torch.Tensor:
    """2D sine-cosine codes (side * side, dim) of a patch grid in row-major order: half the width codes the row,
    half the column (as in MAE and Beyer et al. 2022, "Better plain ViT baselines")."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.cat([sincos(rows.flatten(), dim // 2), sincos(cols.flatten(), dim - dim // 2)], dim=1)


class FrameTokens(nn.Module):
    """Clips (B, T, C, S, S) -> tokens (B, T, 1 + P, D): each frame's CLS token then its P = (S / patch)^2 patches
    (a strided conv), with learned spatial position embeddings. They start as 2D sine-cosine codes rather than small
    random values: a from-scratch transformer then knows where each patch is from its first step, which the
    synthetic clips' position cue showed it otherwise needs hundreds of steps to learn (benchmarks/zoo.py)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.embed = nn.Conv2d(config.in_chans, config.dim, config.patch, stride=config.patch)
        side = config.crop_size // config.patch
        self.cls = nn.Parameter(torch.zeros(config.dim))
        self.position = nn.Parameter(torch.cat([torch.zeros(1, config.dim), sincos_grid(side, config.dim)]))
        nn.init.trunc_normal_(self.cls, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        patches = rearrange(per_frame(self.embed, x), "b t d h w -> b t (h w) d")
        cls = repeat(self.cls, "d -> b t 1 d", b=b, t=t)
        return torch.cat([cls, patches], dim=2) + self.position


class TemporalPosition(nn.Module):
    """Learned position embeddings of up to `window` frames, added to step features (B, T, ..., D) for T <= window;
    they start as sine-cosine codes of the frame index."""

    def __init__(self, window: int, dim: int) -> None:
        super().__init__()
        self.position = nn.Parameter(sincos(torch.arange(window), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, window = x.shape[1], self.position.shape[0]
        if t > window:
            raise ValueError(f"clips of at most window = {window} frames, got {t}")
        position = self.position[:t]
        return x + position.view(t, *[1] * (x.dim() - 3), -1)


class DividedBlock(nn.Module):
    """TimeSformer's divided space-time block over tokens (B, T, L, D): pre-norm temporal attention (each token
    position across T), then the shared Block (spatial attention among each frame's tokens, then MLP)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.temporal_norm = nn.LayerNorm(config.dim)
        self.temporal = Attention(config.dim, config.heads, config.dropout)
        self.spatial = Block(config.dim, config.heads, config.mlp_ratio, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        across_time = rearrange(x, "b t l d -> (b l) t d")
        across_time = across_time + self.temporal(self.temporal_norm(across_time))
        per_frame = rearrange(across_time, "(b l) t d -> (b t) l d", b=b)
        return rearrange(self.spatial(per_frame), "(b t) l d -> b t l d", b=b)


class Timesformer(ClipModel):
    """Divided space-time attention over each frame's CLS token and patches (the per-frame CLS tokens attend to each
    other across T like any patch position); per-step outputs from the mean of each frame's tokens, which on the
    synthetic clips learnt faster than the CLS token alone (loss 1.3 against 2.2 after 15 epochs; Beyer et al. 2022
    found the same for ViTs). Not causal: temporal attention sees the whole clip."""

    def __init__(self, config: TimesformerConfig) -> None:
        super().__init__(config)
        self.tokens = FrameTokens(config)
        self.time = TemporalPosition(config.window, config.dim)
        self.blocks = nn.Sequential(*(DividedBlock(config) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.dim)
        self.head = ClipHead(config.dim, config.num_classes, config.dropout)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        tokens = self.blocks(self.time(self.tokens(x)))
        return self.head(self.norm(reduce(tokens, "b t l d -> b t d", "mean")), self.circumplex, x.shape[1])


class Vivit(ClipModel):
    """Factorised-encoder ViViT: a spatial ViT per frame gives its CLS token (B, T, D), a temporal transformer over
    those frame tokens gives per-step outputs. Not causal: temporal attention sees the whole clip."""

    def __init__(self, config: VivitConfig) -> None:
        super().__init__(config)
        self.tokens = FrameTokens(config)
        self.spatial = block_stack(config, config.spatial_depth)
        self.spatial_norm = nn.LayerNorm(config.dim)
        self.time = TemporalPosition(config.window, config.dim)
        self.temporal = block_stack(config, config.temporal_depth)
        self.norm = nn.LayerNorm(config.dim)
        self.head = ClipHead(config.dim, config.num_classes, config.dropout)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        frames = self.spatial(rearrange(self.tokens(x), "b t l d -> (b t) l d"))
        frames = rearrange(self.spatial_norm(frames[:, 0]), "(b t) d -> b t d", b=b)
        steps = self.norm(self.temporal(self.time(frames)))
        return self.head(steps, self.circumplex, x.shape[1])


@register_arch(TimesformerConfig)
def timesformer(config: TimesformerConfig, pretrained: bool) -> Timesformer:
    """TimeSformer from scratch (it has no pretrained parts)."""
    return Timesformer(config)


@register_arch(VivitConfig)
def vivit(config: VivitConfig, pretrained: bool) -> Vivit:
    """ViViT from scratch (it has no pretrained parts)."""
    return Vivit(config)
