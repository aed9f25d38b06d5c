"""What the zoo's 2D-CNN architectures share: a registered per-frame CNN (the pretrained FER2013 mini-Xception by
default) run over every frame of a clip and pooled to one feature vector per frame."""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import nn


def frame_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Clips (B, T, C, S, S) -> (B, T, backbone.num_features): the backbone's feature maps, averaged over space."""
    f = backbone.forward_features(rearrange(x, "b t c h w -> (b t) c h w"))
    return reduce(f, "(b t) c h w -> b t c", "mean", b=x.shape[0])
