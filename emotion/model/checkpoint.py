"""Saving and loading checkpoints of any architecture: one torch file with the architecture's name, its config, the
labels and the weights, loadable weights-only."""

from __future__ import annotations

import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from emotion.atomic import atomic_open
from emotion.labels import LABELS
from emotion.model.backbones import DEFAULT_WEIGHTS
from emotion.model.clip import ClipConfig, ClipModel
from emotion.model.registry import arch_config, create_model
from emotion.model.stnet import ModelConfig, STNet

FORMAT: str = "emotion-checkpoint"
"""Value of the checkpoint's `format` key, telling our files from other torch files."""

VERSION: int = 1
"""Layout version of the checkpoint dict; bumped when the layout changes incompatibly."""

AFFECT_SOURCES: tuple[str, ...] = ("circumplex", "learned")
"""Values of a checkpoint's `extra["affect"]`: valence/arousal are the circumplex prior of the probabilities, or
learned heads (see STNet.affect_source)."""

_PLAIN_TYPES = (str, int, float, bool, type(None))


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one line naming the file and what to do."""


def config_to_dict(config: ClipConfig) -> dict[str, Any]:
    """The config as plain types (tuples become lists) so torch.load(weights_only=True) can read it back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(data: dict[str, Any], arch: str = ModelConfig.arch) -> ClipConfig:
    """Inverse of config_to_dict for architecture `arch`; missing fields take their defaults, unknown fields (and
    unknown architectures) raise ValueError."""
    config_class = arch_config(arch)
    known = {f.name: f for f in fields(config_class)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown config fields {unknown}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless `value` is nested dict/list/tuple of str/int/float/bool/None/Tensor.

    Exact types: a numpy float is a float subclass that torch.load(weights_only=True) would refuse.
    """
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is not a str or int")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PLAIN_TYPES and not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only plain values and tensors")


def save_checkpoint(
    path: str | Path, model: ClipModel, config: ClipConfig, extra: dict[str, Any] | None = None
) -> Path:
    """Write the checkpoint atomically (temporary file in the same folder, then os.replace); returns the path. Its
    `arch` names the architecture (checkpoints written before the zoo have none: STNet).

    `extra` (e.g. epoch, metrics) must be plain values and tensors so the file stays loadable weights-only.
    """
    path = Path(path)
    extra = {} if extra is None else dict(extra)
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": config.arch,
        "config": config_to_dict(config),
        "labels": list(LABELS),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_open(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ClipModel, ClipConfig, dict[str, Any]]:
    """Load a checkpoint written by save_checkpoint -> (model in eval mode on `device`, config, extra).

    extra["affect"] is always one of AFFECT_SOURCES: as training recorded it, else (checkpoints written before it
    did, or not by training) read from the weights.

    Raises CheckpointError with a one-line message for a missing file, a file that is not a torch file, a torch
    file that is not an emotion checkpoint, a config / state dict that does not fit this version of the model, or
    weights that are not finite (NaN or infinite: a diverged training).
    """
    path = Path(path)
    hint = "pass --weights with a checkpoint written by emotion's training, or omit --weights for the pretrained model"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; {hint}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        if zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: not an emotion checkpoint (a zip/torch file holding Python objects, e.g. a YOLO model or "
                f"a pickled whole model); {hint}"
            ) from exc
        raise CheckpointError(f"{path}: not a torch file ({type(exc).__name__}); {hint}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a torch file but not an emotion checkpoint (e.g. a bare state dict); {hint}")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')!r}, this program reads version {VERSION}; "
            "use the emotion release that wrote it or retrain"
        )
    if tuple(payload.get("labels", ())) != LABELS:
        raise CheckpointError(
            f"{path}: trained for labels {payload.get('labels')!r}, this program uses {list(LABELS)}; retrain"
        )
    try:
        config = config_from_dict(payload["config"], payload.get("arch", ModelConfig.arch))
        model = create_model(config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise CheckpointError(
            f"{path}: config or weights do not fit this model ({detail}); retrain or use the emotion release that "
            "wrote it"
        ) from exc
    broken = [k for k, v in payload["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(
            f"{path}: {len(broken)} weight tensors hold NaN or infinite values (first: {broken[0]}), so every output "
            "would be meaningless; the training that wrote it diverged: retrain (with a lower learning rate) or use an earlier "
            "checkpoint"
        )
    extra = dict(payload.get("extra", {}))
    if extra.get("affect") not in AFFECT_SOURCES:
        extra["affect"] = model.affect_source
    return model.to(device).eval(), config, extra


PRETRAINED_CONFIG = ModelConfig(
    crop_rotate=False,
    crop_margin=0.2,
    prior_strength=0.75,
    flip_images=True,
    blendshape_prior=(0.0, 0.75, 0.0, 0.0, 0.0, 0.0, 5.25),
)
"""The shipped model: how the FER2013 network sees faces and decides, chosen on the labelled photos and checked on
the clips (README, "How accurate is it"): brows-to-chin crops without rotation, 20 % margin, logits adjusted by 0.75
of the FER2013 training prior, still images averaged with their mirror image, and the FACS evidence of disgust and
surprise from the face's blendshapes added to their logits (weights by cross-validation, benchmarks/facs.py). ModelConfig()'s own defaults (eye-level
crop, 10 % margin, no adjustment, no mirror) are what models trained before these settings used."""


def default_model(device: str | torch.device = "cpu") -> STNet:
    """PRETRAINED_CONFIG with the pretrained FER2013 backbone and untrained temporal residuals, in eval mode.

    Its outputs are the FER2013 model's per-frame outputs and their circumplex valence/arousal (affect source
    'circumplex', see stnet).
    """
    if not DEFAULT_WEIGHTS.is_file():
        raise CheckpointError(
            f"{DEFAULT_WEIGHTS}: pretrained FER2013 weights missing from the installed package; reinstall "
            "emotion (in a checkout: git checkout emotion/weights)"
        )
    return create_model(PRETRAINED_CONFIG, pretrained=True).to(device).eval()
