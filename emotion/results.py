"""Per-face and per-frame results, and their JSON form (one object per frame, see README "JSON format")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emotion.labels import LABELS


def _r(x: float) -> float:
    return round(float(x), 4)


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

    @property
    def emotion(self) -> str:
        return LABELS[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def to_dict(self) -> dict:
        return {
            "id": self.track_id,
            "box": [int(v) for v in self.box],
            "emotion": self.emotion,
            "confidence": _r(self.confidence),
            "probabilities": {name: _r(p) for name, p in zip(LABELS, self.probabilities)},
            "valence": _r(self.valence),
            "arousal": _r(self.arousal),
            "raw": {
                "emotion": LABELS[int(np.argmax(self.raw_probabilities))],
                "probabilities": {name: _r(p) for name, p in zip(LABELS, self.raw_probabilities)},
                "valence": _r(self.raw_valence),
                "arousal": _r(self.raw_arousal),
            },
        }


@dataclass
class FrameResult:
    """All faces of one frame; the top-level emotion describes the largest face (None when there is none)."""

    frame: int
    time: float  # seconds from the start of the source
    faces: list[FaceResult] = field(default_factory=list)

    @property
    def main_face(self) -> FaceResult | None:
        return max(self.faces, key=lambda f: f.area) if self.faces else None

    def to_dict(self) -> dict:
        main = self.main_face
        return {
            "frame": self.frame,
            "time": round(self.time, 4),
            "emotion": main.emotion if main else None,
            "confidence": _r(main.confidence) if main else None,
            "valence": _r(main.valence) if main else None,
            "arousal": _r(main.arousal) if main else None,
            "faces": [f.to_dict() for f in self.faces],
        }
