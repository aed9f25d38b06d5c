"""Recurrent architectures over per-frame CNN features: `cnn_lstm_attn` (an LSTM with attention pooling over time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn

from emotion.model.backbones import frame_backbone
from emotion.model.clip import ClipConfig, ClipHead, ClipModel, register_arch
from emotion.model.zoo.frames import frame_features


@dataclass(frozen=True)
class CnnLstmAttnConfig(ClipConfig):
    """`--arch cnn_lstm_attn`: per-frame CNN, LSTM over time, attention pooling of its steps into one clip vector."""

    arch: ClassVar[str] = "cnn_lstm_attn"

    backbone: str = "mini_xception"  # registry name of the per-frame CNN (pretrained: the FER2013 network)
    hidden: int = 128  # H, LSTM hidden size
    lstm_layers: int = 1  # stacked LSTM layers
    attention_dim: int = 64  # hidden width of the attention scorer


class CnnLstmAttn(ClipModel):
    """CNN + LSTM + attention (the Oulu-CASIA comparison's recurrent baseline): frame features -> LSTM (B, T, H) ->
    softmax attention weights over T -> one clip vector, whose outputs are reported for every step. Not causal: the
    pooled vector sees the whole window."""

    def __init__(self, config: CnnLstmAttnConfig, pretrained: bool = False) -> None:
        super().__init__(config)
        self.backbone = frame_backbone(config, pretrained)
        self.lstm = nn.LSTM(self.backbone.num_features, config.hidden, config.lstm_layers, batch_first=True)
        self.score = nn.Sequential(
            nn.Linear(config.hidden, config.attention_dim), nn.Tanh(), nn.Linear(config.attention_dim, 1)
        )
        self.head = ClipHead(config.hidden, config.num_classes, config.dropout)
        if config.freeze_backbone:
            self.set_backbone_frozen(True)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        h, _ = self.lstm(frame_features(self.backbone, x))
        weights = torch.softmax(self.score(h), dim=1)
        pooled = rearrange((weights * h).sum(dim=1), "b h -> b 1 h")
        return self.head(pooled, self.circumplex, x.shape[1])


@register_arch(CnnLstmAttnConfig)
def cnn_lstm_attn(config: CnnLstmAttnConfig, pretrained: bool) -> CnnLstmAttn:
    return CnnLstmAttn(config, pretrained)
