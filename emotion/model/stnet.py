"""Spatio-temporal emotion model: a per-frame CNN with attention, a landmark stream and a causal temporal head.

Beside the crops and landmarks a model may take face signals (`ModelConfig.signals` > 0: blendshapes, head pose and
gaze per frame), encoded per frame and joined in the fusion beside the landmark stream.

The untrained model reproduces the per-frame backbone: its logits are the backbone's frame logits plus a residual
whose last layer starts at zero (and the signal stream's projection into the fusion starts at zero too), and valence/arousal are the circumplex prior of its output probabilities plus a
residual that also starts at zero, so they stay exactly that prior until a valence/arousal loss trains it
(`STNet.affect_source`). Every temporal operation is causal (the output at step t sees frames <= t only), so
streaming through a ring buffer of the last `window` frames gives at t exactly the whole-clip output at the last
step of frames [max(0, t-window+1), t].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from emotion.labels import FER2013_TRAIN_COUNTS
from emotion.model.backbones import BackboneConfig
from emotion.model.clip import ClipConfig, ClipModel
from emotion.model.layers import (
    DynamicChannelAttention,
    GatedFusion,
    LandmarkEncoder,
    MultiScaleTemporalAttention,
    SignalEncoder,
    SpatialAttention,
    causal_conv1d,
    circumplex_affect,
)

FrameCache = dict[str, torch.Tensor]
"""Per-frame tensors the temporal head needs, keyed by CACHE_KEYS; leading dims (N,) per frame or (B, T) per clip."""

CACHE_KEYS: tuple[str, ...] = ("channel_avg", "channel_max", "frame_logits", "landmark_embed")
"""channel_avg / channel_max: (C,) spatially attended feature map pooled over space; frame_logits: (num_classes,)
backbone logits of the frame; landmark_embed: (landmark_dim,) per-frame landmark encoding."""

SIGNAL_KEY = "signal_embed"
"""The cache key a model with a signal stream adds after CACHE_KEYS (STNet.cache_keys): (signal_dim,) per-frame
encoding of the face signals, zeros for a face without them."""


@dataclass(frozen=True)
class ModelConfig(ClipConfig):
    """Architecture of STNet (`--arch stnet`, the default): the shared ClipConfig fields and these."""

    arch: ClassVar[str] = "stnet"
    reads_signals: ClassVar[bool] = True

    backbone: str = "mini_xception"  # registry name of the per-frame CNN
    feature_dim: int = 128  # D, per-frame visual feature size after attention and pooling
    landmark_hidden: int = 256  # hidden width of the per-frame landmark encoder
    landmark_dim: int = 128  # per-frame landmark embedding size
    landmark_kernel: int = 3  # frames, kernel of the causal temporal conv of the landmark stream
    lstm_hidden: int = 32  # hidden size of each direction of the channel-attention LSTM
    lstm_window: int = 8  # frames W the causal backward LSTM direction reads back from each step
    temporal_kernels: tuple[int, ...] = (1, 3, 5)  # frames, kernels of the parallel causal temporal convs
    prior_strength: float = 0.0  # frame logits minus this times log(training prior of the frame network's data)
    # signals (ClipConfig): G, face-signal features per frame (52 blendshapes in [0, 1], head yaw/pitch/roll and gaze
    # yaw/pitch in units of 90 degrees: emotion.signals.SIGNAL_DIM = 57); 0: no signal stream
    signal_hidden: int = 64  # hidden width of the per-frame signal encoder
    signal_dim: int = 32  # per-frame signal embedding size

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lstm_window < 1 or self.landmark_kernel < 1:
            raise ValueError("lstm_window and landmark_kernel must be at least 1 frame")
        if not self.temporal_kernels or min(self.temporal_kernels) < 1:
            raise ValueError("temporal_kernels must be a non-empty tuple of positive frame counts")


class FrameBackbone(Protocol):
    """What STNet needs of a per-frame CNN (timm-style split); `num_features` is C of forward_features."""

    num_features: int
    pretrained_cfg: BackboneConfig

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, S, S) crops -> (N, C, h, w) feature maps."""

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) feature maps -> (N, num_classes) frame logits in LABELS order."""


class STNet(ClipModel):
    """Spatio-temporal emotion network over face tracks: per-step logits (B, T, 7), valence and arousal (B, T).

    `forward(x, landmarks, signals)` = `forward_temporal(forward_features(x, landmarks, signals))` (signals only for a
    model with a signal stream, config.signals > 0); the expensive per-frame part
    (`encode_frames`, packed by `encode_rows`) is cached per frame, so streaming runs the backbone once per face and
    frame. The output at step t depends on frames <= t only; streaming (`forward_last` over a track's ring buffer,
    emotion.runtime) applies the model to frames [max(0, t-window+1), t]. A whole clip longer than `window` can
    differ from streaming: its forward LSTM direction remembers the whole clip.
    """

    causal = True
    every_parameter_trains = True

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__(config)
        self.backbone = backbone
        channels = backbone.num_features
        d = config.feature_dim
        self.spatial_attention = SpatialAttention()
        self.channel_attention = DynamicChannelAttention(channels, config.lstm_hidden, config.lstm_window)
        self.visual_proj = nn.Sequential(nn.Linear(2 * channels, d), nn.LayerNorm(d), nn.GELU())
        self.temporal = MultiScaleTemporalAttention(d, config.temporal_kernels, config.dropout)
        self.landmark_encoder = LandmarkEncoder(
            config.landmarks, config.landmark_dims, config.landmark_hidden, config.landmark_dim
        )
        self.landmark_temporal = nn.Conv1d(config.landmark_dim, config.landmark_dim, config.landmark_kernel)
        self.landmark_norm = nn.LayerNorm(config.landmark_dim)
        self.signal_encoder = (
            SignalEncoder(config.signals, config.signal_hidden, config.signal_dim) if config.signals else None
        )
        self.fusion = GatedFusion(d, config.landmark_dim, config.signal_dim if config.signals else 0)
        self.cache_keys = CACHE_KEYS + ((SIGNAL_KEY,) if config.signals else ())
        self.head_hidden = nn.Linear(d + config.num_classes, d)
        self.dropout = nn.Dropout(config.dropout)
        self.logit_residual = nn.Linear(d, config.num_classes)
        self.affect_residual = nn.Linear(d, 2)
        for layer in (self.logit_residual, self.affect_residual):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        prior = torch.tensor(FER2013_TRAIN_COUNTS, dtype=torch.float32)
        self.register_buffer("logit_adjustment", -config.prior_strength * torch.log(prior / prior.sum()), persistent=False)
        if config.freeze_backbone:
            self.set_backbone_frozen(True)

    def encode_frames(
        self, x: torch.Tensor, landmarks: torch.Tensor, signals: torch.Tensor | None = None
    ) -> FrameCache:
        """Per-frame part (one backbone pass): crops (N, in_chans, S, S), landmarks (N, L, 3) and, with a signal
        stream, face signals (N, G) (all zero for a face without them) -> FrameCache (N, ...)."""
        f = self.backbone.forward_features(x)
        frame_logits = self.backbone.forward_head(f) + self.logit_adjustment
        f = self.spatial_attention(f)
        cache = {
            "channel_avg": reduce(f, "n c h w -> n c", "mean"),
            "channel_max": reduce(f, "n c h w -> n c", "max"),
            "frame_logits": frame_logits,
            "landmark_embed": self.landmark_encoder(landmarks),
        }
        if self.signal_encoder is not None:
            if signals is None:
                raise ValueError(f"this model has a signal stream: pass face signals (N, {self.config.signals})")
            cache[SIGNAL_KEY] = self.signal_encoder(signals)
        return cache

    def forward_features(
        self, x: torch.Tensor, landmarks: torch.Tensor, signals: torch.Tensor | None = None
    ) -> FrameCache:
        """Clips (B, T, in_chans, S, S), landmarks (B, T, L, 3) and signals (B, T, G) -> FrameCache with (B, T, ...)
        tensors; signals are used by a model with a signal stream only."""
        b = x.shape[0]
        cache = self.encode_frames(
            rearrange(x, "b t c h w -> (b t) c h w"),
            rearrange(landmarks, "b t l d -> (b t) l d"),
            None if signals is None or self.signal_encoder is None else rearrange(signals, "b t g -> (b t) g"),
        )
        return {k: rearrange(v, "(b t) ... -> b t ...", b=b) for k, v in cache.items()}

    def forward_temporal(self, cache: FrameCache, last: int | None = None) -> dict[str, torch.Tensor]:
        """Causal temporal head over cached frames (B, T, ...) -> {logits (B, S, 7), valence (B, S), arousal (B, S)}.

        S = T, or only the last `last` steps (exactly the same values; streaming computes just the newest step).
        """
        t = cache["frame_logits"].shape[1]
        last = t if last is None else min(last, t)
        visual_steps = min(t, last + max(self.config.temporal_kernels) - 1)
        landmark_steps = min(t, last + self.config.landmark_kernel - 1)
        avg, mx = cache["channel_avg"], cache["channel_max"]
        gate = self.channel_attention(torch.cat([avg, mx], dim=-1), steps=visual_steps)
        pooled = torch.cat([gate * avg[:, t - visual_steps :], gate * mx[:, t - visual_steps :]], dim=-1)
        v = self.temporal(self.dropout(self.visual_proj(pooled)))[:, visual_steps - last :]
        lm = cache["landmark_embed"][:, t - landmark_steps :]
        lm = self.landmark_norm(lm + self.dropout(F.gelu(causal_conv1d(lm, self.landmark_temporal))))
        signals = cache[SIGNAL_KEY][:, t - last :] if self.signal_encoder is not None else None
        fused = self.fusion(v, lm[:, landmark_steps - last :], signals)
        return self.forward_head(fused, cache["frame_logits"][:, t - last :])

    def forward_head(self, fused: torch.Tensor, frame_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads on fused (B, T, D) features: frame logits + residual; the circumplex prior of the resulting
        probabilities + residual in atanh space for valence/arousal.

        The prior is of the output probabilities, so a model whose affect residual is zero reports valence/arousal
        that agree with its categories; it is held fixed (no gradient), so a valence/arousal loss trains the residual
        and never moves the categories through it (README, "What valence and arousal are").
        """
        probs = torch.softmax(frame_logits, dim=-1)
        h = self.dropout(F.gelu(self.head_hidden(torch.cat([fused, probs], dim=-1))))
        logits = frame_logits + self.logit_residual(h)
        affect = circumplex_affect(logits, self.affect_residual(h), self.circumplex)
        return {"logits": logits, "valence": affect[..., 0], "arousal": affect[..., 1]}

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Clips (B, T, in_chans, S, S) in [-1, 1], landmarks (B, T, L, 3) and, for a model with a signal stream,
        face signals (B, T, G) -> outputs for every step."""
        return self.forward_temporal(self.forward_features(x, landmarks, signals))

    def row_sizes(self) -> list[int]:
        """Lengths of the cache_keys features that one packed ring-buffer row holds side by side."""
        c = self.backbone.num_features
        signal = [self.config.signal_dim] if self.signal_encoder is not None else []
        return [c, c, self.config.num_classes, self.config.landmark_dim, *signal]

    def encode_rows(
        self, x: torch.Tensor, landmarks: torch.Tensor, signals: torch.Tensor | None = None
    ) -> torch.Tensor:
        """encode_frames packed into one ring-buffer row per face: (N, F) with the cache_keys features side by side."""
        cache = self.encode_frames(x, landmarks, signals)
        return torch.cat([cache[k] for k in self.cache_keys], dim=-1)

    def forward_last(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """The temporal head's newest step over packed rows (B, T, F) -> logits (B, 1, 7), valence/arousal (B, 1)."""
        rows = clips.split(self.row_sizes(), dim=-1)
        return self.forward_temporal(dict(zip(self.cache_keys, rows, strict=True)), last=1)
