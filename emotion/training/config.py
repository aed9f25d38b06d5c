"""Settings of `main.py --train` and `--evaluate`: frozen dataclasses whose fields declare their command-line flags
(emotion.configargs), so defaults, help and validation live here only. Torch-free, so building the parser is cheap."""

from __future__ import annotations

from dataclasses import dataclass

from emotion.configargs import ConfigError, check_min, option
from emotion.training.datasets import FORMATS, LAYOUTS
from emotion.training.splits import VAL_SPLIT

DEFAULT_EPOCHS, DEFAULT_PATIENCE, DEFAULT_SEED = 30, 10, 0
ARCHS = (
    "stnet",
    "c3d2",
    "c3d_convlstm_spp",
    "cnn_ae_lstm",
    "cnn_lstm_attn",
    "r2plus1d",
    "thcnn",
    "timesformer",
    "tsm",
    "vivit",
)
"""Names of emotion.model's registered architectures (emotion.model.list_archs(); a test keeps the two equal), here
so the parser is built without importing torch."""
MONITORS = ("auto", "uar", "accuracy", "macro_f1", "ccc", "loss")


@dataclass(frozen=True)
class DataConfig:
    """What training and evaluation share: the dataset, its cache and validation split, batches, where it runs."""

    data: str = option(
        "dataset folder (clips, or for --evaluate photos) or CSV manifest (layouts: see README)", metavar="PATH"
    )
    format: str = option(
        "layout of a clip dataset", "auto", choices=FORMATS, default_text="auto, guessed from the file names"
    )
    cache_dir: str = option("face-stage cache, one .npz per clip", "~/.cache/emotion/clips", metavar="DIR")
    workers: int = option("face-stage processes for preprocessing", 1, metavar="N")
    batch_size: int = option("clips per step and process (--evaluate: windows per forward pass)", 16, metavar="N")
    val_split: float | None = option(
        "fraction of subjects (or clips per class) held out for validation when the data fixes no split",
        None,
        metavar="X",
        default_text=f"{VAL_SPLIT}; --evaluate: the checkpoint's",
    )
    seed: int | None = option(
        "seed of the split, sampling and augmentation",
        None,
        metavar="N",
        default_text=f"{DEFAULT_SEED}; --evaluate: the checkpoint's",
    )
    weights: str | None = option("checkpoint to fine-tune (--train) or to score (--evaluate)", None, metavar="PATH")
    runs_dir: str = option("TensorBoard and evaluation output folder", "runs", metavar="DIR")
    device: str = option("auto (CUDA if available), cpu or cuda", "auto")
    threads: int = option(
        "PyTorch CPU threads per process; 0: one per core and process (--evaluate of photos: 1)", 0, metavar="N"
    )
    progress: bool = option("hide the progress bars", True)

    def __post_init__(self) -> None:
        check_min(self, 1, "workers", "batch_size")
        check_min(self, 0, "threads")
        if self.val_split is not None and not 0 <= self.val_split < 1:
            raise ConfigError("{} must be in [0, 1)", "val_split")


@dataclass(frozen=True)
class TrainConfig(DataConfig):
    """Everything that defines a training run; stored in its checkpoints (plain values only)."""

    name: str = option("--train: run name: models/NAME/{best,last}.pt, runs/NAME-N", "emotion")
    epochs: int | None = option(
        "--train: epochs in total",
        None,
        metavar="N",
        default_text=f"{DEFAULT_EPOCHS}; with --resume: the run's own total",
    )
    lr: float = option("--train: peak AdamW learning rate", 3e-4, metavar="X")
    weight_decay: float = option("--train: AdamW weight decay (not on biases and norms)", 0.05, metavar="X")
    warmup_epochs: float = option("--train: linear warm-up from 0 to --lr before cosine decay", 1.0, metavar="X")
    min_lr_ratio: float = 0.01  # final learning rate as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    label_smoothing: float = option("--train: cross-entropy label smoothing in [0, 1)", 0.1, metavar="X")
    class_weight: float = 1.0  # weight of the category loss
    va_weight: float = option("--train: weight of the valence/arousal CCC loss", 1.0, metavar="X")
    balanced: bool = option("--train: class-balanced sampling (with replacement) instead of shuffling", False)
    patience: int | None = option(
        "--train: stop early, saying so, after N epochs without a better validation UAR (CCC without categories); "
        "0 never",
        None,
        metavar="N",
        default_text=f"{DEFAULT_PATIENCE}; with --resume: the run's own",
    )
    monitor: str = "auto"  # validation metric for best/early stopping: auto (uar, or ccc without categories)
    arch: str | None = option(
        "--train: architecture of a new model (README 'Model zoo'): stnet, the causal attention network over crops, "
        "landmarks and face signals; or one of the zoo's, over crops only, trained with the same data, loop and "
        "checkpoints: thcnn, cnn_ae_lstm, cnn_lstm_attn and tsm start from the pretrained FER2013 CNN, the others "
        "from scratch. Every checkpoint names its architecture, so --video, --realtime, --evaluate and --export take "
        "any with --weights; a zoo model runs over each face's last 16 frames and reports the newest",
        None,
        choices=ARCHS,
        default_text="stnet; with --weights or --resume: the checkpoint's",
    )
    arch_options: tuple[str, ...] = option(
        "--train: fields of a new model's architecture config, KEY=VALUE (a list as comma-separated numbers), "
        "e.g. --arch r2plus1d --arch-option widths=64,128,256,512,blocks=2,2,2,2,stem_pool=false (r2plus1d_18's "
        "layout) or --arch tsm --arch-option causal_shift=true; README 'Model zoo' lists them",
        (),
        name="--arch-option",
        metavar="KEY=VALUE",
    )
    from_scratch: bool = option("--train: random initial weights instead of the pretrained FER2013 CNN", False)
    backbone: str = option(
        "--train: frame CNN of a new stnet, thcnn, cnn_ae_lstm, cnn_lstm_attn or tsm: mini_xception or wide_cnn",
        "mini_xception",
    )
    crop_size: int = option("--train: crop side of a new model (mini_xception needs 64)", 64, metavar="PX")
    in_chans: int = option("--train: 1 gray or 3 colour crops of a new model", 1, choices=(1, 3))
    freeze_backbone_epochs: int = option(
        "--train: keep the frame CNN fixed (its BatchNorm too) for the first N epochs", 0, metavar="N"
    )
    resume: str | None = option(
        "--train: continue a run exactly where it stopped (default file: models/NAME/last.pt); a run that did all its "
        "epochs goes on with a larger --epochs, one stopped early with a larger --patience (or 0)",
        None,
        metavar="LAST_PT",
        const="auto",
    )
    models_dir: str = option("--train: checkpoint folder", "models", metavar="DIR")
    loader_workers: int = option("--train: DataLoader processes (one thread each)", 0, metavar="N")
    amp: bool = True  # mixed precision (float16 autocast, gradient scaling) on CUDA; ignored on the CPU
    augment: bool = option("--train: no flip/affine/brightness/landmark-jitter augmentation", True)
    signal_stream: bool = option(
        "--train: an stnet without the face-signal stream (52 blendshapes, head pose and gaze per frame beside the "
        "landmarks; README 'Training and evaluation'); by default a new stnet has it and a --weights stnet "
        "checkpoint without one gains it; the zoo's architectures read crops only",
        True,
    )
    eval_windows: int = 4  # validation windows per clip, averaged into one prediction

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, 1, "epochs")
        check_min(self, 0, "patience", "loader_workers", "freeze_backbone_epochs")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("{} must be in [0, 1)", "label_smoothing")
        if self.lr <= 0:
            raise ConfigError("{} must be positive", "lr")
        if self.monitor not in MONITORS:
            raise ConfigError(f"{{}} must be one of {', '.join(MONITORS)}", "monitor")
        if self.from_scratch and self.weights:
            raise ConfigError(
                "{} and {} exclude each other ({} fine-tunes that checkpoint)", "from_scratch", "weights", "weights"
            )


@dataclass(frozen=True)
class EvalConfig(DataConfig):
    """Settings of `main.py --evaluate`; seed and val_split None: the checkpoint's training run's."""

    split: str = option(
        "--evaluate: which clips (val = as held out in training) or photos (those in <split>/<label>/ folders)",
        "all",
        name="--eval-split",
        choices=("all", "train", "val", "test"),
    )
    output: str | None = option(
        "--evaluate: folder for metrics.json and confusion.png", None, metavar="PATH", default_text="runs/evaluate-N"
    )
    json: str | None = option("--evaluate: metrics JSON path instead of <output>/metrics.json", None, metavar="PATH")
    layout: str = option(
        "--evaluate: what --data holds: photos (DIR/<label>/*.jpg, each image scored on its own by its largest face), "
        "clips (videos, frame folders or a manifest, read as --format says) or auto (decided from what the folders "
        "hold: images directly in label folders and nothing else are photos)",
        "auto",
        choices=LAYOUTS,
    )
    windows: int = 4  # evaluation windows per clip, averaged into one prediction

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, 1, "windows")
        if self.layout == "photos" and self.format != "auto":
            raise ConfigError("{} photos takes no {}: it names a layout of clips (leave it out)", "layout", "format")
