"""Face stage: find every face (MediaPipe), its 468 landmarks, an eye-aligned tight crop and a stable track id.

Image mode detects from scratch with both MediaPipe detectors (full range finds small and distant faces, short range
finds close-ups the full-range model misses) and runs the face mesh on an enlarged crop around each detection.
Video mode lets FaceMesh track from its previous landmarks on the full frame, follows faces it does not track by a
crop around their last landmarks, and runs a detector every `redetect_every` frames (full and short range in turn)
to pick up new faces, and both detectors when a new face appears, to score it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial

import cv2
import numpy as np

from emotion.align import DEFAULT_MARGIN, align_crop, canonical_landmarks
from emotion.configargs import check_min, option
from emotion.imaging import to_rgb

LANDMARK_COUNT = 468

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


_BLANK = np.zeros((64, 64, 3), np.uint8)
"""A frame without a face, run through a graph after start-up and reset (see _QuietGraph)."""


class _QuietGraph:
    """A MediaPipe solution whose native warnings (absl/TFLite, written to fd 2) stay off the terminal.

    Every call runs with fd 2 silenced. A new or reset graph opens its calculators, which log, on MediaPipe's own
    threads; `process` returns only once the graph is idle, so a blank frame processed inside the quiet window holds
    it open until they have. A blank frame leaves no state behind: a tracking face mesh has no face to follow.
    """

    def __init__(self, make: Callable[[], object]):
        with _quiet_native_stderr():
            self._graph = make()
            self._graph.process(_BLANK)

    def process(self, image: np.ndarray):
        with _quiet_native_stderr():
            return self._graph.process(image)

    def reset(self) -> None:
        with _quiet_native_stderr():
            self._graph.reset()
            self._graph.process(_BLANK)

    def close(self) -> None:
        self._graph.close()


def load_mediapipe():
    """The mediapipe module, imported on first use rather than with this module, so that the command line can read
    FaceConfig without loading MediaPipe (about 0.5 s)."""
    import mediapipe

    return mediapipe


@dataclass(frozen=True)
class FaceConfig:
    """Settings of the face stage."""

    max_faces: int = option(  # count; at most this many faces per frame, the largest are kept
        "cap on faces per frame, largest first; 20 faces work, at the frame rate README's 'Measured on this machine' "
        "gives",
        10,
        metavar="N",
    )
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

    def __post_init__(self) -> None:
        check_min(self, 1, "max_faces", "crop_size", "max_side")


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
        """(L, 3) float32 in the canonical pose, see emotion.align.canonical_landmarks."""
        return canonical_landmarks(self.landmarks)

    @cached_property
    def crop(self) -> np.ndarray:
        """(S, S) uint8 grayscale, eyes level, brows to chin (see emotion.align.align_crop)."""
        return align_crop(self.frame, self.landmarks, self.crop_size, self.margin)


def face_crop(frame: np.ndarray, face: Face, crop_size: int, in_chans: int) -> np.ndarray:
    """The face's aligned crop at a model's size: (S, S) uint8 gray for in_chans 1, (S, S, 3) BGR for 3."""
    if in_chans == 1 and face.crop.shape[:2] == (crop_size, crop_size):
        return face.crop
    return align_crop(frame, face.landmarks, size=crop_size, color=in_chans == 3)


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


_LANDMARK_RECORD = np.dtype(
    [("tag", "u1"), ("size", "u1"), ("x_tag", "u1"), ("x", "<f4")]
    + [("y_tag", "u1"), ("y", "<f4"), ("z_tag", "u1"), ("z", "<f4")]
)
"""One serialized NormalizedLandmark holding exactly x, y and z, as FaceMesh emits them (17 bytes)."""


def _mesh_landmarks(face_landmarks, width: int, height: int) -> np.ndarray:
    """(L, 3) float32 px from a NormalizedLandmarkList, read from its protobuf bytes in one go rather than through
    1,404 attribute reads (README, "Measured on this machine"); falls back to the attributes for another layout."""
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
        mp = load_mediapipe()
        config = self.config
        detection, mesh = mp.solutions.face_detection.FaceDetection, mp.solutions.face_mesh.FaceMesh
        confidence = config.min_detection_confidence
        self._full_range = _QuietGraph(partial(detection, model_selection=1, min_detection_confidence=confidence))
        self._short_range = _QuietGraph(partial(detection, model_selection=0, min_detection_confidence=confidence))
        self._crop_mesh = _QuietGraph(
            partial(mesh, static_image_mode=True, max_num_faces=2, min_detection_confidence=confidence)
        )
        self._mesh = None
        if not self.static:
            self._mesh = _QuietGraph(
                partial(
                    mesh,
                    static_image_mode=False,
                    max_num_faces=max(1, min(config.mesh_max_faces, config.max_faces)),
                    min_detection_confidence=confidence,
                    min_tracking_confidence=config.min_tracking_confidence,
                )
            )

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
