"""Dataset adapters on trees with each dataset's real naming, splits, the face-stage cache on real clips (with face
signals too), clip sampling, augmentation that keeps crops, landmarks and signals consistent, and the samplers."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion.signals import SIGNAL_DIM
from emotion.training.augment import MIRROR, ROLL, SIGNAL_MIRROR, AugmentConfig, augment_clip, mirror_signals
from emotion.training.cache import PrepConfig, preprocess
from emotion.training.clips import ClipDataset, EpochSampler, eval_windows, sample_indices
from emotion.training.datasets import ClipRecord, detect_format, label_index, load_dataset, read_va_file
from emotion.training.splits import assign_splits
from emotion.training.synthetic import make_synthetic_dataset
from emotion.labels import LABELS


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def by_name(records: list[ClipRecord]) -> dict[str, ClipRecord]:
    return {Path(r.source).name: r for r in records}


def test_label_names_and_synonyms():
    names = ("Angry", "anger", "DIS", "fearful", "Happiness", "neutral", "sadness")
    assert [label_index(n) for n in names] == [0, 0, 1, 2, 3, 4, 5]
    assert label_index("Surprised") == 6 and label_index("3") == 3
    assert label_index("contempt") is None and label_index("9") is None


def test_folder_layout_with_and_without_split_folders(tmp_path):
    touch(tmp_path / "Angry" / "a1.avi")
    touch(tmp_path / "Happy" / "h1.mp4")
    touch(tmp_path / "contempt" / "c1.mp4")
    touch(tmp_path / "Happy" / "notes.txt")
    scan = load_dataset(tmp_path, "folder")
    recs = by_name(scan.records)
    assert set(recs) == {"a1.avi", "h1.mp4"}
    assert recs["a1.avi"].label == LABELS.index("angry") and recs["h1.mp4"].label == LABELS.index("happy")
    assert [Path(p).name for p, _ in scan.skipped] == ["c1.mp4"]
    assert detect_format(tmp_path) == "folder"

    afew = tmp_path / "afew"
    touch(afew / "Train_AFEW" / "Sad" / "s1.avi")
    touch(afew / "Val_AFEW" / "Surprise" / "u1.avi")
    recs = by_name(load_dataset(afew).records)
    assert (recs["s1.avi"].split, recs["s1.avi"].label) == ("train", LABELS.index("sad"))
    assert (recs["u1.avi"].split, recs["u1.avi"].label) == ("val", LABELS.index("surprise"))


def test_csv_manifest(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "m.csv").write_text(
        "path,label,valence,arousal,split,subject\n"
        "clips/a.mp4,happy,0.8,0.5,train,s1\n"
        "clips/b.mp4,5,,,val,s2\n"
        "clips/c.mp4,,-0.2,0.1,,\n"
        "clips/d.mp4,bored,,,,\n"
        "clips/e.mp4,,,,,\n"
    )
    scan = load_dataset(tmp_path / "m.csv")
    assert scan.format == "csv"
    recs = by_name(scan.records)
    assert recs["a.mp4"] == ClipRecord(str(tmp_path / "clips" / "a.mp4"), 3, 0.8, 0.5, None, "s1", "train")
    assert (recs["b.mp4"].label, recs["b.mp4"].split, recs["b.mp4"].valence) == (5, "val", None)
    assert (recs["c.mp4"].label, recs["c.mp4"].valence, recs["c.mp4"].arousal) == (-1, -0.2, 0.1)
    assert sorted(Path(p).name for p, _ in scan.skipped) == ["d.mp4", "e.mp4"]
    (tmp_path / "bad.csv").write_text("file,emotion\na.mp4,happy\n")
    with pytest.raises(ValueError, match="header"):
        load_dataset(tmp_path / "bad.csv")


def test_ravdess_names(tmp_path):
    for name in ("01-01-03-01-01-01-12.mp4", "02-01-02-02-01-02-12.mp4", "01-02-08-01-02-01-07.mp4", "readme.mp4"):
        touch(tmp_path / "Actor_x" / name)
    touch(tmp_path / "Actor_x" / "03-01-05-01-01-01-12.wav")
    assert detect_format(tmp_path) == "ravdess"
    scan = load_dataset(tmp_path)
    recs = by_name(scan.records)
    assert (recs["01-01-03-01-01-01-12.mp4"].label, recs["01-01-03-01-01-01-12.mp4"].subject) == (3, "actor12")
    assert recs["02-01-02-02-01-02-12.mp4"].label == LABELS.index("neutral")  # calm counts as neutral
    assert recs["01-02-08-01-02-01-07.mp4"].label == LABELS.index("surprise")
    assert [Path(p).name for p, _ in scan.skipped] == ["readme.mp4"]


def test_cremad_names(tmp_path):
    names = [
        "1001_DFA_ANG_XX.flv",
        "1001_IEO_DIS_HI.flv",
        "1002_TIE_FEA_LO.flv",
        "1002_MTI_HAP_MD.flv",
        "1003_DFA_NEU_XX.flv",
        "1003_IWL_SAD_XX.flv",
        "1004_DFA_XYZ_XX.flv",
    ]
    for name in names:
        touch(tmp_path / "VideoFlash" / name)
    assert detect_format(tmp_path) == "cremad"
    scan = load_dataset(tmp_path)
    assert [(Path(r.source).stem[5:8], r.label, r.subject) for r in scan.records] == [
        ("DFA", 0, "1001"),
        ("IEO", 1, "1001"),
        ("MTI", 3, "1002"),
        ("TIE", 2, "1002"),
        ("DFA", 4, "1003"),
        ("IWL", 5, "1003"),
    ]
    assert [Path(p).name for p, _ in scan.skipped] == ["1004_DFA_XYZ_XX.flv"]


def test_oulu_image_sequences(tmp_path):
    for subject in ("P001", "P002"):
        for label in ("Anger", "Happiness"):
            for i in range(3):
                touch(tmp_path / "VL" / "Strong" / subject / label / f"{i:03d}.jpeg")
    touch(tmp_path / "VL" / "Strong" / "P001" / "Blink" / "000.jpeg")
    touch(tmp_path / "VL" / "Strong" / "P001" / "Blink" / "001.jpeg")
    assert detect_format(tmp_path) == "oulu"
    scan = load_dataset(tmp_path)
    assert sorted((r.subject, r.label) for r in scan.records) == [("P001", 0), ("P001", 3), ("P002", 0), ("P002", 3)]
    assert all(Path(r.source).is_dir() for r in scan.records)
    assert len(scan.skipped) == 1


def test_affwild_per_frame_valence_arousal(tmp_path):
    touch(tmp_path / "videos" / "batch1" / "118.mp4")
    touch(tmp_path / "videos" / "batch2" / "video5.avi")
    train = tmp_path / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    val = tmp_path / "annotations" / "VA_Estimation_Challenge" / "Validation_Set"
    train.mkdir(parents=True)
    val.mkdir(parents=True)
    (train / "118.txt").write_text("valence,arousal\n0.5,0.25\n-5,-5\n-0.1,0.3\n")
    (val / "video5_left.txt").write_text("valence,arousal\n0.1,0.2\n")
    (val / "missing.txt").write_text("valence,arousal\n0.1,0.2\n")
    assert detect_format(tmp_path) == "affwild"
    scan = load_dataset(tmp_path)
    recs = by_name(scan.records)
    assert (recs["118.mp4"].split, recs["118.mp4"].face, recs["118.mp4"].label) == ("train", "largest", -1)
    assert (recs["video5.avi"].split, recs["video5.avi"].face) == ("val", "left")
    assert [Path(p).name for p, _ in scan.skipped] == ["missing.txt"]
    va = read_va_file(recs["118.mp4"].va_file)
    assert va.shape == (3, 2) and np.isnan(va[1]).all()
    np.testing.assert_allclose(va[[0, 2]], [[0.5, 0.25], [-0.1, 0.3]])


def test_splits_are_subject_independent_or_stratified():
    recs = [ClipRecord(f"c{i}.mp4", i % 3, subject=f"s{i % 5}") for i in range(30)]
    split = assign_splits(recs, 0.2, seed=1)
    val_subjects = {r.subject for r in split if r.split == "val"}
    train_subjects = {r.subject for r in split if r.split == "train"}
    assert len(val_subjects) == 1 and not val_subjects & train_subjects
    assert assign_splits(recs, 0.2, seed=1) == split

    recs = [ClipRecord(f"c{i}.mp4", i % 2) for i in range(10)]
    split = assign_splits(recs, 0.2, seed=0)
    assert sorted(r.label for r in split if r.split == "val") == [0, 1]
    fixed = [ClipRecord("a", 0, split="val"), ClipRecord("b", 1)]
    assert [r.split for r in assign_splits(fixed, 0.5)] == ["val", "train"]


def _write_clip(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _read_frames(path: Path, start: int, stop: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    for i in range(stop):
        ok, frame = cap.read()
        if not ok:
            break
        if i >= start:
            frames.append(frame)
    cap.release()
    return frames


def test_preprocess_real_clips_caches_tracks_and_skips_bad_ones(tmp_path, shared_data):
    from emotion.face import FaceAnalyzer, FaceConfig
    from emotion.align import CropSpec

    videos = shared_data / "videos"
    face = _write_clip(tmp_path / "d" / "happy" / "face.mp4", _read_frames(videos / "single_face.mp4", 30, 42), 30)
    sky = _write_clip(tmp_path / "d" / "neutral" / "sky.mp4", _read_frames(videos / "face_noface.mov", 120, 128), 26)
    touch(tmp_path / "d" / "sad" / "broken.mp4", b"not a video at all" * 10)
    scan = load_dataset(tmp_path / "d")
    cache = tmp_path / "cache"
    clips, summary = preprocess(scan.records, cache, PrepConfig(), workers=2, progress=False)
    assert (summary.total, summary.processed, summary.cached) == (3, 3, 0)
    assert (summary.no_face, summary.unreadable) == (1, 1)
    assert "1 without a face, 1 unreadable" in summary.lines()[0]
    assert [Path(c.record.source) for c in clips] == [face]
    assert clips[0].frames == 12 and len(list(cache.rglob("*.npz"))) == 2  # the face-less clip is remembered

    with np.load(clips[0].path) as z:
        crops, landmarks, frames = z["crops"], z["landmarks"], z["frames"]
    assert crops.shape == (12, 64, 64) and crops.dtype == np.uint8 and landmarks.shape == (12, 468, 3)
    with FaceAnalyzer(FaceConfig(), static=False) as analyzer:
        cap = cv2.VideoCapture(str(face))
        for i in range(12):
            frame = cap.read()[1]
            found = analyzer(frame)
            if i in (0, 11):  # the recognizer's crop of the same frame, bit for bit
                np.testing.assert_array_equal(crops[i], CropSpec()(frame, found[0].landmarks))
                np.testing.assert_allclose(landmarks[i], found[0].landmarks_norm, atol=5e-3)
        cap.release()
    np.testing.assert_array_equal(frames, np.arange(12))

    again, summary = preprocess(scan.records, cache, PrepConfig(), workers=1, progress=False)
    assert (summary.cached, summary.processed, summary.no_face, summary.unreadable) == (2, 1, 1, 1)
    assert again == clips
    color, _ = preprocess(scan.records[:1], cache, PrepConfig(crop_size=48, in_chans=3), progress=False)
    assert color[0].path != clips[0].path and np.load(color[0].path)["crops"].shape == (12, 48, 48, 3)
    assert "signals" not in np.load(clips[0].path).files
    assert sky.exists()

    signals, _ = preprocess(scan.records[:1], cache, PrepConfig(signals=True), progress=False)
    assert signals[0].path != clips[0].path  # its own cache entry: a cache without signals is never taken for one
    with np.load(signals[0].path) as z:
        cached, first_crop = z["signals"], z["crops"][0]
    assert cached.shape == (12, SIGNAL_DIM) and cached.dtype == np.float32
    with FaceAnalyzer(FaceConfig(signals=True), static=False) as analyzer:  # as the recognizer runs for such a model
        cap = cv2.VideoCapture(str(face))
        frame = cap.read()[1]
        found = analyzer(frame)[0]
        np.testing.assert_allclose(cached[0], found.signals.vector(), atol=1e-6)
        np.testing.assert_array_equal(first_crop, CropSpec()(frame, found.landmarks))
        cap.release()


def test_mirror_map_matches_mediapipe_on_a_flipped_photo(shared_data):
    from emotion.face import FaceAnalyzer, FaceConfig

    mirror = np.asarray(MIRROR)
    assert sorted(mirror) == list(range(468)) and (mirror[mirror] == np.arange(468)).all()
    image = cv2.imread(str(shared_data / "images" / "happy-baby.jpeg"))
    with FaceAnalyzer(FaceConfig(), static=True) as analyzer:
        original = analyzer(image)[0].landmarks_norm
        flipped = analyzer(np.ascontiguousarray(image[:, ::-1]))[0].landmarks_norm
    predicted = original[mirror] * np.array([-1, 1, 1], np.float32)
    unpermuted = original * np.array([-1, 1, 1], np.float32)
    err = np.abs(predicted - flipped)[:, :2].mean()
    assert err < 0.03 and err < 0.1 * np.abs(unpermuted - flipped)[:, :2].mean()


def test_signal_mirror_and_roll_match_mediapipe_on_a_flipped_and_a_turned_photo(shared_data):
    """Mirrored signals of a photo against the signals of the mirrored photo: head and gaze yaw and the head's roll
    change sign, and the left/right differences of the blendshapes swap sides. The photo turned by the augmentation's
    rotation (cv2's angle, counter-clockwise) raises the roll by that angle."""
    from emotion.face import FaceAnalyzer, FaceConfig

    mirror = np.asarray(SIGNAL_MIRROR)
    assert sorted(mirror) == list(range(SIGNAL_DIM)) and (mirror[mirror] == np.arange(SIGNAL_DIM)).all()
    image = cv2.imread(str(shared_data / "images" / "single_face.jpg"))
    with FaceAnalyzer(FaceConfig(signals=True), static=True) as analyzer:
        original = analyzer(image)[0].signals.vector()
        flipped = analyzer(np.ascontiguousarray(image[:, ::-1]))[0].signals.vector()
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0)
        turned = analyzer(cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE))[0].signals.vector()
    assert abs((turned[ROLL] - original[ROLL]) * 90 - 10) < 1.5
    predicted = mirror_signals(original)
    angles = slice(ROLL - 2, SIGNAL_DIM)
    assert np.abs(predicted[angles] - flipped[angles]).max() * 90 < 3  # degrees
    assert original[ROLL - 2] * 90 < -5 < 5 < flipped[ROLL - 2] * 90  # the head turned: yaw's sign tells the side
    sided = [i for i in range(len(mirror)) if mirror[i] != i]
    assert np.corrcoef(original[sided] - original[mirror[sided]], flipped[mirror[sided]] - flipped[sided])[0, 1] > 0.5


def test_augmentation_mirrors_and_turns_the_signals():
    rng = np.random.default_rng(0)
    signals = rng.uniform(0, 1, (3, SIGNAL_DIM)).astype(np.float32)
    signals[1] = 0  # a frame without signals
    crops, lm = np.zeros((3, 32, 32), np.uint8), rng.normal(size=(3, 468, 3)).astype(np.float32)
    aug = AugmentConfig(flip=1.0, rotate=15, scale=0, shift=0, brightness=0, contrast=0, landmark_jitter=0)
    _, _, out = augment_clip(crops, lm, aug, np.random.default_rng(3), signals)
    angle = np.random.default_rng(3)
    angle.random()
    turned = mirror_signals(signals)
    turned[[0, 2], ROLL] += angle.uniform(-15, 15) / 90
    np.testing.assert_allclose(out, turned, atol=1e-6)
    assert not out[1].any() and out[0, ROLL] != -signals[0, ROLL]
    assert augment_clip(crops, lm, aug, np.random.default_rng(3))[2] is None


def test_augmentation_moves_landmarks_with_the_pixels():
    s, scale, centre = 64, 8.0, 31.5
    rng = np.random.default_rng(0)
    lm = np.zeros((2, 468, 3), np.float32)
    lm[..., :2] = rng.uniform(-2, 2, (468, 2))
    lm[:, 33, :2], lm[:, 263, :2] = (-1.5, -1.0), (1.5, 0.5)
    crops = np.zeros((2, s, s), np.uint8)
    for index, value in ((33, 255), (263, 128)):
        x, y = (lm[0, index, :2] * scale + centre).round().astype(int)
        crops[:, y - 1 : y + 2, x - 1 : x + 2] = value
    aug = AugmentConfig(flip=1.0, rotate=15, scale=0.1, shift=0, brightness=0, contrast=0, landmark_jitter=0)
    out, out_lm, _ = augment_clip(crops, lm, aug, np.random.default_rng(3))
    for index, low, high in ((33, 100, 160), (263, 200, 256)):  # after the flip, landmark 33 sits on old 263's blob
        x, y = out_lm[0, index, :2] * scale + centre
        yy, xx = np.mgrid[0:s, 0:s]
        near = (xx - x) ** 2 + (yy - y) ** 2 <= 6
        assert low <= out[0][near].max() < high
        weights = out[0].astype(float) * near
        cx, cy = (weights * xx).sum() / weights.sum(), (weights * yy).sum() / weights.sum()
        assert abs(cx - x) < 0.75 and abs(cy - y) < 0.75
    bright, _, _ = augment_clip(
        crops + 50,
        lm,
        AugmentConfig(flip=0, rotate=0, scale=0, shift=0, brightness=0.2, contrast=0.2, landmark_jitter=0.01),
        rng,
    )
    assert bright.dtype == np.uint8 and not np.array_equal(bright, crops + 50)


def test_clip_sampling_and_eval_windows():
    rng = np.random.default_rng(0)
    for frames in (5, 16, 40, 200):
        for _ in range(20):
            idx = sample_indices(frames, 16, rng, max_stride=2)
            steps = np.diff(idx)
            assert len(idx) == 16 and idx.min() >= 0 and idx.max() < frames
            assert (steps >= 0).all() and len(set(steps[steps > 0])) <= 1
    assert sample_indices(5, 16, None).tolist() == list(range(5)) + [4] * 11
    assert sample_indices(40, 16, None).tolist() == list(range(12, 28))
    assert eval_windows(10, 16, 4) == [0] and eval_windows(64, 16, 4) == [0, 16, 32, 48]
    assert eval_windows(100, 16, 3) == [0, 42, 84]


def test_dataset_and_samplers_are_deterministic_per_epoch(tmp_path):
    manifest = make_synthetic_dataset(
        tmp_path / "syn", tmp_path / "cache", clips_per_class=4, frames=20, prep=PrepConfig(crop_size=32)
    )
    records = load_dataset(manifest).records
    clips, summary = preprocess(records, tmp_path / "cache", PrepConfig(crop_size=32), progress=False)
    assert summary.cached == 12 and len(clips) == 12
    train = ClipDataset(clips, 16, AugmentConfig(), seed=0)
    item = train[0]
    assert item["crops"].shape == (16, 32, 32) and item["landmarks"].shape == (16, 468, 3)
    assert item["va"].shape == (16, 2) and int(item["label"]) == 0
    assert np.isclose(float(item["va"][0, 0]), -0.52)
    again = ClipDataset(clips, 16, AugmentConfig(), seed=0)[0]
    assert all(np.array_equal(item[k], again[k]) for k in item)
    train.set_epoch(1)
    assert not np.array_equal(train[0]["crops"], item["crops"])
    evaluation = ClipDataset(clips, 16, windows=4)
    assert len(evaluation) == 24  # 20 frames: windows at 0 and 4

    labels = [0] * 30 + [3] * 6
    balanced = list(EpochSampler(labels, balanced=True, seed=0))
    assert 0.35 < np.mean([labels[i] == 3 for i in balanced]) < 0.65
    s0, s1 = EpochSampler(labels, seed=0, rank=0, world=2), EpochSampler(labels, seed=0, rank=1, world=2)
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == 18 and sorted(a + b) == list(range(36))
    s0.set_epoch(1)
    assert list(s0) != a
