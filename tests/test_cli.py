"""End-to-end tests through the real command line (`python main.py ...`) on real photos and videos."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import ROOT, SHARED, assert_clean_error, cli, needs_shared, probe_video, read_frames, signals_args, write_clip

import emotion



@pytest.fixture(scope="module")
def wolfgang(tmp_path_factory):
    """Run --video on WolfgangLanger_Pexels.mp4 once, writing video, JSON and CSV."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    out = tmp_path_factory.mktemp("wolfgang")
    proc = cli("--video", SHARED / "videos" / "WolfgangLanger_Pexels.mp4", "--output", out / "annotated.mp4",
               "--csv", out / "rows.csv", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out, proc


@needs_shared
def test_images_give_their_ground_truth_emotion(tmp_path):
    truth = {"happy-baby.jpeg": "happy", "sad-baby.jpeg": "sad", "surprised.jpeg": "surprise", "neutral.jpeg": "neutral"}
    proc = cli("--image", *[SHARED / "images" / name for name in truth], "--json", tmp_path / "faces.json",
               "--output", tmp_path / "annotated")
    assert proc.returncode == 0, proc.stderr
    records = json.loads((tmp_path / "faces.json").read_text())
    assert [Path(r["image"]).name for r in records] == list(truth)
    for record, expected in zip(records, truth.values()):
        assert len(record["faces"]) == 1, record["image"]
        probabilities = record["faces"][0]["probabilities"]
        assert record["emotion"] == expected, (record["image"], probabilities)  # Santa: surprise by the FACS prior
        assert -1 <= record["valence"] <= 1 and -1 <= record["arousal"] <= 1
    for name in truth:
        annotated = cv2.imread(str(tmp_path / "annotated" / f"{Path(name).stem}_annotated.png"))
        assert annotated is not None and annotated.shape == cv2.imread(str(SHARED / "images" / name)).shape


@needs_shared
def test_all_five_faces_found_in_group_photo(tmp_path):
    proc = cli("--image", SHARED / "images" / "multi_face.jpg", "--json", tmp_path / "f.json")
    assert proc.returncode == 0, proc.stderr
    faces = json.loads((tmp_path / "f.json").read_text())[0]["faces"]
    assert len(faces) == 5
    assert len({f["id"] for f in faces}) == 5
    assert sum(f["emotion"] == "happy" for f in faces) >= 3, [f["emotion"] for f in faces]


@needs_shared
def test_video_valence_follows_sad_then_happy(wolfgang):
    out, _ = wolfgang
    frames = json.loads((out / "annotated_results.json").read_text())
    assert [f["frame"] for f in frames] == list(range(472))
    sad = [f["valence"] for f in frames[0:191] if f["valence"] is not None]
    happy = [f["valence"] for f in frames[265:472] if f["valence"] is not None]
    assert len(sad) > 100 and len(happy) > 190
    assert np.mean(sad) < 0, np.mean(sad)
    assert np.mean(happy) > 0.3, np.mean(happy)


@needs_shared
def test_video_happy_holds_in_the_laughing_part(wolfgang):
    out, _ = wolfgang
    frames = json.loads((out / "annotated_results.json").read_text())
    emotions = [f["emotion"] for f in frames[300:472]]
    assert emotions.count("happy") / len(emotions) >= 0.9, emotions


@needs_shared
def test_video_output_matches_input_and_csv_rows(wolfgang):
    out, proc = wolfgang
    src = cv2.VideoCapture(str(SHARED / "videos" / "WolfgangLanger_Pexels.mp4"))
    dst = cv2.VideoCapture(str(out / "annotated.mp4"))
    for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FRAME_COUNT):
        assert dst.get(prop) == src.get(prop)
    assert dst.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS), rel=1e-3)
    info = probe_video(out / "annotated.mp4")
    assert (info["codec"], info["frames"], info["size"]) == ("h264", 472, (640, 360))
    assert info["fps"] == pytest.approx(src.get(cv2.CAP_PROP_FPS), rel=1e-4)
    assert info["seconds"] == pytest.approx(472 / src.get(cv2.CAP_PROP_FPS), abs=1e-3)
    assert sum(1 for _ in iter(lambda: dst.read()[0], False)) == 472
    assert "note:" not in proc.stderr
    rows = (out / "rows.csv").read_text().splitlines()
    assert rows[0].startswith("frame,time,face_id") and len(rows) >= 473
    assert "472 frames" in proc.stdout


@needs_shared
def test_face_then_no_face_every_frame_present(tmp_path):
    proc = cli("--video", SHARED / "videos" / "face_noface.mov", "--json", tmp_path / "r.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    frames = json.loads((tmp_path / "r.json").read_text())
    assert [f["frame"] for f in frames] == list(range(169))
    with_face = sum(bool(f["faces"]) for f in frames[:72])
    assert with_face >= 70, with_face
    assert all(f["emotion"] is None and f["faces"] == [] for f in frames[72:])


def test_demo_runs_without_user_files_and_is_right(tmp_path):
    proc = cli("--demo", "--output", tmp_path / "demo", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    frames = json.loads((tmp_path / "demo" / "demo_annotated_results.json").read_text())
    assert len(frames) == 72
    assert sum(len(f["faces"]) == 1 for f in frames) >= 70
    assert sum(f["emotion"] == "neutral" for f in frames) >= 60, [f["emotion"] for f in frames]
    cap = cv2.VideoCapture(str(tmp_path / "demo" / "demo_annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 72
    assert probe_video(tmp_path / "demo" / "demo_annotated.mp4")["codec"] == "h264"
    assert "demo_annotated.mp4" in proc.stdout
    assert "largest face's emotion: neutral" in proc.stdout and "of the frames with a face" in proc.stdout
    again = cli("--demo", "--output", tmp_path / "demo", "--no-progress")
    assert_clean_error(again, "already exists", "--overwrite")
    assert cli("--demo", "--output", tmp_path / "demo", "--no-progress", "--overwrite").returncode == 0


FIXTURES = ROOT / "tests" / "fixtures"


def test_signals_off_gives_the_output_of_the_version_before_them(tmp_path):
    """fixtures/signals_off_clip.mp4 (8 frames zooming into the demo photo, then 2 grey frames) through `--video` with
    the code of commit c397a45, the last before the face signals, wrote signals_off.json and signals_off.csv, and an
    annotated video whose decoded frames hash to signals_off_video.sha256. With the signals off the same run must give
    the same bytes (nothing in these files differs from run to run: no creation time, and the pipeline is
    deterministic, checked by running the old code twice)."""
    proc = cli("--video", FIXTURES / "signals_off_clip.mp4", "--output", tmp_path / "a.mp4", "--json", tmp_path / "a.json",
               "--csv", tmp_path / "a.csv", "--no-progress", *signals_args(False))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((FIXTURES / "signals_off.json").read_text())
    assert (tmp_path / "a.json").read_bytes() == (FIXTURES / "signals_off.json").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == (FIXTURES / "signals_off.csv").read_bytes()
    digest = hashlib.sha256()
    for frame in read_frames(tmp_path / "a.mp4"):
        digest.update(frame.tobytes())
    assert digest.hexdigest() == (FIXTURES / "signals_off_video.sha256").read_text().split()[0]


@pytest.fixture(scope="module")
def signals_runs(tmp_path_factory):
    """The golden clip through --video with the face signals on, JSON and CSV, smoothed (default) and --smoothing 1."""
    out = tmp_path_factory.mktemp("signals")
    for name, extra in (("smoothed", []), ("raw", ["--smoothing", "1"])):
        proc = cli("--video", FIXTURES / "signals_off_clip.mp4", "--json", out / f"{name}.json", "--csv",
                   out / f"{name}.csv", "--no-progress", *signals_args(True), *extra)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("smoothed", "raw")}, out


def readme_signal_keys() -> tuple[dict[str, str], list[str]]:
    """README's table of the JSON's face-signal keys (key -> where: record, or face and raw) and its blendshape names."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("#### Face signals in the JSON") :]
    section = section[: section.index("\n## ")]
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]+) \|", section, re.M)
    names = re.search(r"The blendshape names, in the network's order.*?: (`_neutral`.*?)\.\n", section, re.S).group(1)
    return {key: where.strip() for key, where in rows}, re.findall(r"`(\w+)`", names)


def signal_paths(obj: dict, old: dict) -> set[str]:
    """The keys `obj` has beyond `old`'s, with one level of object keys spelled out (head_pose.yaw; blendshapes whole)."""
    paths = set()
    for key in obj.keys() - old.keys():
        if isinstance(obj[key], dict) and key != "blendshapes":
            paths |= {f"{key}.{sub}" for sub in obj[key]}
        else:
            paths.add(key)
    return paths


def test_signals_json_has_exactly_the_keys_the_readme_documents(signals_runs):
    from emotion.signals import BLENDSHAPE_NAMES

    records = signals_runs[0]["smoothed"]
    old = json.loads((FIXTURES / "signals_off.json").read_text())  # schema 1, the format before the signals
    documented, names = readme_signal_keys()
    assert names == list(BLENDSHAPE_NAMES)
    assert [r["frame"] for r in records] == list(range(10)) and sum(bool(r["faces"]) for r in records) == 8
    for record, before in zip(records, old):
        assert list(record)[0] == "schema" and record["schema"] == 2
        assert signal_paths(record, before) == {k for k, where in documented.items() if where == "record"}
        for face, face_before in zip(record["faces"], before["faces"]):
            expected = {k for k, where in documented.items() if where == "face, `raw`"}
            assert signal_paths(face, face_before) == expected
            assert signal_paths(face["raw"], face_before["raw"]) == expected
            for values in (face, face["raw"]):
                assert list(values["blendshapes"]) == names
                assert all(0.0 <= v <= 1.0 for v in values["blendshapes"].values())
                assert all(-90 < v < 90 for v in [*values["head_pose"].values(), *values["gaze"].values()])
    face = records[0]["faces"][0]  # Grace Hopper faces the camera: a small head pose
    assert all(abs(v) < 25 for v in face["head_pose"].values()), face["head_pose"]


def test_signals_csv_columns_hold_the_smoothed_values(signals_runs):
    from emotion.io.sinks import CsvWriter

    records, out = signals_runs
    rows = list(csv.DictReader((out / "smoothed.csv").open()))
    assert list(rows[0]) == CsvWriter.COLUMNS + CsvWriter.SIGNAL_COLUMNS
    assert len(CsvWriter.SIGNAL_COLUMNS) == 52 + 5 and "bs_browDownLeft" in rows[0] and "gaze_pitch" in rows[0]
    faces = [face for record in records["smoothed"] for face in record["faces"]]
    assert len(rows) == 10 and all(row["head_yaw"] == "" for row in rows[8:])  # frames without a face
    for row, face in zip(rows, faces):
        assert float(row["bs_jawOpen"]) == pytest.approx(face["blendshapes"]["jawOpen"], abs=1e-4)
        assert float(row["head_roll"]) == pytest.approx(face["head_pose"]["roll"], abs=1e-4)
        assert float(row["gaze_yaw"]) == pytest.approx(face["gaze"]["yaw"], abs=1e-4)
    header = (FIXTURES / "signals_off.csv").read_text().splitlines()[0]
    assert header == ",".join(CsvWriter.COLUMNS), "without the signals the header is the one before them"


def test_signals_are_smoothed_per_track_and_raw_with_smoothing_1(signals_runs):
    def pairs(records: list) -> list[tuple[list[float], list[float]]]:
        """(smoothed, raw) signal values of every face."""
        values = lambda d: [*d["blendshapes"].values(), *d["head_pose"].values(), *d["gaze"].values()]  # noqa: E731
        return [(values(f), values(f["raw"])) for r in records for f in r["faces"]]

    smoothed, raw = pairs(signals_runs[0]["smoothed"]), pairs(signals_runs[0]["raw"])
    assert len(smoothed) == len(raw) == 8
    assert smoothed[0][0] == smoothed[0][1], "a track's first frame has nothing to smooth with"
    assert all(shown != this for shown, this in smoothed[1:]), "the zooming clip moves, so smoothing must show"
    assert all(shown == this for shown, this in raw), "--smoothing 1 shows the raw signals"
    assert [this for _, this in raw] == [this for _, this in smoothed], "smoothing leaves the raw signals alone"


def test_show_needs_the_signals_and_an_annotated_output(tmp_path):
    clip = FIXTURES / "signals_off_clip.mp4"
    off = cli("--video", clip, "--output", tmp_path / "a.mp4", "--show", "pose", *signals_args(False))
    assert_clean_error(off, "--show pose needs the face signals", "signals")
    assert not (tmp_path / "a.mp4").exists()
    assert_clean_error(cli("--video", clip, "--show", "gaze", *signals_args(True)), "--show", "add --output")
    assert_clean_error(cli("--video", clip, "--output", tmp_path / "a.mp4", "--show", "pose,nose"), "nose",
                       "blendshapes, pose, gaze")  # fmt: skip


@needs_shared
def test_image_line_says_what_the_number_is():
    proc = cli("--image", SHARED / "images" / "neutral.jpeg")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"neutral.jpeg: face #0 neutral \(probability 0\.\d\d\)$", proc.stdout.strip()), proc.stdout


@needs_shared
def test_cropped_images_are_one_face_each(tmp_path):
    """--cropped: a tight crop is its face (source "cropped" in the JSON); a picture of sky has none."""
    image = cv2.imread(str(SHARED / "images" / "happy-baby.jpeg"))
    cv2.imwrite(str(tmp_path / "crop.png"), image[130:480, 470:780])  # the face, which the detectors find at 489, 157
    cv2.imwrite(str(tmp_path / "sky.png"), np.full((120, 120, 3), (235, 200, 150), np.uint8))
    proc = cli("--image", tmp_path / "crop.png", tmp_path / "sky.png", "--cropped", "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    records = {Path(r["image"]).name: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert [f["source"] for f in records["crop.png"]["faces"]] == ["cropped"]
    assert records["crop.png"]["faces"][0]["emotion"] == "happy"
    assert records["sky.png"]["faces"] == []


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], ["one of the arguments", "--help"]),
        (["--video"], ["expected one argument"]),
        (["--video", "x.mp4", "--smoothing", "0"], ["--smoothing must be 1 or more"]),
        (["--image", "x.jpg", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["--image", "a.jpg", "b.jpg", "--output", "two.png"], ["names a file", "folder"]),
    ],
)
def test_usage_errors_are_one_line(argv, words, tmp_path):
    proc = cli(*argv, cwd=tmp_path)
    assert_clean_error(proc, *words)
    assert not (tmp_path / "two.png").exists()


def test_folder_of_videos_with_a_file_output_is_refused(tmp_path):
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "a.avi")
    proc = cli("--video", tmp_path / "clips", "--output", tmp_path / "x.mp4")
    assert_clean_error(proc, "names a file", "output folder")
    assert not (tmp_path / "x.mp4").exists()


@needs_shared
def test_image_folder_processes_every_image(tmp_path):
    proc = cli("--image", SHARED / "images", "--json", tmp_path / "all.json", "--output", tmp_path / "annotated")
    assert proc.returncode == 0, proc.stderr
    images = sorted(p.name for p in (SHARED / "images").iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    records = json.loads((tmp_path / "all.json").read_text())
    assert sorted(Path(r["image"]).name for r in records) == images
    assert len(list((tmp_path / "annotated").glob("*_annotated.png"))) == len(images)


def test_video_folder_without_output_writes_one_json_per_video(tmp_path):
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "a.avi", frames=6)
    write_clip(tmp_path / "clips" / "b.avi", frames=9)
    proc = cli("--video", tmp_path / "clips", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "a_results.json").read_text())) == 6
    assert len(json.loads((tmp_path / "b_results.json").read_text())) == 9
    assert "2 of 2 videos processed" in proc.stdout


@pytest.mark.parametrize("display", [None, ":4321"])
def test_realtime_without_a_display_names_headless(display, tmp_path):
    write_clip(tmp_path / "a.avi")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    if display:
        env["DISPLAY"] = display
    proc = cli("--realtime", "--source", tmp_path / "a.avi", env=env)
    assert_clean_error(proc, "display", "--headless")


def test_help_explains_modes():
    proc = cli("--help")
    assert proc.returncode == 0
    for option in ("--image", "--video", "--demo", "--output", "--json", "--csv", "--weights", "--device", "--smoothing"):
        assert option in proc.stdout


@needs_shared
def test_a_closed_stdout_pipe_ends_quietly():
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--image", SHARED / "images"], stdout=reader.stdin,
                          stderr=subprocess.PIPE, text=True, timeout=300)  # fmt: skip
    reader.stdin.close()
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_version_names_the_package_version():
    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"emotion {emotion.__version__}"
