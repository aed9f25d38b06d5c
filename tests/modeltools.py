"""Small untrained models and random clips for the model, runtime, export and model-zoo tests."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from emotion.model import ModelConfig, create_model
from emotion.model.backbones import DEFAULT_WEIGHTS
from emotion.model.clip import OUTPUT_KEYS
from emotion.signals import BLENDSHAPE_NAMES, SIGNAL_DIM

CONFIGS = {
    "mini_xception": ModelConfig(),
    "wide_cnn": ModelConfig(backbone="wide_cnn", crop_size=112, in_chans=3),
}
"""A test config per registered backbone; the wide CNN runs on 112x112 RGB crops."""

needs_weights = pytest.mark.skipif(
    not DEFAULT_WEIGHTS.is_file(), reason=f"pretrained weights missing: {DEFAULT_WEIGHTS}"
)

RESIDUAL_HEADS = ("logit_residual", "affect_residual")
"""The zero-initialised last layers of the temporal branch."""


def with_signals(config: ModelConfig) -> ModelConfig:
    """The config with a signal stream of the face stage's SIGNAL_DIM features per frame."""
    return replace(config, signals=SIGNAL_DIM)


def face_signals(config: ModelConfig, b: int, t: int, seed: int = 0) -> torch.Tensor | None:
    """Random face signals (B, T, G) as FaceSignals.vector() gives them (blendshapes in [0, 1], angles over 90
    degrees near 0) for a model with a signal stream; None for one without."""
    if not config.signals:
        return None
    g = torch.Generator().manual_seed(seed + 1000)
    signals = torch.rand(b, t, config.signals, generator=g)
    n = len(BLENDSHAPE_NAMES)
    signals[..., n:] = 0.2 * torch.randn(b, t, config.signals - n, generator=g)
    return signals


def clip(config: ModelConfig, b: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops (B, T, C, S, S) in [-1, 1] and face-like landmarks (B, T, L, 3) around a mean shape."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, t, config.in_chans, config.crop_size, config.crop_size, generator=g) * 2 - 1
    shape = torch.rand(1, 1, config.landmarks, config.landmark_dims, generator=g)
    lm = shape + 0.02 * torch.randn(b, t, config.landmarks, config.landmark_dims, generator=g)
    return x, lm


def with_active_residuals(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give the zero-initialised residual heads (and a signal stream's projection into the fusion) random weights so
    the temporal branch (and the signals) change the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in RESIDUAL_HEADS:
            layer = getattr(model, name)
            layer.weight.copy_(0.3 * torch.randn(layer.weight.shape, generator=g))
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=g))
        if model.config.signals:
            project = model.fusion.signal_project.weight
            project.copy_(0.3 * torch.randn(project.shape, generator=g))
    return model


def model_for(name: str, seed: int = 0, signals: bool = False) -> nn.Module:
    """An untrained model of the registered backbone `name` (with a signal stream if asked) with active residual
    heads, in eval mode."""
    torch.manual_seed(seed)
    config = with_signals(CONFIGS[name]) if signals else CONFIGS[name]
    return with_active_residuals(create_model(config)).eval()


def max_diff(a: dict, b: dict) -> float:
    """Largest difference of logits, valence and arousal between two outputs (tensors or arrays)."""
    return max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in ("logits", "valence", "arousal"))


FRAME_CLASSIFIERS = ("backbone.classifier.", "backbone.head.")
"""The per-frame backbones' own classifiers, which the zoo's models do not use (they read the pooled features)."""


def with_active_affect(model: nn.Module, seed: int = 1) -> nn.Module:
    """A zoo model with random weights in its ClipHead's zero-initialised valence/arousal residual, so every layer
    reaches every output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.affect_residual.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def adam_steps(loss_of, parameters, steps: int, lr: float) -> list[float]:
    """`steps` Adam steps on the parameters, each minimising the 0-d tensor `loss_of()` -> each step's loss value."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def assert_checkpoint_round_trip(model: nn.Module, folder, x: torch.Tensor, landmarks: torch.Tensor | None = None):
    """save_checkpoint then load_checkpoint give the same config and class, in eval mode, with identical outputs."""
    from emotion.model import load_checkpoint, save_checkpoint

    path = save_checkpoint(folder / "model.pt", model, model.config)
    loaded, config, _ = load_checkpoint(path)
    assert config == model.config and type(config) is type(model.config)
    assert type(loaded) is type(model) and not loaded.training
    with torch.inference_mode():
        want, got = model(x, landmarks), loaded(x, landmarks)
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(got[key], want[key], atol=0, rtol=0)


def assert_onnx_step_matches(model: nn.Module, faces: tuple[int, ...] = (1, 3)) -> None:
    """A zoo model's exported streaming step takes crops and history only (it reads no landmarks) and gives, for each
    number of faces, encode_rows' frame rows exactly and forward_last's newest outputs to 1e-4."""
    ort = pytest.importorskip("onnxruntime")
    from emotion.model.export import example_inputs, export_onnx

    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["crops", "history"]
    for n in faces:
        crops, landmarks, history = example_inputs(model, n, seed=n)
        got = session.run(None, {"crops": crops.numpy(), "history": history.numpy()})
        with torch.inference_mode():
            rows = model.encode_rows(crops, landmarks)
            want = model.forward_last(torch.cat([history, rows[:, None]], dim=1))
        np.testing.assert_array_equal(got[0], rows.numpy())
        for value, key in zip(got[1:], OUTPUT_KEYS, strict=True):
            np.testing.assert_allclose(value, want[key][:, -1].numpy(), atol=1e-4, rtol=0)
