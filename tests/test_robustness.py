"""Bad input, interruptions and batch runs through the real command line: clear errors, nothing computed is lost."""

import json
import signal

import cv2
import numpy as np
import pytest
import torch
from support import (
    SHARED, assert_clean_error, cli, count_frames, needs_shared, probe_video, start_until, write_clip,
)

from emotion.model import ModelConfig, create_model, save_checkpoint

WOLFGANG = SHARED / "videos" / "WolfgangLanger_Pexels.mp4"


def bad_inputs(tmp):
    """(name, argv, words expected in the error line) for each bad input, with the files it needs made in tmp."""
    (tmp / "notes.mp4").write_text("this is not a video\n" * 50)
    (tmp / "picture.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    writer = cv2.VideoWriter(str(tmp / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    writer.release()
    (tmp / "a_file").write_text("x")
    write_clip(tmp / "clip.avi")
    (tmp / "taken.json").write_text("keep me")
    (tmp / "weights.pt").write_text("not a checkpoint")
    torch.save({"conv.weight": torch.zeros(3)}, tmp / "state_dict.pt")
    config = ModelConfig(landmark_hidden=64)
    save_checkpoint(tmp / "other.pt", create_model(config), config)
    payload = torch.load(tmp / "other.pt", weights_only=True)
    payload["config"]["landmark_hidden"] = 256
    torch.save(payload, tmp / "incompatible.pt")
    return [
        ("missing file", ["--video", tmp / "nope.mp4"], ["not found", "nope.mp4"]),
        ("missing image", ["--image", tmp / "nope.jpg"], ["not found"]),
        ("folder without images for --image", ["--image", tmp], ["no image files"]),
        ("text renamed .mp4", ["--video", tmp / "notes.mp4"], ["notes.mp4", "not a video"]),
        ("unsupported image format", ["--image", tmp / "picture.svg"], ["cannot decode image", "PNG"]),
        ("zero-frame video", ["--video", tmp / "empty.avi"], ["no readable frames"]),
        ("output folder not writable", ["--video", tmp / "clip.avi", "--json", tmp / "a_file" / "r.json"],
         ["cannot create the folder"]),
        ("output exists", ["--video", tmp / "clip.avi", "--json", tmp / "taken.json"], ["already exists", "--overwrite"]),
        ("weights not a checkpoint", ["--video", tmp / "clip.avi", "--weights", tmp / "weights.pt"], ["not a torch file"]),
        ("weights a bare state dict", ["--video", tmp / "clip.avi", "--weights", tmp / "state_dict.pt"],
         ["not an emotion checkpoint"]),
        ("weights from another config", ["--video", tmp / "clip.avi", "--weights", tmp / "incompatible.pt"],
         ["do not fit"]),
        ("bad device", ["--video", tmp / "clip.avi", "--device", "tpu"], ["unknown device"]),
    ]


def test_bad_inputs_give_one_clear_line_and_exit_2(tmp_path):
    failures = []
    for name, argv, words in bad_inputs(tmp_path):
        proc = cli(*argv, "--no-progress")
        try:
            assert_clean_error(proc, *words)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
    assert (tmp_path / "taken.json").read_text() == "keep me"


@needs_shared
def test_truncated_video_keeps_results_of_the_frames_read(tmp_path):
    half = tmp_path / "half.mp4"
    data = WOLFGANG.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    proc = cli("--video", half, "--output", tmp_path / "out.mp4", "--no-progress")
    assert_clean_error(proc, "truncated", "of 472 frames", "out_results.json")
    frames = json.loads((tmp_path / "out_results.json").read_text())
    assert len(frames) > 100 and [f["frame"] for f in frames] == list(range(len(frames)))
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)


def test_corrupt_frame_in_the_middle_is_skipped_and_reported(tmp_path):
    clip = tmp_path / "clip.avi"
    write_clip(clip)
    data = bytearray(clip.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == 30
    data[starts[15] : starts[15] + 200] = bytes(200)
    clip.write_bytes(bytes(data))
    proc = cli("--video", clip, "--json", tmp_path / "r.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 unreadable frame: 15" in proc.stdout
    frames = [f["frame"] for f in json.loads((tmp_path / "r.json").read_text())]
    assert frames == [i for i in range(30) if i != 15]


@needs_shared
def test_one_frame_video_reports_counts_in_the_singular(tmp_path):
    clip = tmp_path / "one.avi"
    write_clip(clip, frames=1)
    proc = cli("--video", clip, "--json", tmp_path / "r.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "one.avi: 1 frame in " in proc.stdout and "faces in 0 frames (0 face detections)" in proc.stdout


def test_odd_images_work(tmp_path):
    face = cv2.imread(str(SHARED / "images" / "neutral.jpeg"))
    happy = cv2.imread(str(SHARED / "images" / "happy-baby.jpeg"))
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))
    big = np.zeros((2160, 3840, 3), np.uint8)
    up = cv2.resize(happy, None, fx=2160 / happy.shape[0], fy=2160 / happy.shape[0])[:, :3840]
    big[:, : up.shape[1]] = up
    cv2.imwrite(str(tmp_path / "4k.jpg"), big)
    cv2.imwrite(str(tmp_path / "tiny.png"), cv2.resize(face, (32, 32), interpolation=cv2.INTER_AREA))
    names = ["gray.png", "alpha.png", "4k.jpg", "tiny.png"]
    proc = cli("--image", *[tmp_path / n for n in names], "--json", tmp_path / "new" / "dir" / "r.json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads((tmp_path / "new" / "dir" / "r.json").read_text())
    assert [r["emotion"] for r in records[:3]] == ["neutral", "neutral", "happy"]
    assert records[3]["faces"] == [] or len(records[3]["faces"]) == 1


@needs_shared
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_video_leaves_valid_json_and_playable_video(tmp_path, sig):
    json_path, video_path = tmp_path / "out_results.json", tmp_path / "out.mp4"
    proc = start_until("--video", WOLFGANG, "--output", video_path, "--no-progress", json_path=json_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    frames = json.loads(json_path.read_text())
    assert 100 <= len(frames) < 472
    assert [f["frame"] for f in frames] == list(range(len(frames)))
    assert abs(count_frames(video_path) - len(frames)) <= 1
    assert probe_video(video_path)["codec"] == "h264"


def test_batch_folder_continues_past_bad_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "a.avi", frames=12)
    write_clip(folder / "c.avi", frames=8)
    (folder / "b.mp4").write_text("junk")
    (folder / "readme.txt").write_text("not a video, ignored")
    proc = cli("--video", folder, "--output", tmp_path / "out", "--no-progress")
    assert_clean_error(proc, "1 of 3 videos failed")
    table = proc.stdout.splitlines()
    assert table[0].split()[:5] == ["video", "result", "frames", "faces", "seconds"]
    rows = {line.split()[0]: line.split() for line in table[1:4]}
    assert rows["a.avi"][1:3] == ["processed", "12"] and rows["c.avi"][1:3] == ["processed", "8"]
    assert rows["b.mp4"][1] == "failed" and "cannot open" in " ".join(rows["b.mp4"])
    assert table[4] == "2 of 3 videos processed"
    assert len(json.loads((tmp_path / "out" / "a_annotated_results.json").read_text())) == 12
    assert cv2.VideoCapture(str(tmp_path / "out" / "c_annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 8
