"""Spatio-temporal emotion model: a per-frame CNN with attention, a landmark stream and a causal temporal head.

The untrained model reproduces the per-frame backbone: its logits are the backbone's frame logits plus a residual
whose last layer starts at zero, and valence/arousal start at the circumplex prior of the frame probabilities. Every
temporal operation is causal (the output at step t sees frames <= t only), so streaming through a ring buffer of the
last `window` frames gives at t exactly the whole-clip output at the last step of frames [max(0, t-window+1), t].
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from emotion.labels import LABELS, circumplex_matrix

FrameCache = dict[str, torch.Tensor]
"""Per-frame tensors the temporal head needs, keyed by CACHE_KEYS; leading dims (N,) per frame or (B, T) per clip."""

CACHE_KEYS: tuple[str, ...] = ("channel_avg", "channel_max", "frame_logits", "landmark_embed")
"""channel_avg / channel_max: (C,) spatially attended feature map pooled over space; frame_logits: (num_classes,)
backbone logits of the frame; landmark_embed: (landmark_dim,) per-frame landmark encoding."""

PRIOR_CLAMP: float = 0.999
"""Circumplex priors are clamped to +-PRIOR_CLAMP before atanh so the residual parametrisation stays finite."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of STNet; stored in checkpoints, so every field is a plain int/float/str/bool/tuple."""

    backbone: str = "mini_xception"  # registry name of the per-frame CNN
    window: int = 16  # frames T in the streaming ring buffer and in a training clip
    crop_size: int = 64  # px, side of the square face crop the backbone takes
    in_chans: int = 1  # input channels of the crop: 1 grayscale, 3 RGB
    landmarks: int = 468  # L, landmarks per face (MediaPipe face mesh)
    landmark_dims: int = 3  # coordinates per landmark (x, y, z)
    feature_dim: int = 128  # D, per-frame visual feature size after attention and pooling
    landmark_hidden: int = 256  # hidden width of the per-frame landmark encoder
    landmark_dim: int = 128  # per-frame landmark embedding size
    landmark_kernel: int = 3  # frames, kernel of the causal temporal conv of the landmark stream
    lstm_hidden: int = 32  # hidden size of each direction of the channel-attention LSTM
    lstm_window: int = 8  # frames W the causal backward LSTM direction reads back from each step
    temporal_kernels: tuple[int, ...] = (1, 3, 5)  # frames, kernels of the parallel causal temporal convs
    dropout: float = 0.1  # dropout probability in the temporal and fusion layers (training only)
    num_classes: int = 7  # emotion categories, must equal len(LABELS)
    freeze_backbone: bool = False  # keep the backbone's weights fixed and its BatchNorm in eval mode

    def __post_init__(self) -> None:
        if self.num_classes != len(LABELS):
            raise ValueError(f"num_classes must be {len(LABELS)} (one per label in {LABELS}), got {self.num_classes}")
        if self.window < 1 or self.lstm_window < 1 or self.landmark_kernel < 1:
            raise ValueError("window, lstm_window and landmark_kernel must be at least 1 frame")
        if not self.temporal_kernels or min(self.temporal_kernels) < 1:
            raise ValueError("temporal_kernels must be a non-empty tuple of positive frame counts")


class FrameBackbone(Protocol):
    """What STNet needs of a per-frame CNN (timm-style split); `num_features` is C of forward_features."""

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, S, S) crops -> (N, C, h, w) feature maps."""

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) feature maps -> (N, num_classes) frame logits in LABELS order."""


def sliding_windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, S + k - 1, C) -> (B, S, C, k): the k consecutive frames ending at each of the last S steps, oldest first.

    The same values as x.unfold(1, k, 1), built from k slices so that it exports to ONNX with a dynamic batch size.
    """
    steps = x.shape[1] - k + 1
    return torch.stack([x[:, i : i + steps] for i in range(k)], dim=-1)


def causal_windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T, C) -> (B, T, C*k): for each step t the frames t-k+1..t (zeros before the start), oldest first."""
    return rearrange(sliding_windows(F.pad(x, (0, 0, k - 1, 0)), k), "b t c k -> b t (c k)")


def causal_conv1d(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Conv1d over time with left zero padding only, so step t sees steps <= t: (B, T, C) -> (B, T, C').

    Computed as one matmul over unfolded windows (the same sum as conv1d, several times faster on short clips).
    """
    k = conv.kernel_size[0]
    windows = x if k == 1 else causal_windows(x, k)
    return F.linear(windows, rearrange(conv.weight, "o c k -> o (c k)"), conv.bias)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: channel-wise mean and max maps, a 7x7 conv and a sigmoid gate over positions."""

    def __init__(self, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([reduce(f, "n c h w -> n 1 h w", "mean"), reduce(f, "n c h w -> n 1 h w", "max")], dim=1)
        return f * torch.sigmoid(self.conv(maps))


class DynamicChannelAttention(nn.Module):
    """Channel gates from per-frame avg/max channel descriptors through a causal bidirectional LSTM over time.

    The forward direction runs over the clip. The backward direction for step t runs over the last `window` frames
    ending at t in reverse order (t, t-1, ...), batched over all t by unfolding, so no step ever sees the future.
    """

    def __init__(self, channels: int, hidden: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.forward_lstm = nn.LSTM(2 * channels, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(2 * channels, hidden, batch_first=True)
        self.gate = nn.Linear(2 * hidden, channels)

    def forward(self, desc: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """(B, T, 2C) descriptors -> (B, S, C) gates in (0, 1) for the last S = steps (default all T) steps."""
        b, t, _ = desc.shape
        s = t if steps is None else min(steps, t)
        w = min(self.window, t)
        forward_out, _ = self.forward_lstm(desc)
        windows = sliding_windows(F.pad(desc, (0, 0, w - 1, 0))[:, t - s :], w)
        windows = rearrange(windows, "b s d w -> (b s) w d").flip(1)
        backward_out, _ = self.backward_lstm(windows)
        valid = torch.clamp(torch.arange(t - s, t, device=desc.device), max=w - 1).repeat(b)
        backward_last = backward_out[torch.arange(b * s, device=desc.device), valid]
        backward_last = rearrange(backward_last, "(b s) h -> b s h", b=b)
        return torch.sigmoid(self.gate(torch.cat([forward_out[:, t - s :], backward_last], dim=-1)))


class MultiScaleTemporalAttention(nn.Module):
    """Parallel causal temporal convs (one per kernel) mixed by a per-step softmax over the branches, plus residual."""

    def __init__(self, dim: int, kernels: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv1d(dim, dim, k) for k in kernels)
        self.scores = nn.Linear(dim, len(kernels))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        branches = torch.stack([F.gelu(causal_conv1d(v, conv)) for conv in self.branches], dim=-2)
        mixed = torch.einsum("btkd,btk->btd", branches, torch.softmax(self.scores(v), dim=-1))
        return self.norm(v + self.dropout(mixed))


def normalize_landmarks(lm: torch.Tensor) -> torch.Tensor:
    """Centre each face's landmarks and divide by their RMS x-y radius, so position and face size drop out."""
    centred = lm - reduce(lm, "n l d -> n 1 d", "mean")
    scale = reduce(centred[..., :2].pow(2).sum(-1), "n l -> n 1 1", "mean").sqrt().clamp_min(1e-6)
    return centred / scale


class LandmarkEncoder(nn.Module):
    """Per-frame landmark encoder: normalised (N, L, 3) -> flatten -> hidden -> (N, landmark_dim)."""

    def __init__(self, landmarks: int, dims: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(landmarks * dims, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, out),
            nn.LayerNorm(out),
        )

    def forward(self, lm: torch.Tensor) -> torch.Tensor:
        return self.net(rearrange(normalize_landmarks(lm), "n l d -> n (l d)"))


class GatedFusion(nn.Module):
    """Per-step gated mix of the visual and landmark features: g * visual + (1 - g) * projected landmarks."""

    def __init__(self, visual: int, landmark: int) -> None:
        super().__init__()
        self.project = nn.Linear(landmark, visual)
        self.gate = nn.Linear(visual + landmark, visual)
        self.norm = nn.LayerNorm(visual)

    def forward(self, v: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([v, lm], dim=-1)))
        return self.norm(g * v + (1 - g) * self.project(lm))


class STNet(nn.Module):
    """Spatio-temporal emotion network over face tracks: per-step logits (B, T, 7), valence and arousal (B, T).

    `forward(x, landmarks)` = `forward_temporal(forward_features(x, landmarks))`; the expensive per-frame part
    (`encode_frames`) is cached per frame, so streaming runs the backbone once per face and frame. The output at
    step t depends on frames <= t only; streaming (`step`) applies the model to frames [max(0, t-window+1), t]. A
    whole clip longer than `window` can differ from streaming: its forward LSTM direction remembers the whole clip.
    """

    def __init__(self, config: ModelConfig, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
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
        self.fusion = GatedFusion(d, config.landmark_dim)
        self.head_hidden = nn.Linear(d + config.num_classes, d)
        self.dropout = nn.Dropout(config.dropout)
        self.logit_residual = nn.Linear(d, config.num_classes)
        self.affect_residual = nn.Linear(d, 2)
        for layer in (self.logit_residual, self.affect_residual):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("circumplex", torch.tensor(circumplex_matrix()), persistent=False)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> STNet:
        """Set train/eval mode; a frozen backbone stays in eval mode so its BatchNorm statistics stay fixed."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze or unfreeze the backbone (config.freeze_backbone): no gradients, so an optimizer skips it, and its
        BatchNorm statistics fixed through later train() calls; training freezes it for its first epochs."""
        self.config = replace(self.config, freeze_backbone=frozen)
        self.backbone.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)

    def encode_frames(self, x: torch.Tensor, landmarks: torch.Tensor) -> FrameCache:
        """Per-frame part (one backbone pass): crops (N, in_chans, S, S), landmarks (N, L, 3) -> FrameCache (N, ...)."""
        f = self.backbone.forward_features(x)
        frame_logits = self.backbone.forward_head(f)
        f = self.spatial_attention(f)
        return {
            "channel_avg": reduce(f, "n c h w -> n c", "mean"),
            "channel_max": reduce(f, "n c h w -> n c", "max"),
            "frame_logits": frame_logits,
            "landmark_embed": self.landmark_encoder(landmarks),
        }

    def forward_features(self, x: torch.Tensor, landmarks: torch.Tensor) -> FrameCache:
        """Clips (B, T, in_chans, S, S) and landmarks (B, T, L, 3) -> FrameCache with (B, T, ...) tensors."""
        b = x.shape[0]
        cache = self.encode_frames(
            rearrange(x, "b t c h w -> (b t) c h w"), rearrange(landmarks, "b t l d -> (b t) l d")
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
        return self.forward_head(self.fusion(v, lm[:, landmark_steps - last :]), cache["frame_logits"][:, t - last :])

    def forward_head(self, fused: torch.Tensor, frame_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Heads on fused (B, T, D) features: frame logits + residual, circumplex prior + residual in atanh space."""
        probs = torch.softmax(frame_logits, dim=-1)
        h = self.dropout(F.gelu(self.head_hidden(torch.cat([fused, probs], dim=-1))))
        prior = torch.atanh((probs @ self.circumplex).clamp(-PRIOR_CLAMP, PRIOR_CLAMP))
        affect = torch.tanh(prior + self.affect_residual(h))
        return {
            "logits": frame_logits + self.logit_residual(h),
            "valence": affect[..., 0],
            "arousal": affect[..., 1],
        }

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clips (B, T, in_chans, S, S) in [-1, 1] and landmarks (B, T, L, 3) -> outputs for every step."""
        return self.forward_temporal(self.forward_features(x, landmarks))

    def row_sizes(self) -> list[int]:
        """Lengths of the CACHE_KEYS features that one packed ring-buffer row holds side by side."""
        c = self.backbone.num_features
        return [c, c, self.config.num_classes, self.config.landmark_dim]

    def forward_last(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """The temporal head's newest step over packed rows (B, T, F) -> logits (B, 1, 7), valence/arousal (B, 1)."""
        return self.forward_temporal(dict(zip(CACHE_KEYS, clips.split(self.row_sizes(), dim=-1), strict=True)), last=1)

    def init_state(self) -> StreamState:
        """An empty set of per-track ring buffers of `config.window` frames."""
        return StreamState(self.config.window)

    @torch.inference_mode()
    def step(
        self,
        state: StreamState,
        crops: torch.Tensor,
        landmarks: torch.Tensor,
        track_ids: Sequence[Hashable] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One new frame for N faces: crops (N, C, S, S) or (C, S, S), landmarks (N, L, 3) or (L, 3).

        Runs the backbone once over all N faces, pushes each face into its track's ring buffer (track_ids, default
        0..N-1, unique) and returns the last step of each track: logits (N, 7), valence (N,), arousal (N,).
        """
        if crops.dim() == 3:
            crops, landmarks = crops[None], landmarks[None]
        return self.step_cached(state, self.encode_frames(crops, landmarks), track_ids)

    @torch.inference_mode()
    def step_cached(
        self, state: StreamState, frames: FrameCache, track_ids: Sequence[Hashable] | None = None
    ) -> dict[str, torch.Tensor]:
        """As `step`, from already encoded frames (N, ...) (e.g. from an exported encode_frames); see `step`."""
        n = frames["frame_logits"].shape[0]
        ids = list(range(n)) if track_ids is None else list(track_ids)
        if len(ids) != n or len(set(ids)) != n:
            raise ValueError(f"need {n} distinct track ids for {n} faces, got {ids}")
        packed = torch.cat([frames[k] for k in CACHE_KEYS], dim=-1)
        for i, track in enumerate(ids):
            state.push(track, packed[i])
        out = {
            "logits": packed.new_empty(n, self.config.num_classes),
            "valence": packed.new_empty(n),
            "arousal": packed.new_empty(n),
        }
        for rows, clips in state.batches(ids):
            result = self.forward_last(clips)
            for key, value in result.items():
                out[key][rows] = value[:, -1]
        return out


class StreamState:
    """Per-track ring buffers of the last `window` cached frames (each packed into one row) for `STNet.step`.

    Tracks are batched by history length, so no track is ever padded and each output is exactly the model applied
    to that track's buffered frames.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._tracks: dict[Hashable, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, track: Hashable) -> bool:
        return track in self._tracks

    def history(self, track: Hashable) -> int:
        """Frames currently buffered for a track (0 if unknown), at most `window`."""
        buffered = self._tracks.get(track)
        return 0 if buffered is None else buffered.shape[0]

    def push(self, track: Hashable, frame: torch.Tensor) -> None:
        """Append one frame's packed cache row (F,) to a track, dropping frames older than the window."""
        buffered = self._tracks.get(track)
        if buffered is None:
            self._tracks[track] = frame[None]
        else:
            self._tracks[track] = torch.cat([buffered[max(0, buffered.shape[0] + 1 - self.window) :], frame[None]])

    def batches(self, tracks: Sequence[Hashable]) -> list[tuple[list[int], torch.Tensor]]:
        """Group tracks by history length: [(positions in `tracks`, buffered rows (B, T, F)), ...]."""
        groups: dict[int, list[int]] = {}
        for i, track in enumerate(tracks):
            groups.setdefault(self.history(track), []).append(i)
        return [(rows, torch.stack([self._tracks[tracks[i]] for i in rows])) for rows in groups.values()]

    def retain(self, tracks: Sequence[Hashable]) -> None:
        """Forget every track not in `tracks` (e.g. faces that left the picture)."""
        keep = set(tracks)
        self._tracks = {k: v for k, v in self._tracks.items() if k in keep}

    def drop(self, track: Hashable) -> None:
        """Forget one track; a later frame with the same id starts a new history."""
        self._tracks.pop(track, None)

    def clear(self) -> None:
        """Forget all tracks."""
        self._tracks.clear()


class WideCNN(nn.Module):
    """Wider residual CNN for training from scratch on larger crops (e.g. 112x112, RGB or gray); no pretrained prior.

    Stride-2 stem and three stride-2 residual stages: (N, in_chans, S, S) -> (N, widths[-1], S/16, S/16); its frame
    logits come from its own linear head over globally pooled features.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(*(_ResidualStage(c_in, c_out) for c_in, c_out in pairwise(widths)))
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


class _ResidualStage(nn.Module):
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
