"""Where a run stands and how it resumes: the monitored metric, best value, patience and history that last.pt keeps,
which settings come from the checkpoint and which from the new call, why a run has nothing left to train, and the
random-generator states that make a resumed run match an uninterrupted one."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion.errors import EmotionError
from emotion.text import plural
from emotion.training.config import DEFAULT_EPOCHS, DEFAULT_PATIENCE, DEFAULT_SEED, TrainConfig
from emotion.training.splits import VAL_SPLIT

RESUMABLE = ("data", "cache_dir", "workers", "loader_workers", "threads", "device", "progress")
"""TrainConfig fields a resumed run takes from the new command line; epochs and patience too when given (not None);
all others come from the checkpoint."""
MONITOR_NAMES = {
    "uar": "validation UAR",
    "accuracy": "validation accuracy",
    "macro_f1": "validation macro F1",
    "ccc": "validation CCC",
    "loss": "training loss",
}


@dataclass
class Progress:
    """A run's standing after its epochs so far; last.pt keeps it, so a resumed run counts on from there."""

    start_epoch: int = 0  # first epoch (0-based) this call trains
    best: float = -math.inf  # best monitored value so far (maximised; the loss enters negated)
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = field(default_factory=list)  # one record of numbers per epoch
    run_dir: str | None = None  # the TensorBoard and report folder runs/<name>-N
    monitor: str = "loss"  # name of the monitored metric, decided by the first validation
    stopped_early: bool = False  # patience ended the run at the latest epoch

    @classmethod
    def restore(cls, state: dict[str, Any]) -> Progress:
        """The standing a last.pt's train_state recorded."""
        return cls(state["epoch"] + 1, state["best"], state["bad_epochs"], list(state["history"]), state["run_dir"])

    def record(self, config: TrainConfig, metrics: dict[str, Any], has_labels: bool, epoch: int, **numbers: float):
        """Enter an epoch's metrics (and numbers such as seconds and lr): the best value, patience, whether patience
        ends the run; -> (the epoch's record, whether it is the best so far)."""
        self.monitor, value = monitor_value(config, metrics, has_labels)
        improved = not math.isnan(value) and value > self.best
        self.best, self.bad_epochs = (value, 0) if improved else (self.best, self.bad_epochs + 1)
        record = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        record.update(epoch=epoch + 1, **numbers, monitor=value)
        self.history.append(plain(record))
        self.stopped_early = bool(config.patience) and self.bad_epochs >= config.patience and epoch + 1 < config.epochs
        return record, improved

    def state(self) -> dict[str, Any]:
        """What last.pt's train_state holds of the standing (the training loop adds optimiser and RNG states)."""
        return {
            "epoch": self.history[-1]["epoch"] - 1,
            "best": float(self.best),
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "run_dir": self.run_dir,
        }


def monitor_value(config: TrainConfig, metrics: dict[str, Any], has_labels: bool) -> tuple[str, float]:
    """(name, value to maximise) of the validation metric that picks the best checkpoint."""
    name = config.monitor
    if name == "auto":
        name = "uar" if has_labels and "uar" in metrics else "ccc" if "ccc_valence" in metrics else "loss"
    if name == "ccc":
        values = [metrics[k] for k in ("ccc_valence", "ccc_arousal") if k in metrics]
        value = float(np.mean(values)) if values else float("nan")
    elif name == "loss":
        value = -float(metrics.get("loss", metrics.get("train_loss", float("nan"))))
    else:
        value = float(metrics.get(name, float("nan")))
    return name, value


def plain(value: Any) -> Any:
    """Numpy scalars/arrays and tuples -> plain Python values / tensors, as checkpoints require."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as plain values and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore every global RNG from rng_state()."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))


def resume_path(config: TrainConfig) -> Path | None:
    """The last.pt a run resumes from (None for a new run); refuses a file that is not there."""
    if config.resume is None:
        return None
    path = Path(config.models_dir) / config.name / "last.pt" if config.resume == "auto" else Path(config.resume)
    if not path.is_file():
        raise EmotionError(
            f"nothing to resume: {path} does not exist",
            fix="train without resume first",
            cli_fix="train without --resume first",
        )
    return path


def merge_resumed(config: TrainConfig, stored: dict[str, Any]) -> TrainConfig:
    """The checkpoint's training config, with the RESUMABLE fields of the new call and its epochs and patience where
    given."""
    known = {f.name for f in fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in stored.items() if k in known})
    given = {k: getattr(config, k) for k in ("epochs", "patience") if getattr(config, k) is not None}
    return replace(base, resume=config.resume, **{k: getattr(config, k) for k in RESUMABLE}, **given)


def with_defaults(config: TrainConfig) -> TrainConfig:
    """A new run's config with the default epochs, patience, seed and validation split where none is given."""
    defaults = {"epochs": DEFAULT_EPOCHS, "patience": DEFAULT_PATIENCE, "seed": DEFAULT_SEED, "val_split": VAL_SPLIT}
    return replace(config, **{k: v for k, v in defaults.items() if getattr(config, k) is None})


def stall_text(monitor: str, epochs: int) -> str:
    """'no better validation UAR for 10 epochs': why patience ends a run."""
    return f"no better {MONITOR_NAMES.get(monitor, monitor)} for {plural(epochs, 'epoch')}"


def best_text(monitor: str, best: float, history: list[dict[str, Any]]) -> str:
    """'best 0.6200 at epoch 3' (the first epoch with the best value), in the metric's own sign (the loss is maximised
    negated)."""
    epoch = next((h["epoch"] for h in history if h["monitor"] == best), None)
    if epoch is None:
        return "no valid value yet"
    return f"best {-best if monitor == 'loss' else best:.4f} at epoch {epoch}"


def check_resumable(path: Path, config: TrainConfig, extra: dict[str, Any]) -> str:
    """Raise EmotionError saying why, and what to change, when the resumed run has nothing to train: patience used up
    (an early stop) or all epochs done. Else the line announcing the resumption."""
    state, stored = extra["train_state"], extra["train_config"]
    done, bad, history = state["epoch"] + 1, state["bad_epochs"], state["history"]
    monitor = extra.get("monitor", "uar")
    quiet = stall_text(monitor, bad)
    best = best_text(monitor, state["best"], history)
    if config.patience and bad >= config.patience:
        why = (
            f"stopped early at epoch {done} of {stored['epochs']} with patience {stored['patience']}: {quiet}, {best}"
            if state.get("stopped_early")
            else f"has had {quiet} ({best}), so patience {config.patience} would stop it at once"
        )
        raise EmotionError(
            f"{path}: this run {why}",
            fix=f"to continue, resume with patience larger than {bad}, or 0 to never stop",
            cli_fix=f"to continue, pass --patience N larger than {bad}, or 0 to never stop, with --resume",
        )
    if done >= config.epochs:
        why = (
            f"already completed all its {plural(done, 'epoch')}, nothing to do"
            if config.epochs == stored["epochs"] == done
            else f"already trained {plural(done, 'epoch')}, so {config.epochs} in total leaves nothing to do"
        )
        raise EmotionError(
            f"{path}: this run {why}",
            fix=f"to train on, resume with epochs larger than {done}",
            cli_fix=f"to train on, pass --epochs N larger than {done} with --resume",
        )
    line = f"resuming {path} after epoch {done} of {config.epochs} ({best})"
    if state.get("stopped_early"):
        limit = f"patience {config.patience}" if config.patience else "patience 0 (never stopping early)"
        line += f"; it had stopped early ({quiet}) and goes on with {limit}"
    return line
