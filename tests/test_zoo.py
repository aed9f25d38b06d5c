"""The model zoo through the app: every registered architecture trains with the real training loop on cached
synthetic clips (loss goes down), its checkpoint names it and loads back to the same outputs, the ONNX streamer
equals the eager one over a stream (ring buffer filling and full), `--evaluate` scores it and `--video --weights`
runs it on a real video. Each architecture's own layers are tested in tests/test_zoo_*.py."""

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import assert_clean_error, cli, synthetic_training, torchrun, zidane_frames

from emotion.errors import EmotionError
from emotion.model import ClipModel, arch_config, create_model, list_archs, load_checkpoint, save_checkpoint
from emotion.runtime import OnnxStreamer, TorchStreamer
from emotion.training.cache import PrepConfig
from emotion.training.config import ARCHS
from emotion.training.evaluate import EvalConfig
from emotion.training.evaluate import run as evaluate
from emotion.training.synthetic import make_synthetic_dataset
from emotion.training.train import TrainConfig, new_model_config, run

ZOO = [name for name in ARCHS if name != "stnet"]
"""The architectures beside STNet (whose training is tested in tests/test_train.py)."""


def test_the_parser_offers_exactly_the_registered_architectures():
    assert list(ARCHS) == list_archs()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, cache dir) of 3 separable classes x 8 cached 24-frame clips of 64x64 gray crops, as a new zoo model
    reads them (no face signals)."""
    tmp = tmp_path_factory.mktemp("zoo")
    return make_synthetic_dataset(tmp / "syn", tmp / "cache", 8, prep=PrepConfig(crop_size=64)), tmp / "cache"


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory) -> Callable[[str], dict]:
    """Each architecture's training summary, trained once on first use (5 epochs of 5 steps)."""
    runs: dict[str, dict] = {}
    tmp = tmp_path_factory.mktemp("zoo-runs")

    def train(arch: str) -> dict:
        if arch not in runs:
            settings = {"epochs": 5, "batch_size": 4, "lr": 2e-3}
            runs[arch] = run(synthetic_training(tmp, synthetic, name=arch, arch=arch, **settings))
        return runs[arch]

    return train


@pytest.mark.parametrize("arch", ZOO)
def test_trains_learns_and_its_checkpoint_names_it(arch, trained):
    result = trained(arch)
    losses = [h["train_loss"] for h in result["history"]]
    assert len(losses) == 5 and all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    model, config, extra = load_checkpoint(result["best"])
    assert type(config) is arch_config(arch) and config.arch == arch and extra["train_config"]["arch"] == arch
    assert torch.load(result["best"], weights_only=True)["arch"] == arch
    assert load_checkpoint(result["last"])[2]["train_state"]["epoch"] == 4
    x = torch.rand(2, config.window, config.in_chans, config.crop_size, config.crop_size) * 2 - 1
    with torch.no_grad():
        out = model(x)
        assert set(out) == {"logits", "valence", "arousal"}
        assert out["logits"].shape == (2, config.window, 7) and out["valence"].shape == (2, config.window)
        assert extra["affect"] == "learned" and model.affect_source == "learned"  # the manifest has valence/arousal


@pytest.mark.parametrize("arch", ZOO)
def test_save_load_round_trip_gives_the_same_outputs(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch_config(arch)()).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, model.config, {"epoch": 1})
    loaded, config, extra = load_checkpoint(path)
    assert config == model.config and extra["epoch"] == 1 and extra["affect"] == "circumplex"
    x = torch.rand(1, config.window, config.in_chans, config.crop_size, config.crop_size) * 2 - 1
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ZOO)
def test_onnx_streamer_equals_the_eager_one_over_a_stream(arch):
    """20 frames of two tracks, one joining late: while a buffer fills (eager head on both streamers) and once full
    (the exported step), every output agrees to 1e-4."""
    torch.manual_seed(0)
    model = create_model(arch_config(arch)()).eval()
    c = model.config
    eager, onnx = TorchStreamer(model), OnnxStreamer(model)
    assert onnx.source == "memory"
    states = eager.init_state(), onnx.init_state()
    rng = np.random.default_rng(0)
    worst = 0.0
    for t in range(c.window + 4):
        ids = ["a"] if t < 6 else ["a", "b"]
        crops = rng.uniform(-1, 1, (len(ids), c.in_chans, c.crop_size, c.crop_size)).astype(np.float32)
        landmarks = rng.normal(0, 1, (len(ids), c.landmarks, c.landmark_dims)).astype(np.float32)
        a = eager.step(states[0], crops, landmarks, ids)
        b = onnx.step(states[1], crops, landmarks, ids)
        worst = max(worst, *(float(np.abs(a[k] - b[k]).max()) for k in a))
    assert worst <= 1e-4


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    """20 frames of the zooming zidane.jpg clip (two faces) at 480x270, as MJPG."""
    path = tmp_path_factory.mktemp("video") / "zidane.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (480, 270))
    for frame in zidane_frames(20):
        writer.write(cv2.resize(frame, (480, 270)))
    writer.release()
    return path


@pytest.mark.parametrize("arch", ZOO)
def test_video_runs_with_the_weights_of_any_architecture(arch, trained, face_video, tmp_path):
    result = trained(arch)
    out = tmp_path / "out.json"
    proc = cli("--video", face_video, "--weights", result["best"], "--json", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    frames = json.loads(out.read_text())
    assert [f["frame"] for f in frames] == list(range(20))
    faces = [face for f in frames for face in f["faces"]]
    assert len(faces) >= 20 and all(abs(sum(face["probabilities"].values()) - 1) < 1e-3 for face in faces)
    assert all(-1 <= face["valence"] <= 1 and -1 <= face["arousal"] <= 1 for face in faces)


def test_torchrun_trains_an_architecture_with_intermediate_supervision(synthetic, tmp_path):
    """DDP over two CPU processes with thcnn: its aux heads train and its FER2013 backbone's own classifier does
    not (only its features are read), which DDP must be told to expect."""
    manifest, cache = synthetic
    args = ["--train", "--data", manifest, "--cache-dir", cache, "--arch", "thcnn", "--epochs", "2", "--name", "ddp"]
    done = torchrun(*args, "--batch-size", "4", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("epoch 2/2") == 1
    model, config, extra = load_checkpoint(tmp_path / "models" / "ddp" / "last.pt")
    assert config.arch == "thcnn" and extra["train_state"]["epoch"] == 1


def test_evaluate_scores_a_zoo_checkpoint(trained, synthetic, tmp_path):
    manifest, cache = synthetic
    result = trained("cnn_lstm_attn")
    metrics = evaluate(
        EvalConfig(
            data=str(manifest),
            cache_dir=str(cache),
            weights=result["best"],
            split="val",
            output=str(tmp_path / "eval"),
            threads=1,
            progress=False,
        )
    )
    assert metrics["clips"] == 6 and 0 <= metrics["accuracy"] <= 1
    assert metrics["accuracy"] == pytest.approx(result["val"]["accuracy"])


def test_wrong_arch_for_a_checkpoint_and_freezing_without_a_cnn_are_one_line_errors(trained, synthetic, tmp_path):
    manifest, cache = synthetic
    common = ["--train", "--data", manifest, "--cache-dir", cache, "--models-dir", tmp_path, "--runs-dir", tmp_path]
    proc = cli(*common, "--weights", trained("cnn_lstm_attn")["best"], "--arch", "c3d2", "--epochs", "1")
    assert_clean_error(proc, "holds a cnn_lstm_attn model, not c3d2", "--arch cnn_lstm_attn")
    proc = cli(*common, "--arch", "c3d2", "--freeze-backbone-epochs", "1", "--epochs", "1")
    assert_clean_error(proc, "c3d2 has no per-frame CNN to freeze", "--freeze-backbone-epochs")
    with pytest.raises(EmotionError, match="has no per-frame CNN"):
        run(TrainConfig(data=str(manifest), cache_dir=str(cache), arch="r2plus1d", freeze_backbone_epochs=2))
    proc = cli(*common, "--arch", "tsm", "--arch-option", "nope=1", "--epochs", "1")
    assert_clean_error(proc, "no field 'nope'", "shift_div, causal_shift", "--arch-option KEY=VALUE")
    proc = cli(*common, "--arch", "vivit", "--arch-option", "patch=7", "--epochs", "1")
    assert_clean_error(proc, "vivit: ", "patch", "--arch-option")


def test_arch_options_set_the_fields_of_a_new_model():
    """--arch-option items as the command line splits them: a list continues over items without '='."""
    options = ("widths=64", "128", "256", "512", "blocks=2", "2", "2", "2", "stem_pool=false")
    config = new_model_config(TrainConfig(data="-", arch="r2plus1d", arch_options=options))
    assert (config.widths, config.blocks, config.stem_pool) == ((64, 128, 256, 512), (2, 2, 2, 2), False)
    tsm = create_model(new_model_config(TrainConfig(data="-", arch="tsm", arch_options=("causal_shift=true",))))
    assert tsm.causal and not create_model(new_model_config(TrainConfig(data="-", arch="tsm"))).causal
    with pytest.raises(EmotionError, match="shift_div=x: expected int"):
        new_model_config(TrainConfig(data="-", arch="tsm", arch_options=("shift_div=x",)))


def test_every_zoo_model_is_a_clip_model_with_a_config_of_its_own():
    classes = {arch_config(name) for name in ARCHS}
    assert len(classes) == len(ARCHS)
    for name in ZOO:
        model = create_model(arch_config(name)())
        assert isinstance(model, ClipModel) and model.config.arch == name and not model.config.signals


def test_a_checkpoint_from_before_the_zoo_loads_as_stnet(tmp_path):
    """Checkpoints written before architectures were named have no 'arch': they are STNet's."""
    model = create_model().eval()
    path = save_checkpoint(tmp_path / "new.pt", model, model.config)
    payload = torch.load(path, weights_only=True)
    assert payload.pop("arch") == "stnet"
    torch.save(payload, tmp_path / "old.pt")
    loaded, config, _ = load_checkpoint(tmp_path / "old.pt")
    assert config == model.config and type(loaded) is type(model)
