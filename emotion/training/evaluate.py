"""`main.py --evaluate`: a checkpoint (or the pretrained model) scored on labelled data, either clips (dataset ->
face-stage cache -> clip windows) or photos (each image through EmotionRecognizer.predict_image, its largest face):
accuracy, UAR, macro F1, per-category recall, confusion matrix (printed and PNG), valence/arousal CCC of clips,
JSON."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from emotion.device import resolve_device
from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.results import FrameResult
from emotion.text import plural
from emotion.training.cache import PrepConfig, preprocess
from emotion.training.clips import ClipDataset
from emotion.training.config import DEFAULT_SEED, EvalConfig
from emotion.training.datasets import ClipRecord, detect_layout, load_dataset, scan_photos
from emotion.training.metrics import classification_metrics, metric_lines
from emotion.training.scoring import next_run_dir, score, write_report
from emotion.training.splits import VAL_SPLIT, assign_splits

__all__ = ["EvalConfig", "resolve_layout", "run"]

NO_FACE = "none"
"""The confusion matrix's last column in the photos layout: images where no face was found."""

LISTED = 20
"""Photos without a face named on the terminal (all of them are in the JSON)."""


def resolve_layout(config: EvalConfig) -> str:
    """'photos' or 'clips': config.layout, or for 'auto' clips when a clip --format is named, else what the folders
    hold (emotion.training.datasets.detect_layout; an empty or ambiguous folder raises EmotionError)."""
    if config.layout != "auto":
        return config.layout
    return "clips" if config.format != "auto" else detect_layout(config.data)


def run(config: EvalConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset: prints the metrics and confusion matrix, writes JSON and a PNG."""
    layout = resolve_layout(config)
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":  # photos run the recognizer, as --image does: one thread is fastest there (README)
        torch.set_num_threads(config.threads or (1 if layout == "photos" else os.cpu_count() or 1))
    try:
        return _evaluate_photos(config) if layout == "photos" else _evaluate(config, device)
    finally:
        torch.set_num_threads(threads)


def _evaluate(config: EvalConfig, device: torch.device) -> dict[str, Any]:
    from emotion.model import default_model, load_checkpoint

    if config.weights:
        model, model_config, extra = load_checkpoint(config.weights, device)
    else:
        model, extra = default_model(device), {}
        model_config = model.config
    trained = extra.get("train_config", {}) if isinstance(extra, dict) else {}
    val_split = config.val_split if config.val_split is not None else float(trained.get("val_split", VAL_SPLIT))
    seed = config.seed if config.seed is not None else int(trained.get("seed", DEFAULT_SEED))
    scan = load_dataset(config.data, config.format)
    records = assign_splits(scan.records, val_split, seed)
    if config.split != "all":
        records = [r for r in records if r.split == config.split]
        if not records:
            raise ValueError(f"no clips in split '{config.split}' of {config.data}")
    prep = PrepConfig.of_model(model_config)
    clips, prep_summary = preprocess(
        records, Path(config.cache_dir).expanduser(), prep, config.workers, config.progress
    )
    print("\n".join(prep_summary.lines()))
    if not clips:
        raise ValueError("no clip with a face to evaluate")
    metrics = score(model, ClipDataset(clips, model_config.window, windows=config.windows), config.batch_size, device)
    result: dict[str, Any] = {
        **_run_facts(config, "clips", scan.format),
        "skipped": prep_summary.no_face + prep_summary.unreadable + len(scan.skipped),
        **metrics,
    }
    return _report(config, result, "clips")


def _evaluate_photos(config: EvalConfig) -> dict[str, Any]:
    """Each labelled photo through the public API in image mode; the largest face is the prediction, and a photo
    without a face counts as wrong (the 'none' column) and is listed."""
    from tqdm import tqdm

    from emotion.io.files import read_image
    from emotion.recognizer import EmotionRecognizer

    scan = scan_photos(config.data)
    records = [r for r in scan.records if config.split in ("all", r.split)]
    if not records:
        raise EmotionError(
            f"no photos in split '{config.split}' of {config.data}: photos have a split only in <split>/<label>/ "
            "folders (train, val, test)",
            fix="pass split='all'",
            cli_fix="pass --eval-split all",
        )
    folders = len({Path(r.source).parent for r in records})
    print(f"{plural(len(records), 'photo')} in {plural(folders, 'label folder')} of {config.data}")
    start = time.perf_counter()
    predictions, skipped = [], [{"path": path, "reason": why} for path, why in scan.skipped]
    with EmotionRecognizer(config.weights, device=config.device, threads=config.threads or 1) as recognizer:
        for record in tqdm(records, unit="image", desc="photos", disable=not config.progress):
            try:
                image = read_image(record.source)
            except EmotionError as exc:
                skipped.append({"path": record.source, "reason": exc.problem})
                continue
            predictions.append(_prediction(record, recognizer.predict_image(image)))
    seconds = time.perf_counter() - start
    if not predictions:
        raise EmotionError(f"none of the {plural(len(records), 'photo')} in {config.data} could be read",
                           fix="check that they are images OpenCV decodes")  # fmt: skip
    index = {name: i for i, name in enumerate(LABELS)}
    metrics = classification_metrics(
        [index[p["label"]] for p in predictions],
        [index.get(p["predicted"], -1) for p in predictions],
        unit="images",
        none=NO_FACE,
    )
    no_face = [p["path"] for p in predictions if p["faces"] == 0]
    result: dict[str, Any] = {
        **_run_facts(config, "photos", scan.format),
        "seconds": round(seconds, 2),
        **metrics,
        "no_face": len(no_face),
        "no_face_images": no_face,
        "skipped": len(skipped),
        "skipped_files": skipped,
        "predictions": predictions,
    }
    print("\n".join(_photo_lines(result)))
    return _report(config, result, "images")


def _run_facts(config: EvalConfig, layout: str, data_format: str) -> dict[str, Any]:
    """What every evaluation result starts with: data, weights, layout, split, format and label order."""
    return {
        "data": str(config.data),
        "weights": config.weights or "pretrained default",
        "layout": layout,
        "split": config.split,
        "format": data_format,
        "labels": list(LABELS),
    }


def _photo_lines(result: dict[str, Any]) -> list[str]:
    """What a photo evaluation prints before the metrics: its time, the files passed over and the photos without a
    face (the first LISTED of them)."""
    images, seconds = result["images"], result["seconds"]
    skipped, no_face = result["skipped_files"], result["no_face_images"]
    lines = [f"{plural(images, 'image')} in {seconds:.1f} s ({images / max(seconds, 1e-9):.1f} images/s)"]
    reasons = Counter(s["reason"] for s in skipped)
    for reason, count in reasons.items():
        example = next(s["path"] for s in skipped if s["reason"] == reason)
        such = "" if example in reason else f" (such as {example})"
        lines.append(f"skipped {plural(count, 'file')}: {reason}{such}")
    lines.append(f"no face found in {len(no_face)} of {plural(images, 'image')} (counted as wrong: column '{NO_FACE}')"
                 + (":" if no_face else ""))
    lines += [f"  {path}" for path in no_face[:LISTED]]
    if len(no_face) > LISTED:
        lines.append(f"  ... and {len(no_face) - LISTED} more (all in the JSON)")
    return lines


def _prediction(record: ClipRecord, result: FrameResult) -> dict[str, Any]:
    """One photo's entry in the JSON: path, true label, the largest face's emotion and probabilities (None without
    a face, or where the model gave no finite output) and the number of faces found."""
    face = result.main_face.to_dict() if result.faces else None
    return {
        "path": record.source,
        "label": LABELS[record.label],
        "predicted": face["emotion"] if face else None,
        "probabilities": face["probabilities"] if face else None,
        "faces": len(result.faces),
    }


def _report(config: EvalConfig, result: dict[str, Any], unit: str) -> dict[str, Any]:
    """Write the JSON and the confusion PNG to the output folder, print the metrics; result gains 'json'."""
    out_dir = Path(config.output) if config.output else next_run_dir(config.runs_dir, "evaluate")
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{Path(config.weights).name if config.weights else 'pretrained'} on {Path(config.data).name}"
    json_path = Path(config.json) if config.json else out_dir / "metrics.json"
    write_report(result, json_path, out_dir / "confusion.png", title)
    print("\n".join(metric_lines(result, unit)))
    print(
        f"metrics: {json_path}"
        + (f"  confusion matrix: {result['confusion_png']}" if "confusion_png" in result else "")
    )
    result["json"] = str(json_path)
    return result
