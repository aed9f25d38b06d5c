"""The MediaPipe models the face stage runs (shipped in the mediapipe 0.10.21 wheel, or with this package, so it works
offline), with their native log lines kept off the terminal: the two face detectors, the face landmark model on a
region we choose, the pose model, whose head keypoints find faces turned too far for the face detectors, and the
face signals' attention mesh and blendshape network.

Every model answers with `Proposal`s or landmarks in the pixels of the RGB image it was given.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from emotion.errors import EmotionError

LANDMARK_COUNT = 468
REFINED_LANDMARK_COUNT = 478  # the attention mesh's, irises last

ROI_SCALE = 1.5
"""Side of the landmark model's square region as a multiple of the face box's longer side (MediaPipe's face mesh)."""

_RIGHT_EYE_CORNER, _LEFT_EYE_CORNER = 33, 263  # mesh landmarks MediaPipe rotates its region by
_POSE_HEAD = slice(0, 11)  # pose landmarks: nose, eyes, ears, mouth corners
_POSE_RIGHT_EYE, _POSE_LEFT_EYE = 5, 2
_POSE_HEAD_SCALE = 2.2  # region side over the longer side of the pose head points' box (ears to mouth)
_POSE_MIN_VISIBILITY = 0.5  # the nose must be at least this visible in the pose result

_LANDMARK_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "landmarks"
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:landmarks"
}
"""
"""The face mesh's second stage alone: 468 landmarks in a given region, output only when the model's face-presence
score passes its threshold (0.5), so it also confirms that the region holds a face."""


_SIGNALS_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "refined"
output_stream: "blendshapes"
node {
  calculator: "ImageToTensorCalculator"
  input_stream: "IMAGE:image"
  input_stream: "NORM_RECT:roi"
  output_stream: "TENSORS:input_tensors"
  options: { [mediapipe.ImageToTensorCalculatorOptions.ext] {
    output_tensor_width: 192 output_tensor_height: 192 output_tensor_float_range { min: 0.0 max: 1.0 } } }
}
node { calculator: "TfLiteCustomOpResolverCalculator" output_side_packet: "OP_RESOLVER:op_resolver" }
node {
  calculator: "InferenceCalculator"
  input_stream: "TENSORS:input_tensors"
  input_side_packet: "OP_RESOLVER:op_resolver"
  output_stream: "TENSORS:output_tensors"
  options: { [mediapipe.InferenceCalculatorOptions.ext] {
    model_path: "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite" delegate { xnnpack {} } } }
}
node {
  calculator: "SplitTensorVectorCalculator"
  input_stream: "output_tensors"
  output_stream: "landmark_tensors"
  options: { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges: { begin: 0 end: 6 } } }
}
node {
  calculator: "TensorsToFaceLandmarksWithAttention"
  input_stream: "TENSORS:landmark_tensors"
  output_stream: "LANDMARKS:local"
}
node {
  calculator: "LandmarkProjectionCalculator"
  input_stream: "NORM_LANDMARKS:local"
  input_stream: "NORM_RECT:roi"
  output_stream: "NORM_LANDMARKS:refined"
}
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image" output_stream: "SIZE:size" }
node {
  calculator: "mediapipe.tasks.vision.face_landmarker.FaceBlendshapesGraph"
  input_stream: "LANDMARKS:refined"
  input_stream: "IMAGE_SIZE:size"
  output_stream: "BLENDSHAPES:blendshapes"
}
"""
"""The attention face mesh (the face mesh's `refine_landmarks` model: 478 landmarks, eyes and lips refined, 10 iris
points) on a region where the plain model found a face, as FaceLandmarkCpu runs it but without its face/no-face gate
(that decision stays the plain model's: the attention model's own score rejected a turned face the plain model
follows and passed a cartoon sky the plain model rejects), then Face Landmarker v2's blendshape network on it."""


@contextmanager
def quiet_native_stderr():
    """Silence MediaPipe's native start-up log lines (absl/TFLite write them straight to file descriptor 2)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


BLANK = np.zeros((64, 64, 3), np.uint8)
"""A frame without a face, run through a graph after start-up (see QuietGraph)."""


class QuietGraph:
    """A MediaPipe graph whose native start-up warnings (absl/TFLite, written to fd 2) stay off the terminal.

    A new graph opens its calculators, which log, on MediaPipe's own threads; `process` returns only once the graph
    is idle, so a blank input processed while fd 2 is silenced holds the quiet window open until they have. Later
    calls log nothing (a test checks), and run with fd 2 open: silencing it, a process-wide setting, on the face
    stage's thread would also swallow what other threads print meanwhile (an "interrupted" line, an error).
    """

    def __init__(self, make: Callable[[], object]):
        with quiet_native_stderr():
            self._graph = make()
            self._graph.process(BLANK)

    def process(self, data):
        return self._graph.process(data)

    def close(self) -> None:
        self._graph.close()


def load_mediapipe():
    """The mediapipe module, imported on first use rather than with this module, so that the command line can read
    FaceConfig without loading MediaPipe (about 0.5 s)."""
    import mediapipe

    return mediapipe


@dataclass(frozen=True)
class Roi:
    """A square region for the landmark model: centre and side in px, and its rotation in radians (positive when the
    face's left eye, on the image's right, is lower than its right eye; MediaPipe's convention)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    @classmethod
    def around(cls, box: tuple[float, float, float, float], angle: float = 0.0, scale: float = ROI_SCALE) -> Roi:
        """The region `scale` times the longer side of a face box (x, y, w, h px), centred on it."""
        x, y, w, h = box
        return cls(x + w / 2, y + h / 2, max(w, h, 1.0) * scale, angle)

    @classmethod
    def of_landmarks(cls, landmarks: np.ndarray) -> Roi:
        """Where the face of these mesh landmarks is, as MediaPipe's face mesh tracks it into the next frame."""
        return cls.around(landmark_box(landmarks), eye_angle(landmarks[_RIGHT_EYE_CORNER], landmarks[_LEFT_EYE_CORNER]))


def eye_angle(right_eye, left_eye) -> float:
    """Rotation of the line from the face's right eye (image left) to its left eye, in radians."""
    return math.atan2(float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """Bounds (x, y, w, h) of the landmarks."""
    x0, y0 = landmarks[:, :2].min(axis=0)
    x1, y1 = landmarks[:, :2].max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


@dataclass
class Fit:
    """A face the landmark model found, and the region it found it in (where its signals are read)."""

    landmarks: np.ndarray  # (L, 3) float32 px, z in px scale
    roi: Roi


@dataclass
class Proposal:
    """A place that may hold a face, for the landmark model to confirm."""

    box: tuple[float, float, float, float]  # x, y, w, h in px
    roi: Roi  # the region the landmark model looks at
    source: str  # which search found it: detector, tiled, pose, padded, whole-image, cropped
    score: float | None = None  # [0, 1], the face detector's score; None when no face detector found it

    def moved(self, dx: float, dy: float, source: str) -> Proposal:
        """This proposal from an image cut at (dx, dy), in the original image's px and named by `source`."""
        x, y, w, h = self.box
        r = self.roi
        return Proposal((x + dx, y + dy, w, h), Roi(r.cx + dx, r.cy + dy, r.side, r.angle), source, self.score)


_LANDMARK_RECORD = np.dtype(
    [("tag", "u1"), ("size", "u1"), ("x_tag", "u1"), ("x", "<f4")]
    + [("y_tag", "u1"), ("y", "<f4"), ("z_tag", "u1"), ("z", "<f4")]
)
"""One serialized NormalizedLandmark holding exactly x, y and z, as the face landmark model emits them (17 bytes)."""


def mesh_landmarks(face_landmarks, width: int, height: int, count: int = LANDMARK_COUNT) -> np.ndarray:
    """(L, 3) float32 px from a NormalizedLandmarkList, read from its protobuf bytes in one go rather than through
    1,404 attribute reads (README, "Measured on this machine"); falls back to the attributes for another layout."""
    raw = face_landmarks.SerializeToString()
    records = np.frombuffer(raw, _LANDMARK_RECORD) if len(raw) % _LANDMARK_RECORD.itemsize == 0 else None
    expected = {"tag": 0x0A, "size": 15, "x_tag": 0x0D, "y_tag": 0x15, "z_tag": 0x1D}
    if records is not None and all((records[k] == v).all() for k, v in expected.items()):
        points = np.stack([records["x"], records["y"], records["z"]], axis=1)[:count]
    else:
        points = np.array([(p.x, p.y, p.z) for p in face_landmarks.landmark[:count]], np.float32)
    return points * np.array([width, height, width], np.float32)


class _RegionGraph:
    """A MediaPipe graph fed an image and a region of it (streams "image" and "roi"), run directly rather than
    through mediapipe's SolutionBase, whose per-call bookkeeping cost about 0.2 ms of a 1.6 ms call here; its native
    start-up logs stay off the terminal (see QuietGraph)."""

    def __init__(self, config):
        mp = load_mediapipe()
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python import resource_util

        self._mp, self._rect = mp, rect_pb2.NormalizedRect
        resource_util.set_resource_dir(str(Path(mp.__file__).parents[1]))  # where the graph finds the model files
        self._found: dict = {}
        self._timestamp = 0
        with quiet_native_stderr():
            self._graph = mp.CalculatorGraph(graph_config=config)
            for stream in config.output_stream:
                self._graph.observe_output_stream(stream, lambda name, packet: self._found.__setitem__(name, packet))
            self._graph.start_run()
            self._run(BLANK, Roi(32, 32, 64))  # start-up logs, inside the quiet window

    def _run(self, rgb: np.ndarray, roi: Roi) -> dict:
        """The graph's output packets for `roi` of `rgb`, by stream name (a stream without output is absent)."""
        mp = self._mp
        h, w = rgb.shape[:2]
        rect = self._rect(
            x_center=roi.cx / w, y_center=roi.cy / h, width=roi.side / w, height=roi.side / h, rotation=roi.angle
        )
        self._timestamp += 1
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        self._found.clear()
        self._graph.add_packet_to_input_stream("image", mp.packet_creator.create_image(image).at(self._timestamp))
        self._graph.add_packet_to_input_stream("roi", mp.packet_creator.create_proto(rect).at(self._timestamp))
        self._graph.wait_until_idle()
        return self._found

    def close(self) -> None:
        with quiet_native_stderr():
            self._graph.close()


def _graph_config(text: str):
    """A CalculatorGraphConfig from its text form."""
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2

    return text_format.Parse(text, calculator_pb2.CalculatorGraphConfig())


class LandmarkModel(_RegionGraph):
    """MediaPipe's face landmark model on a region we choose: (L, 3) float32 landmarks in px (z in px scale), or
    None when the model does not see a face there. Unlike the face mesh solution it needs no face detector first,
    so it follows faces turned too far for the detectors."""

    def __init__(self):
        super().__init__(_graph_config(_LANDMARK_GRAPH))

    def __call__(self, rgb: np.ndarray, roi: Roi) -> np.ndarray | None:
        found = self._run(rgb, roi).get("landmarks")
        return None if found is None else mesh_landmarks(self._mp.packet_getter.get_proto(found), *rgb.shape[1::-1])


class SignalModel(_RegionGraph):
    """The face signals' MediaPipe models on a region where a face was found (README "Face signals"): the attention
    mesh's 478 landmarks (px) and the 52 blendshape scores. Safe to call from another thread than the face stage's
    (the pipeline reads signals on its model thread, overlapping the next frame's face stage)."""

    def __init__(self):
        from mediapipe.tasks.cc.vision.face_landmarker.proto import face_blendshapes_graph_options_pb2 as options

        from emotion.signals import bundle_file

        config = _graph_config(_SIGNALS_GRAPH)
        blendshapes = options.FaceBlendshapesGraphOptions()
        blendshapes.base_options.model_asset.file_content = bundle_file("face_blendshapes.tflite")
        config.node[-1].options.Extensions[options.FaceBlendshapesGraphOptions.ext].CopyFrom(blendshapes)
        self._lock = threading.Lock()
        self._closed = False
        super().__init__(config)

    def __call__(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
        """(478, 3) float32 landmarks in px and (52,) float32 blendshape scores of the face in `roi`."""
        with self._lock:
            if self._closed:
                raise EmotionError(
                    "a face's signals were read after its face stage (FaceAnalyzer or EmotionRecognizer) was closed",
                    fix="read Face.signals before closing it",
                )
            found = self._run(rgb, roi)
            refined, scores = (self._mp.packet_getter.get_proto(found[k]) for k in ("refined", "blendshapes"))
        landmarks = mesh_landmarks(refined, *rgb.shape[1::-1], REFINED_LANDMARK_COUNT)
        return landmarks, np.array([c.score for c in scores.classification], np.float32)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            super().close()


class FaceDetector:
    """One of MediaPipe's face detectors (`full_range`: faces up to about 5 m, small in the frame; else short range:
    close-ups) as proposals of the given source."""

    def __init__(self, full_range: bool, min_confidence: float):
        detection = load_mediapipe().solutions.face_detection.FaceDetection
        self._graph = QuietGraph(
            partial(detection, model_selection=int(full_range), min_detection_confidence=min_confidence)
        )

    def __call__(self, rgb: np.ndarray, source: str = "detector") -> list[Proposal]:
        h, w = rgb.shape[:2]
        out = []
        for d in self._graph.process(rgb).detections or []:
            b = d.location_data.relative_bounding_box
            right_eye, left_eye = d.location_data.relative_keypoints[:2]
            angle = eye_angle((right_eye.x * w, right_eye.y * h), (left_eye.x * w, left_eye.y * h))
            box = (b.xmin * w, b.ymin * h, b.width * w, b.height * h)
            out.append(Proposal(box, Roi.around(box, angle), source, float(d.score[0])))
        return out

    def close(self) -> None:
        self._graph.close()


class PoseHeads:
    """The head of the most prominent person in an image, from MediaPipe's pose model (its detector and landmarks
    see people whose face is turned away from the camera): a proposal of source "pose", or none."""

    def __init__(self):
        pose = load_mediapipe().solutions.pose.Pose
        self._graph = QuietGraph(partial(pose, static_image_mode=True, model_complexity=1))

    def __call__(self, rgb: np.ndarray) -> list[Proposal]:
        found = self._graph.process(rgb).pose_landmarks
        if found is None:
            return []
        h, w = rgb.shape[:2]
        head = np.array([(p.x * w, p.y * h, p.visibility) for p in found.landmark[_POSE_HEAD]], np.float32)
        if head[0, 2] < _POSE_MIN_VISIBILITY:
            return []
        box = landmark_box(head)
        angle = eye_angle(head[_POSE_RIGHT_EYE], head[_POSE_LEFT_EYE])
        return [Proposal(box, Roi.around(box, angle, _POSE_HEAD_SCALE), "pose")]

    def close(self) -> None:
        self._graph.close()
