"""Recognition quality of the pretrained model under each lever of issue 14: `python -m benchmarks.accuracy` prints
one row per variant (dev-set accuracy, UAR, per-class recall; Wolfgang clip per-segment accuracy) and writes
benchmarks/accuracy.json.

The face stage runs once (dev photos in image mode, the clip in video mode); every variant then only re-crops and
re-runs the FER2013 frame network, so the rows differ by the lever alone. Dev set: ../shared/data/faces/ (259
labelled photos). Clip: WolfgangLanger_Pexels.mp4, sad in frames 0-190, happy in 265-471 (shared data README).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from emotion.labels import FER2013_TRAIN_COUNTS, LABELS
from tests.support import ROOT, SHARED, read_frames

RESULTS = ROOT / "benchmarks" / "accuracy.json"
WOLFGANG = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"
SEGMENTS = {"sad": range(0, 191), "happy": range(265, 472)}


@dataclass(frozen=True)
class Variant:
    """One way of turning a face into the network's input and its logits into a decision."""

    name: str
    framing: str = "brows"  # "brows": brows to chin, cheek to cheek (FER2013 style); "mesh": all 468 landmarks
    rotate: bool = True  # eyes level
    margin: float = 0.1  # fraction of the square's side added
    flip: bool = False  # average the logits of the crop and its mirror image
    scales: tuple[float, ...] = ()  # extra margins whose logits are averaged in
    prior: float = 0.0  # logit adjustment: minus this times log(FER2013 training prior)


def largest(faces):
    """The face with the largest box, or None."""
    return max(faces, key=lambda f: f.box[2] * f.box[3], default=None)


def dev_faces():
    """(image, its largest Face or None, label index) for every dev photo."""
    from emotion.face import FaceAnalyzer, FaceConfig
    from emotion.io.files import read_image

    out = []
    with FaceAnalyzer(FaceConfig(), static=True) as analyzer:
        for path in sorted(p for p in (SHARED / "faces").rglob("*") if p.suffix.lower() in {".jpg", ".png"}):
            image = read_image(path)
            out.append((image, largest(analyzer(image)), LABELS.index(path.parent.name)))
    return out


def clip_faces():
    """(frame, its largest Face or None) for every frame of the Wolfgang clip, video mode."""
    from emotion.face import FaceAnalyzer, FaceConfig

    out = []
    with FaceAnalyzer(FaceConfig()) as analyzer:
        for frame in read_frames(WOLFGANG):
            out.append((frame, largest(analyzer(frame))))
    return out


def logits(model, items, variant: Variant) -> np.ndarray:
    """(N, 7) frame-network logits of the variant for (image, Face) items."""
    from emotion.align import align_crop
    from emotion.model import crops_to_tensor

    def crops(margin):
        return np.stack(
            [
                align_crop(img, face.landmarks, 64, margin, framing=variant.framing, rotate=variant.rotate)
                for img, face in items
            ]
        )

    views = [crops(variant.margin)] + [crops(m) for m in variant.scales]
    if variant.flip:
        views += [v[:, :, ::-1] for v in views]
    with torch.no_grad():
        out = [model.backbone(crops_to_tensor(np.ascontiguousarray(v), model.backbone.pretrained_cfg)) for v in views]
    mean = torch.stack(out).mean(0).numpy()
    counts = np.asarray(FER2013_TRAIN_COUNTS, np.float64)
    return mean - variant.prior * np.log(counts / counts.sum())


def evaluate(model, dev, clip, variant: Variant) -> dict:
    from emotion.training.metrics import classification_metrics

    found = [(img, f) for img, f, _ in dev if f is not None]
    pred = np.full(len(dev), -1)
    pred[[i for i, (_, f, _) in enumerate(dev) if f is not None]] = logits(model, found, variant).argmax(1)
    truth = np.array([label for *_, label in dev])
    m = classification_metrics(truth, pred)
    with_face = [i for i, (_, f) in enumerate(clip) if f is not None]
    segments = clip_shares(with_face, logits(model, [clip[i] for i in with_face], variant))
    recall = {k: round(v["recall"], 3) for k, v in m["per_class"].items() if v["support"]}
    return {"accuracy": m["accuracy"], "uar": m["uar"], "recall": recall, "wolfgang": segments}


def clip_shares(with_face: list[int], clip_logits: np.ndarray) -> dict[str, float]:
    """Segment shares of the Wolfgang clip when frames `with_face` have these logits, shown as the app shows them:
    softmax, then the default smoothing."""
    from emotion.smoothing import Smoother, SmoothingConfig

    probs = np.exp(clip_logits - clip_logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    smoother = Smoother(SmoothingConfig())
    return segment_shares({i: LABELS[int(np.argmax(smoother(0, p)))] for i, p in zip(with_face, probs)})


def segment_shares(shown: dict[int, str]) -> dict[str, float]:
    """Share of the face frames of each Wolfgang segment shown as that segment's emotion."""
    return {
        name: sum(shown.get(i) == name for i in frames) / max(1, sum(i in shown for i in frames))
        for name, frames in SEGMENTS.items()
    }


TODAY = Variant("eye-level brows-to-chin crop, margin 0.1 (before)")
CHOSEN = Variant("unrotated, margin 0.2, prior 0.75, mirror (stills)", rotate=False, margin=0.2, prior=0.75, flip=True)
VARIANTS = [
    TODAY,
    *[Variant(f"eye-level brows-to-chin, margin {m}", margin=m) for m in (0.0, 0.2, 0.3)],
    *[Variant(f"unrotated brows-to-chin, margin {m}", rotate=False, margin=m) for m in (0.1, 0.2)],
    *[Variant(f"unrotated landmark box, margin {m}", framing="mesh", rotate=False, margin=m) for m in (0.0, 0.2)],
    *[Variant(f"eye-level landmark box, margin {m}", framing="mesh", margin=m) for m in (0.0, 0.2)],
    Variant("eye-level brows-to-chin, margin 0.1, mirror", flip=True),
    Variant("eye-level brows-to-chin, margins 0.1 + 0.3, mirror", flip=True, scales=(0.3,)),
    *[Variant(f"unrotated, margin 0.2, prior {t}", rotate=False, margin=0.2, prior=t) for t in (0.5, 0.75, 1.0)],
    *[Variant(f"unrotated, margin 0.1, prior {t}, mirror", rotate=False, prior=t, flip=True) for t in (0.5, 1.0)],
    CHOSEN,
]
"""The rows of README's "How accurate is it"; the clip figures of a mirrored row are of its unmirrored twin, since
the mirror image is averaged in for still images only."""


def baseline_rows(model, clip) -> list[dict]:
    """The per-person neutral baseline lever on the clip: each frame's logits minus `alpha` times the track's slowly
    updated mean logits (EMA over `span` frames, centred), on the chosen crop and prior."""
    from emotion.smoothing import Smoother, SmoothingConfig

    with_face = [i for i, (_, f) in enumerate(clip) if f is not None]
    raw = logits(model, [clip[i] for i in with_face], replace(CHOSEN, flip=False))
    rows = []
    for alpha, span in ((0.25, 100), (0.25, 300), (0.5, 100), (1.0, 100)):
        base, smoother, shown = None, Smoother(SmoothingConfig()), {}
        for i, z in zip(with_face, raw):
            base = z.copy() if base is None else base + (z - base) * (2 / (span + 1))
            adjusted = z - alpha * (base - base.mean())
            p = np.exp(adjusted - adjusted.max())
            shown[i] = LABELS[int(np.argmax(smoother(0, p / p.sum())))]
        rows.append({"alpha": alpha, "span": span, "wolfgang": segment_shares(shown)})
    return rows


def model_ms(repeats: int = 3) -> dict[str, float]:
    """Model cost per face of the recognizer on the dev photos: one view (video, and stills before) and with the
    mirror image averaged in (stills now), ms, median of `repeats` passes over 100 faces."""
    import time

    from emotion.face import FaceAnalyzer
    from emotion.io.files import read_image
    from emotion.recognizer import EmotionRecognizer

    paths = sorted(p for p in (SHARED / "faces").rglob("*.jpg"))[:100]
    with EmotionRecognizer() as rec, FaceAnalyzer(static=True) as analyzer:
        items = [(image, analyzer(image)[:1]) for image in map(read_image, paths)]
        out = {}
        for name, views in (("one view", (False,)), ("with mirror", (False, True))):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for image, faces in items:
                    for mirrored in views:
                        rec._infer(image, faces, rec.streamer.init_state(), mirrored=mirrored)
                times.append((time.perf_counter() - t0) * 1000 / len(items))
            out[name] = float(np.median(times))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()
    from emotion.model import default_model
    from emotion.runtime import set_threads

    set_threads(1)
    model = default_model().eval()
    model.logit_adjustment.zero_()  # the variants apply their own prior
    dev, clip = dev_faces(), clip_faces()
    rows = []
    for variant in VARIANTS:
        row = {"variant": asdict(variant), **evaluate(model, dev, clip, replace(variant, flip=False))}
        if variant.flip:
            row.update({k: v for k, v in evaluate(model, dev, clip, variant).items() if k != "wolfgang"})
        rows.append(row)
        w = row["wolfgang"]
        print(f"{variant.name:<55} acc {row['accuracy']:.3f} UAR {row['uar']:.3f} sad {w['sad']:.2f} "
              f"happy {w['happy']:.2f} {row['recall']}", flush=True)
    baseline = baseline_rows(model, clip)
    for row in baseline:
        print(f"per-person baseline alpha {row['alpha']} span {row['span']}: {row['wolfgang']}", flush=True)
    cost = model_ms()
    print(f"model ms per face: {cost}")
    args.output.write_text(json.dumps({"rows": rows, "baseline": baseline, "model_ms": cost}, indent=1) + "\n",
                           encoding="utf-8")


if __name__ == "__main__":
    main()
