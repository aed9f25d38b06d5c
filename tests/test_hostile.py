"""A hostile user's cases through the real command line: signals at awkward moments, odd paths and files, unsupported
output types and broken checkpoints. Nothing computed is lost, and every problem is one clear line."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from support import ROOT, SHARED, count_frames, needs_shared, start_until, write_clip

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


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_during_start_up_is_one_line(tmp_path, delay):
    write_clip(tmp_path / "clip.avi")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--video", tmp_path / "clip.avi", "--json", tmp_path / "r.json",
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(delay)
    assert proc.poll() is None, "start-up ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err
