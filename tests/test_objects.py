"""YOLO object boxes: a real ultralytics network built offline from yolov8n.yaml, on its background thread, drawn by
the overlay, through `--objects` on the command line, and a clear message (and no boxes) when weights cannot load."""


import cv2
import numpy as np

from support import SHARED, cli, needs_shared

from emotion.objects import ObjectConfig, ObjectDetector
from emotion.overlay import OBJECT_COLOR, draw_boxes


# An untrained network scores every box near 2e-4; a threshold under that makes it return boxes to draw.
UNTRAINED = ObjectConfig(weights="yolov8n.yaml", confidence=1e-5)


def object_pixels(img: np.ndarray) -> int:
    return int((np.abs(img.astype(int) - np.array(OBJECT_COLOR)).max(axis=2) <= 40).sum())


@needs_shared
def test_detector_boxes_from_yaml_model_are_drawn():
    image = cv2.imread(str(SHARED / "images" / "multi_face.jpg"))
    detector = ObjectDetector(UNTRAINED)
    try:
        assert detector.wait(120) and detector.error is None and detector.ready
        assert len(detector.names) == 80
        assert detector.submit(image, index=7)
        assert not detector.submit(image, index=8), "a busy detector must not queue frames"
        assert detector.wait(60)
        boxes = detector.boxes
    finally:
        detector.close()
    assert detector.frame_index == 7 and detector.runs == 1
    assert boxes.ndim == 2 and boxes.shape[1] == 6 and len(boxes) > 0
    h, w = image.shape[:2]
    assert (boxes[:, [0, 2]] >= -1).all() and (boxes[:, [0, 2]] <= w + 1).all() and (boxes[:, 4] >= 1e-5).all()
    drawn = draw_boxes(image.copy(), boxes, detector.names)
    assert object_pixels(drawn) > object_pixels(image) + 500


def test_missing_weights_give_one_clear_line_and_no_boxes(tmp_path):
    detector = ObjectDetector(ObjectConfig(weights=str(tmp_path / "missing" / "model.pt")))
    try:
        assert detector.wait(60)
        assert not detector.submit(np.zeros((64, 64, 3), np.uint8))
    finally:
        detector.close()
    assert detector.error.startswith("object boxes off: cannot load YOLO weights")
    assert "model.pt not found" in detector.error and "\n" not in detector.error
    assert len(detector.boxes) == 0 and not detector.ready


@needs_shared
def test_video_with_objects_draws_yolo_boxes(tmp_path):
    proc = cli("--video", SHARED / "videos" / "single_face.mp4", "--output", tmp_path / "out.mp4", "--objects",
               "--yolo-weights", "yolov8n.yaml", "--yolo-conf", "0.00001", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = int(proc.stdout.split("objects: ")[1].split()[0])
    assert runs >= 1, proc.stdout
    video = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    frames = [video.read()[1] for _ in range(72)]
    assert max(object_pixels(f) for f in frames if f is not None) > 500


@needs_shared
def test_unloadable_weights_keep_the_live_loop_running(tmp_path):
    proc = cli("--realtime", "--headless", "--no-sync", "--source", SHARED / "videos" / "single_face.mp4", "--objects",
               "--yolo-weights", "no_such_model.pt", "--json", tmp_path / "live.json", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "YOLO" in line]
    assert errors == [errors[0]] and errors[0].startswith("object boxes off: cannot load YOLO weights no_such_model.pt")
    assert "72 frames shown" in proc.stdout
