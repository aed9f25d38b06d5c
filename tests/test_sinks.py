"""JSON, CSV and video sinks, and the frame/face result format they write."""

import csv
import json

import cv2
import numpy as np
import pytest

from emotion.labels import LABELS
from emotion.results import FaceResult, FrameResult
from emotion.io.sinks import CsvWriter, JsonWriter, VideoWriter, prepare_output
from emotion.errors import EmotionError


def face(track_id: int, box, hot: int) -> FaceResult:
    probs = np.full(7, 0.05)
    probs[hot] = 0.7
    return FaceResult(track_id, box, probs, 0.5, -0.25, probs * 0.9, 0.4, -0.2)


def test_frame_json_describes_largest_face_and_null_without_faces():
    result = FrameResult(3, 0.125, [face(0, (0, 0, 10, 10), 3), face(1, (5, 5, 40, 40), 5)])
    d = result.to_dict()
    assert (d["frame"], d["time"], d["emotion"], d["confidence"]) == (3, 0.125, "sad", 0.7)
    assert [f["id"] for f in d["faces"]] == [0, 1]
    assert list(d["faces"][1]["probabilities"]) == list(LABELS)
    assert d["faces"][1]["raw"]["valence"] == 0.4
    empty = FrameResult(4, 0.2).to_dict()
    assert empty["emotion"] is None and empty["valence"] is None and empty["faces"] == []


def test_json_writer_file_is_valid_after_every_frame(tmp_path):
    path = tmp_path / "out.json"
    writer = JsonWriter(path)
    assert json.loads(path.read_text()) == []
    for i in range(3):
        writer.write(FrameResult(i, i / 10, [face(0, (1, 2, 3, 4), i)]))
        on_disk = json.loads(path.read_text())
        assert [f["frame"] for f in on_disk] == list(range(i + 1))
    writer.close()
    assert json.loads(path.read_text())[2]["emotion"] == LABELS[2]


def test_csv_writer_rows(tmp_path):
    path = tmp_path / "out.csv"
    writer = CsvWriter(path)
    writer.write(FrameResult(0, 0.0, [face(7, (1, 2, 3, 4), 3), face(8, (5, 6, 7, 8), 0)]))
    writer.write(FrameResult(1, 0.04))
    writer.close()
    rows = list(csv.DictReader(path.open()))
    assert [r["face_id"] for r in rows] == ["7", "8", ""]
    assert rows[0]["emotion"] == "happy" and rows[1]["emotion"] == "angry" and rows[2]["frame"] == "1"
    assert float(rows[0]["p_happy"]) == pytest.approx(0.7)


def test_video_writer_round_trip(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, 12.0, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.close()
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    cap.release()


def test_prepare_output_creates_folders_and_refuses_existing(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    assert prepare_output(target) == target and target.parent.is_dir()
    target.write_text("x")
    with pytest.raises(EmotionError, match="overwrite=True") as info:
        prepare_output(target, overwrite=False)
    assert "--overwrite" in info.value.cli_message()
    with pytest.raises(EmotionError, match="directory"):
        prepare_output(tmp_path)
