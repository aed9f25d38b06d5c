"""The 3D-convolutional zoo architectures (emotion.model.zoo.conv3d): c3d2, c3d_convlstm_spp and r2plus1d train,
save, load and export, accept the crop sizes, channels and clip lengths they promise, and their shared parts (the
Conv3d unit computed as a Conv2d, ceil-mode pooling, spatial pyramid pooling, the (2+1)D factorisation) compute what
they claim."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from modeltools import adam_steps, assert_checkpoint_round_trip, assert_onnx_step_matches, clip, with_active_affect

from emotion.labels import LABELS
from emotion.model import create_model
from emotion.model.clip import OUTPUT_KEYS
from emotion.model.zoo.conv3d import (
    C3d2Config,
    C3dConvLstmSppConfig,
    Conv2Plus1d,
    ConvBnRelu3d,
    R2Plus1dConfig,
    max_pool,
    spatial_pyramid,
)

SMALL = {
    "c3d2": C3d2Config(crop_size=32, widths=(8, 16), fc=32),
    "c3d_convlstm_spp": C3dConvLstmSppConfig(crop_size=32, widths=(8, 16), hidden=8),
    "r2plus1d": R2Plus1dConfig(crop_size=32, widths=(8, 16, 16, 32)),
}
"""A fast config per architecture of this module, for the training and export checks."""

DEFAULTS = {"c3d2": C3d2Config(), "c3d_convlstm_spp": C3dConvLstmSppConfig(), "r2plus1d": R2Plus1dConfig()}

ARCHS = sorted(SMALL)

CAUSAL = {"c3d2": False, "c3d_convlstm_spp": True, "r2plus1d": False}


def small_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(SMALL[arch])


def with_random_statistics(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random BatchNorm statistics and affect residual, so every layer (and the eval-mode normalisation) reaches the
    outputs as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return with_active_affect(model, seed)


def moving_squares(config, n: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (N, T, C, S, S) of a bright 6 px square on a dark ground moving 3 px per frame, right for label 0 and
    left for label 1, from random places: a class only motion tells apart."""
    g = torch.Generator().manual_seed(seed)
    s, side, step = config.crop_size, 6, 3
    x = -torch.ones(n, t, config.in_chans, s, s)
    labels = torch.arange(n) % 2
    travel = step * (t - 1)
    for i in range(n):
        row = int(torch.randint(0, s - side, (1,), generator=g))
        col = int(torch.randint(0, s - side - travel, (1,), generator=g))
        for k in range(t):
            c = col + (step * k if labels[i] == 0 else travel - step * k)
            x[i, k, :, row : row + side, c : c + side] = 1.0
    return x, labels


def test_architectures_are_registered_with_their_causality():
    for arch in ARCHS:
        model = create_model(DEFAULTS[arch])
        assert model.config.arch == arch and type(model.config) is type(DEFAULTS[arch])
        assert model.causal is CAUSAL[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_backward_reach_every_parameter(arch):
    model = small_model(arch).train()
    x, lm = clip(model.config, 2, 4)
    out = model(x, lm)
    assert out["logits"].shape == (2, 4, len(LABELS))
    assert out["valence"].shape == out["arousal"].shape == (2, 4)
    loss = F.cross_entropy(out["logits"].flatten(0, 1), torch.tensor([0, 3]).repeat_interleave(4))
    (loss + out["valence"].square().mean() + out["arousal"].square().mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"{name} gets no gradient"
    with torch.inference_mode():
        assert set(model.eval()(x, lm)) == set(OUTPUT_KEYS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("crop_size,in_chans,t", [(32, 1, 1), (48, 3, 4), (80, 1, 5), (112, 3, 16)])
def test_default_layouts_take_every_promised_crop_size_channel_count_and_clip_length(arch, crop_size, in_chans, t):
    model = create_model(replace(DEFAULTS[arch], crop_size=crop_size, in_chans=in_chans)).eval()
    x, lm = clip(model.config, 1, t)
    with torch.inference_mode():
        out = model(x, lm)
    assert out["logits"].shape == (1, t, len(LABELS))
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize(
    "config,message",
    [
        (lambda: C3d2Config(widths=(8, 16, 32)), "exactly 2"),
        (lambda: C3d2Config(crop_size=40), "10-px maps to a 4 x 4 grid: crop_size must be a multiple of 16"),
        (lambda: C3dConvLstmSppConfig(crop_size=40), "lcm\\(levels\\) = 16"),
        (lambda: C3dConvLstmSppConfig(crop_size=64, levels=(1, 3)), "lcm\\(levels\\) = 12"),
        (lambda: C3dConvLstmSppConfig(kernel=2), "kernel odd"),
        (lambda: R2Plus1dConfig(crop_size=24), "total stride 32"),
        (lambda: R2Plus1dConfig(blocks=(1, 1)), "one entry per stage"),
        (lambda: R2Plus1dConfig(widths=()), "non-empty"),
    ],
)
def test_configs_refuse_layouts_they_cannot_run(config, message):
    with pytest.raises(ValueError, match=message):
        config()


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_decreases_on_a_tiny_batch(arch):
    model = small_model(arch).train()
    x, labels = moving_squares(model.config, 8, 4)

    def loss_of() -> torch.Tensor:
        logits = model(x)["logits"]
        return F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(logits.shape[1]))

    losses = adam_steps(loss_of, model.parameters(), 15, 1e-2)
    assert min(losses[-3:]) < 0.5 * losses[0], losses


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip(arch, tmp_path):
    model = with_random_statistics(small_model(arch)).eval()
    assert_checkpoint_round_trip(model, tmp_path, *clip(model.config, 2, 5))


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_step_matches_eager_forward_last(arch):
    """The exported streaming step gives forward_last's outputs over the window to 1e-4."""
    assert_onnx_step_matches(with_random_statistics(small_model(arch)).eval())


@pytest.mark.parametrize("arch", [a for a in ARCHS if CAUSAL[a]])
def test_causal_outputs_never_depend_on_future_frames(arch):
    model = with_random_statistics(small_model(arch)).eval()
    x, lm = clip(model.config, 2, 6)
    changed = x.clone()
    changed[:, 3:] = -changed[:, 3:]
    with torch.inference_mode():
        a, b = model(x, lm), model(changed, lm)
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(a[key][:, :3], b[key][:, :3], atol=1e-6, rtol=0)
        assert (a[key][:, 3:] - b[key][:, 3:]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kernel,stride,causal",
    [
        ((3, 3, 3), (1, 1, 1), False),
        ((3, 3, 3), (1, 1, 1), True),
        ((1, 3, 3), (1, 2, 2), False),
        ((3, 1, 1), (2, 1, 1), False),
        ((1, 1, 1), (2, 2, 2), False),
    ],
)
@pytest.mark.parametrize("t", [1, 4, 5])
def test_conv_unit_computes_a_zero_padded_conv3d(kernel, stride, causal, t):
    torch.manual_seed(0)
    unit = ConvBnRelu3d(3, 5, kernel, stride, causal=causal, relu=False).eval()
    x = torch.randn(2, t, 3, 9, 9)
    kt = kernel[0]
    pad = (kt - 1, 0) if causal else (kt // 2, kt // 2)
    volume = F.pad(rearrange(x, "b t c h w -> b c t h w"), (0, 0, 0, 0, *pad))
    with torch.no_grad():
        unit.bn.running_mean.uniform_(-1, 1)
        unit.bn.running_var.uniform_(0.5, 2)
        want = F.batch_norm(unit.conv(volume), unit.bn.running_mean, unit.bn.running_var, unit.bn.weight, unit.bn.bias)
        got = unit(x)
    want = rearrange(want, "b c t h w -> b t c h w")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5])
def test_max_pool_is_ceil_mode_max_pool3d(t):
    x = torch.randn(2, t, 3, 7, 8)
    want = F.max_pool3d(rearrange(x, "b t c h w -> b c t h w"), (2, 2, 2), ceil_mode=True)
    torch.testing.assert_close(max_pool(x, 2, 2), rearrange(want, "b c t h w -> b t c h w"), atol=0, rtol=0)


def test_spatial_pyramid_is_adaptive_max_pooling_per_level():
    f = torch.randn(3, 5, 8, 8)
    want = torch.cat([F.adaptive_max_pool2d(f, level).flatten(1) for level in (1, 2, 4)], dim=1)
    torch.testing.assert_close(spatial_pyramid(f, (1, 2, 4)), want, atol=0, rtol=0)


def test_r2plus1d_factorised_convs_have_the_parameters_of_full_3d_convs():
    """Every (2+1)D conv of the default model (stem and blocks) is within 10% of the parameters of the full
    3 x k x k Conv3d it replaces (Tran et al.'s choice of the intermediate width)."""
    model = create_model(R2Plus1dConfig())
    convs = [m for m in model.modules() if isinstance(m, Conv2Plus1d)]
    assert len(convs) == 1 + 2 * len(model.config.blocks)
    for conv in convs:
        spatial = conv[0].conv
        c_in, c_out, k = spatial.in_channels, conv[1].conv.out_channels, spatial.kernel_size[-1]
        full = sum(p.numel() for p in torch.nn.Conv3d(c_in, c_out, (3, k, k), bias=False).parameters())
        factorised = sum(p.numel() for p in conv.parameters())
        assert abs(factorised - full) <= 0.1 * full, (c_in, c_out, factorised, full)


def test_r2plus1d_18_layout_is_one_config_away():
    """torchvision's r2plus1d_18 (stem, 4 stages of 2 BasicBlocks, 64-512 wide, 31.5 M parameters with its 400-class
    head) is R2Plus1dConfig(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem_pool=False): 33.2 M parameters
    here, as each (2+1)D conv takes its own intermediate width where torchvision's second conv of a block reuses its
    first's."""
    config = R2Plus1dConfig(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem_pool=False, crop_size=112, in_chans=3)
    model = create_model(config)
    assert len(model.stages) == 8 and config.stride == 16
    assert abs(sum(p.numel() for p in model.parameters()) - 31.5e6) < 0.06 * 31.5e6
