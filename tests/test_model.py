"""STNet: shapes, gradients, causality, streaming = whole clip, the untrained prior, checkpoints, step speed."""

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from emotion.labels import LABELS, circumplex_matrix
from emotion.model import (
    CheckpointError,
    ModelConfig,
    create_model,
    default_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
)
from emotion.model.backbones import DEFAULT_WEIGHTS, crops_to_tensor, load_pretrained_backbone

CONFIGS = {
    "mini_xception": ModelConfig(),
    "wide_cnn": ModelConfig(backbone="wide_cnn", crop_size=112, in_chans=3),
}
"""A test config per registered backbone; the wide CNN runs on 112x112 RGB crops."""

RESIDUAL_HEADS = ("logit_residual", "affect_residual")
"""The zero-initialised last layers of the temporal branch."""

needs_weights = pytest.mark.skipif(
    not DEFAULT_WEIGHTS.is_file(), reason=f"pretrained weights missing: {DEFAULT_WEIGHTS}"
)


def clip(config: ModelConfig, b: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops (B, T, C, S, S) in [-1, 1] and face-like landmarks (B, T, L, 3) around a mean shape."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, t, config.in_chans, config.crop_size, config.crop_size, generator=g) * 2 - 1
    shape = torch.rand(1, 1, config.landmarks, config.landmark_dims, generator=g)
    lm = shape + 0.02 * torch.randn(b, t, config.landmarks, config.landmark_dims, generator=g)
    return x, lm


def with_active_residuals(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give the zero-initialised residual heads random weights so the temporal branch changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in RESIDUAL_HEADS:
            layer = getattr(model, name)
            layer.weight.copy_(0.3 * torch.randn(layer.weight.shape, generator=g))
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g))
    return model


def model_for(name: str, seed: int = 0) -> nn.Module:
    """An untrained model of the registered backbone `name` with active residual heads, in eval mode."""
    torch.manual_seed(seed)
    return with_active_residuals(create_model(CONFIGS[name])).eval()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in ("logits", "valence", "arousal"))


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
    model = default_model("cpu")
    assert model.config == ModelConfig() and not model.training
    reference = load_pretrained_backbone()
    x, lm = clip(model.config, 1, 8)
    with torch.inference_mode():
        out = model(x, lm)
        probs = torch.softmax(reference(x[0]), -1)
    torch.testing.assert_close(torch.softmax(out["logits"][0], -1), probs, atol=1e-5, rtol=0)
    prior = probs @ torch.tensor(circumplex_matrix())
    torch.testing.assert_close(out["valence"][0], prior[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["arousal"][0], prior[:, 1], atol=1e-5, rtol=0)
    assert probs.max(-1).values.min() < 0.999, "random crops should not saturate the softmax"


def training_loss(model: nn.Module, seed: int) -> torch.Tensor:
    x, lm = clip(model.config, 2, 6, seed=seed)
    out = model(x, lm)
    labels = torch.arange(12).remainder(len(LABELS)).view(2, 6)
    target = torch.linspace(-0.8, 0.8, 12).view(2, 6)
    ce = nn.functional.cross_entropy(out["logits"].flatten(0, 1), labels.flatten())
    return ce + nn.functional.mse_loss(out["valence"], target) + nn.functional.mse_loss(out["arousal"], -target)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_backward_reaches_every_parameter(name):
    """Zero-init heads get gradients at once; after one optimizer step every parameter gets a nonzero gradient."""
    torch.manual_seed(0)
    model = create_model(CONFIGS[name]).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    training_loss(model, seed=0).backward()
    for name_, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name_
    for head in RESIDUAL_HEADS:
        assert getattr(model, head).weight.grad.abs().sum() > 0, head
    assert all(p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    optimizer.step()
    optimizer.zero_grad()
    training_loss(model, seed=1).backward()
    for name_, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name_
        assert p.grad.abs().sum() > 0, f"{name_} gets no gradient after one step"


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
        assert (out[key][:, t] - past_changed[key][:, t]).abs().max() > 1e-4, "step t should see frame t-2"


@pytest.mark.parametrize("t,last", [(1, 1), (3, 2), (16, 1), (16, 7)])
def test_forward_temporal_last_steps_equal_the_full_output(t, last):
    model = model_for("mini_xception")
    x, lm = clip(model.config, 2, t)
    with torch.inference_mode():
        cache = model.forward_features(x, lm)
        full, tail = model.forward_temporal(cache), model.forward_temporal(cache, last=last)
    assert tail["logits"].shape == (2, last, len(LABELS))
    assert max_diff({k: v[:, -last:] for k, v in full.items()}, tail) < 1e-5


def test_streaming_equals_whole_clip_and_batches_tracks_of_different_lengths():
    model = model_for("mini_xception")
    x, lm = clip(model.config, 3, 16)
    starts = (0, 3, 9)
    with torch.inference_mode():
        whole = [model(x[i : i + 1, : 16 - s], lm[i : i + 1, : 16 - s]) for i, s in enumerate(starts)]
    state = model.init_state()
    for frame in range(16):
        tracks = [i for i, s in enumerate(starts) if frame >= s]
        idx = [frame - starts[i] for i in tracks]
        out = model.step(state, x[tracks, idx], lm[tracks, idx], track_ids=[f"face{i}" for i in tracks])
        for row, (i, t) in enumerate(zip(tracks, idx)):
            expected = {k: v[0, t] for k, v in whole[i].items()}
            assert max_diff({k: v[row] for k, v in out.items()}, expected) < 1e-5, (i, t)
            assert state.history(f"face{i}") == t + 1
    single = model.init_state()
    one = model.step(single, x[0, 0], lm[0, 0])
    assert one["logits"].shape == (1, len(LABELS))
    assert max_diff({k: v[0] for k, v in one.items()}, {k: v[0, 0] for k, v in whole[0].items()}) < 1e-5


def test_streaming_a_long_sequence_uses_the_last_window():
    model = model_for("mini_xception")
    window = model.config.window
    x, lm = clip(model.config, 1, 40)
    state = model.init_state()
    streamed = [model.step(state, x[0, t], lm[0, t], track_ids=["a"]) for t in range(40)]
    assert state.history("a") == window
    starts = range(40 - window + 1)
    with torch.inference_mode():
        windows = model(
            torch.stack([x[0, s : s + window] for s in starts]), torch.stack([lm[0, s : s + window] for s in starts])
        )
    for t in range(40):
        first = max(0, t - window + 1)
        expected = {k: v[first, t - first] for k, v in windows.items()}
        assert max_diff({k: v[0] for k, v in streamed[t].items()}, expected) < 1e-5, t


def test_dropped_track_restarts_and_retain_forgets():
    model = model_for("mini_xception")
    x, lm = clip(model.config, 1, 4)
    state = model.init_state()
    for t in range(3):
        model.step(state, x[0, t : t + 1], lm[0, t : t + 1], track_ids=[7])
    model.step(state, x[0, :1], lm[0, :1], track_ids=[8])
    state.drop(7)
    restarted = model.step(state, x[0, 3:4], lm[0, 3:4], track_ids=[7])
    with torch.inference_mode():
        fresh = model(x[:, 3:4], lm[:, 3:4])
    assert max_diff({k: v[0] for k, v in restarted.items()}, {k: v[0, 0] for k, v in fresh.items()}) < 1e-6
    state.retain([7])
    assert 7 in state and 8 not in state and len(state) == 1
    with pytest.raises(ValueError):
        model.step(state, x[0, :2], lm[0, :2], track_ids=[1, 1])


def test_step_speed_and_batch_independence():
    """Prints ms per face in the step path for 1, 4 and 16 faces (one thread, as the app runs by default); N faces in
    one call equal N separate calls."""
    torch.manual_seed(0)
    model = with_active_residuals(create_model(CONFIGS["mini_xception"])).eval()
    x, lm = clip(model.config, 16, 1)
    crops, marks = x[:, 0], lm[:, 0]
    alone = [model.step(model.init_state(), crops[i], marks[i]) for i in range(16)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n in (1, 4, 16):
            state = model.init_state()
            for _ in range(model.config.window):
                model.step(state, crops[:n], marks[:n])
            repeats = 10
            start = time.perf_counter()
            for _ in range(repeats):
                model.step(state, crops[:n], marks[:n])
            ms = (time.perf_counter() - start) / repeats * 1000 / n
            print(f"\nstep with {n:2d} faces x {model.config.window} buffered frames: {ms:.2f} ms per face")
    finally:
        torch.set_num_threads(threads)
    together = model.step(model.init_state(), crops, marks)
    for i in range(16):
        assert max_diff({k: v[i] for k, v in together.items()}, {k: v[0] for k, v in alone[i].items()}) < 1e-5


def test_checkpoint_round_trip(tmp_path):
    model = model_for("mini_xception")
    config = model.config
    path = save_checkpoint(tmp_path / "runs" / "best.pt", model, config, extra={"epoch": 3, "val": {"f1": 0.5}})
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]
    loaded, loaded_config, extra = load_checkpoint(path, "cpu")
    assert loaded_config == config and extra == {"epoch": 3, "val": {"f1": 0.5}} and not loaded.training
    x, lm = clip(config, 2, 5)
    with torch.inference_mode():
        assert max_diff(model(x, lm), loaded(x, lm)) == 0
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "emotion-checkpoint" and payload["version"] == 1
    assert payload["labels"] == list(LABELS) and payload["config"]["temporal_kernels"] == [1, 3, 5]


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


@needs_weights
def test_default_model_streams_real_faces_to_their_expressions(shared_data):
    """Real photos through the real face stage: the untrained default model names each expression (FER2013 prior)."""
    cv2 = pytest.importorskip("cv2")
    from emotion.face import FaceAnalyzer

    expected = {
        "happy-baby.jpeg": "happy",
        "sad-baby.jpeg": "sad",
        "surprised.jpeg": "surprise",
        "neutral.jpeg": "neutral",
        "angry.jpg": "angry",
    }
    model = default_model("cpu")
    state = model.init_state()
    with FaceAnalyzer(static=True) as analyzer:
        for track, (name, label) in enumerate(expected.items()):
            faces = analyzer(cv2.imread(str(shared_data / "images" / name)))
            assert len(faces) == 1, name
            crop = crops_to_tensor(faces[0].crop, model.backbone.pretrained_cfg)
            out = model.step(state, crop, torch.from_numpy(faces[0].landmarks_norm), track_ids=[track])
            assert LABELS[out["logits"][0].argmax()] == label, name
            assert -1 <= out["valence"][0] <= 1 and -1 <= out["arousal"][0] <= 1
