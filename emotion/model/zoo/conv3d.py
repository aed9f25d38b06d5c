"""3D-convolutional architectures trained from scratch: `c3d2` (the two-layer C3D of the Oulu-CASIA comparison),
`c3d_convlstm_spp` (causal 3D convolutions, a ConvLSTM and spatial pyramid pooling, one output per step) and
`r2plus1d` (a residual network of (2+1)D convolutions, Tran et al. 2018).

All three keep the clip layout (B, T, C, H, W) throughout and share one Conv3d + BatchNorm + ReLU unit; time
pooling uses ceil mode, so any T >= 1 keeps at least one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from emotion.model.clip import ClipConfig, ClipHead, ClipModel, register_arch
from emotion.model.zoo.frames import per_frame


def _check_widths(name: str, values: tuple[int, ...]) -> None:
    """ValueError unless `values` (widths or block counts) is a non-empty tuple of positive ints."""
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {values}")


def clip_features(x: torch.Tensor) -> torch.Tensor:
    """Feature clips (B, T, D, H, W) -> one clip feature vector (B, 1, D): the average over time and space."""
    return reduce(x, "b t d h w -> b 1 d", "mean")


def max_pool(x: torch.Tensor, time: int, space: int) -> torch.Tensor:
    """Max-pool clips (B, T, C, H, W) by `time` x `space` x `space` (stride = kernel) in ceil mode: an odd side or a
    T that `time` does not divide keeps its last, partial window (the last step repeated), so T never pools to 0."""
    y = per_frame(lambda f: F.max_pool2d(f, space, ceil_mode=True), x)
    short = -y.shape[1] % time
    if short:
        y = torch.cat([y, y[:, -1:].expand(-1, short, -1, -1, -1)], dim=1)
    return reduce(y, "b (t k) c h w -> b t c h w", "max", k=time)


class ConvBnRelu3d(nn.Module):
    """Conv3d (kernel kt x kh x kw, 'same' spatial padding, no bias) + BatchNorm + optional ReLU on clips
    (B, T, C, H, W): the unit of every block here.

    Time is zero-padded first: on the left only when `causal` (step t then sees frames <= t), else kt // 2 on both
    sides. The conv is computed as a Conv2d over each step's kt stacked frames, the same sum as `self.conv` (whose
    weights it uses) but several times faster on a CPU, where PyTorch's Conv3d has no fast kernel; BatchNorm2d over
    every step's maps keeps BatchNorm3d's per-channel statistics."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        causal: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        kt, kh, kw = kernel
        self.time_pad = (kt - 1, 0) if causal else (kt // 2, kt // 2)
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, padding=(0, kh // 2, kw // 2), bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T', C', H', W')."""
        kt, st = self.conv.kernel_size[0], self.conv.stride[0]
        x = F.pad(x, (0, 0, 0, 0, 0, 0, *self.time_pad))
        span = st * ((x.shape[1] - kt) // st) + 1
        windows = torch.cat([x[:, i : i + span : st] for i in range(kt)], dim=2)
        return per_frame(self._conv_bn_relu, windows)

    def _conv_bn_relu(self, windows: torch.Tensor) -> torch.Tensor:
        """Stacked frames (N, kt * C, H, W) -> (N, C', H', W')."""
        weight = rearrange(self.conv.weight, "o c k h w -> o (k c) h w")
        y = self.bn(F.conv2d(windows, weight, None, self.conv.stride[1:], self.conv.padding[1:]))
        return F.relu(y) if self.relu else y


@dataclass(frozen=True)
class C3d2Config(ClipConfig):
    """`--arch c3d2`: two 3x3x3 Conv3d blocks, pooling to a coarse grid, one fully connected layer, one clip vector."""

    arch: ClassVar[str] = "c3d2"

    widths: tuple[int, ...] = (32, 64)  # output channels of the two Conv3d blocks
    grid: int = 4  # cells per side of the spatial grid the last maps are averaged to before the fc layer
    fc: int = 256  # D, width of the fully connected layer on the pooled features (C3D's fc6)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_widths("widths", self.widths)
        if len(self.widths) != 2 or self.fc < 1 or self.grid < 1:
            raise ValueError(
                f"c3d2 has exactly 2 Conv3d blocks, fc >= 1 and grid >= 1, got widths {self.widths}, fc {self.fc}, "
                f"grid {self.grid}"
            )
        if math.ceil(math.ceil(self.crop_size / 2) / 2) % self.grid:
            raise ValueError(
                f"c3d2 averages its {math.ceil(math.ceil(self.crop_size / 2) / 2)}-px maps to a {self.grid} x "
                f"{self.grid} grid: crop_size must be a multiple of {4 * self.grid}, got {self.crop_size}"
            )


class C3d2(ClipModel):
    """The 2-layer C3D (Oulu-CASIA comparison): Conv3d block, 1x2x2 max-pool (space only, as C3D's first pool),
    Conv3d block, 2x2x2 max-pool, average over time and to a grid x grid map, flattened -> fc -> one clip vector
    whose outputs are reported for every step. The grid keeps coarse position, as C3D's flattened pool5 does: after
    only two 3x3 layers, global pooling would keep which patterns occur but not where, and in an aligned face where
    a pattern sits tells much of the expression; 4 x 4 cells keep the fc layer small. Not causal: the pooled vector
    sees the whole window."""

    def __init__(self, config: C3d2Config) -> None:
        super().__init__(config)
        w1, w2 = config.widths
        self.conv1 = ConvBnRelu3d(config.in_chans, w1, (3, 3, 3))
        self.conv2 = ConvBnRelu3d(w1, w2, (3, 3, 3))
        self.fc = nn.Linear(w2 * config.grid**2, config.fc)
        self.head = ClipHead(config.fc, config.num_classes, config.dropout)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        f = reduce(max_pool(self.conv2(max_pool(self.conv1(x), 1, 2)), 2, 2), "b t d h w -> b d h w", "mean")
        g = self.config.grid
        cells = reduce(f, "b d (h p) (w q) -> b 1 (d h w)", "mean", h=g, w=g)
        return self.head(F.relu(self.fc(cells)), self.circumplex, x.shape[1])


@register_arch(C3d2Config)
def c3d2(config: C3d2Config, pretrained: bool) -> C3d2:
    """The 2-layer C3D; it has no pretrained parts, so `pretrained` changes nothing."""
    return C3d2(config)


class ConvLSTM(nn.Module):
    """A ConvLSTM layer (Shi et al. 2015): LSTM gates from 2D convolutions of the step's input maps and the previous
    hidden maps, so the state keeps its spatial layout. The input part of the gates is computed for all steps at
    once; only the hidden part runs step by step."""

    def __init__(self, c_in: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_gates = nn.Conv2d(c_in, 4 * hidden, kernel, padding=kernel // 2)
        self.hidden_gates = nn.Conv2d(hidden, 4 * hidden, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Step maps (B, T, C, H, W) -> hidden maps (B, T, hidden, H, W), starting from zero state."""
        gates_in = per_frame(self.input_gates, x)
        h = gates_in.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        c = torch.zeros_like(h)
        steps = []
        for t in range(x.shape[1]):
            i, f, o, g = (gates_in[:, t] + self.hidden_gates(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            steps.append(h)
        return torch.stack(steps, dim=1)


def spatial_pyramid(f: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """Spatial pyramid pooling (He et al. 2014): maps (N, C, H, W) -> (N, C * sum(l * l)), the max over each cell of
    an l x l grid for every level l (H and W divisible by every level)."""
    return torch.cat([reduce(f, "n c (g h) (k w) -> n (c g k)", "max", g=level, k=level) for level in levels], dim=1)


@dataclass(frozen=True)
class C3dConvLstmSppConfig(ClipConfig):
    """`--arch c3d_convlstm_spp`: causal Conv3d blocks (short-term motion), a ConvLSTM over the steps (longer
    dependencies) and spatial pyramid pooling of its hidden maps, one output per step."""

    arch: ClassVar[str] = "c3d_convlstm_spp"

    widths: tuple[int, ...] = (32, 48)  # output channels of the causal 3x3x3 Conv3d blocks, each followed by a
    # 1x2x2 max-pool (time kept, so every step has its own output)
    hidden: int = 48  # hidden channels of the ConvLSTM
    kernel: int = 3  # px, side of the ConvLSTM's gate convolutions
    levels: tuple[int, ...] = (1, 2, 4)  # grid sides of the spatial pyramid pooling; D = hidden * sum(l * l)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_widths("widths", self.widths)
        _check_widths("levels", self.levels)
        if self.hidden < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"hidden must be >= 1 and kernel odd, got hidden {self.hidden}, kernel {self.kernel}")
        multiple = 2 ** len(self.widths) * math.lcm(*self.levels)
        if self.crop_size % multiple:
            raise ValueError(f"crop_size must be a multiple of 2^blocks*lcm(levels) = {multiple}, got {self.crop_size}")


class C3dConvLstmSpp(ClipModel):
    """3D-CNN + ConvLSTM + SPP: causal Conv3d blocks with spatial max-pools -> ConvLSTM over the T steps -> SPP of
    each step's hidden maps (B, T, D) -> per-step outputs. Causal in eval mode: the Conv3d blocks pad time on the
    left only and the ConvLSTM runs forward."""

    causal: ClassVar[bool] = True

    def __init__(self, config: C3dConvLstmSppConfig) -> None:
        super().__init__(config)
        channels = (config.in_chans, *config.widths)
        self.blocks = nn.ModuleList(
            ConvBnRelu3d(c_in, c_out, (3, 3, 3), causal=True) for c_in, c_out in zip(channels, channels[1:])
        )
        self.convlstm = ConvLSTM(config.widths[-1], config.hidden, config.kernel)
        dim = config.hidden * sum(level * level for level in config.levels)
        self.head = ClipHead(dim, config.num_classes, config.dropout)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        f = x
        for block in self.blocks:
            f = max_pool(block(f), 1, 2)
        h = self.convlstm(f)
        pooled = spatial_pyramid(rearrange(h, "b t c h w -> (b t) c h w"), self.config.levels)
        return self.head(rearrange(pooled, "(b t) d -> b t d", b=x.shape[0]), self.circumplex, x.shape[1])


@register_arch(C3dConvLstmSppConfig)
def c3d_convlstm_spp(config: C3dConvLstmSppConfig, pretrained: bool) -> C3dConvLstmSpp:
    """3D-CNN + ConvLSTM + SPP; it has no pretrained parts, so `pretrained` changes nothing."""
    return C3dConvLstmSpp(config)


def factorised_width(c_in: int, c_out: int, kt: int = 3, ks: int = 3) -> int:
    """Intermediate channels M of a (2+1)D conv (Tran et al. 2018): a 1 x ks x ks conv c_in -> M then a kt x 1 x 1
    conv M -> c_out have about the weights of one kt x ks x ks conv c_in -> c_out."""
    return (kt * ks * ks * c_in * c_out) // (ks * ks * c_in + kt * c_out)


class Conv2Plus1d(nn.Sequential):
    """A 3 x ks x ks conv factorised into a 1 x ks x ks spatial unit (spatial stride `space`, BN, ReLU) and a 3x1x1
    temporal unit (temporal stride `time`, BN, ReLU if `relu`), with the intermediate width of `factorised_width`."""

    def __init__(self, c_in: int, c_out: int, space: int = 1, time: int = 1, relu: bool = True, ks: int = 3) -> None:
        mid = factorised_width(c_in, c_out, ks=ks)
        super().__init__(
            ConvBnRelu3d(c_in, mid, (1, ks, ks), (1, space, space)),
            ConvBnRelu3d(mid, c_out, (3, 1, 1), (time, 1, 1), relu=relu),
        )


class Block2Plus1d(nn.Module):
    """R(2+1)D BasicBlock: two (2+1)D convs plus a shortcut (a strided 1x1x1 conv + BN where the shape changes),
    then ReLU; `stride` halves T, H and W."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(Conv2Plus1d(c_in, c_out, stride, stride), Conv2Plus1d(c_out, c_out, relu=False))
        reshape = stride != 1 or c_in != c_out
        self.shortcut = ConvBnRelu3d(c_in, c_out, (1, 1, 1), (stride,) * 3, relu=False) if reshape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T', C', H', W')."""
        return F.relu(self.body(x) + self.shortcut(x))


@dataclass(frozen=True)
class R2Plus1dConfig(ClipConfig):
    """`--arch r2plus1d`: a residual network of (2+1)D convolutions, global average pooling, one clip vector.

    torchvision's r2plus1d_18 layout is R2Plus1dConfig(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2),
    stem_pool=False) (with crop_size 112, in_chans 3): 33.2 M parameters here against torchvision's 31.5 M, as each
    (2+1)D conv takes its own intermediate width where torchvision's second conv of a block reuses its first's. The
    defaults (3.6 M) are sized for 64 px crops on a CPU."""

    arch: ClassVar[str] = "r2plus1d"

    widths: tuple[int, ...] = (32, 64, 128, 256)  # output channels of each stage (the stem gives widths[0])
    blocks: tuple[int, ...] = (1, 1, 1, 1)  # residual blocks per stage; every stage after the first halves T, H, W
    stem_pool: bool = True  # a 1x2x2 max-pool after the stem (r2plus1d_18 has none), for 64 px crops

    @property
    def stride(self) -> int:
        """px, spatial downsampling from the crop to the last stage's maps."""
        return 2 ** (len(self.widths) + self.stem_pool)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_widths("widths", self.widths)
        _check_widths("blocks", self.blocks)
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"widths and blocks need one entry per stage, got {self.widths} and {self.blocks}")
        if self.crop_size < self.stride:
            raise ValueError(f"r2plus1d needs crop_size >= its total stride {self.stride} px, got {self.crop_size}")


class R2Plus1d(ClipModel):
    """R(2+1)D (Tran et al. 2018): a (2+1)D stem (1x7x7 of spatial stride 2, then 3x1x1), stages of (2+1)D
    BasicBlocks, global average pooling -> one clip vector whose outputs are reported for every step. Not causal: it
    pools the whole window, and its temporal convs are centred."""

    def __init__(self, config: R2Plus1dConfig) -> None:
        super().__init__(config)
        self.stem = Conv2Plus1d(config.in_chans, config.widths[0], space=2, ks=7)
        channels = (config.widths[0], *config.widths)
        self.stages = nn.Sequential(
            *(
                Block2Plus1d(c_in if i == 0 else c_out, c_out, 2 if s > 0 and i == 0 else 1)
                for s, (c_in, c_out, n) in enumerate(zip(channels, channels[1:], config.blocks))
                for i in range(n)
            )
        )
        self.head = ClipHead(config.widths[-1], config.num_classes, config.dropout)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None, signals: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        f = self.stem(x)
        if self.config.stem_pool:
            f = max_pool(f, 1, 2)
        return self.head(clip_features(self.stages(f)), self.circumplex, x.shape[1])


@register_arch(R2Plus1dConfig)
def r2plus1d(config: R2Plus1dConfig, pretrained: bool) -> R2Plus1d:
    """R(2+1)D; it has no pretrained parts, so `pretrained` changes nothing."""
    return R2Plus1d(config)
