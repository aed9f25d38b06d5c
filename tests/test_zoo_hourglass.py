"""The zoo's `thcnn` (temporal hourglass) and `cnn_ae_lstm` (autoencoder codes into an LSTM): shapes, gradients,
training, checkpoints, ONNX export, thcnn's intermediate supervision at any T and cnn_ae_lstm's reconstruction and
causality."""

from dataclasses import replace

import pytest
import torch
from modeltools import (
    FRAME_CLASSIFIERS,
    adam_steps,
    assert_checkpoint_round_trip,
    assert_onnx_step_matches,
    max_diff,
    needs_weights,
    with_active_affect,
)

from emotion.labels import LABELS
from emotion.model import ClipConfig, create_model, list_archs
from emotion.model.backbones import load_pretrained_backbone
from emotion.model.zoo.frames import frame_features
from emotion.model.zoo.hourglass import ThcnnConfig
from emotion.model.zoo.recurrent import CnnAeLstmConfig
from emotion.training.config import TrainConfig
from emotion.training.objective import compute_loss

SMALL = {
    "thcnn": ThcnnConfig(dim=16, window=6),
    "cnn_ae_lstm": CnnAeLstmConfig(hidden=16, code=8, ae_hidden=16, window=6),
}
"""Small configs of the architectures this file tests; thcnn's window of 6 is not a multiple of 2**levels."""

INPUTS = {"gray": {}, "bgr": {"backbone": "wide_cnn", "crop_size": 32, "in_chans": 3}}
"""Crop settings: the FER2013 network's 64 px gray crops, and 32 px BGR crops through the wide CNN."""

ARCHS = sorted(SMALL)


def small(arch: str, inputs: str = "gray", **fields) -> ClipConfig:
    """The small config of `arch` with the crop settings `inputs` and any other fields changed."""
    return replace(SMALL[arch], **INPUTS[inputs], **fields)


def crops(config: ClipConfig, b: int, t: int, seed: int = 0) -> torch.Tensor:
    """Random crops (B, T, C, S, S) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, config.in_chans, config.crop_size, config.crop_size, generator=g) * 2 - 1


def targets(b: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random categories (B,) and valence/arousal (B, T, 2) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(len(LABELS), (b,), generator=g), torch.rand(b, t, 2, generator=g) * 2 - 1


def squares(config: ClipConfig, b: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of two classes told apart by a bright square at the top left (class 0) or bottom right (class 3)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, t, config.in_chans, config.crop_size, config.crop_size, generator=g) * 0.4 - 1
    label = torch.tensor([0, 3] * (b // 2))
    side = config.crop_size // 4
    for i, k in enumerate(label.tolist()):
        at = slice(0, side) if k == 0 else slice(-side, None)
        x[i, :, :, at, at] = 1
    return x, label


def test_both_architectures_are_registered_with_default_sizes_for_a_cpu():
    assert {"thcnn", "cnn_ae_lstm"} <= set(list_archs())
    for arch in ARCHS:
        count = sum(p.numel() for p in create_model(type(SMALL[arch])()).parameters())
        assert 100_000 <= count <= 3_000_000, (arch, count)
    assert not create_model(SMALL["thcnn"]).causal and create_model(SMALL["cnn_ae_lstm"]).causal


@pytest.mark.parametrize(
    "config_class,fields",
    [
        (ThcnnConfig, {"levels": 0}),
        (ThcnnConfig, {"kernel": 4}),
        (ThcnnConfig, {"aux_weight": -1.0}),
        (CnnAeLstmConfig, {"code": 0}),
        (CnnAeLstmConfig, {"recon_weight": -1.0}),
        (CnnAeLstmConfig, {"hidden": 0}),
    ],
)
def test_configs_refuse_impossible_fields(config_class, fields):
    with pytest.raises(ValueError, match=next(iter(fields))):
        config_class(**fields)


@pytest.mark.parametrize("inputs", sorted(INPUTS))
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_backward_reach_every_parameter(arch, inputs):
    """Training mode: per-step outputs and the architecture's extras, a finite non-zero gradient in every parameter
    that trains; eval mode: the outputs alone."""
    torch.manual_seed(0)
    model = with_active_affect(create_model(small(arch, inputs))).train()
    b, t = 2, 5
    x = crops(model.config, b, t)
    label, va = targets(b, t)
    out = model(x)
    assert out["logits"].shape == (b, t, len(LABELS)) and out["valence"].shape == out["arousal"].shape == (b, t)
    assert ("aux_logits" in out) == (arch == "thcnn") and ("aux_loss" in out) == (arch == "cnn_ae_lstm")
    loss, parts = compute_loss(out, label, va, TrainConfig(data="unused"))
    assert {"ce", "ccc_valence", "ccc_arousal"} <= set(parts)
    loss.backward()
    trained = [(n, p) for n, p in model.named_parameters() if not n.startswith(FRAME_CLASSIFIERS)]
    for name, p in trained:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.inference_mode():
        out = model(x)
    assert set(out) == {"logits", "valence", "arousal"}
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_decreases_on_a_tiny_batch(arch):
    """A few Adam steps on two classes lower the per-step cross-entropy itself, not only the architecture's extras."""
    torch.manual_seed(0)
    model = create_model(small(arch, dropout=0.0)).train()
    x, label = squares(model.config, 4, 4)
    va = torch.full((4, 4, 2), float("nan"))
    ce = []

    def loss_of() -> torch.Tensor:
        loss, parts = compute_loss(model(x), label, va, TrainConfig(data="unused"))
        ce.append(parts["ce"])
        return loss

    adam_steps(loss_of, model.parameters(), 8, 1e-2)
    assert ce[-1] < 0.6 * ce[0], ce


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    model = with_active_affect(create_model(small(arch))).eval()
    assert_checkpoint_round_trip(model, tmp_path, crops(model.config, 2, 6))


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_step_matches_eager_forward_last(arch):
    torch.manual_seed(0)
    assert_onnx_step_matches(with_active_affect(create_model(small(arch))).eval())


@pytest.mark.parametrize("levels,t,lengths", [(2, 16, (4, 8)), (2, 5, (2, 3)), (2, 1, (1, 1)), (3, 16, (2, 4, 8))])
def test_thcnn_aux_logits_have_the_intermediate_lengths(levels, t, lengths):
    """Bottleneck first, then each coarser decoder resolution, cropped to the steps that hold real frames."""
    torch.manual_seed(0)
    model = create_model(small("thcnn", levels=levels)).train()
    out = model(crops(model.config, 2, t))
    assert tuple(a.shape for a in out["aux_logits"]) == tuple((2, n, len(LABELS)) for n in lengths)
    assert out["aux_weight"] == model.config.aux_weight and out["logits"].shape == (2, t, len(LABELS))


def test_thcnn_pads_any_length_by_repeating_the_last_frame():
    """T = 5 gives the first 5 steps of the clip with its last frame repeated up to 8 frames (a multiple of
    2**levels), and is not causal."""
    torch.manual_seed(0)
    model = with_active_affect(create_model(small("thcnn"))).eval()
    x = crops(model.config, 2, 5)
    padded = torch.cat([x, x[:, -1:].expand(-1, 3, -1, -1, -1)], dim=1)
    with torch.inference_mode():
        out, full = model(x), model(padded)
    assert out["logits"].shape == (2, 5, len(LABELS))
    assert max_diff(out, {k: v[:, :5] for k, v in full.items()}) < 1e-5
    with torch.inference_mode():
        changed = model(torch.cat([x[:, :4], -x[:, 4:]], dim=1))
    assert (changed["logits"][:, 0] - out["logits"][:, 0]).abs().max() > 1e-4, "not causal: step 0 sees frame 4"


@needs_weights
def test_cnn_ae_lstm_reconstruction_loss_decreases_when_trained_alone():
    """With the pretrained CNN frozen (a fixed target), the autoencoder trained on aux_loss alone learns to
    reconstruct each frame's features better than their mean over the frames could."""
    torch.manual_seed(0)
    config = small("cnn_ae_lstm", freeze_backbone=True, recon_weight=1.0)
    model = create_model(config, pretrained=True).train()
    x, _ = squares(config, 2, 4)
    x = x * torch.linspace(0.2, 1, 8).reshape(2, 4, 1, 1, 1)

    def loss_of() -> torch.Tensor:
        loss = model(x)["aux_loss"]
        assert loss.dim() == 0
        return loss

    losses = adam_steps(loss_of, [p for p in model.parameters() if p.requires_grad], 30, 1e-2)
    spread = frame_features(model.backbone, x).var(dim=(0, 1), unbiased=False).mean()
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < 0.5 * float(spread), (losses, float(spread))
    with torch.inference_mode():
        assert "aux_loss" not in model.eval()(x)


def test_cnn_ae_lstm_is_causal():
    """Changing frame t leaves every output before step t as it was, and changes step t."""
    torch.manual_seed(0)
    model = with_active_affect(create_model(small("cnn_ae_lstm"))).eval()
    x = crops(model.config, 2, 7)
    t = 4
    changed = x.clone()
    changed[:, t] = -changed[:, t]
    with torch.inference_mode():
        before, after = model(x), model(changed)
    assert max_diff({k: v[:, :t] for k, v in before.items()}, {k: v[:, :t] for k, v in after.items()}) == 0
    assert (before["logits"][:, t] - after["logits"][:, t]).abs().max() > 0


@needs_weights
@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_loads_the_fer2013_network_as_backbone(arch):
    model = create_model(type(SMALL[arch])(), pretrained=True)
    reference = load_pretrained_backbone().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.backbone.state_dict().items())
