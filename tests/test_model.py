"""STNet: shapes, gradients, causality, the newest steps alone = the whole output, the untrained prior, the signal
stream, checkpoints.

Streaming through ring buffers is tested in tests/test_runtime.py."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from modeltools import (
    CONFIGS,
    RESIDUAL_HEADS,
    clip,
    face_signals,
    max_diff,
    model_for,
    needs_weights,
    with_active_residuals,
    with_signals,
)
from torch import nn

from emotion.labels import FER2013_TRAIN_COUNTS, LABELS, circumplex_matrix
from emotion.model import (
    CheckpointError,
    create_model,
    default_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from emotion.model.backbones import load_pretrained_backbone
from emotion.model.checkpoint import PRETRAINED_CONFIG


def test_every_registered_model_has_a_test_config():
    assert sorted(CONFIGS) == list_models()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("b,t", [(1, 1), (2, 5), (3, 16)])
def test_forward_shapes(name, b, t):
    model = model_for(name)
    x, lm = clip(model.config, b, t)
    with torch.inference_mode():
        out = model(x, lm)
    assert out["logits"].shape == (b, t, len(LABELS))
    assert out["valence"].shape == out["arousal"].shape == (b, t)
    for value in out.values():
        assert torch.isfinite(value).all()
    assert out["valence"].abs().max() <= 1 and out["arousal"].abs().max() <= 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_untrained_model_outputs_frame_logits_and_circumplex_prior(name):
    torch.manual_seed(0)
    model = create_model(CONFIGS[name]).eval()
    x, lm = clip(model.config, 2, 6)
    with torch.inference_mode():
        out = model(x, lm)
        frame_logits = model.backbone(x.flatten(0, 1)).view(2, 6, -1)
    probs = torch.softmax(frame_logits, -1)
    prior = probs @ torch.tensor(circumplex_matrix())
    torch.testing.assert_close(torch.softmax(out["logits"], -1), probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["valence"], prior[..., 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["arousal"], prior[..., 1], atol=1e-5, rtol=0)


@needs_weights
def test_default_model_is_the_pretrained_fer2013_model():
    """The FER2013 network's logits, adjusted by 0.75 of its training prior (PRETRAINED_CONFIG), and the circumplex
    valence/arousal of the resulting probabilities."""
    model = default_model("cpu")
    assert model.config == PRETRAINED_CONFIG and not model.training
    reference = load_pretrained_backbone()
    x, lm = clip(model.config, 1, 8)
    counts = torch.tensor(FER2013_TRAIN_COUNTS, dtype=torch.float32)
    with torch.inference_mode():
        out = model(x, lm)
        probs = torch.softmax(reference(x[0]) - 0.75 * torch.log(counts / counts.sum()), -1)
    torch.testing.assert_close(torch.softmax(out["logits"][0], -1), probs, atol=1e-5, rtol=0)
    prior = probs @ torch.tensor(circumplex_matrix())
    torch.testing.assert_close(out["valence"][0], prior[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["arousal"][0], prior[:, 1], atol=1e-5, rtol=0)
    assert probs.max(-1).values.min() < 0.999, "random crops should not saturate the softmax"


def test_valence_arousal_are_the_circumplex_of_the_output_probabilities_until_their_head_is_trained():
    """A category-trained model (logit residual active) keeps valence/arousal on the circumplex of the probabilities
    it reports; the prior passes no gradient to the categories; an active affect residual makes them 'learned'."""
    torch.manual_seed(0)
    model = with_active_residuals(create_model(CONFIGS["mini_xception"]))
    with torch.no_grad():
        model.affect_residual.weight.zero_()
        model.affect_residual.bias.zero_()
    model.eval()
    x, lm = clip(model.config, 2, 6)
    out = model(x, lm)
    prior = torch.softmax(out["logits"], -1) @ torch.tensor(circumplex_matrix())
    frame_prior = torch.softmax(model.backbone(x.flatten(0, 1)), -1).view(2, 6, -1) @ torch.tensor(circumplex_matrix())
    assert model.affect_source == "circumplex"
    torch.testing.assert_close(torch.stack([out["valence"], out["arousal"]], -1), prior, atol=1e-5, rtol=0)
    assert (prior - frame_prior).abs().max() > 0.05, "the logit residual should change the probabilities"
    (out["valence"].sum() + out["arousal"].sum()).backward()
    assert model.logit_residual.weight.grad is None and model.affect_residual.weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.affect_residual.bias.fill_(0.5)
        learned = model(x, lm)
    assert model.affect_source == "learned" and (learned["valence"] - prior[..., 0]).abs().min() > 0.01


def test_checkpoints_without_an_affect_record_are_read_from_the_affect_head(tmp_path):
    """Training records extra['affect'] (tests/test_train.py); a checkpoint without it, as written before, reads as
    'circumplex' while its affect residual is all zero and as 'learned' once any of it is not."""
    model = create_model(CONFIGS["mini_xception"])
    plain = load_checkpoint(save_checkpoint(tmp_path / "plain.pt", model, model.config), "cpu")
    assert plain[0].affect_source == plain[2]["affect"] == "circumplex"
    with torch.no_grad():
        model.affect_residual.bias[1] = 0.1
    assert load_checkpoint(save_checkpoint(tmp_path / "old.pt", model, model.config), "cpu")[2]["affect"] == "learned"


def training_loss(model: nn.Module, seed: int) -> torch.Tensor:
    x, lm = clip(model.config, 2, 6, seed=seed)
    out = model(x, lm, face_signals(model.config, 2, 6, seed=seed))
    labels = torch.arange(12).remainder(len(LABELS)).view(2, 6)
    target = torch.linspace(-0.8, 0.8, 12).view(2, 6)
    ce = nn.functional.cross_entropy(out["logits"].flatten(0, 1), labels.flatten())
    return ce + nn.functional.mse_loss(out["valence"], target) + nn.functional.mse_loss(out["arousal"], -target)


@pytest.mark.parametrize("signals", [False, True], ids=["landmarks", "signals"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_backward_reaches_every_parameter(name, signals):
    """Zero-init heads get gradients at once; after one optimizer step every parameter gets a nonzero gradient, the
    signal stream's encoder and gate after two: they sit behind two zero-initialised layers (the stream's projection
    into the fusion, then the residual heads), which wake one step after the other."""
    torch.manual_seed(0)
    model = create_model(with_signals(CONFIGS[name]) if signals else CONFIGS[name]).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    training_loss(model, seed=0).backward()
    for name_, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name_
    for head in RESIDUAL_HEADS:
        assert getattr(model, head).weight.grad.abs().sum() > 0, head
    assert all(p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    for step in range(1, 3 if signals else 2):
        optimizer.step()
        optimizer.zero_grad()
        training_loss(model, seed=step).backward()
    for name_, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name_
        assert p.grad.abs().sum() > 0, f"{name_} gets no gradient after {step} steps"


def test_frozen_backbone_gets_no_gradient_and_keeps_eval_mode():
    torch.manual_seed(0)
    model = create_model(replace(CONFIGS["mini_xception"], freeze_backbone=True)).train()
    assert model.training and not model.backbone.training
    running_mean = model.backbone.bn1.running_mean.clone()
    training_loss(model, seed=0).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    trainable = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert torch.equal(model.backbone.bn1.running_mean, running_mean)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_never_depend_on_future_frames(name):
    model = model_for(name)
    x, lm = clip(model.config, 2, 12)
    t = 6
    x2, lm2 = x.clone(), lm.clone()
    x2[:, t + 1 :] = torch.rand_like(x2[:, t + 1 :]) * 2 - 1
    lm2[:, t + 1 :] += 0.05 * torch.randn_like(lm2[:, t + 1 :])
    x3 = x.clone()
    x3[:, t - 2] = torch.rand_like(x3[:, t - 2]) * 2 - 1
    with torch.inference_mode():
        out, changed, past_changed = model(x, lm), model(x2, lm2), model(x3, lm)
    for key in ("logits", "valence", "arousal"):
        torch.testing.assert_close(out[key][:, : t + 1], changed[key][:, : t + 1], atol=1e-6, rtol=0)
        assert (out[key][:, t + 1 :] - changed[key][:, t + 1 :]).abs().max() > 1e-3
        # unseen frames would leave step t bit for bit equal; the random heads can make the change small
        assert (out[key][:, t] - past_changed[key][:, t]).abs().max() > 1e-5, "step t should see frame t-2"


@pytest.mark.parametrize("t,last", [(1, 1), (3, 2), (16, 1), (16, 7)])
def test_forward_temporal_last_steps_equal_the_full_output(t, last):
    model = model_for("mini_xception")
    x, lm = clip(model.config, 2, t)
    with torch.inference_mode():
        cache = model.forward_features(x, lm)
        full, tail = model.forward_temporal(cache), model.forward_temporal(cache, last=last)
    assert tail["logits"].shape == (2, last, len(LABELS))
    assert max_diff({k: v[:, -last:] for k, v in full.items()}, tail) < 1e-5


def test_checkpoint_round_trip(tmp_path):
    model = model_for("mini_xception")
    config = model.config
    path = save_checkpoint(tmp_path / "runs" / "best.pt", model, config, extra={"epoch": 3, "val": {"f1": 0.5}})
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]
    loaded, loaded_config, extra = load_checkpoint(path, "cpu")
    assert loaded_config == config and not loaded.training
    assert extra == {"epoch": 3, "val": {"f1": 0.5}, "affect": "learned"}  # no record: read from the active head
    x, lm = clip(config, 2, 5)
    with torch.inference_mode():
        assert max_diff(model(x, lm), loaded(x, lm)) == 0
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "emotion-checkpoint" and payload["version"] == 1
    assert payload["labels"] == list(LABELS) and payload["config"]["temporal_kernels"] == [1, 3, 5]


def test_checkpoint_from_before_the_crop_and_prior_settings_keeps_its_behaviour(tmp_path):
    """A checkpoint saved before crop_*, prior_strength, flip_images and the signal stream existed loads with the
    values it was trained with (eye-level brows-to-chin crop, 10 % margin, no adjustment, no mirror, no signal
    stream) and computes what it did: the shipped model's new settings do not reach a user's trained model."""
    model = model_for("mini_xception")
    path = save_checkpoint(tmp_path / "old.pt", model, model.config)
    payload = torch.load(path, weights_only=True)
    new_fields = ("crop_framing", "crop_rotate", "crop_margin", "prior_strength", "flip_images", "signals",
                  "signal_hidden", "signal_dim")  # fmt: skip
    torch.save({**payload, "config": {k: v for k, v in payload["config"].items() if k not in new_fields}}, path)
    loaded, config, _ = load_checkpoint(path, "cpu")
    assert (config.crop_framing, config.crop_rotate, config.crop_margin) == ("brows", True, 0.1)
    assert config.prior_strength == 0.0 and not config.flip_images
    assert torch.count_nonzero(loaded.logit_adjustment) == 0
    assert config.signals == 0 and loaded.signal_encoder is None  # no signal stream: as it was trained
    x, lm = clip(config, 1, 4)
    with torch.inference_mode():
        assert max_diff(model(x, lm), loaded(x, lm)) == 0


def test_save_refuses_extra_that_cannot_load_weights_only(tmp_path):
    model = model_for("mini_xception")
    with pytest.raises(TypeError, match="float64"):
        save_checkpoint(tmp_path / "x.pt", model, model.config, extra={"lr": np.float64(0.1)})
    assert list(tmp_path.iterdir()) == []


def write_bad_files(tmp_path) -> dict[str, tuple[object, str]]:
    """Bad checkpoint files -> (path, a phrase the error message must contain)."""
    model = model_for("mini_xception")
    good = save_checkpoint(tmp_path / "good.pt", model, model.config)
    payload = torch.load(good, weights_only=True)
    files = {"missing": (tmp_path / "nope.pt", "no such checkpoint")}
    (tmp_path / "text.pt").write_text("not a model\n")
    files["not torch"] = (tmp_path / "text.pt", "not a torch file")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    files["bare state dict"] = (tmp_path / "bare.pt", "not an emotion checkpoint")
    torch.save({"model": nn.Linear(3, 2), "epoch": 1}, tmp_path / "pickled.pt")
    files["pickled model (like a YOLO .pt)"] = (tmp_path / "pickled.pt", "not an emotion checkpoint")
    torch.save({**payload, "config": {**payload["config"], "feature_dim": 64}}, tmp_path / "shapes.pt")
    files["shape mismatch"] = (tmp_path / "shapes.pt", "do not fit")
    torch.save({**payload, "config": {**payload["config"], "backbone": "resnet9000"}}, tmp_path / "backbone.pt")
    files["unknown backbone"] = (tmp_path / "backbone.pt", "resnet9000")
    torch.save({**payload, "config": {**payload["config"], "colour": 1}}, tmp_path / "field.pt")
    files["unknown config field"] = (tmp_path / "field.pt", "colour")
    torch.save({**payload, "version": 2}, tmp_path / "version.pt")
    files["newer version"] = (tmp_path / "version.pt", "version 2")
    torch.save({**payload, "labels": ["a", "b"]}, tmp_path / "labels.pt")
    files["other labels"] = (tmp_path / "labels.pt", "labels")
    return files


def test_load_checkpoint_errors_name_the_file_and_the_problem(tmp_path):
    for case, (path, phrase) in write_bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, "cpu")
        message = str(info.value)
        assert str(path) in message and phrase in message and "\n" not in message, (case, message)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_signal_stream_changes_nothing_until_trained(name):
    """A model given an untrained signal stream (the same other weights) computes exactly what it computed without
    one, whatever the signals; once its projection is trained the signals count, except for a face without them
    (all-zero signals), whose outputs stay those of the model without the stream."""
    plain = model_for(name)
    grown = create_model(with_signals(plain.config)).eval()
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("signal_encoder.", "fusion.signal_")) for k in missing)
    x, lm = clip(plain.config, 2, 6)
    signals = face_signals(grown.config, 2, 6)
    with torch.inference_mode():
        before = plain(x, lm)
        untrained = grown(x, lm, signals)
        with_active_residuals(grown)
        trained, absent = grown(x, lm, signals), grown(x, lm, torch.zeros_like(signals))
    assert all(torch.equal(before[k], untrained[k]) for k in before)
    assert max_diff(before, trained) > 1e-3
    assert max_diff(before, absent) == 0
    with pytest.raises(ValueError, match="signal stream"):
        grown(x, lm)


@pytest.mark.parametrize("t,last", [(2, 1), (16, 7)])
def test_signal_stream_is_causal_and_its_last_steps_equal_the_full_output(t, last):
    model = model_for("mini_xception", signals=True)
    x, lm = clip(model.config, 2, t)
    signals = face_signals(model.config, 2, t)
    later = signals.clone()
    later[:, -1] = torch.rand_like(later[:, -1])
    with torch.inference_mode():
        cache = model.forward_features(x, lm, signals)
        full, tail = model.forward_temporal(cache), model.forward_temporal(cache, last=last)
        changed = model(x, lm, later)
    assert max_diff({k: v[:, -last:] for k, v in full.items()}, tail) < 1e-5
    assert max_diff({k: v[:, :-1] for k, v in full.items()}, {k: v[:, :-1] for k, v in changed.items()}) == 0
    assert max_diff({k: v[:, -1:] for k, v in full.items()}, {k: v[:, -1:] for k, v in changed.items()}) > 1e-4


def test_checkpoint_keeps_the_signal_stream(tmp_path):
    model = model_for("mini_xception", signals=True)
    loaded, config, _ = load_checkpoint(save_checkpoint(tmp_path / "signals.pt", model, model.config), "cpu")
    assert config == model.config and config.signals == 57 and loaded.signal_encoder is not None
    x, lm = clip(config, 2, 5)
    signals = face_signals(config, 2, 5)
    with torch.inference_mode():
        assert max_diff(model(x, lm, signals), loaded(x, lm, signals)) == 0
