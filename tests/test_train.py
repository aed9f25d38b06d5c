"""Training: losses and schedule, a synthetic cached dataset learnt to near-perfect validation accuracy, exact resume
after an interruption, SIGKILL mid-epoch, early stopping and what --resume does after it, frozen-backbone epochs and
DDP with two CPU processes under torchrun.
The real-data run through the command line is in test_evaluate.py."""

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
from modeltools import needs_weights
from support import ROOT, assert_clean_error, cli, synthetic_training, torchrun
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emotion.errors import EmotionError
from emotion.io.files import read_image
from emotion.jobs import demo_photo
from emotion.labels import circumplex_matrix
from emotion.model import create_model, crops_to_tensor, load_checkpoint, save_checkpoint
from emotion.model.stnet import ModelConfig
from emotion.recognizer import EmotionRecognizer
from emotion.signals import SIGNAL_DIM
from emotion.training.cache import PrepConfig, preprocess
from emotion.training.datasets import load_dataset, read_va_file
from emotion.training.evaluate import EvalConfig
from emotion.training.evaluate import run as evaluate
from emotion.training.objective import ccc_loss, compute_loss, lr_factor
from emotion.training.synthetic import make_synthetic_dataset
from emotion.training.train import TrainConfig, run

SMALL = {"backbone": "wide_cnn", "crop_size": 32, "from_scratch": True}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, cache dir) of 3 separable classes x 8 cached 24-frame clips at 32x32 with face signals (2 per class
    held out)."""
    tmp = tmp_path_factory.mktemp("synthetic")
    prep = PrepConfig(crop_size=32, signals=True)
    return make_synthetic_dataset(tmp / "syn", tmp / "cache", 8, prep=prep), tmp / "cache"


def small_config(tmp_path: Path, synthetic: tuple[Path, Path], **overrides) -> TrainConfig:
    return synthetic_training(
        tmp_path, synthetic, **{"epochs": 5, "batch_size": 8, "lr": 3e-3, "name": "syn", **SMALL, **overrides}
    )


def test_losses_and_schedule():
    out = {"logits": torch.zeros(2, 4, 7), "valence": torch.zeros(2, 4), "arousal": torch.zeros(2, 4)}
    out["logits"][0, :, 3] = 10.0
    label = torch.tensor([3, -1])
    va = torch.full((2, 4, 2), float("nan"))
    loss, parts = compute_loss(out, label, va, TrainConfig(data="x", label_smoothing=0.0))
    assert parts["ce"] == pytest.approx(float(torch.nn.functional.cross_entropy(out["logits"][0], label[[0] * 4])))
    assert "ccc_valence" not in parts and float(loss) == pytest.approx(parts["ce"])
    x = torch.linspace(-1, 1, 20)
    assert float(ccc_loss(x, x)) == pytest.approx(0.0, abs=1e-6) and float(ccc_loss(-x, x)) == pytest.approx(2.0)
    factors = [lr_factor(s, 10, 100, 0.01) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and max(factors) == 1.0
    assert all(a >= b for a, b in pairwise(factors[9:])) and factors[-1] == pytest.approx(0.01, abs=1e-3)


def test_synthetic_training_learns_and_resumes(tmp_path, synthetic):
    result = run(small_config(tmp_path, synthetic))
    assert result["epochs"] == 5 and result["monitor"] == "uar"
    assert result["val"]["accuracy"] >= 0.99 and result["val"]["clips"] == 6
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    _, config, extra = load_checkpoint(result["best"])
    assert config.backbone == "wide_cnn" and extra["train_config"]["lr"] == 3e-3
    assert extra["affect"] == "learned"  # the manifest has valence/arousal
    assert load_checkpoint(result["last"])[2]["train_state"]["epoch"] == 4
    run_dir = Path(result["run_dir"])
    assert run_dir.name == "syn-1" and list(run_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"train/loss", "train/lr", "val/uar", "val/ccc_valence"} <= set(events.Tags()["scalars"])
    assert len(events.Images("val/confusion")) == 5
    assert json.loads((run_dir / "val_metrics.json").read_text())["accuracy"] >= 0.99
    assert (run_dir / "confusion.png").is_file()

    resumed = run(small_config(tmp_path, synthetic, epochs=7, resume="auto"))
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 8)) and resumed["run_dir"] == str(run_dir)
    assert load_checkpoint(resumed["last"])[2]["train_state"]["epoch"] == 6
    assert resumed["val"]["accuracy"] >= 0.99
    assert not list((tmp_path / "models").rglob("*.tmp"))


class Interrupted(Exception):
    pass


def test_resume_after_interruption_continues_exactly(tmp_path, synthetic):
    straight = run(small_config(tmp_path, synthetic, name="straight", epochs=3))

    def stop_after_first(epoch, metrics):
        if epoch == 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(small_config(tmp_path, synthetic, name="cut", epochs=3), on_epoch_end=stop_after_first)
    resumed = run(small_config(tmp_path, synthetic, name="cut", epochs=3, resume="auto"))
    a = load_checkpoint(straight["last"])[0].state_dict()
    b = load_checkpoint(resumed["last"])[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight["history"]] == [h["train_loss"] for h in resumed["history"]]


def test_frozen_backbone_epochs(tmp_path, synthetic):
    init = save_checkpoint(
        tmp_path / "init.pt",
        create_model(ModelConfig(**{k: SMALL[k] for k in ("backbone", "crop_size")})),
        ModelConfig(backbone="wide_cnn", crop_size=32),
    )
    start = load_checkpoint(init)[0].state_dict()
    snapshots = []
    config = small_config(
        tmp_path, synthetic, weights=str(init), from_scratch=False, freeze_backbone_epochs=1, epochs=2, name="frz"
    )
    run(config, on_epoch_end=lambda e, m: snapshots.append(load_checkpoint(tmp_path / "models/frz/last.pt")[0]))
    after_frozen, after_free = (s.state_dict() for s in snapshots)
    assert snapshots[0].config.signals == SIGNAL_DIM  # the checkpoint had no signal stream: fine-tuning added one
    backbone = [k for k in start if k.startswith("backbone.")]
    assert all(torch.equal(start[k], after_frozen[k]) for k in backbone)  # weights and BatchNorm statistics
    assert not torch.equal(start["fusion.gate.weight"], after_frozen["fusion.gate.weight"])
    assert not all(torch.equal(start[k], after_free[k]) for k in backbone)


def test_the_signal_stream_learns_what_only_the_signals_tell(tmp_path):
    """Clips whose class, and so valence and arousal, are in their face signals only (crops and landmarks noise): a
    model with the signal stream (the default) learns valence and arousal, one trained with signal_stream off cannot.
    A checkpoint with a signal stream cannot be fine-tuned without it."""
    results = {}
    for stream in (True, False):
        prep = PrepConfig(crop_size=32, signals=stream)
        manifest = make_synthetic_dataset(tmp_path / "syn", tmp_path / "cache", 8, prep=prep, cue="signals")
        config = small_config(tmp_path, (manifest, tmp_path / "cache"), name=f"stream-{stream}", epochs=8,
                              signal_stream=stream)  # fmt: skip
        results[stream] = run(config)["history"][-1], config
    learned, blind = results[True][0], results[False][0]
    assert min(learned["ccc_valence"], learned["ccc_arousal"]) > 0.4, learned
    assert max(blind["ccc_valence"], blind["ccc_arousal"]) < 0.1, blind
    best = Path(results[True][1].models_dir) / "stream-True" / "best.pt"
    _, with_stream, extra = load_checkpoint(best)
    assert with_stream.signals == SIGNAL_DIM and extra["train_config"]["signal_stream"]
    assert load_checkpoint(best.parent.with_name("stream-False") / "best.pt")[1].signals == 0
    with pytest.raises(EmotionError, match="fine-tuning cannot take away") as refusal:
        run(replace(results[False][1], name="refused", weights=str(best), from_scratch=False))
    assert "signal_stream=True" in str(refusal.value) and "--" not in str(refusal.value)


@needs_weights
def test_valence_arousal_labels_train_heads_that_the_recognizer_reports(tmp_path):
    """Aff-Wild2-style clips whose valence/arousal are the opposite of their categories' circumplex points train the
    pretrained model's affect head (frame CNN frozen, so it is quick); the checkpoint says 'learned' and
    EmotionRecognizer reports the head, near the labels and away from the circumplex of its own probabilities, while
    the default model reports exactly that circumplex, smoothed per track or not."""
    root = make_synthetic_dataset(
        tmp_path / "aw", tmp_path / "cache", 8, frames=16, affect="opposite", layout="affwild",
        prep=PrepConfig(signals=True),
    )  # fmt: skip
    epochs = 16
    result = run(TrainConfig(data=str(root), cache_dir=str(tmp_path / "cache"), models_dir=str(tmp_path / "models"),
                             runs_dir=str(tmp_path / "runs"), name="aw", epochs=epochs, freeze_backbone_epochs=epochs,
                             batch_size=8, lr=3e-3, warmup_epochs=0.5, threads=1, progress=False))  # fmt: skip
    assert result["monitor"] == "ccc" and load_checkpoint(result["best"])[2]["affect"] == "learned"
    circumplex = np.array(circumplex_matrix())
    val = [c for c in preprocess(load_dataset(root).records, tmp_path / "cache", PrepConfig(signals=True),
                                 progress=False)[0] if c.record.split == "val"]  # fmt: skip
    with EmotionRecognizer(result["best"], device="cpu") as rec:
        assert rec.affect_source == "learned" and rec.backend == "onnx"
        state, last = rec.streamer.init_state(), []
        for i, clip_ in enumerate(val):
            with np.load(clip_.path) as z:
                crops = crops_to_tensor(z["crops"], rec.model.backbone.pretrained_cfg).numpy()
                landmarks, signals = z["landmarks"].astype(np.float32), z["signals"]
            for t in range(len(crops)):  # frame by frame: the last frame goes through the exported ONNX step
                out = rec.streamer.step(state, crops[t : t + 1], landmarks[t : t + 1], [i], signals[t : t + 1])
            last.append(out)
        learned = np.stack([np.concatenate([o["valence"], o["arousal"]]) for o in last])
        probs = np.concatenate([np.exp(o["logits"]) / np.exp(o["logits"]).sum(-1, keepdims=True) for o in last])
        labels = np.stack([read_va_file(c.record.va_file)[-1] for c in val])
        prior_error, learned_error = np.abs(probs @ circumplex - labels).mean(), np.abs(learned - labels).mean()
        assert learned_error < 0.5 * prior_error and np.abs(learned - probs @ circumplex).mean() > 0.3
        face = rec.predict_image(read_image(demo_photo())).faces[0]
        assert np.abs(np.array([face.raw_valence, face.raw_arousal]) - face.raw_probabilities @ circumplex).max() > 0.05
    photo = read_image(demo_photo())
    with EmotionRecognizer(device="cpu") as rec:
        assert rec.affect_source == "circumplex"
        face = rec.predict_image(photo).faces[0]
        assert np.abs([face.valence, face.arousal] - face.probabilities @ circumplex).max() < 1e-4
        h, w = photo.shape[:2]
        for m in range(0, 100, 20):  # zooming in, smoothed per track: the mapping is linear, so the shown values hold
            face = rec.step(cv2.resize(photo[m : h - m, m : w - m], (w, h))).faces[0]
            assert np.abs([face.valence, face.arousal] - face.probabilities @ circumplex).max() < 1e-4
            assert np.abs([face.raw_valence, face.raw_arousal] - face.raw_probabilities @ circumplex).max() < 1e-4
        assert np.abs(face.valence - face.raw_valence) > 1e-3, "the zoom should change the outputs, smoothing lag them"


def cli_train_args(synthetic: tuple[Path, Path], *extra: str) -> list[str]:
    manifest, cache = synthetic
    return [
        "--train",
        "--data",
        str(manifest),
        "--cache-dir",
        str(cache),
        "--backbone",
        "wide_cnn",
        "--crop-size",
        "32",
        "--from-scratch",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


def test_sigkill_mid_epoch_then_resume(tmp_path, synthetic):
    args = cli_train_args(synthetic, "--epochs", "60", "--name", "killed", "--patience", "0")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("epoch 2/60"):
                time.sleep(0.2)  # well inside epoch 3
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    ckpt = tmp_path / "models" / "killed"
    epoch = load_checkpoint(ckpt / "last.pt")[2]["train_state"]["epoch"]
    assert epoch >= 1
    (ckpt / ".last.pt.cut.tmp").write_bytes(b"half a checkpoint")  # as a kill during a checkpoint write leaves it
    done = cli(*cli_train_args(synthetic, "--epochs", str(epoch + 3), "--name", "killed", "--resume"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming {Path('models/killed/last.pt')} after epoch {epoch + 1}" in done.stdout
    assert f"epoch {epoch + 3}/{epoch + 3}" in done.stdout and f"epoch {epoch + 1}/" not in done.stdout
    assert load_checkpoint(ckpt / "last.pt")[2]["train_state"]["epoch"] == epoch + 2
    assert not list(ckpt.glob("*.tmp"))


def test_early_stop_says_so_and_resume_needs_more_patience_or_epochs(tmp_path, synthetic):
    def train(*extra: str):
        return cli(*cli_train_args(synthetic, "--name", "early", "--batch-size", "32", *extra), cwd=tmp_path)

    last = tmp_path / "models" / "early" / "last.pt"
    first = train("--epochs", "40", "--patience", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "(1 step per epoch)" in first.stdout  # 18 training clips, 32 per batch
    stop_line = (
        r"^stopped early at epoch (\d+) of 40: no better validation UAR for 1 epoch \(best [01]\.\d{4} at epoch (\d+)\); "
        r"best\.pt holds that epoch$"
    )
    match = re.search(stop_line, first.stdout, re.MULTILINE)
    assert match, first.stdout
    stop, best_epoch = int(match[1]), int(match[2])
    assert stop == best_epoch + 1 and f"epoch {stop}/40" in first.stdout and f"epoch {stop + 1}/40" not in first.stdout
    state = load_checkpoint(last)[2]["train_state"]
    assert state["stopped_early"] and state["epoch"] == stop - 1 and state["bad_epochs"] == 1
    assert load_checkpoint(last.with_name("best.pt"))[2]["epoch"] == best_epoch
    written = last.stat().st_mtime_ns

    refused = train("--resume", "--epochs", "40")
    assert_clean_error(refused, f"stopped early at epoch {stop} of 40", "pass --patience N larger than 1", "0 to never stop")
    assert last.stat().st_mtime_ns == written

    more = train("--resume", "--patience", "0", "--epochs", str(stop + 2))
    assert more.returncode == 0, more.stdout + more.stderr
    assert f"resuming {Path('models/early/last.pt')} after epoch {stop} of {stop + 2}" in more.stdout
    assert "it had stopped early" in more.stdout and "stopped early at" not in more.stdout
    assert f"epoch {stop + 1}/{stop + 2}" in more.stdout and f"epoch {stop + 2}/{stop + 2}" in more.stdout
    state = load_checkpoint(last)[2]["train_state"]
    assert not state["stopped_early"] and state["epoch"] == stop + 1

    finished = train("--resume", "--epochs", str(stop + 2))
    assert_clean_error(
        finished, f"already completed all its {stop + 2} epochs, nothing to do", f"--epochs N larger than {stop + 2}"
    )
    with pytest.raises(EmotionError, match=f"resume with epochs larger than {stop + 2}") as refusal:
        run(small_config(tmp_path, synthetic, name="early", epochs=None, resume="auto"))
    assert "--" not in str(refusal.value)  # the library names settings, not command-line flags


def test_torchrun_two_cpu_processes(tmp_path, synthetic):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this PyTorch build")
    done = torchrun(*cli_train_args(synthetic, "--epochs", "2", "--name", "ddp"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("epoch 2/2") == 1  # only rank 0 reports
    assert "(2 steps per epoch)" in done.stdout  # 18 training clips over 2 processes x 8 per batch
    last = tmp_path / "models" / "ddp" / "last.pt"
    _, _, extra = load_checkpoint(last)
    assert extra["train_state"]["epoch"] == 1
    manifest, cache = synthetic
    alone = evaluate(EvalConfig(data=str(manifest), weights=str(last), split="val", cache_dir=str(cache),
                                output=str(tmp_path / "eval"), progress=False, threads=1))  # fmt: skip
    # both ranks' validation windows, merged: the same clips and scores as one process evaluating those weights
    assert extra["metrics"]["clips"] == alone["clips"] == 6
    assert extra["metrics"]["accuracy"] == pytest.approx(alone["accuracy"])
    assert extra["metrics"]["uar"] == pytest.approx(alone["uar"])
    assert extra["metrics"]["ccc_valence"] == pytest.approx(alone["ccc_valence"], abs=1e-4)


def test_command_line_options_build_the_configs_with_their_defaults():
    from emotion.cli import build_parser, training_config

    parse = build_parser().parse_args
    assert training_config(parse(["--train", "--data", "d"])) == TrainConfig(data="d")
    assert training_config(parse(["--evaluate", "--data", "d"])) == EvalConfig(data="d")
    train = training_config(parse(["--train", "--data", "d", "--no-augment", "--no-progress", "--resume", "--threads",
                                   "2", "--weights", "w.pt", "--lr", "0.01", "--in-chans", "3"]))  # fmt: skip
    assert (train.augment, train.progress, train.resume, train.threads, train.weights, train.lr, train.in_chans) == (
        False, False, "auto", 2, "w.pt", 0.01, 3
    )  # fmt: skip
    evaluation = training_config(parse(["--evaluate", "--data", "d", "--seed", "3", "--val-split", "0.3", "--eval-split",
                                        "val", "--output", "o", "--json", "m.json", "--device", "cpu"]))  # fmt: skip
    assert (evaluation.seed, evaluation.val_split, evaluation.split) == (3, 0.3, "val")  # the seed decides the split
    assert (evaluation.output, evaluation.json, evaluation.device) == ("o", "m.json", "cpu")


def test_bad_training_settings_give_one_error_line_naming_the_flag(tmp_path):
    assert_clean_error(cli("--train", "--data", tmp_path, "--batch-size", "0"), "--batch-size must be 1 or more")
    refused = cli("--train", "--data", tmp_path, "--from-scratch", "--weights", "w.pt")
    assert_clean_error(refused, "--from-scratch and --weights exclude each other")
    assert_clean_error(cli("--evaluate", "--data", tmp_path, "--val-split", "1.5"), "--val-split must be in [0, 1)")
