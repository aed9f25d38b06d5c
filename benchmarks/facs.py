"""Issue 15: does a FACS blendshape prior improve the pretrained model? `python -m benchmarks.facs` prints the
table and writes benchmarks/facs.json.

Each class c gets evidence e_c in [0, 1] from the face's 52 blendshapes (EVIDENCE: the Ekman/Friesen EMFACS
prototypes' action units as ARKit blendshapes, fixed before any result was seen), and the rule adds it to the shipped
logits: logits_c += w_c * e_c. Two variants: one global weight (w_c = w for every class; neutral has no evidence),
and weights for disgust and surprise only, as the issue suggests. The weights are chosen by the dev-set UAR over
GRID, the smallest weight on ties, inside 5-fold stratified cross-validation repeated with 5 seeds; the held-out
predictions of each repeat are pooled. The full-set curve is for information only.

Decision rule, stated before running: a variant is adopted only if its held-out UAR (mean over the repeats) is at
least 0.02 above the shipped model's, its held-out accuracy is not below the shipped model's, and, with the weights
chosen on all dev photos, neither part of the Wolfgang clip (sad, happy) is shown as its emotion in more than 2
points fewer of its face frames.

Shipped logits are those of benchmarks/accuracy.py's shipped row (CHOSEN: mirror averaged in for photos, not for
the clip); blendshapes are the largest face's, from the same face stage run. The face stage and the network run
once and are cached in --cache.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.accuracy import CHOSEN, clip_faces, clip_shares, dev_faces, logits
from emotion.labels import LABELS
from emotion.signals import BLENDSHAPE_NAMES, FACS_EVIDENCE as EVIDENCE, emotion_evidence
from tests.support import ROOT

RESULTS = ROOT / "benchmarks" / "facs.json"
CACHE = Path("/tmp/emotion-facs-cache.npz")


GRID: tuple[float, ...] = tuple(float(w) for w in np.arange(0.0, 10.01, 0.25))
"""Weights tried (logit units per unit of evidence)."""

FOLDS, SEEDS = 5, (0, 1, 2, 3, 4)
MIN_UAR_GAIN, MAX_CLIP_DROP = 0.02, 0.02


def evidence(blendshapes: np.ndarray) -> np.ndarray:
    """(N, 7) per-class evidence of (N, 52) blendshape scores (emotion.signals.emotion_evidence)."""
    return emotion_evidence(blendshapes)


def features(cache: Path) -> dict[str, np.ndarray]:
    """Shipped logits and blendshapes of every dev photo's and clip frame's largest face (NaN without a face), and
    the dev labels; from `cache` when it exists."""
    if cache.exists():
        with np.load(cache) as data:
            return dict(data)
    from emotion.model import default_model
    from emotion.runtime import set_threads

    set_threads(1)
    model = default_model().eval()
    model.logit_adjustment.zero_()  # CHOSEN applies the prior, as in benchmarks/accuracy.py
    dev = dev_faces()
    out = {"truth": np.array([label for *_, label in dev])}
    for name, items, variant in (
        ("dev", [(image, face) for image, face, _ in dev], CHOSEN),
        ("clip", clip_faces(), replace(CHOSEN, flip=False)),
    ):
        found = [i for i, (_, face) in enumerate(items) if face is not None]
        out[f"{name}_logits"] = np.full((len(items), len(LABELS)), np.nan)
        out[f"{name}_logits"][found] = logits(model, [items[i] for i in found], variant)
        out[f"{name}_blendshapes"] = np.full((len(items), len(BLENDSHAPE_NAMES)), np.nan)
        out[f"{name}_blendshapes"][found] = [items[i][1].signals.blendshapes for i in found]
    np.savez(cache, **out)
    return out


def predict(logits_: np.ndarray, evidence_: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(C, N) decisions for (C, 7) candidate weights; -1 without a face."""
    scores = logits_[None] + weights[:, None, :] * evidence_[None]
    return np.where(np.isnan(logits_[:, 0]), -1, np.nan_to_num(scores, nan=-np.inf).argmax(2))


def uar(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(C,) mean recall over the classes present in `truth` of (C, N) decisions."""
    return np.mean([(pred[:, truth == c] == c).mean(1) for c in np.unique(truth)], axis=0)


def choose(truth: np.ndarray, pred: np.ndarray) -> int:
    """Index of the candidate with the best UAR, the first (smallest weights) on ties."""
    return int(np.argmax(uar(truth, pred)))


def stratified_folds(truth: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per item: each class shuffled and dealt round the folds, continuing where the last class ended."""
    rng = np.random.default_rng(seed)
    fold, start = np.empty(len(truth), int), 0
    for c in np.unique(truth):
        idx = rng.permutation(np.flatnonzero(truth == c))
        fold[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return fold


def scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    from emotion.training.metrics import classification_metrics

    m = classification_metrics(truth, pred, none="none")
    recall = {k: v["recall"] for k, v in m["per_class"].items() if v["support"]}
    return {"accuracy": m["accuracy"], "uar": m["uar"], "recall": recall}


def candidates(variant: str) -> np.ndarray:
    """(C, 7) weight vectors of a variant, smallest first (ties go to the first)."""
    if variant == "global":
        return np.array([np.full(len(LABELS), w) for w in GRID])
    d, s = LABELS.index("disgust"), LABELS.index("surprise")
    pairs = sorted(((wd, ws) for wd in GRID for ws in GRID), key=lambda p: (p[0] + p[1], p))
    out = np.zeros((len(pairs), len(LABELS)))
    out[:, d], out[:, s] = np.array(pairs).T
    return out


def cross_validate(truth, logits_, evidence_, weights) -> dict:
    """Held-out scores per seed (pooled over its folds), their mean, and the weights each fold chose; with the
    photos each repeat's held-out decisions fixed and broke against the shipped model's (information)."""
    pred_all = predict(logits_, evidence_, weights)
    shipped_right = predict(logits_, evidence_, np.zeros((1, len(LABELS))))[0] == truth
    repeats, chosen = [], []
    for seed in SEEDS:
        fold, held_out = stratified_folds(truth, FOLDS, seed), np.empty(len(truth), int)
        for f in range(FOLDS):
            train = fold != f
            pick = choose(truth[train], pred_all[:, train])
            held_out[~train] = pred_all[pick, ~train]
            chosen.append(weights[pick])
        right = held_out == truth
        fixes = {"fixed": int((right & ~shipped_right).sum()), "broken": int((~right & shipped_right).sum())}
        repeats.append(scores(truth, held_out) | fixes)
    mean = {
        key: float(np.mean([r[key] for r in repeats])) for key in ("accuracy", "uar")
    } | {"recall": {k: float(np.mean([r["recall"][k] for r in repeats])) for k in repeats[0]["recall"]}}
    mean |= {key: float(np.mean([r[key] for r in repeats])) for key in ("fixed", "broken")}
    spread = {key: float(np.std([r[key] for r in repeats])) for key in ("accuracy", "uar")}
    return {"mean": mean, "sd": spread, "repeats": repeats, "chosen": np.array(chosen)}


def weight_dict(w: np.ndarray) -> dict[str, float]:
    return {label: float(v) for label, v in zip(LABELS, w) if v and EVIDENCE[label]}


def describe(w: np.ndarray) -> str:
    """'w 1.25' for one weight on every class with evidence, else each class's nonzero weight."""
    weights = weight_dict(w)
    if len(weights) == sum(map(bool, EVIDENCE.values())) and len(set(weights.values())) == 1:
        return f"w {w.max():g}"
    return ", ".join(f"{k} {v:g}" for k, v in weights.items()) or "none"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--cache", type=Path, default=CACHE, help="face stage and network outputs, reused when present")
    args = p.parse_args()
    data = features(args.cache)
    truth, dev_logits = data["truth"], data["dev_logits"]
    dev_evidence = np.nan_to_num(evidence(data["dev_blendshapes"]))
    clip_found = np.flatnonzero(~np.isnan(data["clip_logits"][:, 0]))
    clip_logits = data["clip_logits"][clip_found]
    clip_evidence = evidence(data["clip_blendshapes"][clip_found])

    def clip(w: np.ndarray) -> dict[str, float]:
        return clip_shares(list(clip_found), clip_logits + w * clip_evidence)

    zero = np.zeros(len(LABELS))
    shipped = scores(truth, predict(dev_logits, dev_evidence, zero[None])[0]) | {"wolfgang": clip(zero)}
    present = sorted(set(truth.tolist()))
    mean_evidence = {
        LABELS[c]: {label: round(float(v), 3) for label, v in zip(LABELS, dev_evidence[truth == c].mean(0))}
        for c in present
    }
    print(f"dev photos {len(truth)}, with a face {int((~np.isnan(dev_logits[:, 0])).sum())}; "
          f"clip frames {len(data['clip_logits'])}, with a face {len(clip_found)}")
    print("mean evidence (rows: true class, columns: evidence of)")
    for label, row in mean_evidence.items():
        print(f"  {label:<9}" + " ".join(f"{k[:4]} {v:.3f}" for k, v in row.items()))

    def line(name: str, s: dict, sd: dict | None = None) -> str:
        plus = "" if sd is None else f" (sd {sd['accuracy']:.3f}/{sd['uar']:.3f})"
        recall = " ".join(f"{k[:4]} {v:.2f}" for k, v in s["recall"].items())
        shares = s.get("wolfgang")
        clip_ = "" if shares is None else f" | clip sad {shares['sad']:.3f} happy {shares['happy']:.3f}"
        return f"{name:<34} acc {s['accuracy']:.3f} UAR {s['uar']:.3f}{plus} | {recall}{clip_}"

    print(line("shipped (w = 0)", shipped))
    variants = {}
    for variant in ("global", "disgust+surprise"):
        weights = candidates(variant)
        pred_all = predict(dev_logits, dev_evidence, weights)
        cv = cross_validate(truth, dev_logits, dev_evidence, weights)
        final = weights[choose(truth, pred_all)]
        full = scores(truth, pred_all[choose(truth, pred_all)]) | {"wolfgang": clip(final)}
        gain = cv["mean"]["uar"] - shipped["uar"]
        adopt = bool(
            gain >= MIN_UAR_GAIN
            and cv["mean"]["accuracy"] >= shipped["accuracy"]
            and all(full["wolfgang"][k] >= shipped["wolfgang"][k] - MAX_CLIP_DROP for k in shipped["wolfgang"])
        )
        picks = [weight_dict(w) for w in cv["chosen"]]
        counts = Counter(map(describe, cv["chosen"]))
        print(line(f"{variant}: held-out (CV)", cv["mean"], cv["sd"]))
        print(line(f"{variant}: full set, {describe(final)}", full))
        print(f"  weights the {len(picks)} folds chose: {dict(counts.most_common())}")
        print(f"  held-out, mean of repeats: {cv['mean']['fixed']:.1f} photos fixed, {cv['mean']['broken']:.1f} "
              f"broken; UAR gain {gain:+.4f}; adopted: {adopt}")
        variants[variant] = {
            "held_out": cv["mean"], "held_out_sd": cv["sd"], "repeats": cv["repeats"], "fold_picks": picks,
            "full_set_pick": weight_dict(final), "full_set": full, "uar_gain": gain, "adopted": adopt,
        }  # fmt: skip
    curve = []
    for w, pred in zip(GRID, predict(dev_logits, dev_evidence, candidates("global"))):
        row = {"w": w, **scores(truth, pred), "wolfgang": clip(np.full(len(LABELS), w))}
        curve.append(row)
    print("full-set curve, global w (information only):")
    for row in curve[::2]:
        print("  " + line(f"w = {row['w']:.2f}", row))
    args.output.write_text(
        json.dumps(
            {
                "evidence": {k: [list(u) for u in v] for k, v in EVIDENCE.items()},
                "grid": list(GRID), "folds": FOLDS, "seeds": list(SEEDS),
                "rule": {"min_uar_gain": MIN_UAR_GAIN, "accuracy_may_not_drop": True, "max_clip_drop": MAX_CLIP_DROP},
                "shipped": shipped, "mean_evidence": mean_evidence, "variants": variants, "global_curve": curve,
            },
            indent=1,
        )  # fmt: skip
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
