"""A hostile user's cases through the real command line: signals at awkward moments, odd paths and files, unsupported
output types and broken checkpoints. Nothing computed is lost, and every problem is one clear line."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import ROOT, SHARED, assert_clean_error, cli, count_frames, needs_shared, start_until, write_clip

from emotion.model import ModelConfig, create_model, save_checkpoint

WOLFGANG = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"


def _assert_interrupted(proc: subprocess.Popen) -> str:
    """Exit 130 with the one 'interrupted' line on stderr and no traceback; returns stderr."""
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted: outputs written so far are complete and valid"], err
    return err


def _assert_outputs_valid(json_path, video_path, csv_path=None) -> None:
    frames = json.loads(json_path.read_text())
    assert 100 <= len(frames) < 472
    assert [f["frame"] for f in frames] == list(range(len(frames)))
    assert abs(count_frames(video_path) - len(frames)) <= 1
    if csv_path is not None:
        rows = list(csv.DictReader(csv_path.open()))
        assert sorted({int(r["frame"]) for r in rows}) == [f["frame"] for f in frames]


@needs_shared
def test_sighup_closes_the_outputs_like_ctrl_c(tmp_path):
    paths = tmp_path / "out.mp4", tmp_path / "out_results.json", tmp_path / "out.csv"
    proc = start_until("--video", WOLFGANG, "--output", paths[0], "--csv", paths[2], "--no-progress", json_path=paths[1])
    proc.send_signal(signal.SIGHUP)
    _assert_interrupted(proc)
    _assert_outputs_valid(paths[1], paths[0], paths[2])


@needs_shared
def test_repeated_ctrl_c_during_finalisation_leaves_valid_outputs(tmp_path):
    video_path, json_path = tmp_path / "out.mp4", tmp_path / "out_results.json"
    proc = start_until("--video", WOLFGANG, "--output", video_path, "--no-progress", json_path=json_path)
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGINT):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        time.sleep(0.03)
    _assert_interrupted(proc)
    _assert_outputs_valid(json_path, video_path)


@pytest.mark.parametrize("library", ["cv2", "libtorch"])
def test_ctrl_c_during_start_up_is_one_line(tmp_path, library):
    """Ctrl-C once the process has loaded `library` (OpenCV early in start-up, then PyTorch's core for the model)."""
    write_clip(tmp_path / "clip.avi")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--video", tmp_path / "clip.avi", "--json", tmp_path / "r.json",
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and library not in maps.read_text():
        time.sleep(0.01)
    assert proc.poll() is None and not (tmp_path / "r.json").exists(), "start-up ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err


def _undecodable(folder, name: bytes) -> Path:
    """A path in `folder` whose file name holds bytes that are not UTF-8, as the OS gives it to Python."""
    return folder / os.fsdecode(name)


def _clip_named(folder, name: bytes, frames: int) -> Path:
    """write_clip under a name OpenCV could not take itself (written under a plain name, then renamed)."""
    plain = folder / "plain.avi"
    write_clip(plain, frames=frames)
    return plain.rename(_undecodable(folder, name))


def test_file_names_that_are_not_utf8_are_processed(tmp_path):
    clip, photo = _clip_named(tmp_path, b"clip\xff.avi", 6), _undecodable(tmp_path, b"photo\xfe.png")
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "photo.png").rename(photo)
    proc = cli("--video", clip, "--json", tmp_path / "v.json", "--no-progress", errors="surrogateescape")
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert len(json.loads((tmp_path / "v.json").read_text())) == 6
    annotated = _undecodable(tmp_path, b"out\xff.png")
    proc = cli("--image", photo, "--output", annotated, "--json", tmp_path / "i.json", errors="surrogateescape")
    assert proc.stdout.startswith(f"{photo}: no face")
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert cv2.imdecode(np.fromfile(annotated, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    assert json.loads((tmp_path / "i.json").read_text())[0]["faces"] == []


def test_batch_continues_past_a_name_that_cannot_be_written(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in (b"a.avi", b"b\xff.avi", b"c.avi"):
        _clip_named(folder, name, frames=5)
    proc = cli("--video", folder, "--output", tmp_path / "out", "--no-progress", errors="surrogateescape")
    assert_clean_error(proc, "1 of 3 videos failed")
    assert "not valid UTF-8" in proc.stdout and "2 of 3 videos processed" in proc.stdout
    assert count_frames(tmp_path / "out" / "c_annotated.mp4") == 5
    proc = cli("--video", folder, "--no-progress", cwd=tmp_path, errors="surrogateescape")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(_undecodable(tmp_path, b"b\xff_results.json").read_text())) == 5


@pytest.mark.parametrize("flag", ["--image", "--video"])
def test_named_pipe_is_refused_without_waiting(tmp_path, flag):
    fifo = tmp_path / "input.jpg"
    os.mkfifo(fifo)
    assert_clean_error(cli(flag, fifo, "--no-progress", timeout=60), "not a regular file", "input.jpg")


NO_DAC = ["--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
"""setpriv options that take from root the capabilities that let it read any file, as CI runs as root."""


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root without setpriv reads any file")
@pytest.mark.parametrize("flag", ["--image", "--video"])
def test_unreadable_file_says_permission_denied(tmp_path, flag):
    locked = tmp_path / "locked.avi"
    write_clip(locked)
    locked.chmod(0)
    as_user = ["setpriv", *NO_DAC] if os.geteuid() == 0 else []
    proc = subprocess.run([*as_user, sys.executable, str(ROOT / "main.py"), flag, str(locked), "--no-progress"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert_clean_error(proc, "permission denied", "locked.avi")


def test_long_input_name_gives_a_default_json_name_that_fits(tmp_path):
    clip = tmp_path / ("v" * 244 + ".avi")
    write_clip(clip, frames=4)
    proc = cli("--video", clip, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    assert len(written) == 1 and len(written[0].name) <= 255 and written[0].name.startswith("v" * 200)
    assert len(json.loads(written[0].read_text())) == 4
    photo = tmp_path / ("p" * 250 + ".png")
    cv2.imwrite(str(photo), np.full((32, 32, 3), 90, np.uint8))
    proc = cli("--image", photo, "--output", tmp_path / "annotated")
    assert proc.returncode == 0, proc.stderr
    [annotated] = (tmp_path / "annotated").iterdir()
    assert len(annotated.name) <= 255 and annotated.suffix == ".png" and cv2.imread(str(annotated)).shape == (32, 32, 3)


def test_unsupported_output_types_are_refused_up_front(tmp_path):
    clip, photo = tmp_path / "clip.avi", tmp_path / "photo.png"
    write_clip(clip, frames=3)
    cv2.imwrite(str(photo), np.full((32, 32, 3), 90, np.uint8))
    cases = [
        (["--image", photo, "--output", tmp_path / "x.gif"], [".gif", ".png, .jpg"]),
        (["--image", photo, "--output", tmp_path / "x.xyz"], [".xyz", ".webp"]),
        (["--video", clip, "--output", tmp_path / ".gif"], ["no file type", ".mp4, .avi, .mov"]),
        (["--video", clip, "--output", tmp_path / "x.gif"], [".gif", ".mp4, .avi, .mov, .m4v"]),
    ]
    for argv, words in cases:
        assert_clean_error(cli(*argv, "--no-progress"), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "photo.png"]


def _checkpoint_with(tmp_path, name: str, value: float) -> Path:
    """A checkpoint of the default config whose final emotion layer's weights are all `value`."""
    config = ModelConfig()
    model = create_model(config)
    with torch.no_grad():
        model.logit_residual.weight.fill_(value)
    return save_checkpoint(tmp_path / name, model, config)


def test_checkpoint_with_nan_weights_is_refused_at_load(tmp_path):
    weights = _checkpoint_with(tmp_path, "nan.pt", float("nan"))
    clip = tmp_path / "clip.avi"
    write_clip(clip, frames=3)
    proc = cli("--video", clip, "--weights", weights, "--json", tmp_path / "r.json", "--no-progress")
    assert_clean_error(proc, "nan.pt", "NaN or infinite", "logit_residual.weight")
    assert not (tmp_path / "r.json").exists()


@needs_shared
def test_non_finite_outputs_are_written_as_null_and_counted(tmp_path):
    weights = _checkpoint_with(tmp_path, "huge.pt", 3e38)  # finite, but the logits overflow to infinity
    face = cv2.imread(str(SHARED / "images" / "neutral.jpeg"))
    clip = tmp_path / "face.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, face.shape[1::-1])
    for _ in range(4):
        writer.write(face)
    writer.release()
    proc = cli("--video", clip, "--weights", weights, "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv",
               "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: the model gave NaN or infinite outputs for 4 face detections, written as null" in proc.stdout
    frames = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert len(frames) == 4 and all(f["emotion"] is None and f["confidence"] is None for f in frames)
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 4 and all(r["emotion"] == "" and r["confidence"] == "" for r in rows)
    proc = cli("--image", SHARED / "images" / "neutral.jpeg", "--weights", weights, "--json", tmp_path / "i.json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("face #0 no valid output\n")
    assert "NaN or infinite outputs for 1 face detection," in proc.stderr
    record = json.loads((tmp_path / "i.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert record[0]["faces"][0]["emotion"] is None
