"""Face stage: find every face (MediaPipe), its 468 landmarks, an eye-aligned tight crop and a stable track id.

Image mode detects from scratch with both MediaPipe detectors (full range finds small and distant faces, short range
finds close-ups the full-range model misses) and runs the face mesh on an enlarged crop around each detection.
Video mode lets FaceMesh track from its previous landmarks on the full frame, follows faces it does not track by a
crop around their last landmarks, and runs a detector every `redetect_every` frames (full and short range in turn)
to pick up new faces, and both detectors when a new face appears, to score it.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import mediapipe as mp
import numpy as np

from emotion.imaging import to_bgr, to_gray, to_rgb

LANDMARK_COUNT = 468

RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
"""Contour of the subject's right eye (left in the image) in the MediaPipe face mesh."""
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
"""Contour of the subject's left eye (right in the image)."""
BROWS = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
"""Both eyebrows: their highest point is the top of the tight crop."""
CHIN = 152
"""Lowest point of the face oval: the bottom of the tight crop."""
CHEEKS = (234, 454)
"""Widest points of the face oval (near the ears): the sides of the tight crop."""

DEFAULT_MARGIN = 0.1
"""Margin of `align_crop`: 5 % of the tight square on each side, so brows to chin fill the crop as in FER2013
without cutting the brows (on our labelled photos and clips the mini-Xception scored best between 0.1 and 0.2)."""

_MESH_INPUT = 256  # px, side of the square crop handed to the face mesh around one face
_NMS_IOU = 0.3  # boxes overlapping more than this are the same face


@contextmanager
def _quiet_native_stderr():
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


class _QuietGraph:
    """A MediaPipe solution whose calls keep its native warnings (absl/TFLite, written to fd 2) off the terminal."""

    def __init__(self, graph):
        self._graph = graph

    def process(self, image: np.ndarray):
        with _quiet_native_stderr():
            return self._graph.process(image)

    def reset(self) -> None:
        with _quiet_native_stderr():
            self._graph.reset()
            self.settle()

    def settle(self) -> None:
        """Wait until the new graph has opened its calculators: their start-up warnings come from MediaPipe's own
        threads, so without this they could land on the terminal after the quiet window has closed."""
        self._graph._graph.wait_until_idle()

    def close(self) -> None:
        self._graph.close()


@dataclass(frozen=True)
class FaceConfig:
    """Settings of the face stage."""

    max_faces: int = 10  # count; at most this many faces per frame, the largest are kept
    crop_size: int = 64  # px, side of the square grayscale crop handed to the frame model
    margin: float = DEFAULT_MARGIN  # fraction of the tight brows-to-chin square's side added around it (0 = tight)
    min_detection_confidence: float = 0.5  # [0, 1], detector score a new face needs
    min_tracking_confidence: float = 0.5  # [0, 1], face-mesh presence score a tracked face needs to stay tracked
    redetect_every: int = 10  # frames between detection passes in video mode, full and short range in turn
    max_missed: int = 10  # frames a track survives without being found before its id is dropped
    match_iou: float = 0.3  # box IoU in [0, 1] a face needs with a track's last box to continue that track
    mesh_max_faces: int = 1  # count; faces the full-frame FaceMesh tracks by landmarks, the rest by crops
    roi_scale: float = 2.0  # crop side around a face for the face mesh, multiple of the face box's longer side
    max_side: int = 1920  # px; longer frames are downscaled (INTER_AREA) for MediaPipe, results mapped back


@dataclass
class Face:
    """One face in one frame; `landmarks_norm` and `crop` are computed on first use (e.g. on the model's thread),
    so the frame must stay unchanged until then."""

    track_id: int  # stable across frames in video mode; in image mode 0.. from left to right
    box: tuple[int, int, int, int]  # x, y, w, h in px: bounds of the landmarks, clipped to the image
    score: float  # [0, 1], latest detector score of this face (min_detection_confidence before any detector saw it)
    landmarks: np.ndarray  # (L, 3) float32: x, y in px, z in px scale (MediaPipe z * width)
    frame: np.ndarray = field(repr=False, compare=False)  # the image the face is in, source of the crop
    crop_size: int = 64  # px, side of `crop`
    margin: float = DEFAULT_MARGIN  # see align_crop

    @cached_property
    def landmarks_norm(self) -> np.ndarray:
        """(L, 3) float32, see normalize_landmarks."""
        return normalize_landmarks(self.landmarks)

    @cached_property
    def crop(self) -> np.ndarray:
        """(S, S) uint8 grayscale, eyes level, brows to chin (see align_crop)."""
        return align_crop(self.frame, self.landmarks, self.crop_size, self.margin)


@dataclass
class _Track:
    """What video mode remembers of one face between frames."""

    track_id: int
    box: tuple[float, float, float, float]  # x, y, w, h in working-image px, unclipped
    score: float  # [0, 1], latest detector score
    missed: int = 0  # consecutive frames without a matching face


@dataclass
class _Candidate:
    """A face found in this frame, before it is matched to a track."""

    landmarks: np.ndarray  # (L, 3) float32 in working-image px
    box: tuple[float, float, float, float] = field(init=False)
    score: float | None = None
    from_mesh: bool = False

    def __post_init__(self) -> None:
        self.box = _landmark_box(self.landmarks)


def _landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = landmarks[:, :2].min(axis=0)
    x1, y1 = landmarks[:, :2].max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms(items: list, box_of) -> list:
    """Keep items in their given order unless their box overlaps an already kept one by more than _NMS_IOU."""
    kept: list = []
    for item in items:
        if all(_iou(box_of(item), box_of(k)) <= _NMS_IOU for k in kept):
            kept.append(item)
    return kept


def _eye_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Eye midpoint (2,), the rotation (2, 2) that makes the eye line horizontal, and the inter-ocular distance."""
    right = landmarks[list(RIGHT_EYE), :2].mean(axis=0)
    left = landmarks[list(LEFT_EYE), :2].mean(axis=0)
    dx, dy = (left - right).astype(np.float64)
    angle = math.atan2(dy, dx)
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, s], [-s, c]])
    return (left + right) / 2.0, rotation, math.hypot(dx, dy)


def crop_square(landmarks: np.ndarray, margin: float = DEFAULT_MARGIN) -> tuple[np.ndarray, np.ndarray, float]:
    """The crop square in eye-level coordinates: rotation (2, 2) from image px, its centre (2,) and side in px.

    The tight square spans from the top of the brows to the chin vertically and cheek to cheek horizontally
    (whichever is longer), centred on both spans; `margin` widens its side by that fraction.
    """
    _, rotation, _ = _eye_frame(landmarks)
    level = landmarks[:, :2].astype(np.float64) @ rotation.T
    top = level[list(BROWS), 1].min()
    bottom = level[CHIN, 1]
    left, right = np.sort(level[list(CHEEKS), 0])
    centre = np.array([(left + right) / 2.0, (top + bottom) / 2.0])
    side = max(bottom - top, right - left, 1.0) * (1.0 + margin)
    return rotation, centre, float(side)


def crop_matrix(landmarks: np.ndarray, size: int = 64, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The (2, 3) affine from image px to px of the (size, size) crop of `align_crop`, e.g. to draw landmarks on it."""
    rotation, centre, side = crop_square(landmarks, margin)
    scale = size / side
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = (size - 1) / 2.0 - scale * centre
    return matrix


def align_crop(
    image: np.ndarray, landmarks: np.ndarray, size: int = 64, margin: float = DEFAULT_MARGIN, color: bool = False
) -> np.ndarray:
    """Eye-level square crop framed brows to chin (FER2013 style): (size, size) gray, or (size, size, 3) BGR if color.

    image is BGR (H, W, 3), BGRA (H, W, 4) or grayscale (H, W) uint8; landmarks (L, 3) or (L, 2) px in that image.
    One affine (rotation, scale, translation, see `crop_matrix`) maps the square to the output; a face much larger
    than the output is first shrunk with INTER_AREA so the result is not aliased. Borders are replicated.
    """
    matrix = crop_matrix(landmarks, size, margin)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    source = corners @ cv2.invertAffineTransform(matrix).T
    h, w = image.shape[:2]
    x0 = int(np.clip(math.floor(source[:, 0].min()) - 1, 0, w - 1))
    y0 = int(np.clip(math.floor(source[:, 1].min()) - 1, 0, h - 1))
    x1 = int(np.clip(math.ceil(source[:, 0].max()) + 2, x0 + 1, w))
    y1 = int(np.clip(math.ceil(source[:, 1].max()) + 2, y0 + 1, h))
    region = to_bgr(image[y0:y1, x0:x1]) if color else to_gray(image[y0:y1, x0:x1])
    to_image = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    shrink = math.hypot(*matrix[:, 0]) * 2.0
    if shrink < 1.0:
        rw, rh = max(1, round((x1 - x0) * shrink)), max(1, round((y1 - y0) * shrink))
        sx, sy = rw / (x1 - x0), rh / (y1 - y0)
        region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        to_image = to_image @ np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
    region = np.ascontiguousarray(region)
    flags, border = cv2.INTER_LINEAR, cv2.BORDER_REPLICATE
    return cv2.warpAffine(region, matrix @ to_image, (size, size), flags=flags, borderMode=border)


def normalize_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks (L, 3) without translation, scale and roll: centred on their centroid (x, y and z), rotated about z
    so the line from the right-eye centre to the left-eye centre points along +x, divided by that eye distance."""
    points = landmarks.astype(np.float64)
    _, rotation, distance = _eye_frame(points)
    centred = points - points.mean(axis=0)
    out = np.empty_like(centred)
    out[:, :2] = centred[:, :2] @ rotation.T
    out[:, 2] = centred[:, 2]
    return (out / max(distance, 1e-6)).astype(np.float32)


_LANDMARK_RECORD = np.dtype(
    [("tag", "u1"), ("size", "u1"), ("x_tag", "u1"), ("x", "<f4")]
    + [("y_tag", "u1"), ("y", "<f4"), ("z_tag", "u1"), ("z", "<f4")]
)
"""One serialized NormalizedLandmark holding exactly x, y and z, as FaceMesh emits them (17 bytes)."""


def _mesh_landmarks(face_landmarks, width: int, height: int) -> np.ndarray:
    """(L, 3) float32 px from a NormalizedLandmarkList, read from its protobuf bytes (15x faster than attributes)."""
    raw = face_landmarks.SerializeToString()
    records = np.frombuffer(raw, _LANDMARK_RECORD) if len(raw) % _LANDMARK_RECORD.itemsize == 0 else None
    expected = {"tag": 0x0A, "size": 15, "x_tag": 0x0D, "y_tag": 0x15, "z_tag": 0x1D}
    if records is not None and all((records[k] == v).all() for k, v in expected.items()):
        points = np.stack([records["x"], records["y"], records["z"]], axis=1)[:LANDMARK_COUNT]
    else:
        points = np.array([(p.x, p.y, p.z) for p in face_landmarks.landmark[:LANDMARK_COUNT]], np.float32)
    return points * np.array([width, height, width], np.float32)


class FaceAnalyzer:
    """Faces of a frame: box, score, landmarks, normalised landmarks, aligned crop and track id.

    `static=True` treats every call as an unrelated image; otherwise calls are consecutive video frames.
    """

    def __init__(self, config: FaceConfig = FaceConfig(), static: bool = False):
        self.config = config
        self.static = static
        self._build_graphs()
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame_index = 0
        self._closed = False

    def _build_graphs(self) -> None:
        """Create the MediaPipe graphs with their native start-up and run-time warnings kept off the terminal."""
        config = self.config
        solutions = mp.solutions
        with _quiet_native_stderr():
            self._full_range = _QuietGraph(
                solutions.face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=config.min_detection_confidence
                )
            )
            self._short_range = _QuietGraph(
                solutions.face_detection.FaceDetection(
                    model_selection=0, min_detection_confidence=config.min_detection_confidence
                )
            )
            self._crop_mesh = _QuietGraph(
                solutions.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=2, min_detection_confidence=config.min_detection_confidence
                )
            )
            self._mesh = None
            if not self.static:
                self._mesh = _QuietGraph(
                    solutions.face_mesh.FaceMesh(
                        static_image_mode=False,
                        max_num_faces=max(1, min(config.mesh_max_faces, config.max_faces)),
                        min_detection_confidence=config.min_detection_confidence,
                        min_tracking_confidence=config.min_tracking_confidence,
                    )
                )
            for graph in (self._full_range, self._short_range, self._crop_mesh, self._mesh):
                if graph is not None:
                    graph.settle()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graphs; the analyzer cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        for graph in (self._full_range, self._short_range, self._crop_mesh, self._mesh):
            if graph is not None:
                graph.close()

    def reset(self) -> None:
        """Forget all tracks and the face mesh's tracking state: a new video starts, its ids start again at 0."""
        self._tracks = []
        self._next_id = 0
        self._frame_index = 0
        if self._mesh is not None:
            self._mesh.reset()

    def __call__(self, frame: np.ndarray) -> list[Face]:
        rgb = to_rgb(frame)
        h, w = rgb.shape[:2]
        factor = np.ones(3, np.float32)
        if max(h, w) > self.config.max_side:
            shrink = self.config.max_side / max(h, w)
            rgb = cv2.resize(rgb, (round(w * shrink), round(h * shrink)), interpolation=cv2.INTER_AREA)
            factor[:] = w / rgb.shape[1], h / rgb.shape[0], w / rgb.shape[1]
        if self.static:
            candidates = self._detect_new(rgb, [])
            candidates = self._keep_largest(self._suppress(candidates))
            faces = sorted(candidates, key=lambda c: c.box[0] + c.box[2] / 2)
            tracked = [(i, c, c.score) for i, c in enumerate(faces)]
        else:
            tracked = self._track(rgb)
        self._frame_index += 1
        return [self._face(frame, track_id, c, score, factor) for track_id, c, score in tracked]

    def _face(self, frame: np.ndarray, track_id: int, candidate: _Candidate, score: float, factor: np.ndarray) -> Face:
        landmarks = candidate.landmarks * factor
        h, w = frame.shape[:2]
        x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
        x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
        x0, x1 = int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))
        y0, y1 = int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))
        return Face(
            track_id=track_id,
            box=(x0, y0, x1 - x0, y1 - y0),
            score=float(score),
            landmarks=landmarks,
            frame=frame,
            crop_size=self.config.crop_size,
            margin=self.config.margin,
        )

    def _track(self, rgb: np.ndarray) -> list[tuple[int, _Candidate, float]]:
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        candidates = [_Candidate(_mesh_landmarks(f, w, h), from_mesh=True) for f in result.multi_face_landmarks or []]
        for track in self._tracks:
            if any(_iou(track.box, c.box) > _NMS_IOU for c in candidates):
                continue
            found = self._mesh_around(rgb, track.box)
            if found is not None:
                candidates.append(found)
        is_new = [all(_iou(c.box, t.box) < self.config.match_iou for t in self._tracks) for c in candidates]
        every = max(1, self.config.redetect_every)
        if any(is_new):
            candidates += self._detect_new(rgb, candidates)
        elif self._frame_index % every == 0:
            detector = self._short_range if self._frame_index // every % 2 else self._full_range
            candidates += self._detect_new(rgb, candidates, (detector,))
        candidates = self._keep_largest(self._suppress(candidates))
        return self._match(candidates)

    def _match(self, candidates: list[_Candidate]) -> list[tuple[int, _Candidate, float]]:
        pairs = sorted(
            ((_iou(t.box, c.box), ti, ci) for ti, t in enumerate(self._tracks) for ci, c in enumerate(candidates)),
            reverse=True,
        )
        track_of: dict[int, _Track] = {}
        used: set[int] = set()
        for iou, ti, ci in pairs:
            if iou < self.config.match_iou:
                break
            if ti in used or ci in track_of:
                continue
            used.add(ti)
            track_of[ci] = self._tracks[ti]
        survivors = []
        for ti, track in enumerate(self._tracks):
            if ti not in used:
                track.missed += 1
                if track.missed <= self.config.max_missed:
                    survivors.append(track)
        out = []
        for ci, c in enumerate(candidates):
            track = track_of.get(ci)
            if track is None:
                score = c.score if c.score is not None else self.config.min_detection_confidence
                track = _Track(self._next_id, c.box, score)
                self._next_id += 1
            track.box, track.missed = c.box, 0
            if c.score is not None:
                track.score = c.score
            survivors.append(track)
            out.append((track.track_id, c, track.score))
        self._tracks = survivors
        return sorted(out, key=lambda item: item[0])

    def _detect_new(self, rgb: np.ndarray, known: list[_Candidate], detectors: tuple = ()) -> list[_Candidate]:
        """Run the detectors (default both); give known faces their score and mesh detections that are new faces."""
        h, w = rgb.shape[:2]
        detections = []
        for detector in detectors or (self._full_range, self._short_range):
            for d in detector.process(rgb).detections or []:
                b = d.location_data.relative_bounding_box
                detections.append((float(d.score[0]), (b.xmin * w, b.ymin * h, b.width * w, b.height * h)))
        detections.sort(key=lambda d: d[0], reverse=True)
        new = []
        for score, box in _greedy_nms(detections, lambda d: d[1]):
            owner = max(known + new, key=lambda c: _iou(box, c.box), default=None)
            if owner is not None and _iou(box, owner.box) > _NMS_IOU:
                owner.score = max(score, owner.score or 0.0)
                continue
            found = self._mesh_around(rgb, box)
            if found is not None:
                found.score = score
                new.append(found)
        return new

    def _mesh_around(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> _Candidate | None:
        """Face mesh on a square crop `roi_scale` times the box around it; the mesh face that overlaps the box."""
        x, y, bw, bh = box
        side = max(bw, bh, 1.0) * self.config.roi_scale
        scale = _MESH_INPUT / side
        matrix = np.array(
            [[scale, 0.0, _MESH_INPUT / 2 - scale * (x + bw / 2)], [0.0, scale, _MESH_INPUT / 2 - scale * (y + bh / 2)]]
        )
        crop = cv2.warpAffine(rgb, matrix, (_MESH_INPUT, _MESH_INPUT), flags=cv2.INTER_LINEAR)
        result = self._crop_mesh.process(crop)
        best, best_iou = None, _NMS_IOU
        for f in result.multi_face_landmarks or []:
            points = _mesh_landmarks(f, _MESH_INPUT, _MESH_INPUT)
            points[:, :2] = (points[:, :2] - matrix[:, 2].astype(np.float32)) / np.float32(scale)
            points[:, 2] /= np.float32(scale)
            candidate = _Candidate(points)
            overlap = _iou(candidate.box, box)
            if overlap > best_iou:
                best, best_iou = candidate, overlap
        return best

    def _suppress(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Drop duplicates of the same face: mesh-tracked faces first, then by score."""
        order = sorted(candidates, key=lambda c: (not c.from_mesh, -(c.score or 0.0)))
        return _greedy_nms(order, lambda c: c.box)

    def _keep_largest(self, candidates: list[_Candidate]) -> list[_Candidate]:
        return sorted(candidates, key=lambda c: c.box[2] * c.box[3], reverse=True)[: self.config.max_faces]
