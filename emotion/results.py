"""Per-face and per-frame results, and their JSON form (one object per frame, see README "JSON format")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from emotion.labels import LABELS
from emotion.signals import BLENDSHAPE_NAMES, GAZE_NAMES, POSE_NAMES, FaceSignals

SCHEMA = 2
"""Version of the JSON format (README "JSON format"), written as `schema` in every frame record when the face signals
are on; a record without it is version 1, the format before the face signals, unchanged."""


def _r(x: float) -> float | None:
    """x to 4 decimals, or None (JSON null) for NaN or infinity, which JSON cannot hold."""
    return round(float(x), 4) if np.isfinite(x) else None


def _named(names: tuple[str, ...], values: np.ndarray) -> dict[str, float | None]:
    """`_r` of each value by name, on Python floats (5x faster than numpy scalars for the 52 blendshapes)."""
    return {n: round(v, 4) if math.isfinite(v) else None for n, v in zip(names, np.asarray(values, np.float64).tolist())}


def _signals_dict(signals: FaceSignals) -> dict:
    """The JSON keys of a face's signals: blendshape scores by name, head pose and gaze in degrees."""
    return {
        "blendshapes": _named(BLENDSHAPE_NAMES, signals.blendshapes),
        "head_pose": _named(POSE_NAMES, signals.head_pose),
        "gaze": _named(GAZE_NAMES, signals.gaze),
    }


def _label(probabilities: np.ndarray) -> str | None:
    """The label of the highest probability; None when the probabilities are not finite (a broken model)."""
    return LABELS[int(np.argmax(probabilities))] if np.isfinite(probabilities).all() else None


@dataclass
class FaceResult:
    """One face in one frame: smoothed values for display, raw model outputs for analysis."""

    track_id: int
    box: tuple[int, int, int, int]  # x, y, w, h in px
    probabilities: np.ndarray  # (7,) smoothed, in LABELS order
    valence: float  # smoothed, [-1, 1]
    arousal: float  # smoothed, [-1, 1]
    raw_probabilities: np.ndarray  # (7,) this frame's model output
    raw_valence: float
    raw_arousal: float
    landmarks: np.ndarray | None = None  # (L, 3) px, for drawing; not exported
    source: str = "detector"  # how the face stage first found this face (emotion.face.SOURCES)
    signals: FaceSignals | None = None  # smoothed like the probabilities; None when the face signals are off
    raw_signals: FaceSignals | None = None  # this frame's

    @property
    def emotion(self) -> str:
        return LABELS[int(np.argmax(self.probabilities))]

    @property
    def finite(self) -> bool:
        """False when any model output of this face is NaN or infinite (written as null, counted in summaries)."""
        values = [self.valence, self.arousal, self.raw_valence, self.raw_arousal]
        return bool(np.isfinite(self.probabilities).all() and np.isfinite(self.raw_probabilities).all()
                    and np.isfinite(values).all())  # fmt: skip

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def to_dict(self) -> dict:
        """The face's JSON object; the signals' keys only when it has signals, so without them it is schema 1."""
        return {
            "id": self.track_id,
            "box": [int(v) for v in self.box],
            "source": self.source,
            "emotion": _label(self.probabilities),
            "confidence": _r(self.confidence),
            "probabilities": {name: _r(p) for name, p in zip(LABELS, self.probabilities)},
            "valence": _r(self.valence),
            "arousal": _r(self.arousal),
            **(_signals_dict(self.signals) if self.signals is not None else {}),
            "raw": {
                "emotion": _label(self.raw_probabilities),
                "probabilities": {name: _r(p) for name, p in zip(LABELS, self.raw_probabilities)},
                "valence": _r(self.raw_valence),
                "arousal": _r(self.raw_arousal),
                **(_signals_dict(self.raw_signals) if self.raw_signals is not None else {}),
            },
        }


@dataclass
class FrameResult:
    """All faces of one frame; the top-level emotion describes the largest face (None when there is none)."""

    frame: int
    time: float  # seconds from the start of the source
    faces: list[FaceResult] = field(default_factory=list)
    signals: bool = False  # the face stage computed the face signals: the JSON record says `schema` SCHEMA

    @property
    def main_face(self) -> FaceResult | None:
        return max(self.faces, key=lambda f: f.area) if self.faces else None

    def to_dict(self) -> dict:
        main = self.main_face
        return {
            **({"schema": SCHEMA} if self.signals else {}),
            "frame": self.frame,
            "time": round(self.time, 4),
            "emotion": _label(main.probabilities) if main else None,
            "confidence": _r(main.confidence) if main else None,
            "valence": _r(main.valence) if main else None,
            "arousal": _r(main.arousal) if main else None,
            "faces": [f.to_dict() for f in self.faces],
        }
