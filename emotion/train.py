"""Training of STNet: `main.py --train`, alone or under `torchrun` (DistributedDataParallel, gloo on CPU, nccl on CUDA).

One flat loop: dataset -> face-stage cache -> clip windows -> AdamW with warm-up and cosine decay, cross-entropy on
every time step plus CCC loss for valence/arousal, gradient clipping, mixed precision on CUDA, validation, TensorBoard
under runs/<name>-N, best and last checkpoints under models/<name>/ written atomically. last.pt also holds the full
training state (optimizer, scheduler, scaler, epoch, RNG states, best metric, whether patience ended the run), so
`--resume` continues exactly, and refuses with the reason when the settings leave it nothing to train.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from emotion import evaluate as ev
from emotion.data import AugmentConfig, ClipDataset, EpochSampler, PrepConfig, assign_splits, load_dataset, preprocess
from emotion.errors import EmotionError
from emotion.inputs import crops_to_tensor
from emotion.labels import LABELS
from emotion.model import ModelConfig, STNet, create_model, load_checkpoint, save_checkpoint
from emotion.text import plural

RESUMABLE = ("data", "cache_dir", "workers", "loader_workers", "threads", "device", "progress")
"""TrainConfig fields a resumed run takes from the new command line; epochs and patience too when given (not None);
all others come from the checkpoint."""
DEFAULT_EPOCHS, DEFAULT_PATIENCE = 30, 10
MONITOR_NAMES = {
    "uar": "validation UAR",
    "accuracy": "validation accuracy",
    "macro_f1": "validation macro F1",
    "ccc": "validation CCC",
    "loss": "training loss",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in its checkpoints (plain values only)."""

    data: str  # dataset folder or CSV manifest
    format: str = "auto"  # dataset layout: auto, folder, csv, ravdess, cremad, oulu, affwild
    name: str = "emotion"  # run name: checkpoints in models/<name>/, logs in runs/<name>-N
    epochs: int | None = None  # epochs in total; None: 30 or the resumed run's own total
    batch_size: int = 16  # clips per optimizer step and process
    lr: float = 3e-4  # peak learning rate of AdamW after warm-up
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on biases and norms)
    warmup_epochs: float = 1.0  # epochs of linear warm-up from 0 to lr, then cosine decay
    min_lr_ratio: float = 0.01  # final learning rate as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    label_smoothing: float = 0.1  # cross-entropy label smoothing in [0, 1)
    class_weight: float = 1.0  # weight of the category loss
    va_weight: float = 1.0  # weight of the valence/arousal CCC loss where labels exist
    balanced: bool = False  # class-balanced sampling (with replacement) instead of shuffling
    val_split: float = 0.2  # fraction of subjects (or clips per class) held out when the data fixes no val split
    patience: int | None = None  # epochs without improvement before stopping, 0 never; None: 10 or the resumed run's
    monitor: str = "auto"  # validation metric for best/early stopping: auto (uar, or ccc without categories)
    from_scratch: bool = False  # random backbone instead of the pretrained FER2013 weights
    backbone: str = "mini_xception"  # registry name of the frame backbone for a new model
    crop_size: int = 64  # px, crop side for a new model (mini_xception needs 64)
    in_chans: int = 1  # crop channels for a new model: 1 gray, 3 BGR (mini_xception needs 1)
    weights: str | None = None  # start from this checkpoint instead (fine-tuning a trained model)
    freeze_backbone_epochs: int = 0  # epochs at the start with the backbone frozen (its BatchNorm too)
    resume: str | None = None  # last.pt to continue from; "auto": models/<name>/last.pt
    cache_dir: str = "~/.cache/emotion/clips"  # face-stage cache folder (.npz per clip)
    models_dir: str = "models"  # checkpoints go to <models_dir>/<name>/{best,last}.pt
    runs_dir: str = "runs"  # TensorBoard logs go to <runs_dir>/<name>-N
    workers: int = 1  # face-stage processes for preprocessing
    loader_workers: int = 0  # DataLoader worker processes (one thread each); 0 loads in the training process
    threads: int = 0  # PyTorch CPU threads per process; 0: cores / processes
    device: str = "auto"  # auto, cpu or cuda
    amp: bool = True  # mixed precision (float16 autocast, gradient scaling) on CUDA; ignored on the CPU
    augment: bool = True  # flip, affine, brightness/contrast and landmark jitter (see data.AugmentConfig)
    eval_windows: int = 4  # validation windows per clip, averaged into one prediction
    seed: int = 0  # seeds the split, sampling, augmentation and initialisation
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if (self.epochs is not None and self.epochs < 1) or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if self.patience is not None and self.patience < 0:
            raise ValueError("--patience must be 0 or more")
        if not 0 <= self.val_split < 1:
            raise ValueError("--val-split must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("--label-smoothing must be in [0, 1)")
        if self.lr <= 0:
            raise ValueError("--lr must be positive")
        if self.monitor not in ("auto", "uar", "accuracy", "macro_f1", "ccc", "loss"):
            raise ValueError("monitor must be auto, uar, accuracy, macro_f1, ccc or loss")


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """1 - concordance correlation coefficient over all given values (1-D tensors of equal length >= 2)."""
    pm, tm = pred.mean(), true.mean()
    cov = ((pred - pm) * (true - tm)).mean()
    return 1 - 2 * cov / (pred.var(unbiased=False) + true.var(unbiased=False) + (pm - tm) ** 2 + 1e-8)


def compute_loss(
    out: dict[str, torch.Tensor], label: torch.Tensor, va: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on every time step of clips with a category, CCC loss for valence and arousal over every
    annotated frame of the batch; each output also enters with weight 0 so DDP always sees every parameter used."""
    logits = out["logits"].float()
    t, c = logits.shape[1:]
    pred_va = torch.stack([out["valence"], out["arousal"]], dim=-1).float()
    loss = 0.0 * (logits.sum() + pred_va.sum())
    parts: dict[str, float] = {}
    has_label = label >= 0
    if has_label.any():
        targets = label[has_label, None].expand(-1, t).reshape(-1)
        ce = F.cross_entropy(logits[has_label].reshape(-1, c), targets, label_smoothing=config.label_smoothing)
        loss = loss + config.class_weight * ce
        parts["ce"] = float(ce.detach())
    va_losses = []
    for d, name in enumerate(("valence", "arousal")):
        valid = ~torch.isnan(va[..., d])
        if int(valid.sum()) >= 2:
            term = ccc_loss(pred_va[..., d][valid], va[..., d][valid])
            va_losses.append(term)
            parts[f"ccc_{name}"] = float(term.detach())
    if va_losses:
        loss = loss + config.va_weight * torch.stack(va_losses).mean()
    parts["loss"] = float(loss.detach())
    return loss, parts


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over warmup_steps, then cosine decay to min_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays and tuples -> plain Python values / tensors, as checkpoints require."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))


class _Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    def __init__(self, device: str) -> None:
        from emotion.recognizer import resolve_device

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            # Generous timeout: ranks wait at a barrier while others finish their share of preprocessing.
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(hours=12))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _param_groups(model: STNet, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for weight matrices and conv kernels, none for biases, norms and LSTM biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _build_model(config: TrainConfig) -> tuple[STNet, ModelConfig]:
    if config.weights:
        model, model_config, _ = load_checkpoint(config.weights)
        return model, model_config
    model_config = ModelConfig(backbone=config.backbone, crop_size=config.crop_size, in_chans=config.in_chans)
    return create_model(model_config, pretrained=not config.from_scratch), model_config


def _resume_path(config: TrainConfig) -> Path | None:
    if config.resume is None:
        return None
    path = Path(config.models_dir) / config.name / "last.pt" if config.resume == "auto" else Path(config.resume)
    if not path.is_file():
        raise ValueError(f"nothing to resume: {path} does not exist (train without --resume first)")
    return path


def _merge_resumed(config: TrainConfig, stored: dict[str, Any]) -> TrainConfig:
    """The checkpoint's training config, with the RESUMABLE fields of the new command line and its epochs and
    patience where given."""
    known = {f.name for f in fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in stored.items() if k in known})
    given = {k: getattr(config, k) for k in ("epochs", "patience") if getattr(config, k) is not None}
    return replace(base, resume=config.resume, **{k: getattr(config, k) for k in RESUMABLE}, **given)


def _with_defaults(config: TrainConfig) -> TrainConfig:
    """A new run's config with DEFAULT_EPOCHS and DEFAULT_PATIENCE where none is given."""
    epochs = DEFAULT_EPOCHS if config.epochs is None else config.epochs
    return replace(config, epochs=epochs, patience=DEFAULT_PATIENCE if config.patience is None else config.patience)


def _stall_text(monitor: str, epochs: int) -> str:
    """'no better validation UAR for 10 epochs': why patience ends a run."""
    return f"no better {MONITOR_NAMES.get(monitor, monitor)} for {plural(epochs, 'epoch')}"


def _best_text(monitor: str, best: float, history: list[dict[str, Any]]) -> str:
    """'best 0.6200 at epoch 3' (the first epoch with the best value), in the metric's own sign (the loss is maximised
    negated)."""
    epoch = next((h["epoch"] for h in history if h["monitor"] == best), None)
    if epoch is None:
        return "no valid value yet"
    return f"best {-best if monitor == 'loss' else best:.4f} at epoch {epoch}"


def _check_resumable(path: Path, config: TrainConfig, extra: dict[str, Any]) -> str:
    """Raise EmotionError saying why, and what to change, when the resumed run has nothing to train: patience used up
    (an early stop) or all epochs done. Else the line announcing the resumption."""
    state, stored = extra["train_state"], extra["train_config"]
    done, bad, history = state["epoch"] + 1, state["bad_epochs"], state["history"]
    monitor = extra.get("monitor", "uar")
    quiet = _stall_text(monitor, bad)
    best = _best_text(monitor, state["best"], history)
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


def _monitor_value(config: TrainConfig, metrics: dict[str, Any], has_labels: bool) -> tuple[str, float]:
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


def _set_frozen(model: STNet, frozen: bool) -> None:
    """Freeze or unfreeze the backbone: no gradients (AdamW skips it) and BatchNorm statistics kept fixed."""
    model.backbone.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()


def run(config: TrainConfig, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train as configured and return a summary (paths, best metric, epochs run, history).

    on_epoch_end(epoch, metrics) is called on every process after each epoch's checkpoints are written.
    """
    env = _Dist(config.device)
    threads = torch.get_num_threads()
    try:
        return _run(config, env, on_epoch_end)
    finally:
        torch.set_num_threads(threads)
        env.close()


def _run(config: TrainConfig, env: _Dist, on_epoch_end: Callable | None) -> dict[str, Any]:
    say = print if env.main else (lambda *a, **k: None)
    resume_path = _resume_path(config)
    state: dict[str, Any] | None = None
    if resume_path is not None:
        model, model_config, extra = load_checkpoint(resume_path)
        if "train_state" not in extra:
            raise ValueError(f"{resume_path} holds no training state (resume from a last.pt written by training)")
        config = _merge_resumed(config, extra["train_config"])
        say(_check_resumable(resume_path, config, extra))
        state = extra["train_state"]
    else:
        config = _with_defaults(config)
        torch.manual_seed(config.seed)
        model, model_config = _build_model(config)
    device = env.device
    if device.type == "cpu":
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // env.world))
    use_amp = config.amp and device.type == "cuda"

    scan = load_dataset(config.data, config.format)
    records = assign_splits(scan.records, config.val_split, config.seed)
    say(
        f"dataset {config.data} ({scan.format}): {plural(len(scan.records), 'clip')}, "
        f"{plural(len(scan.skipped), 'file')} passed over"
    )
    prep = PrepConfig(crop_size=model_config.crop_size, in_chans=model_config.in_chans)
    cache_dir = Path(config.cache_dir).expanduser()
    clips, summary = preprocess(
        records, cache_dir, prep, config.workers, config.progress and env.main, (env.rank, env.world)
    )
    if env.world > 1:
        env.barrier()
        clips, summary = preprocess(records, cache_dir, prep, 1, False)
    say("\n".join(summary.lines()))
    train_clips = [c for c in clips if c.record.split == "train"]
    val_clips = [c for c in clips if c.record.split == "val"]
    if not train_clips:
        raise ValueError("no training clip with a face; check the dataset and the preprocessing summary")
    counts = {LABELS[i]: sum(c.record.label == i for c in train_clips) for i in range(len(LABELS))}
    say(
        f"train {plural(len(train_clips), 'clip')}, val {plural(len(val_clips), 'clip')}; train per class: "
        + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    )

    window = model_config.window
    train_set = ClipDataset(
        train_clips,
        window,
        AugmentConfig()
        if config.augment
        else AugmentConfig(
            flip=0, rotate=0, scale=0, shift=0, brightness=0, contrast=0, landmark_jitter=0, max_stride=1
        ),
        config.seed,
    )
    sampler = EpochSampler(train_set.labels, True, config.balanced, config.seed, env.rank, env.world)
    loader_kwargs: dict[str, Any] = {"num_workers": config.loader_workers, "pin_memory": device.type == "cuda"}
    if config.loader_workers:
        loader_kwargs["worker_init_fn"] = _loader_worker_init
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, sampler=sampler, drop_last=False, **loader_kwargs
    )
    val_set = ClipDataset(val_clips, window, windows=config.eval_windows)
    val_sampler = EpochSampler(list(range(len(val_set))), False, False, 0, env.rank, env.world)
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=config.batch_size, sampler=val_sampler, **loader_kwargs
    )

    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(total_steps, max(1, round(config.warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, config.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ckpt_dir = Path(config.models_dir) / config.name
    best_path, last_path = ckpt_dir / "best.pt", ckpt_dir / "last.pt"
    if env.main:
        for stale in ckpt_dir.glob(".*.pt.*.tmp"):  # a checkpoint write cut short by a kill; the final files are whole
            stale.unlink(missing_ok=True)
    start_epoch, best, bad_epochs, history, run_dir = 0, -math.inf, 0, [], None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best, bad_epochs = state["epoch"] + 1, state["best"], state["bad_epochs"]
        history, run_dir = list(state["history"]), state["run_dir"]
        set_rng_state(state["rng"])
    if env.main and run_dir is None:
        run_dir = str(ev.next_run_dir(config.runs_dir, config.name))
    run_dir = env.broadcast(run_dir)
    writer = None
    if env.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(run_dir, purge_step=start_epoch * steps_per_epoch if state else None)
        say(f"checkpoints: {ckpt_dir}/  TensorBoard: {run_dir}  ({plural(steps_per_epoch, 'step')} per epoch)")

    has_labels = any(c.record.label >= 0 for c in val_clips)
    ddp: DistributedDataParallel | None = None
    frozen: bool | None = None
    monitor = "loss"
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        want_frozen = epoch < config.freeze_backbone_epochs
        if want_frozen != frozen:
            _set_frozen(model, want_frozen)
            frozen = want_frozen
            if env.world > 1:
                ids = [device.index] if device.type == "cuda" else None
                ddp = DistributedDataParallel(model, device_ids=ids)
        net = ddp if ddp is not None else model
        model.train()
        if frozen:
            model.backbone.eval()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        sums: dict[str, float] = {}
        seen = 0
        bar = _bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", config.progress and env.main)
        for batch in train_loader:
            x = crops_to_tensor(batch["crops"].to(device, non_blocking=True))
            landmarks = batch["landmarks"].to(device, non_blocking=True)
            label, va = batch["label"].to(device), batch["va"].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = net(x, landmarks)
            loss, parts = compute_loss(out, label, va, config)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = int(label.shape[0])
            seen += n
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * n
            if writer is not None:
                step = scheduler.last_epoch
                writer.add_scalar("train/loss_step", parts["loss"], step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            bar.update()
        bar.close()
        train_metrics = {f"train_{k}": v / max(seen, 1) for k, v in sums.items()}
        if env.world > 1:
            gathered = env.gather(train_metrics)
            train_metrics = {k: float(np.mean([g[k] for g in gathered if k in g])) for k in train_metrics}
        metrics: dict[str, Any] = dict(train_metrics)
        if val_clips:
            pred = ev.predict(model, val_loader, device, use_amp)
            pred["item"] = np.asarray(list(iter(val_sampler)), np.int64)[: len(pred["clip"])]
            parts_all = env.gather(pred)
            merged = _merge_predictions(parts_all)
            metrics.update(ev.summarize(merged, [c.record.label for c in val_clips]))
        monitor, value = _monitor_value(config, metrics, has_labels)
        improved = not math.isnan(value) and value > best
        if improved:
            best, bad_epochs = value, 0
        else:
            bad_epochs += 1
        seconds = time.perf_counter() - t0
        record = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        record.update(epoch=epoch + 1, seconds=seconds, lr=optimizer.param_groups[0]["lr"], monitor=value)
        history.append(_plain(record))
        stopped_early = bool(config.patience) and bad_epochs >= config.patience and epoch + 1 < config.epochs
        if env.main:
            extra = {"epoch": epoch + 1, "metrics": _plain(record), "train_config": asdict(config), "monitor": monitor}
            if improved or not val_clips:
                save_checkpoint(best_path, model, model_config, extra)
            train_state = {
                "epoch": epoch,
                "best": float(best),
                "bad_epochs": bad_epochs,
                "stopped_early": stopped_early,
                "history": history,
                "run_dir": run_dir,
                "optimizer": _plain(optimizer.state_dict()),
                "scheduler": _plain(scheduler.state_dict()),
                "scaler": _plain(scaler.state_dict()),
                "rng": rng_state(),
            }
            save_checkpoint(last_path, model, model_config, {**extra, "train_state": train_state})
            _log_epoch(writer, metrics, epoch + 1, seconds)
            say(_epoch_line(epoch + 1, config.epochs, metrics, monitor, value, seconds, improved))
            if stopped_early:
                holds = "best.pt holds that epoch" if val_clips else "best.pt holds the last epoch"
                say(
                    f"stopped early at epoch {epoch + 1} of {config.epochs}: {_stall_text(monitor, bad_epochs)} "
                    f"({_best_text(monitor, best, history)}); {holds}"
                )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        env.barrier()
        if stopped_early:
            break
    result = {
        "best": str(best_path),
        "last": str(last_path),
        "run_dir": run_dir,
        "monitor": monitor,
        "best_value": best,
        "epochs": len(history),
        "stopped_early": stopped_early,
        "history": history,
    }
    if env.main and val_clips and best_path.is_file():
        result["val"] = _final_evaluation(best_path, val_set, config, device, Path(run_dir))
    if writer is not None:
        writer.close()
    return result


def _loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not enabled)


def _merge_predictions(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Predictions of all ranks -> one set in item order, padding duplicates dropped."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _, first = np.unique(merged["item"], return_index=True)
    return {k: v[first] for k, v in merged.items()}


def _log_epoch(writer, metrics: dict[str, Any], epoch: int, seconds: float) -> None:
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            writer.add_scalar(k.replace("train_", "train/") if k.startswith("train_") else f"val/{k}", v, epoch)
    writer.add_scalar("time/epoch_seconds", seconds, epoch)
    if "confusion" in metrics:
        image = ev.confusion_image(metrics["confusion"], title=f"validation, epoch {epoch}")
        writer.add_image("val/confusion", image[:, :, ::-1].copy(), epoch, dataformats="HWC")
    writer.flush()


def _epoch_line(epoch: int, epochs: int, m: dict[str, Any], monitor: str, value: float, s: float, best: bool) -> str:
    parts = [f"epoch {epoch}/{epochs}", f"loss {m.get('train_loss', float('nan')):.4f}"]
    for key, label in (
        ("accuracy", "val acc"),
        ("uar", "UAR"),
        ("macro_f1", "F1"),
        ("ccc_valence", "CCC-V"),
        ("ccc_arousal", "CCC-A"),
    ):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    parts.append(f"{s:.1f} s")
    if best:
        parts.append(f"best {monitor} {value:.4f}")
    return "  ".join(parts)


def _final_evaluation(
    best_path: Path, val_set: ClipDataset, config: TrainConfig, device: torch.device, run_dir: Path
) -> dict[str, Any]:
    """Evaluate best.pt on the validation clips: print the metrics, write val_metrics.json and confusion.png."""
    model, _, extra = load_checkpoint(best_path, device)
    loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size)
    metrics = ev.summarize(ev.predict(model, loader, device), [c.record.label for c in val_set.clips])
    metrics["epoch"] = extra.get("epoch")
    if "confusion" in metrics:
        metrics["confusion_png"] = str(
            ev.save_confusion_png(
                metrics["confusion"], run_dir / "confusion.png", f"{config.name}: best.pt on validation"
            )
        )
    path = ev.write_json(run_dir / "val_metrics.json", metrics)
    print(f"best checkpoint {best_path} (epoch {metrics['epoch']}) on validation:")
    print("\n".join(ev.metric_lines(metrics)))
    print(f"metrics: {path}")
    return metrics
