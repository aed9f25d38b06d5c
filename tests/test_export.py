"""Exported models compute what eager PyTorch computes: ONNX and TorchScript files, where they are written, and the
shipped default export. Streaming on ONNX Runtime is tested in tests/test_runtime.py."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from modeltools import model_for
from support import assert_clean_error, cli

from emotion import weights
from emotion.atomic import atomic_open
from emotion.model import ModelConfig, create_model, default_model, save_checkpoint
from emotion.model.export import (
    DEFAULT_ONNX,
    StreamStep,
    default_export_path,
    example_inputs,
    export_onnx,
    export_torchscript,
    input_names,
)
from emotion.runtime import OnnxStreamer

pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def trained_like() -> torch.nn.Module:
    """The pretrained model with non-zero residual heads, so every temporal layer reaches the outputs."""
    torch.manual_seed(0)
    model = create_model(ModelConfig(), pretrained=True)
    with torch.no_grad():
        for layer in (model.logit_residual, model.affect_residual):
            layer.weight.normal_(0, 0.3)
            layer.bias.normal_(0, 0.3)
    return model.eval()


def test_onnx_step_equals_eager_for_several_batch_sizes(trained_like):
    import onnxruntime as ort

    session = ort.InferenceSession(export_onnx(trained_like), providers=["CPUExecutionProvider"])
    for n in (1, 3, 7):
        inputs = example_inputs(trained_like, n, seed=n)
        with torch.inference_mode():
            want = StreamStep(trained_like)(*inputs)
        got = session.run(None, dict(zip(("crops", "landmarks", "history"), (x.numpy() for x in inputs))))
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.numpy(), atol=TOLERANCE, rtol=0)


def test_a_model_with_a_signal_stream_exports_with_a_signals_input(tmp_path):
    """ONNX and TorchScript steps of a signal-stream model (its projection active, so the signals reach the outputs)
    compute what eager PyTorch does; the signals change the outputs."""
    import onnxruntime as ort

    model = model_for("mini_xception", signals=True)
    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(input_names(model)) == [
        "crops", "landmarks", "history", "signals"
    ]  # fmt: skip
    inputs = example_inputs(model, 3, seed=3)
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "step.pt")))
    with torch.inference_mode():
        want = StreamStep(model)(*inputs)
        without = StreamStep(model)(*inputs[:3], torch.zeros_like(inputs[3]))
        scripted = traced(*inputs)
    got = session.run(None, {name: x.numpy() for name, x in zip(input_names(model), inputs, strict=True)})
    for g, s, w in zip(got, scripted, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(s, w, atol=TOLERANCE, rtol=0)
    assert (want[1] - without[1]).abs().max() > 1e-3


def test_torchscript_export_equals_eager(trained_like, tmp_path):
    path = export_torchscript(trained_like, tmp_path / "step.pt")
    loaded = torch.jit.load(str(path))
    inputs = example_inputs(trained_like, 4, seed=4)
    with torch.inference_mode():
        want = StreamStep(trained_like)(*inputs)
        got = loaded(*inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=TOLERANCE, rtol=0)


REGENERATE = "python main.py --export onnx --output emotion/weights/stnet.onnx --overwrite"


def test_shipped_default_export_matches_the_default_model():
    """The shipped emotion/weights/stnet.onnx must compute the default model; if this fails, run REGENERATE."""
    assert DEFAULT_ONNX == weights.path("stnet.onnx")
    assert DEFAULT_ONNX.is_file(), f"{DEFAULT_ONNX} is missing: run `{REGENERATE}`"
    streamer = OnnxStreamer(default_model(), DEFAULT_ONNX)
    assert streamer.source == str(DEFAULT_ONNX), f"{DEFAULT_ONNX} is stale: run `{REGENERATE}`"


def test_cli_export_writes_a_file_the_recognizer_trusts(tmp_path):
    target = tmp_path / "step.onnx"
    proc = cli("--export", "onnx", "--output", target)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {target}" in proc.stdout
    assert OnnxStreamer(default_model(), target).source == str(target)


def test_cli_export_never_replaces_an_existing_file_without_overwrite(tmp_path):
    """The default target is models/stnet.onnx in the current folder (not the shipped file), with the usual mode."""
    shipped = DEFAULT_ONNX.read_bytes()
    target = tmp_path / "models" / "stnet.onnx"
    proc = cli("--export", "onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {Path('models') / 'stnet.onnx'}" in proc.stdout
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    target.write_bytes(b"mine")
    for args in (("--export", "onnx"), ("--export", "onnx", "--output", target)):
        assert_clean_error(cli(*args, cwd=tmp_path), "already exists", str(Path("models") / "stnet.onnx"), "--overwrite")
    assert target.read_bytes() == b"mine"
    proc = cli("--export", "onnx", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert OnnxStreamer(default_model(), target).source == str(target)
    assert DEFAULT_ONNX.read_bytes() == shipped


def test_checkpoint_export_goes_beside_it_where_the_recognizer_looks(trained_like, tmp_path):
    from emotion.recognizer import EmotionRecognizer

    checkpoint = save_checkpoint(tmp_path / "mine" / "best.pt", trained_like, trained_like.config)
    assert default_export_path(checkpoint, "onnx") == tmp_path / "mine" / "best.onnx"
    assert default_export_path(checkpoint, "torchscript") == tmp_path / "mine" / "best.torchscript.pt"
    export_onnx(trained_like, tmp_path / "mine" / "best.onnx")
    with EmotionRecognizer(checkpoint, device="cpu", backend="onnx") as rec:
        assert rec.streamer.source == str(tmp_path / "mine" / "best.onnx")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """0666 less the umask, as open() gives, not mkstemp's 0600; also when replacing a file."""
    mask = os.umask(0o027)
    try:
        for content in (b"first", b"second"):
            with atomic_open(tmp_path / "out.bin") as f:
                f.write(content)
            assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o640
            assert (tmp_path / "out.bin").read_bytes() == content
    finally:
        os.umask(mask)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
