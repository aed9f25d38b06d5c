"""Face stage: find every face (MediaPipe), its 468 landmarks, its normalised landmarks and a stable track id.

Searches propose regions that may hold a face; MediaPipe's face landmark model confirms each (it answers only where
it sees a face) and places the landmarks. The searches, each named in the face's `source`:
- detector: MediaPipe's full-range (small, distant faces) and short-range (close-ups) face detectors, whole frame;
- tiled: the detectors on overlapping tiles of the frame, where small faces of crowds are larger to them;
- pose: the head of the most prominent person that MediaPipe's pose model sees, in the frame and in each half of
  it: faces turned too far for the face detectors;
- padded: the detectors on the image inside a wide border, for a face that fills the image (a pre-cropped photo);
- whole-image: the landmark model on the whole image, when no other search found a face.
Image mode runs every search on every image (padded and whole-image only when the others found nothing). Video mode
follows each face from its landmarks in the previous frame, as MediaPipe's face mesh tracks, runs every search on the
first frame, and then one search step every `redetect_every` frames (every frame while no face is tracked), so the
searches are spread over frames and the frame rate holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property, partial
from collections.abc import Callable

import cv2
import numpy as np

from emotion.align import canonical_landmarks
from emotion.configargs import ConfigError, check_min, option
from emotion.graphs import (
    LANDMARK_COUNT,
    FaceDetector,
    Fit,
    LandmarkModel,
    PoseHeads,
    Proposal,
    Roi,
    SignalModel,
    landmark_box,
    load_mediapipe,
)
from emotion.imaging import to_rgb
from emotion.signals import FaceSignals

__all__ = ["LANDMARK_COUNT", "SOURCES", "Face", "FaceAnalyzer", "FaceConfig", "load_mediapipe"]

SOURCES = ("detector", "tiled", "pose", "padded", "whole-image", "cropped")
"""How a face was first found (Face.source, "source" in the JSON), most direct first; see the module's docstring."""

_NMS_IOU = 0.3  # boxes overlapping more than this are the same face
_TILE_OVERLAP = 0.25  # fraction of a tile's side shared with its neighbour
_MIN_TILE = 256  # px, smallest longer side of a tile
_HALF = 0.6  # each half of the frame the pose search looks at, as a fraction of the longer side
_PAD = 0.5  # border of the padded search on each side, as a fraction of the image's longer side
_WHOLE_IMAGE_SCALES = (1.2, 1.6)  # landmark-model region sides tried on a whole image, over its longer side


@dataclass(frozen=True)
class FaceConfig:
    """Settings of the face stage."""

    max_faces: int = option(  # count; at most this many faces per frame, the largest are kept
        "cap on faces per frame, largest first; 20 faces work, at the frame rate README's 'Measured on this machine' "
        "gives",
        10,
        metavar="N",
    )
    cropped: bool = option(  # every input is one face filling it: no search, the landmark model on the whole image
        "treat every image (or frame) as one face that fills it, as in pre-cropped or aligned face data sets: no "
        "face search; the face mesh still places the landmarks, and an image where it sees no face has no face",
        False,
    )
    min_detection_confidence: float = 0.5  # [0, 1], face-detector score a proposed face needs
    redetect_every: int = 10  # frames between whole-frame detector runs in video mode while faces are tracked
    tile_grid: int = 3  # finest tiling of the tiled search: grids 2 x 2 to this x this (1 = no tiled search)
    pose: bool = True  # search for heads with MediaPipe's pose model (turned faces)
    search_share: float = 0.1  # [0, 1], share of video mode's face-stage time the tiled and pose searches may take
    signals: bool = option(  # blendshapes, head pose and gaze per face (emotion.signals)
        "leave out the face signals (52 blendshapes, head pose, gaze; README 'Face signals'): faster, and without "
        "the default model's blendshape prior of disgust and surprise",
        True,
    )
    max_missed: int = 10  # frames a track survives without being found before its id is dropped
    match_iou: float = 0.3  # box IoU in [0, 1] a newly found face needs with a lost track's last box to continue it
    max_side: int = 1920  # px; longer frames are downscaled (INTER_AREA) for MediaPipe, results mapped back

    def __post_init__(self) -> None:
        check_min(self, 1, "max_faces", "max_side", "redetect_every", "tile_grid")
        if not 0.0 <= self.search_share <= 1.0:
            raise ConfigError(f"{{}} must be between 0 and 1, got {self.search_share}", "search_share")


@dataclass
class Face:
    """One face in one frame; `landmarks_norm` and `signals` are computed on first use (the pipeline reads them on
    its model thread, overlapping the next frame's face stage). The model's crop of it is the model's to make
    (emotion.align.CropSpec.of(model config))."""

    track_id: int  # stable across frames in video mode; in image mode 0.. from left to right
    box: tuple[int, int, int, int]  # x, y, w, h in px: bounds of the landmarks, clipped to the image
    score: float  # [0, 1], latest detector score of this face (min_detection_confidence before any detector saw it)
    landmarks: np.ndarray  # (L, 3) float32: x, y in px, z in px scale (MediaPipe z * width)
    source: str = "detector"  # which search first found this face (its track), one of SOURCES
    read_signals: Callable[[], FaceSignals] | None = field(default=None, repr=False, compare=False)  # see signals

    @cached_property
    def landmarks_norm(self) -> np.ndarray:
        """(L, 3) float32 in the canonical pose, see emotion.align.canonical_landmarks."""
        return canonical_landmarks(self.landmarks)

    @cached_property
    def signals(self) -> FaceSignals | None:
        """Blendshapes, head pose and gaze (README "Face signals"); None when FaceConfig.signals is off. Read them
        while the face stage that found the face is open."""
        return None if self.read_signals is None else self.read_signals()

@dataclass
class _Track:
    """What video mode remembers of one face between frames."""

    track_id: int
    landmarks: np.ndarray  # (L, 3) float32, last landmarks in working-image px: where to look in the next frame
    score: float  # [0, 1], latest detector score
    source: str  # the search that found it
    missed: int = 0  # consecutive frames without the face

    @property
    def box(self) -> tuple[float, float, float, float]:
        return landmark_box(self.landmarks)


@dataclass
class _Candidate:
    """A face found in this frame, before it is matched to a track."""

    fit: Fit  # landmarks in working-image px, and the region they were found in
    source: str
    score: float | None = None
    track: _Track | None = None  # the track it was followed from
    box: tuple[float, float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.box = landmark_box(self.landmarks)

    @property
    def landmarks(self) -> np.ndarray:
        return self.fit.landmarks


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _centre_inside(box: tuple[float, ...], other: tuple[float, ...]) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return other[0] <= cx <= other[0] + other[2] and other[1] <= cy <= other[1] + other[3]


def _same_face(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two boxes are one face: they overlap by more than _NMS_IOU, or one's centre lies inside the other
    (two faces never do; one face fitted twice, once a little off, does)."""
    return _iou(a, b) > _NMS_IOU or _centre_inside(a, b) or _centre_inside(b, a)


def _distinct(items: list, box_of) -> list:
    """Keep items in their given order unless they are the same face as an already kept one."""
    kept: list = []
    for item in items:
        if not any(_same_face(box_of(item), box_of(k)) for k in kept):
            kept.append(item)
    return kept


_Search = tuple[Callable[[np.ndarray], list[Proposal]], tuple[int, int, int, int], str]
"""A search: a model proposing faces in an image, the region (x0, y0, x1, y1) it runs on, the source it names."""


def _tile_regions(width: int, height: int, finest: int) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles of grids 2 x 2 up to finest x finest, each grid used while its tiles' longer side is at
    least _MIN_TILE px (a smaller tile would give the detectors nothing they cannot see in the whole frame)."""
    return [t for grid in range(2, finest + 1) if max(width, height) / grid >= _MIN_TILE for t in _tiles(width, height, grid)]


def _tiles(width: int, height: int, grid: int) -> list[tuple[int, int, int, int]]:
    """grid x grid overlapping tiles (x0, y0, x1, y1) covering the image, row by row."""
    tw, th = (round(side / (grid - (grid - 1) * _TILE_OVERLAP)) for side in (width, height))
    xs = np.linspace(0, width - tw, grid).round().astype(int)
    ys = np.linspace(0, height - th, grid).round().astype(int)
    return [(int(x), int(y), int(x) + tw, int(y) + th) for y in ys for x in xs]


def _halves(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole image and its two overlapping halves along the longer side, for the pose search."""
    whole = (0, 0, width, height)
    if width >= height:
        part = round(width * _HALF)
        return [whole, (0, 0, part, height), (width - part, 0, width, height)]
    part = round(height * _HALF)
    return [whole, (0, 0, width, part), (0, height - part, width, height)]


class FaceAnalyzer:
    """Faces of a frame: box, score, landmarks, normalised landmarks, track id and source.

    `static=True` treats every call as an unrelated image; otherwise calls are consecutive video frames.
    """

    def __init__(self, config: FaceConfig = FaceConfig(), static: bool = False):
        self.config = config
        self.static = static
        confidence = config.min_detection_confidence
        self._landmark_model = LandmarkModel()
        self._signal_model = SignalModel() if config.signals else None
        self._full_range = FaceDetector(full_range=True, min_confidence=confidence)
        self._short_range = FaceDetector(full_range=False, min_confidence=confidence)
        self._pose = PoseHeads() if config.pose else None
        self._closed = False
        self.reset()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the MediaPipe graphs; the analyzer cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        for graph in (self._landmark_model, self._signal_model, self._full_range, self._short_range, self._pose):
            if graph is not None:
                graph.close()

    def reset(self) -> None:
        """Forget all tracks: a new video starts, its ids start again at 0 and its first frame is searched fully."""
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame_index = 0
        self._extra_index = 0  # video mode's next tiled or pose search
        self._stage_ms = self._extra_ms = 0.0  # video mode's face-stage time and the part the extra searches took

    def __call__(self, frame: np.ndarray) -> list[Face]:
        rgb = to_rgb(frame)
        h, w = rgb.shape[:2]
        factor = np.ones(3, np.float32)
        if max(h, w) > self.config.max_side:
            shrink = self.config.max_side / max(h, w)
            rgb = cv2.resize(rgb, (round(w * shrink), round(h * shrink)), interpolation=cv2.INTER_AREA)
            factor[:] = w / rgb.shape[1], h / rgb.shape[0], w / rgb.shape[1]
        if self.static:
            faces = sorted(self._find(rgb), key=lambda c: c.box[0] + c.box[2] / 2)
            tracked = [(i, c, c.score) for i, c in enumerate(faces)]
        else:
            tracked = self._track(rgb)
        self._frame_index += 1
        return [self._face(frame, rgb, track_id, c, score, factor) for track_id, c, score in tracked]

    def _face(self, frame, rgb, track_id: int, candidate: _Candidate, score, factor: np.ndarray) -> Face:
        landmarks = candidate.landmarks * factor
        h, w = frame.shape[:2]
        x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
        x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
        x0, x1 = int(np.clip(x0, 0, w)), int(np.clip(x1, 0, w))
        y0, y1 = int(np.clip(y0, 0, h)), int(np.clip(y1, 0, h))
        return Face(
            track_id=track_id,
            box=(x0, y0, x1 - x0, y1 - y0),
            score=float(self.config.min_detection_confidence if score is None else score),
            landmarks=landmarks,
            source=candidate.source,
            read_signals=None if self._signal_model is None else partial(self._signals, rgb, candidate.fit.roi, factor),
        )

    def _signals(self, rgb: np.ndarray, roi: Roi, factor: np.ndarray) -> FaceSignals:
        """A face's signals from the attention mesh at the region where its landmarks were found."""
        refined, blendshapes = self._signal_model(rgb, roi)
        return FaceSignals.of(refined * factor, blendshapes)

    def _find(self, rgb: np.ndarray) -> list[_Candidate]:
        """Every face of an image: all searches, then the ones for a face that fills the image if none found one."""
        if self.config.cropped:
            return self._whole_image(rgb, "cropped")
        found: list[_Candidate] = []
        for search in self._searches(rgb.shape[1], rgb.shape[0]):
            self._confirm_all(rgb, self._run_search(rgb, search), found)
        if not found:
            h, w = rgb.shape[:2]
            pad = round(max(h, w) * _PAD)
            padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
            for detector in (self._short_range, self._full_range):
                self._confirm_all(rgb, [p.moved(-pad, -pad, "padded") for p in detector(padded)], found)
        return self._keep_largest(found or self._whole_image(rgb, "whole-image"))

    def _searches(self, width: int, height: int) -> list[_Search]:
        """Every search of an image this size, whole-frame detectors first, then tiles, then pose regions."""
        whole = (0, 0, width, height)
        return [(d, whole, "detector") for d in self._detectors] + sorted(
            self._extra_searches(width, height), key=lambda search: search[2] == "pose"
        )

    def _extra_searches(self, width: int, height: int) -> list[_Search]:
        """The tiled and pose searches of a frame this size, a pose region after every two tiles: video mode runs
        them in this order, one at a time."""
        tiles = [(d, r, "tiled") for r in _tile_regions(width, height, self.config.tile_grid) for d in self._detectors]
        poses = [(self._pose, r, "pose") for r in _halves(width, height)] if self._pose is not None else []
        order: list[_Search] = []
        for k in range(max(-(-len(tiles) // 2), len(poses))):
            order += tiles[2 * k : 2 * k + 2]
            order += [poses[k % len(poses)]] if poses else []
        return order

    @property
    def _detectors(self) -> tuple[FaceDetector, FaceDetector]:
        return self._full_range, self._short_range

    def _run_search(self, rgb: np.ndarray, search: _Search) -> list[Proposal]:
        """One search on its region of the image, its proposals in the image's px and named by the search."""
        model, (x0, y0, x1, y1), source = search
        if (x1 - x0, y1 - y0) == rgb.shape[1::-1]:
            proposals = model(rgb)
        else:
            proposals = model(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        return [p.moved(x0, y0, source) for p in proposals]

    def _confirm_all(self, rgb: np.ndarray, proposals: list[Proposal], found: list[_Candidate]) -> None:
        """Add to `found` each proposal the landmark model confirms as a face not yet found."""
        for proposal in sorted(proposals, key=lambda p: -(p.score or 0.0)):
            owner = next((c for c in found if _same_face(proposal.box, c.box)), None)
            if owner is not None:
                if proposal.score is not None and _iou(proposal.box, owner.box) > _NMS_IOU:
                    owner.score = max(proposal.score, owner.score or 0.0)
                continue
            fit = self._landmarks(rgb, proposal.roi)
            if fit is None:
                continue
            candidate = _Candidate(fit, proposal.source, proposal.score)
            if not any(_same_face(candidate.box, c.box) for c in found):
                found.append(candidate)

    def _landmarks(self, rgb: np.ndarray, roi: Roi) -> Fit | None:
        """The landmark model at a proposed region, then once more at the region its answer gives: a face fitted
        from a loose or shifted region settles on the face (or is given up), as the face mesh's tracking does over
        two frames."""
        landmarks = self._landmark_model(rgb, roi)
        return None if landmarks is None else self._fit(rgb, Roi.of_landmarks(landmarks))

    def _fit(self, rgb: np.ndarray, roi: Roi) -> Fit | None:
        landmarks = self._landmark_model(rgb, roi)
        return None if landmarks is None else Fit(landmarks, roi)

    def _whole_image(self, rgb: np.ndarray, source: str) -> list[_Candidate]:
        """The one face that fills the image, if the landmark model sees one there."""
        h, w = rgb.shape[:2]
        for scale in _WHOLE_IMAGE_SCALES:
            fit = self._landmarks(rgb, Roi(w / 2, h / 2, max(w, h) * scale))
            if fit is not None:
                return [_Candidate(fit, source)]
        return []

    def _track(self, rgb: np.ndarray) -> list[tuple[int, _Candidate, float]]:
        """Follow every track from its last landmarks, then search for new faces: everything on the first frame; a
        whole-frame detector (full and short range in turn) every `redetect_every` frames, or every frame while no
        face is followed; a tiled or pose step whenever those have used less than `search_share` of the time."""
        if self.config.cropped:
            return self._match(self._whole_image(rgb, "cropped"))
        start = time.perf_counter()
        candidates = []
        for track in self._tracks:
            fit = self._fit(rgb, Roi.of_landmarks(track.landmarks))
            if fit is not None:
                candidates.append(_Candidate(fit, track.source, track=track))
        candidates = _distinct(candidates, lambda c: c.box)
        if self._frame_index == 0:
            return self._match(self._keep_largest(candidates + self._find(rgb)))
        every = self.config.redetect_every
        if not candidates or self._frame_index % every == 0:
            detector = self._detectors[self._frame_index // every % 2]
            self._confirm_all(rgb, detector(rgb), candidates)
        extras = self._extra_searches(rgb.shape[1], rgb.shape[0])
        if extras and self._extra_ms <= self.config.search_share * self._stage_ms:
            extra_start = time.perf_counter()
            self._confirm_all(rgb, self._run_search(rgb, extras[self._extra_index % len(extras)]), candidates)
            self._extra_index += 1
            self._extra_ms += (time.perf_counter() - extra_start) * 1000.0
        self._stage_ms += (time.perf_counter() - start) * 1000.0
        return self._match(self._keep_largest(candidates))

    def _match(self, candidates: list[_Candidate]) -> list[tuple[int, _Candidate, float]]:
        """Give each candidate a track: the one it was followed from, else a lost track it overlaps, else a new one."""
        followed = {id(c.track) for c in candidates if c.track is not None}
        lost = [t for t in self._tracks if id(t) not in followed]
        out, live = [], []
        for c in candidates:
            track = c.track or self._recover(lost, c) or self._new_track(c)
            track.landmarks, track.missed = c.landmarks, 0
            if c.score is not None:
                track.score = c.score
            live.append(track)
            out.append((track.track_id, c, track.score))
        for track in lost:
            track.missed += 1
        self._tracks = live + [t for t in lost if t.missed <= self.config.max_missed]
        return sorted(out, key=lambda item: item[0])

    def _recover(self, lost: list[_Track], candidate: _Candidate) -> _Track | None:
        """The lost track whose last box the candidate overlaps by match_iou or more (taken out of `lost`)."""
        best = max(lost, key=lambda t: _iou(t.box, candidate.box), default=None)
        if best is None or _iou(best.box, candidate.box) < self.config.match_iou:
            return None
        lost.remove(best)
        return best

    def _new_track(self, candidate: _Candidate) -> _Track:
        score = candidate.score if candidate.score is not None else self.config.min_detection_confidence
        self._next_id += 1
        return _Track(self._next_id - 1, candidate.landmarks, score, candidate.source)

    def _keep_largest(self, candidates: list[_Candidate]) -> list[_Candidate]:
        return sorted(candidates, key=lambda c: c.box[2] * c.box[3], reverse=True)[: self.config.max_faces]
