"""Temporal Shift Module (Lin et al. 2019): a per-frame 2D CNN whose residual branches each start by shifting a few
channels one frame along time, so the CNN mixes neighbouring frames at no extra parameters or multiply-adds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from emotion.model.backbones import ResidualModule, ResidualStage, frame_backbone
from emotion.model.clip import ClipConfig, ClipHead, ClipModel, register_arch
from emotion.model.zoo.frames import frame_features


@dataclass(frozen=True)
class TsmConfig(ClipConfig):
    """`--arch tsm`: per-frame CNN with temporal shifts at the start of every residual branch, per-step heads."""

    arch: ClassVar[str] = "tsm"

    backbone: str = "mini_xception"  # registry name of the per-frame CNN (pretrained: the FER2013 network)
    shift_div: int = 8  # 1/shift_div of a branch's input channels come from the previous frame and (unless
    # causal_shift) another 1/shift_div from the next one, zeros past the clip's ends; 0 turns shifting off
    causal_shift: bool = False  # online TSM: shift from the past only, so step t sees frames <= t

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shift_div == 1 or self.shift_div < 0:
            raise ValueError(f"shift_div must be 0 (no shift) or at least 2, got {self.shift_div}")


def shift_frames(x: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T, ...) -> the same with step t holding frame t - steps (a positive `steps` looks back), zeros outside."""
    pad = [0, 0] * (x.dim() - 2)
    if steps > 0:
        return F.pad(x[:, :-steps], [*pad, steps, 0])
    return F.pad(x[:, -steps:], [*pad, 0, -steps])


class TemporalShift(nn.Module):
    """Shifts channels of per-frame maps (B*T, C, H, W) along T: the first C/div from the previous frame, the next
    C/div from the next frame (none if causal). Identity outside `clip_frames`, which tells it T."""

    def __init__(self, div: int, causal: bool) -> None:
        super().__init__()
        self.div = div
        self.causal = causal
        self.frames: int | None = None  # T of the clip being run; None: not inside a clip, no shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = x.shape[1] // self.div if self.div else 0
        if self.frames is None or fold == 0:
            return x
        clip = rearrange(x, "(b t) c h w -> b t c h w", t=self.frames)
        parts = [shift_frames(clip[:, :, :fold], 1)]
        if not self.causal:
            parts.append(shift_frames(clip[:, :, fold : 2 * fold], -1))
        shifted = len(parts) * fold
        parts.append(clip[:, :, shifted:])
        return rearrange(torch.cat(parts, dim=2), "b t c h w -> (b t) c h w")

    def pre_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Forward pre-hook of a residual branch's first layer: shift its input."""
        return (self(args[0]), *args[1:])


def residual_branch_starts(backbone: nn.Module) -> list[nn.Module]:
    """The first layer of each residual branch of a registered backbone (MiniXception's sep1, WideCNN's body[0])."""
    blocks = [m for m in backbone.modules() if isinstance(m, ResidualModule | ResidualStage)]
    starts = [m.sep1 if isinstance(m, ResidualModule) else m.body[0] for m in blocks]
    if not starts:
        raise ValueError(f"tsm needs a backbone with residual blocks, {type(backbone).__name__} has none")
    return starts


class Tsm(ClipModel):
    """TSM over the per-frame CNN: residual-shift modules hooked in front of every residual branch (hooks, not
    wrappers, so the backbone's state-dict keys and its pretrained weights stay as they are), per-frame pooled
    features, per-step outputs. Causal with causal_shift (the online TSM); otherwise step t also sees one more future
    frame per residual block."""

    def __init__(self, config: TsmConfig, pretrained: bool = False) -> None:
        super().__init__(config)
        self.causal = config.causal_shift
        self.backbone = frame_backbone(config, pretrained)
        starts = residual_branch_starts(self.backbone)
        self.shifts = nn.ModuleList(TemporalShift(config.shift_div, config.causal_shift) for _ in starts)
        for start, shift in zip(starts, self.shifts):
            start.register_forward_pre_hook(shift.pre_hook)
        self.head = ClipHead(self.backbone.num_features, config.num_classes, config.dropout)
        if config.freeze_backbone:
            self.set_backbone_frozen(True)

    @contextmanager
    def clip_frames(self, frames: int) -> Iterator[None]:
        """Within the block the shift modules treat the backbone's batch as clips of `frames` frames."""
        for shift in self.shifts:
            shift.frames = frames
        try:
            yield
        finally:
            for shift in self.shifts:
                shift.frames = None

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        with self.clip_frames(x.shape[1]):
            features = frame_features(self.backbone, x)
        return self.head(features, self.circumplex, x.shape[1])


@register_arch(TsmConfig)
def tsm(config: TsmConfig, pretrained: bool) -> Tsm:
    return Tsm(config, pretrained)
