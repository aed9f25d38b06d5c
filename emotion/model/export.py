"""A model's streaming step as a file: ONNX (run by emotion.runtime's ONNX Runtime streamer) or TorchScript.

The exported graph is one streaming step for N faces: it encodes the new crops and runs the temporal head over each
track's full ring buffer (its `window - 1` previous frames plus the new one), all in one call per frame.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from emotion import weights
from emotion.atomic import atomic_open
from emotion.errors import EmotionError
from emotion.model.clip import ClipModel

EXPORT_FORMATS = ("onnx", "torchscript")

DEFAULT_ONNX = weights.path("stnet.onnx")
"""The default model's exported step, shipped in the package; the ONNX streamer re-exports in memory if it is missing
or stale.

A maintainer regenerates it with `python main.py --export onnx --output emotion/weights/stnet.onnx --overwrite`."""

OPSET = 17


class StreamStep(nn.Module):
    """One streaming step as one graph: crops (N, C, S, S) in [-1, 1], landmarks (N, L, 3), history (N, W-1, F) and,
    for a model with a signal stream, face signals (N, G) -> frame rows (N, F) to push into the ring buffers, logits
    (N, 7), valence (N,), arousal (N,) of the newest step. Its inputs are `input_names(model)`, in that order."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        crops: torch.Tensor,
        landmarks: torch.Tensor,
        history: torch.Tensor,
        signals: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.model.encode_rows(crops, landmarks, signals)
        clips = torch.cat([history, rows[:, None]], dim=1)
        out = self.model.forward_last(clips)
        return rows, out["logits"][:, -1], out["valence"][:, -1], out["arousal"][:, -1]


OUTPUT_NAMES = ("rows", "logits", "valence", "arousal")


def input_names(model: ClipModel) -> tuple[str, ...]:
    """Names of the exported step's inputs: crops, landmarks, history, and signals for a model with a signal stream."""
    return ("crops", "landmarks", "history") + (("signals",) if model.config.signals else ())


def example_inputs(model: ClipModel, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random StreamStep inputs for `n` faces (to trace and probe): crops in [-1, 1], landmarks, full histories and,
    for a model with a signal stream, signals in [-1, 1]."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    crops = torch.rand(n, c.in_chans, c.crop_size, c.crop_size, generator=g) * 2 - 1
    landmarks = torch.randn(n, c.landmarks, c.landmark_dims, generator=g)
    history = torch.randn(n, c.window - 1, sum(model.row_sizes()), generator=g)
    if not c.signals:
        return crops, landmarks, history
    return crops, landmarks, history, torch.rand(n, c.signals, generator=g) * 2 - 1


def _atanh_symbolic(g, x):
    return g.op("Atanh", x)


def export_onnx(model: ClipModel, path: str | Path | None = None) -> bytes:
    """Export the streaming step to ONNX (dynamic N); returns the model bytes and writes them to `path` if given."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise EmotionError("exporting to ONNX needs the 'onnx' package (pip install 'onnx==1.17.0')") from None
    torch.onnx.register_custom_op_symbolic("aten::atanh", _atanh_symbolic, 9)
    was_training = model.training
    step = StreamStep(model).eval()
    inputs = input_names(model)
    names = [*inputs, *OUTPUT_NAMES]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                step,
                example_inputs(model),
                buffer,
                input_names=list(inputs),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: {0: "n"} for name in names},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # an operator without an ONNX form in this architecture
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EmotionError(
            f"the {model.config.arch} model cannot be exported to ONNX ({detail})",
            fix="run it with backend='torch'",
            cli_fix="run it with --backend torch (or --export torchscript)",
        ) from exc
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if path is not None:
        with atomic_open(path) as f:
            f.write(data)
    return data


def export_torchscript(model: ClipModel, path: str | Path) -> Path:
    """Trace the streaming step to a TorchScript file (load with torch.jit.load; same inputs and outputs as ONNX)."""
    was_training = model.training
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(StreamStep(model).eval(), example_inputs(model), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    model.train(was_training)
    with atomic_open(path) as f:
        f.write(buffer.getvalue())
    return Path(path)


def export_model(model: ClipModel, fmt: str, path: str | Path) -> Path:
    """Write the streaming step of `model` as `fmt` ('onnx' or 'torchscript') to `path`."""
    if fmt not in EXPORT_FORMATS:
        raise EmotionError(f"unknown export format '{fmt}' (use {' or '.join(EXPORT_FORMATS)})")
    path = Path(path)
    if fmt == "onnx":
        export_onnx(model, path)
    else:
        export_torchscript(model, path)
    return path


def default_export_path(checkpoint: str | Path | None, fmt: str) -> Path:
    """Where an export goes by default: beside a checkpoint (`models/mine/best.onnx` for `models/mine/best.pt`, where
    the recognizer looks for it), and `models/stnet.onnx` in the current folder for the default model, never the
    shipped file (DEFAULT_ONNX). `.torchscript.pt` instead of `.onnx` for TorchScript."""
    base = Path("models") / "stnet" if checkpoint is None else Path(checkpoint).with_suffix("")
    return base.with_name(base.name + (".onnx" if fmt == "onnx" else ".torchscript.pt"))
