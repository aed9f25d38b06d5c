"""Metrics against hand-computed values, the confusion matrix as text and PNG, window averaging, an evaluation run of
the pretrained model on a cached synthetic dataset, real clips end to end through the command line (preprocess,
train, evaluate, and the trained checkpoint in --video mode), and folders of labelled photos: which layout a folder
is, and real photos scored one by one, with a photo without a face."""

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import SHARED, assert_clean_error, cli, needs_shared

from emotion.errors import EmotionError
from emotion.recognizer import EmotionRecognizer
from emotion.io.files import read_image
from emotion.model import load_checkpoint
from emotion.model.checkpoint import PRETRAINED_CONFIG
from emotion.signals import SIGNAL_DIM
from emotion.training.cache import PrepConfig
from emotion.training.datasets import detect_layout, scan_photos
from emotion.training.evaluate import EvalConfig, resolve_layout, run
from emotion.training.metrics import ccc, classification_metrics, confusion_image, format_confusion, save_confusion_png
from emotion.training.scoring import summarize
from emotion.training.synthetic import make_synthetic_dataset
from emotion.labels import LABELS

PRETRAINED_PREP = PrepConfig.of_model(PRETRAINED_CONFIG)
"""The crops the shipped model takes, so synthetic caches hit for it."""


def test_classification_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 0, 3, 3, 5]), np.array([0, 0, 3, 3, 3, 0]))
    assert m["accuracy"] == m["war"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # mean recall over angry, happy, sad
    f1_angry = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_happy = 2 * (2 / 3) * 1 / (5 / 3)
    assert m["macro_f1"] == pytest.approx((f1_angry + f1_happy + 0) / 3)
    assert m["per_class"]["happy"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert m["confusion"][0] == [2, 0, 0, 1, 0, 0, 0] and m["confusion"][5][0] == 1 and m["clips"] == 6
    perfect = classification_metrics(np.arange(7), np.arange(7))
    assert perfect["uar"] == perfect["macro_f1"] == perfect["accuracy"] == 1.0


def test_ccc():
    x = np.linspace(-1, 1, 50)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(-x, x) == pytest.approx(-1.0)
    shifted = ccc(x + 0.5, x)
    expected = 2 * x.var() / (2 * x.var() + 0.25)
    assert shifted == pytest.approx(expected)
    assert np.isnan(ccc([0.3], [0.2]))


def test_confusion_text_and_png(tmp_path):
    matrix = np.diag([5, 0, 1, 9, 2, 3, 4])
    matrix[0, 5] = 2
    text = format_confusion(matrix)
    assert all(name in text for name in LABELS) and text.splitlines()[1].split()[1:] == [
        "5",
        "0",
        "0",
        "0",
        "0",
        "2",
        "0",
    ]
    path = save_confusion_png(matrix, tmp_path / "sub" / "cm.png", title="test")
    img = cv2.imread(str(path))
    assert img is not None and img.shape == confusion_image(matrix, title="test").shape
    left, top, cell = 110, 70, 72
    happy = img[top + 3 * cell + 40, left + 3 * cell + 60]  # a full diagonal cell is deep green
    empty = img[top + 1 * cell + 40, left + 2 * cell + 60]  # an empty off-diagonal cell stays white
    assert happy[1] > 200 and happy[0] < 60 and happy[2] < 60
    assert (empty > 240).all()


def column_ends(table: list[str], columns: int) -> list[list[int]]:
    """Per line of a printed table, the character offset where each of its last `columns` entries ends."""
    return [[m.end() for m in re.finditer(r"\S+", line)][-columns:] for line in table]


def test_confusion_columns_line_up_whatever_the_labels_and_counts(tmp_path):
    wide = format_confusion([[1, 20000], [3, 4]], ("a-very-long-category", "b")).splitlines()
    ends = column_ends(wide, 2)
    assert ends[0] == ends[1] == ends[2] and wide[1].startswith("a-very-long-category ")
    manifest = make_synthetic_dataset(
        tmp_path / "syn", tmp_path / "cache", clips_per_class=2, frames=16, prep=PRETRAINED_PREP
    )
    done = cli("--evaluate", "--data", manifest, "--cache-dir", tmp_path / "cache", "--output", tmp_path / "out",
               "--no-progress", "--threads", "1")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    start = lines.index("confusion matrix (rows true, columns predicted):") + 1
    table = lines[start : start + len(LABELS) + 1]
    assert table[0].startswith("true \\ predicted") and table[0].split()[-len(LABELS) :] == list(LABELS)
    assert [line.split()[0] for line in table[1:]] == list(LABELS)
    ends = column_ends(table, len(LABELS))
    assert all(row == ends[0] for row in ends[1:]), "\n".join(table)
    counts = [[int(v) for v in line.split()[1:]] for line in table[1:]]
    assert counts == json.loads((tmp_path / "out" / "metrics.json").read_text())["confusion"]


def test_summarize_averages_windows_per_clip():
    probs = np.zeros((3, 7))
    probs[0, 3], probs[1, 5], probs[2, 0] = 0.9, 0.6, 1.0  # clip 0: windows say happy 0.9 and sad 0.6
    pred = {
        "clip": np.array([0, 0, 1]),
        "probs": probs,
        "va_pred": np.array([[[0.5, 0.1]], [[0.4, 0.2]], [[-0.5, 0.3]]]),
        "va_true": np.array([[[0.5, np.nan]], [[0.4, np.nan]], [[-0.5, np.nan]]]),
    }
    m = summarize(pred, [3, 0])
    assert m["confusion"][3][3] == 1 and m["confusion"][0][0] == 1 and m["accuracy"] == 1.0
    assert m["ccc_valence"] == pytest.approx(1.0) and m["frames_valence"] == 3 and "ccc_arousal" not in m


def test_evaluate_pretrained_model_on_cached_synthetic_data(tmp_path):
    manifest = make_synthetic_dataset(
        tmp_path / "syn", tmp_path / "cache", clips_per_class=2, frames=16, prep=PRETRAINED_PREP
    )
    result = run(
        EvalConfig(
            data=str(manifest),
            cache_dir=str(tmp_path / "cache"),
            output=str(tmp_path / "out"),
            progress=False,
            threads=1,
        )
    )
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["clips"] == 6 and sum(map(sum, saved["confusion"])) == 6
    assert saved["weights"] == "pretrained default" and 0 <= saved["uar"] <= 1
    assert -1 <= saved["ccc_valence"] <= 1 and saved["frames_valence"] == 6 * 16
    assert (tmp_path / "out" / "confusion.png").is_file() and result["json"] == str(tmp_path / "out" / "metrics.json")
    val = run(
        EvalConfig(
            data=str(manifest),
            split="val",
            cache_dir=str(tmp_path / "cache"),
            output=str(tmp_path / "val"),
            progress=False,
            threads=1,
        )
    )
    assert val["clips"] == 3


def _cut(video: Path, start: int, stop: int, out: Path) -> Path:
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    fps = cap.get(cv2.CAP_PROP_FPS)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for _ in range(stop - start):
        ok, frame = cap.read()
        if not ok:
            break
        frame = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    cap.release()
    return out


def test_real_clips_preprocess_train_evaluate_and_play(tmp_path, shared_data):
    """Real clips through the command line: the face stage with signals caches them, a model with the signal stream
    trains on them, and --evaluate and --video run that checkpoint (the face stage with signals again)."""
    video = shared_data / "videos" / "WolfgangLanger_Pexels.mp4"
    data = tmp_path / "wolfgang"
    for i, start in enumerate((0, 50, 100, 150)):
        _cut(video, start, start + 24, data / "sad" / f"sad_{i}.mp4")
    for i, start in enumerate((280, 330, 380, 430)):
        _cut(video, start, start + 24, data / "happy" / f"happy_{i}.mp4")
    cache = tmp_path / "cache"
    train = cli(
        "--train",
        "--data",
        str(data),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--val-split",
        "0.25",
        "--name",
        "wolfgang",
        "--cache-dir",
        str(cache),
        "--workers",
        "2",
        "--no-progress",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "8 usable (0 from the cache, 8 run through the face stage)" in train.stdout
    assert "train 6 clips, val 2 clips" in train.stdout and "epoch 2/2" in train.stdout
    best = tmp_path / "models" / "wolfgang" / "best.pt"
    assert best.is_file() and len(list(cache.rglob("*.npz"))) == 8
    assert load_checkpoint(best)[1].signals == SIGNAL_DIM  # the signal stream is on by default
    for entry in cache.rglob("*.npz"):
        with np.load(entry) as z:
            assert z["signals"].shape == (len(z["frames"]), SIGNAL_DIM) and z["signals"].any(axis=1).all()

    out = tmp_path / "eval"
    evaluation = cli(
        "--evaluate",
        "--data",
        str(data),
        "--weights",
        str(best),
        "--cache-dir",
        str(cache),
        "--output",
        str(out),
        "--no-progress",
        cwd=tmp_path,
    )
    assert evaluation.returncode == 0, evaluation.stdout + evaluation.stderr
    assert "8 from the cache, 0 run through the face stage" in evaluation.stdout
    assert "confusion matrix" in evaluation.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clips"] == 8 and metrics["accuracy"] >= 0.75 and (out / "confusion.png").is_file()
    assert metrics["per_class"]["sad"]["support"] == metrics["per_class"]["happy"]["support"] == 4

    played = cli(
        "--video",
        str(data / "happy" / "happy_3.mp4"),
        "--weights",
        str(best),
        "--json",
        str(tmp_path / "play.json"),
        "--no-progress",
        cwd=tmp_path,
    )
    assert played.returncode == 0, played.stdout + played.stderr
    frames = json.loads((tmp_path / "play.json").read_text())
    assert len(frames) == 24 and sum(bool(f["faces"]) for f in frames) >= 20


def test_no_prediction_counts_as_wrong_in_its_own_column():
    m = classification_metrics(np.array([0, 0, 3, 3]), np.array([0, -1, 3, 0]), unit="images", none="none")
    assert m["images"] == 4 and m["accuracy"] == pytest.approx(2 / 4)
    assert m["per_class"]["angry"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["uar"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["columns"] == [*LABELS, "none"] and m["confusion"][0] == [1, 0, 0, 0, 0, 0, 0, 1]
    assert m["confusion"][3] == [1, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="none="):
        classification_metrics(np.array([0]), np.array([-1]))
    table = format_confusion(m["confusion"], columns=m["columns"]).splitlines()
    assert table[0].split()[-1] == "none" and table[1].split()[1:] == ["1", "0", "0", "0", "0", "0", "0", "1"]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_layout_is_decided_from_what_the_folders_hold(tmp_path):
    touch(tmp_path / "photos" / "happy" / "a.jpg")
    touch(tmp_path / "photos" / "Sadness" / "b.png")
    touch(tmp_path / "photos" / "contempt" / "c.jpg")
    touch(tmp_path / "photos" / "readme.jpg")
    touch(tmp_path / "split" / "test" / "surprised" / "a.webp")
    touch(tmp_path / "split" / "train" / "anger" / "b.bmp")
    touch(tmp_path / "videos" / "happy" / "a.mp4")
    for i in range(2):  # frame folders of the clip layouts: <label>/<clip>/ and <subject>/<Label>/
        touch(tmp_path / "frames" / "Happiness" / "clip1" / f"{i}.jpeg")
        touch(tmp_path / "oulu" / "P001" / "Anger" / f"{i}.jpeg")
    assert detect_layout(tmp_path / "photos") == detect_layout(tmp_path / "split") == "photos"
    assert [detect_layout(tmp_path / d) for d in ("videos", "frames", "oulu")] == ["clips"] * 3
    assert detect_layout(touch(tmp_path / "manifest.csv")) == "clips"

    scan = scan_photos(tmp_path / "photos")
    assert [(Path(r.source).name, LABELS[r.label], r.split) for r in scan.records] == [
        ("b.png", "sad", None),
        ("a.jpg", "happy", None),
    ]
    assert sorted((Path(p).name, why) for p, why in scan.skipped) == [
        ("c.jpg", "in the folder 'contempt', which is not a category name"),
        ("readme.jpg", "not directly in a label folder (<label>/ or <split>/<label>/)"),
    ]
    split = scan_photos(tmp_path / "split").records
    assert sorted((LABELS[r.label], r.split) for r in split) == [("angry", "train"), ("surprise", "test")]
    touch(tmp_path / "oulu" / "scared" / "c.jpg")  # an alias of fear
    assert LABELS[scan_photos(tmp_path / "oulu").records[0].label] == "fear"

    forced = EvalConfig(data=str(tmp_path / "frames"), layout="photos")
    assert resolve_layout(forced) == "photos" and resolve_layout(EvalConfig(data=str(tmp_path / "photos"))) == "photos"
    assert resolve_layout(EvalConfig(data=str(tmp_path / "photos"), format="oulu")) == "clips"
    with pytest.raises(ValueError, match="layout photos takes no format"):
        EvalConfig(data=str(tmp_path / "photos"), layout="photos", format="oulu")
    with pytest.raises(EmotionError, match="no labelled photos") as missing:
        scan_photos(tmp_path / "frames")
    assert "not directly in a label folder" in str(missing.value)


def test_mixed_or_empty_folders_are_refused_with_the_fix(tmp_path):
    touch(tmp_path / "mixed" / "happy" / "a.jpg")
    touch(tmp_path / "mixed" / "happy" / "clip1" / "0.jpg")
    touch(tmp_path / "both" / "sad" / "a.jpg")
    touch(tmp_path / "both" / "sad" / "b.mp4")
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    touch(tmp_path / "unlabelled" / "a.jpg")
    for name, example in (("mixed", "happy/clip1"), ("both", "b.mp4")):
        with pytest.raises(EmotionError) as refused:
            detect_layout(tmp_path / name)
        assert example in refused.value.problem and "layout='photos'" in refused.value.fix
        assert "--layout clips" in refused.value.cli_message()
    for name in ("empty", "unlabelled"):
        with pytest.raises(EmotionError, match="no labelled images or videos") as refused:
            detect_layout(tmp_path / name)
        assert "<label>/*.jpg" in refused.value.fix
    with pytest.raises(EmotionError, match="dataset not found"):
        detect_layout(tmp_path / "absent")


def photo_set(root: Path, per_label: int = 3) -> Path:
    """Shared photos under alias folder names, a photo with five faces and a frame without a face."""
    for label, alias in (("surprise", "surprised"), ("angry", "anger"), ("happy", "happiness"), ("sad", "sadness")):
        (root / alias).mkdir(parents=True)
        for photo in sorted((SHARED / "faces" / label).iterdir())[:per_label]:
            shutil.copy(photo, root / alias)
    shutil.copy(SHARED / "images" / "multi_face.jpg", root / "happiness")
    cap = cv2.VideoCapture(str(SHARED / "videos" / "face_noface.mov"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 120)  # the cartoon sky after the face has gone
    (root / "scared").mkdir()
    assert cv2.imwrite(str(root / "scared" / "sky.png"), cap.read()[1])
    cap.release()
    return root


@needs_shared
def test_photo_folder_metrics_agree_with_the_predictions(tmp_path, capsys):
    data = photo_set(tmp_path / "photos")
    assert detect_layout(data) == "photos"
    result = run(EvalConfig(data=str(data), output=str(tmp_path / "out"), progress=False))
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == {k: v for k, v in result.items() if k != "json"}

    predictions = saved["predictions"]
    assert result["layout"] == "photos" and result["images"] == len(predictions) == 14
    assert {Path(p["path"]).parent.name: p["label"] for p in predictions} == {
        "surprised": "surprise", "anger": "angry", "happiness": "happy", "sadness": "sad", "scared": "fear",
    }  # fmt: skip
    sky = next(p for p in predictions if p["path"].endswith("sky.png"))
    assert sky["faces"] == 0 and sky["predicted"] is None and sky["probabilities"] is None
    assert result["no_face_images"] == [p["path"] for p in predictions if p["faces"] == 0]
    assert result["no_face"] == len(result["no_face_images"]) >= 1 and sky["path"] in printed
    for p in predictions:
        if p["faces"]:
            probabilities = np.array([p["probabilities"][name] for name in LABELS])
            assert probabilities.sum() == pytest.approx(1, abs=1e-3) and p["predicted"] in LABELS
            assert probabilities.max() == p["probabilities"][p["predicted"]]

    columns = [*LABELS, "none"]
    counts = np.zeros((len(LABELS), len(columns)), int)
    for p in predictions:
        counts[LABELS.index(p["label"]), columns.index(p["predicted"] or "none")] += 1
    assert result["columns"] == columns and result["confusion"] == counts.tolist()
    assert counts[:, -1].sum() == result["no_face"]
    right = sum(p["predicted"] == p["label"] for p in predictions)
    assert result["accuracy"] == pytest.approx(right / len(predictions))
    recalls = []
    for name in ("surprise", "angry", "happy", "sad", "fear"):
        mine = [p for p in predictions if p["label"] == name]
        recall = sum(p["predicted"] == name for p in mine) / len(mine)
        assert result["per_class"][name]["recall"] == pytest.approx(recall)
        assert result["per_class"][name]["support"] == len(mine)
        recalls.append(recall)
    assert result["per_class"]["fear"]["recall"] == 0 and result["uar"] == pytest.approx(np.mean(recalls))
    assert f"images 14  accuracy (WAR) {result['accuracy']:.3f}" in printed and "recall per category:" in printed
    png = cv2.imread(result["confusion_png"])
    assert png.shape == confusion_image(counts, title="titled", columns=columns).shape  # 8 columns

    multi = next(p for p in predictions if p["path"].endswith("multi_face.jpg"))
    assert multi["faces"] >= 2
    from emotion import EmotionRecognizer

    with EmotionRecognizer() as recognizer:  # the photo's prediction is its largest face's, as the public API gives it
        largest = recognizer.predict_image(read_image(multi["path"])).main_face.to_dict()
    assert multi["probabilities"] == largest["probabilities"] and multi["predicted"] == largest["emotion"]


@needs_shared
def test_photo_folder_through_the_command_line(tmp_path):
    data = photo_set(tmp_path / "photos", per_label=1)
    done = cli("--evaluate", "--data", data, "--output", tmp_path / "out", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["layout"] == "photos" and saved["images"] == 6 and (tmp_path / "out" / "confusion.png").is_file()
    assert f"no face found in {saved['no_face']} of 6 images" in done.stdout
    assert str(data / "scared" / "sky.png") in saved["no_face_images"]
    first = sorted((data / "anger").iterdir())[0]
    (data / "anger" / "clip1").mkdir()
    shutil.copy(first, data / "anger" / "clip1")  # now a label folder holds a clip's frame folder too
    assert_clean_error(cli("--evaluate", "--data", data), "holds both photos", "--layout photos", "--layout clips")
    forced = cli("--evaluate", "--data", data, "--layout", "photos", "--output", tmp_path / "forced", "--no-progress")
    assert forced.returncode == 0, forced.stderr
    assert "skipped 1 file: not directly in a label folder" in forced.stdout
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("--evaluate", "--data", tmp_path / "empty"), "no labelled images or videos", "<label>/*.jpg")
    assert_clean_error(cli("--evaluate", "--data", data, "--layout", "photos", "--format", "oulu"),
                       "--layout photos takes no --format")  # fmt: skip
    assert_clean_error(cli("--train", "--data", data, "--layout", "photos"), "--layout is for --evaluate")


def test_shipped_model_on_the_labelled_photos_and_the_wolfgang_clip(tmp_path, shared_data):
    """The quality the README's "How accurate is it" reports, kept: on ../shared/data/faces UAR at least 0.56 and no
    class below the recall of the model before the issue-14 settings minus 0.05; on the Wolfgang clip at least 85 %
    of the face frames of the sad part (0-190) shown sad and 95 % of the happy part (265-471) happy."""
    result = run(EvalConfig(data=str(shared_data / "faces"), output=str(tmp_path / "out"), progress=False))
    assert result["uar"] >= 0.56, result["uar"]
    floors = {"angry": 0.65, "disgust": 0.06, "happy": 0.87, "neutral": 0.27, "sad": 0.49, "surprise": 0.23}
    recall = {name: result["per_class"][name]["recall"] for name in floors}
    assert all(recall[name] >= floor for name, floor in floors.items()), recall
    segments = {"sad": range(0, 191), "happy": range(265, 472)}
    shown: dict[str, list[str]] = {name: [] for name in segments}
    with EmotionRecognizer() as rec:
        for frame_result, _ in rec.process_video(shared_data / "videos" / "WolfgangLanger_Pexels.mp4"):
            for name, frames in segments.items():
                if frame_result.frame in frames and frame_result.faces:
                    shown[name].append(frame_result.main_face.emotion)
    assert shown["sad"].count("sad") >= 0.85 * len(shown["sad"]) and len(shown["sad"]) > 150
    assert shown["happy"].count("happy") >= 0.95 * len(shown["happy"]) and len(shown["happy"]) > 190
