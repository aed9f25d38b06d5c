"""Nothing of the user's is destroyed by a run, and every file reported as written is valid: outputs that name an
input or each other, batch name collisions, a second writer, and a full disk, through the real command line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import cv2
import pytest
from support import ROOT, SHARED, assert_clean_error, cli, needs_shared, write_clip


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "a.avi"
    write_clip(path, frames=12)
    return path


@pytest.mark.parametrize(
    "outputs",
    [
        ["--output", "{clip}", "--overwrite"],
        ["--json", "{clip}", "--overwrite"],
        ["--csv", "{clip}", "--json", "r.json", "--overwrite"],
        ["--json", "sub/../{name}", "--overwrite"],
        ["--json", "{link}", "--overwrite"],
        ["--json", "{hard}", "--overwrite"],
    ],
)
def test_an_output_naming_the_input_is_refused_and_the_input_kept(clip, tmp_path, outputs):
    (tmp_path / "link.avi").symlink_to(clip)
    os.link(clip, tmp_path / "hard.avi")
    (tmp_path / "sub").mkdir()
    before = clip.read_bytes()
    names = {"clip": clip, "name": clip.name, "link": tmp_path / "link.avi", "hard": tmp_path / "hard.avi"}
    proc = cli("--video", clip, *[o.format(**names) for o in outputs], "--no-progress", cwd=tmp_path)
    assert_clean_error(proc, "is the input", "destroy")
    assert clip.read_bytes() == before


@needs_shared
def test_an_image_output_naming_the_photo_is_refused(tmp_path):
    photo = tmp_path / "p.jpg"
    shutil.copy(SHARED / "images" / "neutral.jpeg", photo)
    before = photo.read_bytes()
    for flag in ("--output", "--json"):
        assert_clean_error(cli("--image", photo, flag, photo, "--overwrite"), "is the input")
    assert photo.read_bytes() == before


@pytest.mark.parametrize("pair", [("--json", "--output"), ("--csv", "--json")])
def test_two_outputs_naming_one_file_are_refused(clip, tmp_path, pair):
    argv = ["--output", tmp_path / "o.mp4"] if "--output" not in pair else []
    for flag in pair:
        argv += [flag, tmp_path / ("same.mp4" if "--output" in pair else "same.json")]
    proc = cli("--video", clip, *argv, "--no-progress")
    assert_clean_error(proc, "same file")
    assert not (tmp_path / "same.mp4").exists() and not (tmp_path / "same.json").exists()


@needs_shared
def test_batches_give_inputs_with_one_name_their_own_outputs(tmp_path):
    for folder, photo in (("a", "neutral.jpeg"), ("b", "angry.jpg")):
        (tmp_path / folder).mkdir()
        shutil.copy(SHARED / "images" / photo, tmp_path / folder / "face.jpg")
    proc = cli("--image", tmp_path / "a" / "face.jpg", tmp_path / "b" / "face.jpg", "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_face_annotated.png", "b_face_annotated.png"]
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "talk.avi", frames=5)
    shutil.copy(SHARED / "videos" / "single_face.mp4", tmp_path / "clips" / "talk.mp4")
    proc = cli("--video", tmp_path / "clips", "--output", tmp_path / "ann", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "ann" / "talk_avi_annotated_results.json").read_text())) == 5
    assert len(json.loads((tmp_path / "ann" / "talk_mp4_annotated_results.json").read_text())) == 72


def test_a_second_writer_of_the_same_json_is_refused(tmp_path):
    long_clip = tmp_path / "long.avi"
    write_clip(long_clip, frames=400)  # 40 s at its own 10 fps: the first run is still writing when the second starts
    target = tmp_path / "r.json"
    first = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--realtime", "--headless", "--source", long_clip,
                              "--json", target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not target.exists() or target.stat().st_size < 10):
            time.sleep(0.05)
        second = cli("--video", long_clip, "--json", target, "--overwrite", "--no-progress")
        assert_clean_error(second, "another run is writing")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    frames = json.loads(target.read_text())
    assert frames and [f["frame"] for f in frames] == sorted({f["frame"] for f in frames})


@contextmanager
def small_disk(path, size: str):
    """A tmpfs of `size` at `path` (needs root, as CI runs)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@needs_shared
def test_a_full_disk_keeps_json_and_csv_valid_and_removes_a_broken_video(tmp_path):
    video = SHARED / "videos" / "single_face.mp4"
    with small_disk(tmp_path / "disk", "48k") as disk:
        proc = cli("--video", video, "--json", disk / "r.json", "--csv", disk / "r.csv", "--no-progress")
        assert_clean_error(proc, "No space left on device", "r.")
        frames = json.loads((disk / "r.json").read_text())
        assert 0 < len(frames) < 72 and [f["frame"] for f in frames] == list(range(len(frames)))
        rows = (disk / "r.csv").read_text().splitlines()
        assert rows[-1].count(",") == rows[0].count(",") and rows[-1].split(",")[0].isdigit()
    with small_disk(tmp_path / "disk2", "200k") as disk:
        proc = cli("--video", video, "--output", disk / "o.mp4", "--json", tmp_path / "o.json", "--no-progress")
        assert proc.returncode == 2 and "wrote" not in proc.stdout
        assert not (disk / "o.mp4").exists() or cv2.VideoCapture(str(disk / "o.mp4")).read()[0]
        assert len(json.loads((tmp_path / "o.json").read_text())) >= 1


def test_dev_full_is_one_error_line(clip):
    assert_clean_error(cli("--video", clip, "--json", "/dev/full", "--overwrite", "--no-progress"), "No space left")
