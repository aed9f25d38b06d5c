"""What the zoo's architectures share over frames: a 2D op applied to every frame of a clip at once, and a registered
per-frame CNN (the pretrained FER2013 mini-Xception by default) pooled to one feature vector per frame."""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange, reduce
from torch import nn


def per_frame(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op on maps (N, C, H, W) to every step of clips (B, T, C, H, W) at once -> (B, T, C', H', W')."""
    return rearrange(op(rearrange(x, "b t c h w -> (b t) c h w")), "(b t) c h w -> b t c h w", b=x.shape[0])


def frame_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Clips (B, T, C, S, S) -> (B, T, backbone.num_features): the backbone's feature maps, averaged over space."""
    return reduce(per_frame(backbone.forward_features, x), "b t c h w -> b t c", "mean")
