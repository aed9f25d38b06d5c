"""What every architecture shares: the input config (`ClipConfig`), the base module (`ClipModel`) with its streaming
interface, the classification and valence/arousal head of the model zoo (`ClipHead`) and the architecture registry.

A model maps clips (B, T, C, S, S) in [-1, 1] (plus landmarks (B, T, L, 3) and face signals (B, T, G) for the models
that read them) to per-step logits (B, T, 7), valence (B, T) and arousal (B, T). Streaming keeps one packed row per
face and frame in a ring buffer (emotion.runtime): STNet packs its cached per-frame features; the zoo's models, whose
temporal part is not a per-frame cache, pack the raw crop and run the whole model over the buffered frames, reporting
the last step (`ClipModel.forward_last`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from emotion.labels import LABELS, circumplex_matrix
from emotion.model.backbones import BackboneConfig
from emotion.model.layers import circumplex_affect

CROP_FRAMINGS = ("brows", "mesh")

OUTPUT_KEYS: tuple[str, ...] = ("logits", "valence", "arousal")
"""What every model returns, per step: logits (B, T, 7), valence (B, T), arousal (B, T). In training a model may add
`aux_logits` (a tuple of (B, T_i, 7) logits trained with the clip's category beside `logits`, weighted by
`aux_weight`) and `aux_loss` (a label-free scalar loss, e.g. a reconstruction, already weighted); see
emotion.training.objective."""

RAW_INPUT_CFG = BackboneConfig(in_chans=(1, 3), input_size=None, stride=1, mean=127.5, std=127.5, weights=None)
"""Input of the models trained from scratch: gray or BGR crops of any size in [-1, 1], the range the shipped
FER2013 network takes too, so every model reads the same cached crops."""


@dataclass(frozen=True)
class ClipConfig:
    """Inputs and decision settings every architecture has; each architecture's config adds its own fields. Stored in
    checkpoints, so every field is a plain int/float/str/bool/tuple."""

    arch: ClassVar[str] = ""  # registry name of the architecture this config builds
    reads_signals: ClassVar[bool] = False  # whether the architecture can take face signals (signals > 0)

    window: int = 16  # frames T in the streaming ring buffer and in a training clip
    crop_size: int = 64  # px, side of the square face crop the model takes
    in_chans: int = 1  # input channels of the crop: 1 grayscale, 3 BGR
    landmarks: int = 468  # L, landmarks per face the face stage gives (MediaPipe face mesh)
    landmark_dims: int = 3  # coordinates per landmark (x, y, z)
    num_classes: int = 7  # emotion categories, must equal len(LABELS)
    dropout: float = 0.1  # dropout probability before the heads and in the temporal layers (training only)
    freeze_backbone: bool = False  # keep a pretrained per-frame CNN's weights (and BatchNorm statistics) fixed
    crop_framing: str = "brows"  # face crop: "brows" (brows to chin, cheek to cheek) or "mesh" (all landmarks)
    crop_rotate: bool = True  # face crop turned so the eyes are level
    crop_margin: float = 0.1  # fraction of the crop square's side added around the face
    flip_images: bool = False  # still images: outputs averaged with those of the mirrored crop (not in video)
    blendshape_prior: tuple[float, ...] = ()  # per category (LABELS order), logit units: the recognizer adds these
    # times the face's FACS evidence from its blendshapes (emotion.signals.emotion_evidence); () none. Untrained
    # models only: training drops it
    signals: int = 0  # G, face-signal features per frame the model reads (STNet's signal stream); 0: none

    def __post_init__(self) -> None:
        if self.num_classes != len(LABELS):
            raise ValueError(f"num_classes must be {len(LABELS)} (one per label in {LABELS}), got {self.num_classes}")
        if self.blendshape_prior and len(self.blendshape_prior) != len(LABELS):
            raise ValueError(
                f"blendshape_prior needs one weight per label ({len(LABELS)}), got {self.blendshape_prior}"
            )
        if self.signals < 0 or (self.signals and not self.reads_signals):
            raise ValueError(f"signals must be 0 for {self.arch or 'this architecture'} (it reads crops only)")
        if self.window < 1:
            raise ValueError("window must be at least 1 frame")
        if self.crop_framing not in CROP_FRAMINGS:
            raise ValueError(f"crop_framing must be one of {CROP_FRAMINGS}, got {self.crop_framing!r}")
        if self.in_chans not in (1, 3) or self.crop_size < 8:
            raise ValueError(
                f"crops must be gray or BGR (in_chans 1 or 3) of at least 8 px, got {self.in_chans}, {self.crop_size}"
            )


class ClipModel(nn.Module):
    """Base of every architecture: the config, the circumplex, backbone freezing, and streaming over raw crops.

    Subclasses implement `forward(x, landmarks=None, signals=None)` -> OUTPUT_KEYS over whole clips. Streaming packs
    each frame's crop into one ring-buffer row; `forward_last` runs the model over the buffered frames (the oldest
    repeated in front while fewer than `window` are buffered, so the model always sees a full window) and reports
    the last step, which for a non-causal model uses the whole window.
    """

    causal: ClassVar[bool] = False  # whether the output at step t depends on frames <= t only
    every_parameter_trains: ClassVar[bool] = False  # whether each training step reaches every parameter (a
    # per-frame backbone's own classifier does not when only its features are read); DDP must look for the others

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("circumplex", torch.tensor(circumplex_matrix()), persistent=False)

    @property
    def pretrained_cfg(self) -> BackboneConfig:
        """How 8-bit crops become the input (emotion.model.crops_to_tensor): the pretrained backbone's, if any."""
        backbone = getattr(self, "backbone", None)
        return backbone.pretrained_cfg if backbone is not None else RAW_INPUT_CFG

    def train(self, mode: bool = True) -> ClipModel:
        """Set train/eval mode; a frozen backbone stays in eval mode so its BatchNorm statistics stay fixed."""
        super().train(mode)
        if self.config.freeze_backbone and getattr(self, "backbone", None) is not None:
            self.backbone.eval()
        return self

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze or unfreeze the per-frame backbone (config.freeze_backbone): no gradients, BatchNorm statistics
        fixed through later train() calls. Unfreezing an architecture without one does nothing; freezing it is a
        ValueError."""
        backbone = getattr(self, "backbone", None)
        if backbone is None:
            if frozen:
                raise ValueError(f"{self.config.arch} has no per-frame backbone to freeze")
            return
        self.config = replace(self.config, freeze_backbone=frozen)
        backbone.requires_grad_(not frozen)
        backbone.train(self.training and not frozen)

    @property
    def affect_source(self) -> str:
        """'circumplex' while every affect residual is zero (their start), so valence/arousal are exactly the
        circumplex prior of the probabilities; 'learned' once a valence/arousal loss has moved one."""
        moved = any(bool(p.detach().any()) for n, p in self.named_parameters() if "affect_residual" in n)
        return "learned" if moved else "circumplex"

    def row_sizes(self) -> list[int]:
        """Lengths of the features one packed ring-buffer row holds side by side: the raw crop (C * S * S)."""
        c = self.config
        return [c.in_chans * c.crop_size * c.crop_size]

    def encode_rows(
        self, x: torch.Tensor, landmarks: torch.Tensor, signals: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Crops (N, C, S, S) -> ring-buffer rows (N, C * S * S); the zoo's models read crops only."""
        return rearrange(x, "n c h w -> n (c h w)")

    def forward_last(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """The newest step over packed rows (B, T, F) -> logits (B, 1, 7), valence/arousal (B, 1)."""
        c = self.config
        x = rearrange(clips, "b t (c h w) -> b t c h w", c=c.in_chans, h=c.crop_size)
        missing = c.window - x.shape[1]
        if missing > 0:
            x = torch.cat([x[:, :1].expand(-1, missing, -1, -1, -1), x], dim=1)
        out = self(x)
        return {k: out[k][:, -1:] for k in OUTPUT_KEYS}


class ClipHead(nn.Module):
    """The zoo's heads on step features (B, T', D): logits by a linear layer, and valence/arousal as the circumplex
    prior of those probabilities plus a residual that starts at zero (as STNet's), so an untrained model's affect
    agrees with its categories until a valence/arousal loss trains it. T' = 1 (a clip-level model) is repeated over
    the clip's `steps`."""

    def __init__(self, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes)
        self.affect_residual = nn.Linear(dim, 2)
        nn.init.zeros_(self.affect_residual.weight)
        nn.init.zeros_(self.affect_residual.bias)

    def forward(self, features: torch.Tensor, circumplex: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
        h = self.dropout(features)
        logits = self.classifier(h)
        affect = circumplex_affect(logits, self.affect_residual(h), circumplex)
        if logits.shape[1] != steps:
            if logits.shape[1] != 1:
                raise ValueError(f"step features must have {steps} steps or 1, got {logits.shape[1]}")
            logits, affect = logits.expand(-1, steps, -1), affect.expand(-1, steps, -1)
        return {"logits": logits, "valence": affect[..., 0], "arousal": affect[..., 1]}


ArchBuilder = Callable[[ClipConfig, bool], ClipModel]
"""(config, pretrained) -> the model; pretrained loads the shipped weights of its pretrained parts, if it has any."""

ARCHS: dict[str, tuple[type[ClipConfig], ArchBuilder]] = {}
"""Registered architectures by name (the value of `--arch`): their config class and builder."""


def register_arch(config_class: type[ClipConfig]) -> Callable[[ArchBuilder], ArchBuilder]:
    """Decorator registering a builder for `config_class` under config_class.arch."""

    def decorate(builder: ArchBuilder) -> ArchBuilder:
        name = config_class.arch
        if not name or name in ARCHS:
            raise ValueError(f"architecture {name!r} is unnamed or already registered")
        ARCHS[name] = (config_class, builder)
        return builder

    return decorate
