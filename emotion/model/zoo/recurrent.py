"""Recurrent architectures over per-frame CNN features: `cnn_lstm_attn` (an LSTM with attention pooling over time) and
`cnn_ae_lstm` (an LSTM over per-frame autoencoder codes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from emotion.model.backbones import frame_backbone
from emotion.model.clip import ClipConfig, ClipHead, ClipModel, register_arch
from emotion.model.zoo.frames import frame_features


@dataclass(frozen=True)
class RecurrentConfig(ClipConfig):
    """What the recurrent architectures share: the per-frame CNN and the LSTM over time (not an architecture itself)."""

    backbone: str = "mini_xception"  # registry name of the per-frame CNN (pretrained: the FER2013 network)
    hidden: int = 128  # H, LSTM hidden size
    lstm_layers: int = 1  # stacked LSTM layers

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1 or self.lstm_layers < 1:
            raise ValueError(f"hidden and lstm_layers must be at least 1, got {self.hidden}, {self.lstm_layers}")


class FrameLstm(ClipModel):
    """Base of the recurrent architectures: the per-frame CNN `backbone`, an LSTM over step vectors of
    `lstm_inputs()` features and the ClipHead on its hidden states (B, T', H)."""

    def __init__(self, config: RecurrentConfig, pretrained: bool) -> None:
        super().__init__(config)
        self.backbone = frame_backbone(config, pretrained)
        self.lstm = nn.LSTM(self.lstm_inputs(), config.hidden, config.lstm_layers, batch_first=True)
        self.head = ClipHead(config.hidden, config.num_classes, config.dropout)
        if config.freeze_backbone:
            self.set_backbone_frozen(True)

    def lstm_inputs(self) -> int:
        """Features per step the LSTM reads: the backbone's pooled features unless a subclass encodes them first."""
        return self.backbone.num_features


@dataclass(frozen=True)
class CnnLstmAttnConfig(RecurrentConfig):
    """`--arch cnn_lstm_attn`: per-frame CNN, LSTM over time, attention pooling of its steps into one clip vector."""

    arch: ClassVar[str] = "cnn_lstm_attn"

    attention_dim: int = 64  # hidden width of the attention scorer


class CnnLstmAttn(FrameLstm):
    """CNN + LSTM + attention (the Oulu-CASIA comparison's recurrent baseline): frame features -> LSTM (B, T, H) ->
    softmax attention weights over T -> one clip vector, whose outputs are reported for every step. Not causal: the
    pooled vector sees the whole window."""

    def __init__(self, config: CnnLstmAttnConfig, pretrained: bool = False) -> None:
        super().__init__(config, pretrained)
        self.score = nn.Sequential(
            nn.Linear(config.hidden, config.attention_dim), nn.Tanh(), nn.Linear(config.attention_dim, 1)
        )

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


@dataclass(frozen=True)
class CnnAeLstmConfig(RecurrentConfig):
    """`--arch cnn_ae_lstm`: per-frame CNN, a per-frame autoencoder bottleneck, a unidirectional LSTM over the codes."""

    arch: ClassVar[str] = "cnn_ae_lstm"

    code: int = 32  # Z, bottleneck features per frame the LSTM reads
    ae_hidden: int = 64  # hidden width of the autoencoder's encoder and decoder MLPs
    recon_weight: float = 0.1  # weight of the feature reconstruction MSE added to the training loss (aux_loss)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.code < 1 or self.ae_hidden < 1 or self.recon_weight < 0:
            raise ValueError(
                f"code and ae_hidden must be >= 1 and recon_weight >= 0, got {self.code}, {self.ae_hidden}, "
                f"{self.recon_weight}"
            )


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Linear, GELU, linear: one side of the per-frame autoencoder."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs))


class CnnAeLstm(FrameLstm):
    """CNN + autoencoder + LSTM: frame features (B, T, C) -> codes (B, T, Z) -> unidirectional LSTM (B, T, H) ->
    per-step outputs. Causal: every stage before the LSTM is per frame (the backbone in eval mode).

    In training the decoder reconstructs each frame's pooled CNN features from its code (aux_loss = recon_weight *
    MSE against the features, detached so the target does not move toward its reconstruction). Features rather than
    a downsampled crop: a crop's MSE is dominated by lighting, pose and identity, the FER2013 features keep the
    expression evidence the LSTM needs, and no pixel decoder is added."""

    causal: ClassVar[bool] = True

    def __init__(self, config: CnnAeLstmConfig, pretrained: bool = False) -> None:
        super().__init__(config, pretrained)
        features = self.backbone.num_features
        self.encoder = _mlp(features, config.ae_hidden, config.code)
        self.decoder = _mlp(config.code, config.ae_hidden, features)

    def lstm_inputs(self) -> int:
        return self.config.code

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        f = frame_features(self.backbone, x)
        code = self.encoder(f)
        h, _ = self.lstm(code)
        out = self.head(h, self.circumplex, x.shape[1])
        if self.training:
            out["aux_loss"] = self.config.recon_weight * F.mse_loss(self.decoder(code), f.detach())
        return out


@register_arch(CnnAeLstmConfig)
def cnn_ae_lstm(config: CnnAeLstmConfig, pretrained: bool) -> CnnAeLstm:
    return CnnAeLstm(config, pretrained)
