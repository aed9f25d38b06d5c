"""Training of any architecture (`--arch`, STNet by default): `main.py --train`, alone or under `torchrun`
(DistributedDataParallel, gloo on CPU, nccl on CUDA).

The loop in numbered steps: 1 the run's settings and model (new, or the checkpoint's when resuming), 2 data
(dataset -> face-stage cache -> clip windows), 3 AdamW with warm-up and cosine decay and a gradient scaler, 4 a
resumed run's state, 5 outputs (TensorBoard under runs/<name>-N); then per epoch 6 train (cross-entropy on every
time step plus CCC loss for valence/arousal, gradient clipping, mixed precision on CUDA), 7 validate, 8 keep score
(best value, patience), 9 checkpoints best.pt and last.pt (written atomically; last.pt holds the whole training state,
so `--resume` continues exactly) and the epoch's report; 10 the best checkpoint evaluated on the validation clips.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.model import (
    ClipConfig,
    ClipModel,
    ModelConfig,
    arch_config,
    create_model,
    load_checkpoint,
    save_checkpoint,
)
from emotion.signals import SIGNAL_DIM
from emotion.text import plural
from emotion.training.augment import AugmentConfig
from emotion.training.cache import PrepConfig, preprocess
from emotion.training.clips import ClipDataset, EpochSampler
from emotion.training.config import TrainConfig
from emotion.training.datasets import load_dataset
from emotion.training.distributed import Dist, merge_predictions
from emotion.training.metrics import confusion_image, metric_lines
from emotion.training.objective import compute_loss, lr_factor
from emotion.training.resume import (
    Progress,
    best_text,
    check_resumable,
    merge_resumed,
    plain,
    resume_path,
    rng_state,
    set_rng_state,
    stall_text,
    with_defaults,
)
from emotion.training.scoring import (
    batch_signals,
    model_input,
    next_run_dir,
    predict,
    score,
    summarize,
    write_report,
)
from emotion.training.splits import assign_splits

__all__ = ["TrainConfig", "run"]


@dataclass
class _Data:
    """The training and validation windows with their samplers and loaders (step 2)."""

    train_set: ClipDataset
    sampler: EpochSampler
    train_loader: DataLoader
    val_set: ClipDataset
    val_sampler: EpochSampler
    val_loader: DataLoader


@dataclass
class _Optim:
    """Optimiser, learning-rate schedule and gradient scaler (step 3); last.pt saves their states."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    steps_per_epoch: int

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": plain(self.optimizer.state_dict()),
            "scheduler": plain(self.scheduler.state_dict()),
            "scaler": plain(self.scaler.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def run(config: TrainConfig, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train as configured and return a summary (paths, best metric, epochs run, history).

    on_epoch_end(epoch, metrics) is called on every process after each epoch's checkpoints are written.
    """
    env = Dist(config.device)
    threads = torch.get_num_threads()
    try:
        return _run(config, env, on_epoch_end)
    finally:
        torch.set_num_threads(threads)
        env.close()


def _run(config: TrainConfig, env: Dist, on_epoch_end: Callable | None) -> dict[str, Any]:
    say = print if env.main else _silent
    config, model, model_config, state = _start(config, say)
    if env.device.type == "cpu":
        torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // env.world))
    data = _build_data(config, model_config, env, say)
    model.to(env.device)
    optim = _build_optim(config, model, len(data.train_loader), env.device)
    ckpt_dir = Path(config.models_dir) / config.name
    progress = Progress()
    if state is not None:
        optim.load_state_dict(state)
        progress = Progress.restore(state)
        set_rng_state(state["rng"])
    writer = _open_outputs(config, env, progress, ckpt_dir, optim.steps_per_epoch, resumed=state is not None, say=say)
    has_val = bool(data.val_set.clips)
    has_labels = any(c.record.label >= 0 for c in data.val_set.clips)
    net, frozen = model, None
    for epoch in range(progress.start_epoch, config.epochs):
        t0 = time.perf_counter()
        net, frozen = _set_phase(model, net, frozen, epoch < config.freeze_backbone_epochs, env)
        metrics: dict[str, Any] = _train_epoch(net, model, data, optim, config, env, epoch, writer)
        metrics.update(_validate(model, data, env, _amp(config, env.device)))
        seconds = time.perf_counter() - t0
        lr = optim.optimizer.param_groups[0]["lr"]
        record, improved = progress.record(config, metrics, has_labels, epoch, seconds=seconds, lr=lr)
        if env.main:
            _save_checkpoints(ckpt_dir, model, model_config, config, progress, optim, record, improved or not has_val)
            _report_epoch(writer, config, progress, metrics, record, improved, has_val)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        env.barrier()
        if progress.stopped_early:
            break
    return _finish(config, env, progress, ckpt_dir, data.val_set, writer)


def _silent(*args: Any, **kwargs: Any) -> None:
    """`print` of the processes other than the main one."""


def _amp(config: TrainConfig, device: torch.device) -> bool:
    return config.amp and device.type == "cuda"


def _start(
    config: TrainConfig, say: Callable
) -> tuple[TrainConfig, ClipModel, ClipConfig, dict[str, Any] | None]:
    """1. The run's settings and model: a resumed run's from its last.pt (with its training state), else new ones."""
    path = resume_path(config)
    if path is None:
        config = with_defaults(config)
        torch.manual_seed(config.seed)
        if config.weights:
            model, model_config, _ = load_checkpoint(config.weights)
            _check_arch(config, model_config, config.weights)
            _check_freezable(config, model)
            model.config = model_config = replace(model_config, blendshape_prior=())  # tuned for it untrained only
            return replace(config, arch=model_config.arch), *_with_signal_stream(model, model_config, config), None
        model_config = new_model_config(config)
        model = create_model(model_config, pretrained=not config.from_scratch)
        _check_freezable(config, model)
        return replace(config, arch=model_config.arch), model, model_config, None
    model, model_config, extra = load_checkpoint(path)
    if "train_state" not in extra:
        raise ValueError(f"{path} holds no training state (resume from a last.pt written by training)")
    _check_arch(config, model_config, path)
    config = replace(
        merge_resumed(config, extra["train_config"]), signal_stream=model_config.signals > 0, arch=model_config.arch
    )
    say(check_resumable(path, config, extra))
    return config, model, model_config, extra["train_state"]


def new_model_config(config: TrainConfig) -> ClipConfig:
    """The config of a new model of config.arch (stnet by default): the run's crop size, channels and, for an
    architecture with one, backbone and signal stream; the architecture's own defaults for the rest."""
    config_class = arch_config(config.arch or ModelConfig.arch)
    values: dict[str, Any] = {"crop_size": config.crop_size, "in_chans": config.in_chans}
    names = {f.name for f in fields(config_class)}
    if "backbone" in names:
        values["backbone"] = config.backbone
    if config_class.reads_signals and config.signal_stream:
        values["signals"] = SIGNAL_DIM
    values.update(arch_overrides(config_class, config.arch_options))
    try:
        return config_class(**values)
    except ValueError as exc:
        raise EmotionError(
            f"{config_class.arch}: {exc}",
            fix="change arch_options, crop_size or in_chans",
            cli_fix="change --arch-option, --crop-size or --in-chans",
        ) from None


_SHARED_FIELDS = frozenset(f.name for f in fields(ClipConfig))
"""ClipConfig's fields: set by the run's own options (crop size, channels) or by the face stage, never by
arch_options."""


def arch_overrides(config_class: type[ClipConfig], options: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE items (TrainConfig.arch_options, comma-split by the command line: an item without '=' continues the
    previous key's list) -> field values of `config_class`, each converted to its default's type."""
    items: dict[str, list[str]] = {}
    key = None
    for item in options:
        if "=" in item:
            key, value = item.split("=", 1)
            items[key.strip()] = [value.strip()]
        elif key is not None and item.strip():
            items[key].append(item.strip())
        elif item.strip():
            raise _option_error(config_class, f"{item!r} is not KEY=VALUE")
    own = _own_fields(config_class)
    values = {}
    for key, parts in items.items():
        if key not in own:
            raise _option_error(config_class, f"no field {key!r}")
        default = own[key].default
        try:
            if isinstance(default, tuple):
                kind = type(default[0]) if default else int
                values[key] = tuple(kind(p) for p in parts if p)
            elif len(parts) > 1:
                raise ValueError("one value expected")
            elif isinstance(default, bool):
                values[key] = {"true": True, "1": True, "false": False, "0": False}[parts[0].lower()]
            else:
                values[key] = type(default)(parts[0])
        except (KeyError, ValueError):
            raise _option_error(config_class, f"{key}={','.join(parts)}: expected {type(default).__name__}") from None
    return values


def _own_fields(config_class: type[ClipConfig]) -> dict[str, Any]:
    """The fields an architecture's config adds to ClipConfig's, by name, in declaration order."""
    return {f.name: f for f in fields(config_class) if f.name not in _SHARED_FIELDS}


def _option_error(config_class: type[ClipConfig], problem: str) -> EmotionError:
    return EmotionError(
        f"arch option for {config_class.arch}: {problem}; its fields: {', '.join(_own_fields(config_class))}",
        fix="use KEY=VALUE with one of those fields",
        cli_fix="pass --arch-option KEY=VALUE with one of those fields",
    )


def _check_freezable(config: TrainConfig, model: ClipModel) -> None:
    """Frozen-backbone epochs need an architecture with a per-frame CNN."""
    if config.freeze_backbone_epochs and getattr(model, "backbone", None) is None:
        raise EmotionError(
            f"{model.config.arch} has no per-frame CNN to freeze",
            fix="leave freeze_backbone_epochs at 0 for it",
            cli_fix="leave out --freeze-backbone-epochs for it",
        )


def _check_arch(config: TrainConfig, model_config: ClipConfig, path: str | Path) -> None:
    """A checkpoint's architecture is the run's: --arch, if given, must name it, and its config is fixed."""
    if config.arch_options:
        raise EmotionError(
            f"{path} fixes its architecture's config, so arch options cannot change it",
            fix="leave out arch_options",
            cli_fix="leave out --arch-option",
        )
    if config.arch and config.arch != model_config.arch:
        raise EmotionError(
            f"{path} holds a {model_config.arch} model, not {config.arch}",
            fix=f"leave out arch (or pass arch='{model_config.arch}')",
            cli_fix=f"leave out --arch (or pass --arch {model_config.arch})",
        )


def _with_signal_stream(
    model: ClipModel, model_config: ClipConfig, config: TrainConfig
) -> tuple[ClipModel, ClipConfig]:
    """The checkpoint to fine-tune, given a signal stream when config.signal_stream asks for one and it has none:
    its weights are kept and the new stream starts at zero, so training starts from the checkpoint's outputs. An
    architecture without a signal stream (the zoo's) is fine-tuned as it is."""
    if not model_config.reads_signals:
        return model, model_config
    if model_config.signals and not config.signal_stream:
        raise EmotionError(
            f"{config.weights} has a face-signal stream, which fine-tuning cannot take away",
            fix="fine-tune it with signal_stream=True, or train a new model without one",
            cli_fix="leave out --no-signal-stream to fine-tune it, or train a new model without --weights",
        )
    if model_config.signals or not config.signal_stream:
        return model, model_config
    model_config = replace(model_config, signals=SIGNAL_DIM)
    grown = create_model(model_config)
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("signal_encoder.", "fusion.signal_")) for k in missing), missing
    return grown, model_config


def _build_data(config: TrainConfig, model_config: ClipConfig, env: Dist, say: Callable) -> _Data:
    """2. Dataset -> splits -> face-stage cache (each process runs its share, then all read the whole) -> windows."""
    scan = load_dataset(config.data, config.format)
    records = assign_splits(scan.records, config.val_split, config.seed)
    say(
        f"dataset {config.data} ({scan.format}): {plural(len(scan.records), 'clip')}, "
        f"{plural(len(scan.skipped), 'file')} passed over"
    )
    prep = PrepConfig.of_model(model_config)
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
    augment = AugmentConfig() if config.augment else AugmentConfig.off()
    train_set = ClipDataset(train_clips, model_config.window, augment, config.seed)
    sampler = EpochSampler(train_set.labels, True, config.balanced, config.seed, env.rank, env.world)
    loader_kwargs: dict[str, Any] = {"num_workers": config.loader_workers, "pin_memory": env.device.type == "cuda"}
    if config.loader_workers:
        loader_kwargs["worker_init_fn"] = _loader_worker_init
    train_loader = DataLoader(train_set, config.batch_size, sampler=sampler, drop_last=False, **loader_kwargs)
    val_set = ClipDataset(val_clips, model_config.window, windows=config.eval_windows)
    val_sampler = EpochSampler(list(range(len(val_set))), False, False, 0, env.rank, env.world)
    val_loader = DataLoader(val_set, config.batch_size, sampler=val_sampler, **loader_kwargs)
    return _Data(train_set, sampler, train_loader, val_set, val_sampler, val_loader)


def _loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _build_optim(config: TrainConfig, model: ClipModel, steps_per_epoch: int, device: torch.device) -> _Optim:
    """3. AdamW (no decay on biases and norms), linear warm-up then cosine decay per step, the AMP gradient scaler."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(total_steps, max(1, round(config.warmup_epochs * steps_per_epoch)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, config.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=_amp(config, device))
    return _Optim(optimizer, scheduler, scaler, steps_per_epoch)


def _open_outputs(
    config: TrainConfig, env: Dist, progress: Progress, ckpt_dir: Path, steps: int, resumed: bool, say: Callable
):
    """5. Remove checkpoint writes a kill cut short, pick the run folder (a resumed run keeps its own), open
    TensorBoard on the main process (returned; None elsewhere)."""
    if env.main:
        for stale in ckpt_dir.glob(".*.pt.*.tmp"):  # a checkpoint write cut short by a kill; the final files are whole
            stale.unlink(missing_ok=True)
    if env.main and progress.run_dir is None:
        progress.run_dir = str(next_run_dir(config.runs_dir, config.name))
    progress.run_dir = env.broadcast(progress.run_dir)
    if not env.main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(progress.run_dir, purge_step=progress.start_epoch * steps if resumed else None)
    say(f"checkpoints: {ckpt_dir}/  TensorBoard: {progress.run_dir}  ({plural(steps, 'step')} per epoch)")
    return writer


def _set_phase(
    model: ClipModel, net: torch.nn.Module, frozen: bool | None, want_frozen: bool, env: Dist
) -> tuple[torch.nn.Module, bool]:
    """Freeze or unfreeze the backbone when the epoch asks for the other state; under torchrun DDP is wrapped anew
    then, since it records which parameters train. -> (the module to train, frozen)."""
    if want_frozen == frozen:
        return net, frozen
    model.set_backbone_frozen(want_frozen)
    if env.world > 1:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=not model.every_parameter_trains
        )
    return net, want_frozen


def _train_epoch(
    net: torch.nn.Module,
    model: ClipModel,
    data: _Data,
    optim: _Optim,
    config: TrainConfig,
    env: Dist,
    epoch: int,
    writer,
) -> dict[str, float]:
    """6. One pass over this process's share of the training windows -> mean losses, averaged over processes."""
    model.train()
    data.sampler.set_epoch(epoch)
    data.train_set.set_epoch(epoch)
    sums: dict[str, float] = {}
    seen = 0
    bar = _bar(optim.steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", config.progress and env.main)
    for batch in data.train_loader:
        parts = _train_step(net, model, batch, optim, config, env.device)
        n = int(batch["label"].shape[0])
        seen += n
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * n
        if writer is not None:
            step = optim.scheduler.last_epoch
            writer.add_scalar("train/loss_step", parts["loss"], step)
            writer.add_scalar("train/lr", optim.optimizer.param_groups[0]["lr"], step)
        bar.set_postfix(loss=f"{parts['loss']:.3f}")
        bar.update()
    bar.close()
    return env.mean({f"train_{k}": v / max(seen, 1) for k, v in sums.items()})


def _train_step(
    net: torch.nn.Module, model: ClipModel, batch: dict, optim: _Optim, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """One optimizer step on a batch -> its loss terms."""
    x = model_input(batch["crops"], device)
    landmarks = batch["landmarks"].to(device, non_blocking=True)
    label, va = batch["label"].to(device), batch["va"].to(device)
    with torch.autocast(device.type, dtype=torch.float16, enabled=_amp(config, device)):
        out = net(x, landmarks, batch_signals(batch, device))
    loss, parts = compute_loss(out, label, va, config)
    optim.optimizer.zero_grad(set_to_none=True)
    optim.scaler.scale(loss).backward()
    if config.grad_clip > 0:
        optim.scaler.unscale_(optim.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optim.scaler.step(optim.optimizer)
    optim.scaler.update()
    optim.scheduler.step()
    return parts


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not enabled)


def _validate(model: ClipModel, data: _Data, env: Dist, amp: bool) -> dict[str, Any]:
    """7. Metrics of the validation windows, each process scoring its share; none without validation clips."""
    if not data.val_set.clips:
        return {}
    env.share_buffers(model)
    pred = predict(model, data.val_loader, env.device, amp)
    pred["item"] = np.asarray(list(iter(data.val_sampler)), np.int64)[: len(pred["clip"])]
    merged = merge_predictions(env.gather(pred))
    return summarize(merged, [c.record.label for c in data.val_set.clips])


def _save_checkpoints(
    ckpt_dir: Path,
    model: ClipModel,
    model_config: ClipConfig,
    config: TrainConfig,
    progress: Progress,
    optim: _Optim,
    record: dict[str, Any],
    best: bool,
) -> None:
    """9. best.pt when the epoch is the best one, last.pt always, with the whole training state to resume from."""
    extra = {
        "epoch": record["epoch"],
        "metrics": plain(record),
        "train_config": asdict(config),
        "monitor": progress.monitor,
        "affect": model.affect_source,  # 'learned' once valence/arousal labels have trained the affect residual
    }
    if best:
        save_checkpoint(ckpt_dir / "best.pt", model, model_config, extra)
    train_state = {**progress.state(), **optim.state_dict(), "rng": rng_state()}
    save_checkpoint(ckpt_dir / "last.pt", model, model_config, {**extra, "train_state": train_state})


def _report_epoch(
    writer,
    config: TrainConfig,
    progress: Progress,
    metrics: dict[str, Any],
    record: dict[str, Any],
    improved: bool,
    has_val: bool,
) -> None:
    """9. The epoch in TensorBoard and as one line, and why the run stops when patience ends it."""
    epoch, seconds = record["epoch"], record["seconds"]
    _log_epoch(writer, metrics, epoch, seconds)
    print(_epoch_line(epoch, config.epochs, metrics, progress.monitor, record["monitor"], seconds, improved))
    if progress.stopped_early:
        holds = "best.pt holds that epoch" if has_val else "best.pt holds the last epoch"
        print(
            f"stopped early at epoch {epoch} of {config.epochs}: {stall_text(progress.monitor, progress.bad_epochs)} "
            f"({best_text(progress.monitor, progress.best, progress.history)}); {holds}"
        )


def _log_epoch(writer, metrics: dict[str, Any], epoch: int, seconds: float) -> None:
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            writer.add_scalar(k.replace("train_", "train/") if k.startswith("train_") else f"val/{k}", v, epoch)
    writer.add_scalar("time/epoch_seconds", seconds, epoch)
    if "confusion" in metrics:
        image = confusion_image(metrics["confusion"], title=f"validation, epoch {epoch}")
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


def _finish(
    config: TrainConfig, env: Dist, progress: Progress, ckpt_dir: Path, val_set: ClipDataset, writer
) -> dict[str, Any]:
    """10. The run's summary; the main process evaluates best.pt on the validation clips and reports it."""
    best_path = ckpt_dir / "best.pt"
    result = {
        "best": str(best_path),
        "last": str(ckpt_dir / "last.pt"),
        "run_dir": progress.run_dir,
        "monitor": progress.monitor,
        "best_value": progress.best,
        "epochs": len(progress.history),
        "stopped_early": progress.stopped_early,
        "history": progress.history,
    }
    if env.main and val_set.clips and best_path.is_file():
        model, _, extra = load_checkpoint(best_path, env.device)
        metrics = score(model, val_set, config.batch_size, env.device)
        metrics["epoch"] = extra.get("epoch")
        run_dir = Path(progress.run_dir)
        title = f"{config.name}: best.pt on validation"
        path = write_report(metrics, run_dir / "val_metrics.json", run_dir / "confusion.png", title)
        print(f"best checkpoint {best_path} (epoch {metrics['epoch']}) on validation:")
        print("\n".join(metric_lines(metrics)))
        print(f"metrics: {path}")
        result["val"] = metrics
    if writer is not None:
        writer.close()
    return result
