"""JSON, CSV and video sinks, and the frame/face result format they write."""

import csv
import json

import av
import numpy as np
import pytest
from support import probe_video, read_frames

from emotion.labels import LABELS
from emotion.results import FaceResult, FrameResult
from emotion.signals import BLENDSHAPE_NAMES, FaceSignals
from emotion.io.sinks import CsvWriter, JsonWriter, prepare_output
from emotion.io.video import H264Config, VideoWriter
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
    assert [r["source"] for r in rows] == ["detector", "detector", ""], "how the face stage found each face"


def signals(yaw: float) -> FaceSignals:
    return FaceSignals(np.linspace(0, 1, 52), np.array([yaw, -2.5, 3.0]), np.array([4.0, -5.0]), np.zeros((2, 2)))


def test_signals_in_json_and_csv_only_when_given_and_null_where_not_finite(tmp_path):
    with_signals = face(0, (1, 2, 3, 4), 3)
    with_signals.signals, with_signals.raw_signals = signals(np.nan), signals(12.5)
    d = FrameResult(0, 0.0, [with_signals, face(1, (5, 6, 7, 8), 0)], signals=True).to_dict()
    assert d["schema"] == 2
    first, second = d["faces"]
    assert first["head_pose"] == {"yaw": None, "pitch": -2.5, "roll": 3.0} and first["gaze"] == {"yaw": 4.0, "pitch": -5.0}
    assert first["raw"]["head_pose"]["yaw"] == 12.5 and list(first["blendshapes"]) == list(BLENDSHAPE_NAMES)
    assert first["blendshapes"]["noseSneerRight"] == 1.0
    assert "head_pose" not in second and "blendshapes" not in second["raw"], "a face without signals has no keys"
    assert "schema" not in FrameResult(0, 0.0, [face(1, (5, 6, 7, 8), 0)]).to_dict()
    path = tmp_path / "out.csv"
    writer = CsvWriter(path, signals=True)
    writer.write(FrameResult(0, 0.0, [with_signals, face(1, (5, 6, 7, 8), 0)], signals=True))
    writer.write(FrameResult(1, 0.1, signals=True))
    writer.close()
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == CsvWriter.COLUMNS + CsvWriter.SIGNAL_COLUMNS
    assert (rows[0]["head_yaw"], rows[0]["head_pitch"], rows[0]["bs_noseSneerRight"]) == ("", "-2.5000", "1.0000")
    assert all(rows[i][c] == "" for i in (1, 2) for c in CsvWriter.SIGNAL_COLUMNS)


def top_level_boxes(path) -> list[str]:
    """The MP4 boxes at the top level of a file, in order."""
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        boxes.append(kind)
        pos += size if size else len(data)
    return boxes


def colour_frames(count: int, size=(64, 48)) -> list[np.ndarray]:
    """Frames of one colour each, different enough to tell apart after lossy encoding."""
    colours = [(40, 80, 200), (200, 60, 30), (30, 180, 90), (128, 128, 128), (230, 230, 40)]
    return [np.full((size[1], size[0], 3), colours[i % len(colours)], np.uint8) for i in range(count)]


def test_mp4_is_h264_with_the_frames_size_rate_and_colours_given(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = colour_frames(30)
    writer = VideoWriter(path, 30000 / 1001, (64, 48))
    for frame in frames:
        writer.write(frame)
    writer.close()
    writer.close()
    assert writer.codec == "h264"
    info = probe_video(path)
    assert info["codec"] == "h264" and info["frames"] == 30 and info["size"] == (64, 48)
    assert info["fps"] == pytest.approx(29.97, abs=1e-3)
    assert info["seconds"] == pytest.approx(30 / (30000 / 1001), abs=1e-3)
    assert top_level_boxes(path).index("moov") < top_level_boxes(path).index("mdat"), "index not up front"
    decoded = read_frames(path)
    assert len(decoded) == 30
    for got, want in zip(decoded, frames):
        assert np.abs(got.astype(int) - want).mean() < 4, (got[0, 0], want[0, 0])


def test_avi_stays_mjpeg(tmp_path):
    path = tmp_path / "clip.avi"
    writer = VideoWriter(path, 12.0, (64, 48))
    for frame in colour_frames(10):
        writer.write(frame)
    writer.close()
    assert writer.codec == "mjpeg"
    info = probe_video(path)
    assert (info["codec"], info["frames"], info["size"], info["fps"]) == ("mjpeg", 10, (64, 48), 12.0)
    assert len(read_frames(path)) == 10


def test_without_the_h264_encoder_mp4_falls_back_to_mpeg4_with_a_note(tmp_path, capsys):
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, 12.0, (64, 48), H264Config(encoder="no-such-h264-encoder"))
    for frame in colour_frames(10):
        writer.write(frame)
    writer.close()
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: H.264 encoder not available (no-such-h264-encoder is not in PyAV "
                   f"{av.__version__}'s FFmpeg); writing MPEG-4 Part 2"]
    assert writer.codec == "mpeg4"
    info = probe_video(path)
    assert (info["codec"], info["frames"], info["size"], info["fps"]) == ("mpeg4", 10, (64, 48), 12.0)
    assert len(read_frames(path)) == 10


def test_odd_size_is_h264_without_its_last_column_and_row(tmp_path, capsys):
    frame = np.full((49, 65, 3), 60, np.uint8)
    frame[:, 60], frame[40, :] = 255, 255
    writer = VideoWriter(tmp_path / "odd.mp4", 10.0, (65, 49))
    for _ in range(5):
        writer.write(frame)
    writer.close()
    assert writer.codec == "h264" and capsys.readouterr().err == ""
    info = probe_video(tmp_path / "odd.mp4")
    assert (info["codec"], info["frames"], info["size"]) == ("h264", 5, (64, 48))
    out = read_frames(tmp_path / "odd.mp4")[0]
    assert out[:, 60].mean() > 200 and out[40, :].mean() > 200  # cropped, not scaled
    assert out[:, 57].mean() < 100 and out[37, :].mean() < 100


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi"])
def test_unwritable_video_path_is_an_emotion_error(tmp_path, name):
    with pytest.raises(EmotionError, match="cannot write video"):
        VideoWriter(tmp_path / "no such folder" / name, 10.0, (64, 48))


def test_frames_of_another_size_are_resized(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = VideoWriter(path, 10.0, (64, 48))
    for frame in colour_frames(3, (64, 48)) + colour_frames(3, (128, 72)):
        writer.write(frame)
    writer.close()
    info = probe_video(path)
    assert (info["frames"], info["size"]) == (6, (64, 48))


def test_prepare_output_creates_folders_and_refuses_existing(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    assert prepare_output(target) == target and target.parent.is_dir()
    target.write_text("x")
    with pytest.raises(EmotionError, match="overwrite=True") as info:
        prepare_output(target, overwrite=False)
    assert "--overwrite" in info.value.cli_message()
    with pytest.raises(EmotionError, match="directory"):
        prepare_output(tmp_path)
