"""What files say about themselves is respected: EXIF orientation, video rotation, frame rates and timestamps, odd
frame sizes."""

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from support import cli, probe_video, write_clip

from emotion.io.files import VideoSource, read_image

MS = Fraction(1, 1000)


def _upright(shared_data) -> np.ndarray:
    return cv2.imread(str(shared_data / "images" / "single_face.jpg"))


def _save_jpeg(path, bgr: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(bgr[:, :, ::-1]).save(path, "JPEG", exif=exif, quality=95)


def _encode(path, frames: list[np.ndarray], times_ms: list[int], rotation: int = 0) -> None:
    """An MPEG-4 .mp4 with these frames at these timestamps, and a display matrix turning it `rotation` degrees
    counter-clockwise (how phones flag a clip recorded sideways)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.time_base = "yuv420p", MS
        stream.codec_context.time_base = MS
        if rotation:
            stream.set_display_rotation(rotation)
        for frame, ms in zip(frames, times_ms):
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts, vf.time_base = ms, MS
            container.mux(stream.encode(vf))
        container.mux(stream.encode())


def _face_boxes(json_path) -> list:
    return [face["box"] for record in json.loads(json_path.read_text()) for face in record["faces"]]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_applies_every_exif_orientation_as_pillow_does(shared_data, tmp_path, orientation):
    photo = _upright(shared_data)
    _save_jpeg(tmp_path / "p.jpg", photo, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "p.jpg")))[:, :, ::-1]
    image = read_image(tmp_path / "p.jpg")
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).mean() < 2.0


def test_sideways_phone_photo_is_processed_upright(shared_data, tmp_path):
    photo = _upright(shared_data)
    cv2.imwrite(str(tmp_path / "upright.png"), photo)
    _save_jpeg(tmp_path / "phone.jpg", cv2.rotate(photo, cv2.ROTATE_90_COUNTERCLOCKWISE), orientation=6)
    proc = cli("--image", tmp_path / "upright.png", tmp_path / "phone.jpg", "--json", tmp_path / "r.json",
               "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    upright, phone = (record["faces"] for record in json.loads((tmp_path / "r.json").read_text()))
    assert len(upright) == len(phone) == 1
    assert np.abs(np.subtract(upright[0]["box"], phone[0]["box"])).max() <= 4
    assert cv2.imread(str(tmp_path / "out" / "phone_annotated.png")).shape == photo.shape


def test_video_with_rotation_metadata_is_processed_upright(shared_data, tmp_path):
    frame = cv2.resize(_upright(shared_data), (320, 240))
    times = [i * 40 for i in range(8)]
    _encode(tmp_path / "upright.mp4", [frame] * 8, times)
    _encode(tmp_path / "phone.mp4", [cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)] * 8, times, rotation=-90)
    with VideoSource(tmp_path / "phone.mp4") as video:
        assert (video.info.width, video.info.height) == (320, 240)
    for name in ("upright", "phone"):
        proc = cli("--video", tmp_path / f"{name}.mp4", "--output", tmp_path / f"{name}_out.mp4", "--no-progress")
        assert proc.returncode == 0, proc.stderr
    upright = _face_boxes(tmp_path / "upright_out_results.json")
    phone = _face_boxes(tmp_path / "phone_out_results.json")
    assert len(upright) == len(phone) == 8
    assert np.abs(np.subtract(upright, phone)).max() <= 4
    cap = cv2.VideoCapture(str(tmp_path / "phone_out.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
    cap.release()


@pytest.mark.parametrize("fps", [1000, 0.25])
def test_declared_frame_rate_gives_times_and_the_annotated_rate(tmp_path, fps):
    write_clip(tmp_path / "clip.avi", frames=5, fps=fps)
    proc = cli("--video", tmp_path / "clip.avi", "--output", tmp_path / "out.mp4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    times = [record["time"] for record in json.loads((tmp_path / "out_results.json").read_text())]
    assert times == pytest.approx([i / fps for i in range(5)])
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps, rel=1e-3)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    cap.release()


def test_variable_frame_rate_keeps_each_frames_timestamp(tmp_path):
    times_ms = [0, 100, 300, 700, 1500]
    _encode(tmp_path / "vfr.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 5, times_ms)
    proc = cli("--video", tmp_path / "vfr.mp4", "--json", tmp_path / "r.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    times = [record["time"] for record in json.loads((tmp_path / "r.json").read_text())]
    assert times == pytest.approx([ms / 1000 for ms in times_ms])


def test_odd_frame_size_loses_only_the_last_column_and_row(tmp_path):
    frame = np.full((361, 641, 3), 60, np.uint8)
    frame[:, 600], frame[300, :] = 255, 255
    writer = cv2.VideoWriter(str(tmp_path / "odd.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (641, 361))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    proc = cli("--video", tmp_path / "odd.avi", "--output", tmp_path / "out.mp4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ok, out = cv2.VideoCapture(str(tmp_path / "out.mp4")).read()
    assert ok and out.shape == (360, 640, 3) and probe_video(tmp_path / "out.mp4")["codec"] == "h264"
    assert out[:, 600].mean() > 200 and out[300, :].mean() > 200  # cropped at the right and bottom, not scaled
    assert out[:, 598].mean() < 100 and out[298, :].mean() < 100
