"""The zoo's temporal-shift and attention architectures (tsm, timesformer, vivit): training signal, checkpoints, ONNX
export, causality, and TSM's shift and pretrained weights."""

from dataclasses import replace

import pytest
import torch
from modeltools import (
    FRAME_CLASSIFIERS,
    adam_steps,
    assert_checkpoint_round_trip,
    assert_onnx_step_matches,
    clip,
    needs_weights,
    with_active_affect,
)
from torch import nn

from emotion.labels import LABELS
from emotion.model import create_model
from emotion.model.backbones import load_pretrained_backbone
from emotion.model.clip import OUTPUT_KEYS
from emotion.model.zoo.frames import frame_features
from emotion.model.zoo.transformers import TimesformerConfig, VivitConfig
from emotion.model.zoo.tsm import TemporalShift, TsmConfig


CONFIGS = {
    "tsm": TsmConfig(window=4),
    "tsm_wide_bgr_causal": TsmConfig(window=4, backbone="wide_cnn", crop_size=32, in_chans=3, causal_shift=True),
    "timesformer": TimesformerConfig(window=4, crop_size=32, dim=32, heads=2, depth=2),
    "timesformer_bgr": TimesformerConfig(window=4, crop_size=24, in_chans=3, patch=6, dim=32, heads=2, depth=1),
    "vivit": VivitConfig(window=4, crop_size=32, dim=32, heads=2, spatial_depth=2, temporal_depth=1),
    "vivit_bgr": VivitConfig(window=4, crop_size=24, in_chans=3, patch=12, dim=32, heads=4, spatial_depth=1),
}
"""Small configs of each architecture, gray and BGR; TSM on both registered backbones."""

def model_for(name: str, seed: int = 0) -> nn.Module:
    """The small model `name` in eval mode, its zero-initialised affect residual randomised so it reaches the outputs."""
    torch.manual_seed(seed)
    return with_active_affect(create_model(CONFIGS[name])).eval()


def squares(config, b: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of a dark face with a bright square top-left (label 0) or bottom-right (label 1), plus faint noise. The
    square's side (S/5) is off the patch grid, so the patch it falls in looks different for each label."""
    g = torch.Generator().manual_seed(0)
    s, q = config.crop_size, config.crop_size // 5
    x = -0.8 + 0.1 * torch.randn(b, t, config.in_chans, s, s, generator=g)
    labels = torch.arange(b) % 2
    for i, label in enumerate(labels.tolist()):
        corner = slice(0, q) if label == 0 else slice(s - q, s)
        x[i, :, :, corner, corner] = 0.9
    return x, labels


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_and_backward_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(CONFIGS[name]).train()
    x, lm = clip(model.config, 2, 3)
    out = model(x, lm)
    assert out["logits"].shape == (2, 3, len(LABELS)) and out["valence"].shape == out["arousal"].shape == (2, 3)
    labels = torch.tensor([[0, 1, 2], [3, 4, 5]])
    target = torch.linspace(-0.8, 0.8, 6).view(2, 3)
    loss = nn.functional.cross_entropy(out["logits"].flatten(0, 1), labels.flatten())
    (loss + nn.functional.mse_loss(out["valence"], target) + nn.functional.mse_loss(out["arousal"], -target)).backward()
    trained = [(n, p) for n, p in model.named_parameters() if not n.startswith(FRAME_CLASSIFIERS)]
    assert len(trained) > 10
    for n, p in trained:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n
    with torch.inference_mode():
        assert set(model.eval()(x, lm)) == set(OUTPUT_KEYS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_decreases_on_a_tiny_synthetic_task(name):
    """Without dropout, 30 Adam steps take the per-step cross-entropy from chance over 7 classes to well below
    log 2, the loss of a model that only learned which two classes occur."""
    torch.manual_seed(0)
    model = create_model(replace(CONFIGS[name], dropout=0.0)).train()
    x, labels = squares(model.config, 4, 3)

    def loss_of() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x)["logits"].flatten(0, 1), labels.repeat_interleave(3))

    losses = adam_steps(loss_of, model.parameters(), 30, 3e-3)
    assert losses[0] > 1.2 and losses[-1] < 0.3, losses


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_checkpoint_round_trip(name, tmp_path):
    model = model_for(name)
    assert_checkpoint_round_trip(model, tmp_path, *clip(model.config, 2, 4))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_onnx_step_matches_eager_forward_last(name):
    """The exported step against eager `forward_last` on a random full window, for 1 and 3 faces."""
    assert_onnx_step_matches(model_for(name))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_causal_flag_says_which_steps_a_frame_reaches(name):
    """Changing frame t changes the outputs at steps >= t; at steps < t exactly when the model is not causal."""
    model = model_for(name)
    x, lm = clip(model.config, 1, 4)
    changed = x.clone()
    changed[:, 2] = -changed[:, 2]
    with torch.inference_mode():
        before, after = model(x, lm)["logits"], model(changed, lm)["logits"]
    assert model.causal == (name == "tsm_wide_bgr_causal")
    assert (after[:, 2:] - before[:, 2:]).abs().amax() > 1e-4
    earlier = (after[:, :2] - before[:, :2]).abs().amax()
    assert earlier == 0 if model.causal else earlier > 1e-4


@pytest.mark.parametrize("name", ["tsm", "timesformer_bgr", "vivit"])
def test_any_clip_length_up_to_the_window(name):
    model = model_for(name)
    for t in (1, 2, model.config.window):
        with torch.inference_mode():
            out = model(clip(model.config, 2, t)[0])
        assert out["logits"].shape == (2, t, len(LABELS)) and torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("name", ["timesformer", "vivit"])
def test_transformers_refuse_clips_longer_than_the_window(name):
    model = model_for(name)
    with pytest.raises(ValueError, match="at most window = 4 frames"):
        model(clip(model.config, 1, 5)[0])


@pytest.mark.parametrize(
    "config_class,fields,message",
    [
        (TimesformerConfig, {"crop_size": 60}, "patch must divide crop_size"),
        (VivitConfig, {"patch": 0}, "patch must divide crop_size"),
        (VivitConfig, {"heads": 5}, "heads must divide dim"),
        (TsmConfig, {"shift_div": 1}, "shift_div must be 0"),
    ],
)
def test_configs_refuse_what_the_models_cannot_take(config_class, fields, message):
    with pytest.raises(ValueError, match=message):
        config_class(**fields)


@pytest.mark.parametrize("arch", ["tsm", "timesformer", "vivit"])
def test_defaults_run_a_64px_gray_16_frame_clip(arch):
    config = {"tsm": TsmConfig, "timesformer": TimesformerConfig, "vivit": VivitConfig}[arch]()
    assert (config.crop_size, config.in_chans, config.window) == (64, 1, 16)
    model = create_model(config).eval()
    assert 5e4 < sum(p.numel() for p in model.parameters()) < 3e6
    with torch.inference_mode():
        assert model(clip(config, 1, 16)[0])["logits"].shape == (1, 16, len(LABELS))


@pytest.mark.parametrize("causal", [False, True])
def test_temporal_shift_moves_channel_folds_one_frame(causal):
    """div 4 of 8 channels: channels 0-1 come from the previous frame; 2-3 from the next (unless causal); zeros past
    the clip's ends; the rest stay. Outside a clip (frames None) it changes nothing."""
    shift = TemporalShift(4, causal)
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(6, 8, 1, 1) + 1
    assert torch.equal(shift(x), x)
    shift.frames = 3
    got, clips = shift(x).view(2, 3, 8), x.view(2, 3, 8)
    zero = torch.zeros(2, 1, 2)
    torch.testing.assert_close(got[:, :, :2], torch.cat([zero, clips[:, :2, :2]], 1), atol=0, rtol=0)
    future = clips[:, :, 2:4] if causal else torch.cat([clips[:, 1:, 2:4], zero], 1)
    torch.testing.assert_close(got[:, :, 2:4], future, atol=0, rtol=0)
    torch.testing.assert_close(got[:, :, 4:], clips[:, :, 4:], atol=0, rtol=0)


@needs_weights
def test_tsm_loads_the_fer2013_weights_and_without_shift_is_the_plain_backbone():
    """pretrained=True: the backbone's state dict is the FER2013 network's, keys and values. With shift_div 0 the
    head sees exactly the plain backbone's pooled frame features; with the default shift it does not."""
    plain = load_pretrained_backbone()
    x = clip(TsmConfig(), 2, 4)[0]
    with torch.inference_mode():
        features = frame_features(plain, x)
    for shift_div, same in ((0, True), (8, False)):
        model = create_model(TsmConfig(shift_div=shift_div), pretrained=True).eval()
        state, want = model.backbone.state_dict(), plain.state_dict()
        assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
        with torch.inference_mode():
            out = model(x)
            head = model.head(features, model.circumplex, 4)
        diff = (out["logits"] - head["logits"]).abs().amax()
        assert diff == 0 if same else diff > 1e-3


def test_tsm_frozen_backbone_keeps_its_weights_and_shifts():
    model = create_model(replace(CONFIGS["tsm"], freeze_backbone=True, dropout=0.0)).train()
    assert not any(p.requires_grad for p in model.backbone.parameters()) and not model.backbone.training
    x = clip(model.config, 1, 4)[0]
    changed = x.clone()
    changed[:, 3] = -changed[:, 3]
    with torch.inference_mode():
        assert (model(x)["logits"][:, 2] - model(changed)["logits"][:, 2]).abs().amax() > 1e-4
