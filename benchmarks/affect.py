"""What trained models report as valence and arousal, on synthetic cached clips: `python -m benchmarks.affect`.

Each run fine-tunes the pretrained model (frame CNN frozen unless --no-freeze) on 3 classes x 8 clips of 16 frames
whose valence/arousal labels are the opposite of their classes' circumplex points, so the circumplex prior alone is
as wrong as it can be, and reports on the 6 validation clips:
- `affwild`: Aff-Wild2 style, valence/arousal only: validation CCC, mean |valence/arousal - label| and the largest
  change of a category probability against the pretrained model it started from (nothing trains the categories);
- `categories`: the same clips as a CSV manifest with categories, `--va-weight 0`: mean |valence/arousal - the
  circumplex of the reported probabilities| (0: valence/arousal agree with the categories the model reports).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from emotion.labels import circumplex_matrix
from emotion.model import create_model, load_checkpoint
from emotion.training.cache import preprocess
from emotion.training.clips import ClipDataset
from emotion.training.datasets import load_dataset
from emotion.training.scoring import model_input
from emotion.training.synthetic import make_synthetic_dataset
from emotion.training.train import TrainConfig, run


def measure(layout: str, seed: int, epochs: int, freeze: bool, workdir: Path) -> dict[str, float]:
    """Train one run (`affwild`: valence/arousal only; `categories`: categories only) and score its best.pt."""
    tmp = workdir / f"{layout}-{seed}"
    data = make_synthetic_dataset(
        tmp / "data", tmp / "cache", 8, frames=16, affect="opposite", layout="csv" if layout == "categories" else layout
    )
    config = TrainConfig(data=str(data), cache_dir=str(tmp / "cache"), models_dir=str(tmp / "models"),
                         runs_dir=str(tmp / "runs"), name="affect", epochs=epochs, batch_size=8, lr=3e-3,
                         warmup_epochs=0.5, threads=1, progress=False, patience=0, seed=seed,
                         freeze_backbone_epochs=epochs if freeze else 0, signal_stream=False,
                         va_weight=0.0 if layout == "categories" else 1.0)  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(config)
    model, model_config, extra = load_checkpoint(result["best"])
    start = create_model(model_config, pretrained=True).eval()  # what the run fine-tuned
    clips = preprocess(load_dataset(data).records, tmp / "cache", progress=False)[0]
    val = ClipDataset([c for c in clips if c.record.split == "val"], 16, windows=1)
    batch = next(iter(torch.utils.data.DataLoader(val, batch_size=len(val))))
    x = model_input(batch["crops"], torch.device("cpu"))
    with torch.inference_mode():
        out, pretrained = model(x, batch["landmarks"]), start(x, batch["landmarks"])
    probs = torch.softmax(out["logits"], -1)
    va = torch.stack([out["valence"], out["arousal"]], -1)
    last = result["history"][-1]
    return {
        "affect": extra.get("affect", "-"),  # "-": written before checkpoints recorded it
        "ccc_valence": last.get("ccc_valence", float("nan")) if layout == "affwild" else float("nan"),
        "ccc_arousal": last.get("ccc_arousal", float("nan")) if layout == "affwild" else float("nan"),
        "label_error": float((va - batch["va"]).abs().mean()),
        "circumplex_gap": float((va - probs @ torch.tensor(circumplex_matrix())).abs().mean()),
        "category_drift": float((probs - torch.softmax(pretrained["logits"], -1)).abs().max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--no-freeze", action="store_true", help="train the frame CNN too")
    a = p.parse_args()
    print("run         seed  affect      CCC-V  CCC-A  |va-label|  |va-circumplex(probs)|  category drift")
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("affwild", "categories"):
            rows = [measure(layout, seed, a.epochs, not a.no_freeze, Path(tmp)) for seed in a.seeds]
            means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "affect"}
            for seed, r in [*zip(a.seeds, rows), ("mean", {**means, "affect": ""})]:
                print(f"{layout:11s} {seed:>4}  {r['affect']:10s}  {_numbers(r)}")


def _numbers(r: dict) -> str:
    """One row's figures in the columns of the header."""
    return (f"{r['ccc_valence']:5.3f}  {r['ccc_arousal']:5.3f}  {r['label_error']:10.3f}  "
            f"{r['circumplex_gap']:22.3f}  {r['category_drift']:14.3f}")  # fmt: skip

if __name__ == "__main__":
    main()
