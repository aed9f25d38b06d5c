"""Reusable layers of STNet: causal time windows and convolutions, attention, the landmark and signal encoders and the
fusion.

Every temporal layer is causal (step t sees steps <= t only) and works on (B, T, ...) tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

PRIOR_CLAMP: float = 0.999
"""Circumplex priors are clamped to +-PRIOR_CLAMP before atanh so the residual parametrisation stays finite."""


def circumplex_affect(logits: torch.Tensor, residual: torch.Tensor, circumplex: torch.Tensor) -> torch.Tensor:
    """Valence and arousal (..., 2): the circumplex point (circumplex (7, 2)) of the probabilities of `logits`, held
    fixed (no gradient), plus `residual` in atanh space, so a zero residual reports exactly that prior."""
    shown = torch.softmax(logits.detach(), dim=-1)
    prior = torch.atanh((shown @ circumplex).clamp(-PRIOR_CLAMP, PRIOR_CLAMP))
    return torch.tanh(prior + residual)


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


def center_and_scale_landmarks(lm: torch.Tensor) -> torch.Tensor:
    """(N, L, 3) -> (N, L, 3): each face's landmarks centred and divided by their RMS x-y radius, so position and
    face size drop out inside the model whatever landmarks it is given."""
    centred = lm - reduce(lm, "n l d -> n 1 d", "mean")
    scale = reduce(centred[..., :2].pow(2).sum(-1), "n l -> n 1 1", "mean").sqrt().clamp_min(1e-6)
    return centred / scale


class LandmarkEncoder(nn.Module):
    """Per-frame landmark encoder: (N, L, 3) -> centred and scaled -> flatten -> hidden -> (N, landmark_dim)."""

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
        return self.net(rearrange(center_and_scale_landmarks(lm), "n l d -> n (l d)"))


class SignalEncoder(nn.Module):
    """Per-frame face-signal encoder: (N, G) blendshapes, head pose and gaze -> hidden -> (N, out). An all-zero vector
    (a face without signals) encodes to zeros, so such a frame adds nothing through the fusion."""

    def __init__(self, signals: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(signals, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out))
        self.norm = nn.LayerNorm(out)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        present = (a.abs().amax(dim=-1, keepdim=True) > 0).to(a.dtype)
        return self.norm(self.net(a)) * present


class GatedFusion(nn.Module):
    """Per-step gated mix of the visual and landmark features: g * visual + (1 - g) * projected landmarks; with a
    signal stream (`signal` > 0) plus h * projected signals, whose projection starts at zero, so an untrained signal
    stream leaves the fused features exactly as they are without it."""

    def __init__(self, visual: int, landmark: int, signal: int = 0) -> None:
        super().__init__()
        self.project = nn.Linear(landmark, visual)
        self.gate = nn.Linear(visual + landmark, visual)
        self.norm = nn.LayerNorm(visual)
        if signal:
            self.signal_project = nn.Linear(signal, visual, bias=False)
            self.signal_gate = nn.Linear(visual + signal, visual)
            nn.init.zeros_(self.signal_project.weight)

    def forward(self, v: torch.Tensor, lm: torch.Tensor, signals: torch.Tensor | None = None) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([v, lm], dim=-1)))
        mixed = g * v + (1 - g) * self.project(lm)
        if signals is not None:
            h = torch.sigmoid(self.signal_gate(torch.cat([v, signals], dim=-1)))
            mixed = mixed + h * self.signal_project(signals)
        return self.norm(mixed)
