"""Face signals beyond the seven emotions, from the face stage's landmarks (README "Face signals"): 52 blendshape
scores (MediaPipe Face Landmarker v2's blendshape network), head pose (a weighted Procrustes fit of the mesh to
MediaPipe's canonical face) and gaze (each iris's offset from its eye's centre, in the head's frame).

Angles are degrees in the camera's view: yaw > 0 when the face (or the eyes) turn towards the image's right (the
person's left), pitch > 0 when they turn up, roll > 0 when the head tilts counter-clockwise in the image (the
person's left eye, on the image's right, rises). Mirroring an image flips the signs of yaw and roll.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import cache

import numpy as np

from emotion.labels import LABELS
from emotion.weights import path as weights_path

BUNDLE = "face_landmarker.task"
"""MediaPipe Face Landmarker v2's model bundle, shipped unchanged (emotion/weights/README.md)."""

BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
"""The blendshape network's 52 outputs in its order (ARKit names; "Left" is the person's left, "_neutral" is the
network's own resting score)."""

POSE_NAMES = ("yaw", "pitch", "roll")
GAZE_NAMES = ("yaw", "pitch")

SIGNAL_DIM = len(BLENDSHAPE_NAMES) + len(POSE_NAMES) + len(GAZE_NAMES)
"""S, length of FaceSignals.vector(): blendshapes, then head pose and gaze in units of 90 degrees."""

IRIS_COUNT = 10  # landmarks 468..477 of the attention face mesh: right iris centre + 4, then left iris centre + 4
_RIGHT_IRIS, _LEFT_IRIS = 468, 473  # iris centres (the person's right eye is on the image's left)
_RIGHT_EYE_CORNERS, _LEFT_EYE_CORNERS = (33, 133), (263, 362)  # outer, inner corner of each eye
_EYEBALL_RADIUS = 0.45  # eyeball radius over the eye's corner-to-corner width (about 12 mm over 27 mm)
_GAZE_PITCH_REST = 7.5  # degrees the iris centre of an eye looking ahead reads above the corners' line: the median
# gaze pitch of the 264 faces of the shared photos, most of which look into the camera (benchmarks/signals.py)


def _both(name: str) -> tuple[str, str]:
    return f"{name}Left", f"{name}Right"


FACS_EVIDENCE: dict[str, tuple[tuple[str, ...], ...]] = {
    "angry": (_both("browDown"), _both("eyeWide"), _both("eyeSquint"), _both("mouthPress")),  # AU4+5+7+23
    "disgust": (_both("noseSneer"), _both("mouthUpperUp")),  # AU9+10
    "fear": (  # AU1+2+4+5+20+26
        ("browInnerUp",), _both("browOuterUp"), _both("browDown"), _both("eyeWide"), _both("mouthStretch"),
        ("jawOpen",),
    ),
    "happy": (_both("cheekSquint"), _both("mouthSmile")),  # AU6+12
    "neutral": (),
    "sad": (("browInnerUp",), _both("browDown"), _both("mouthFrown")),  # AU1+4+15
    "surprise": (("browInnerUp",), _both("browOuterUp"), _both("eyeWide"), ("jawOpen",)),  # AU1+2+5+26
}  # fmt: skip
"""Per category, the action units of its Ekman/Friesen EMFACS prototype as blendshapes (a unit's left and right
scores averaged); fixed before any result was seen (benchmarks/facs.py)."""

_BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


def emotion_evidence(blendshapes: np.ndarray) -> np.ndarray:
    """(N, 7) FACS evidence in [0, 1] per category (LABELS order) of (N, 52) blendshape scores: the mean of the
    category's action units (FACS_EVIDENCE), 0 for neutral."""
    blendshapes = np.asarray(blendshapes, np.float64)
    out = np.zeros((len(blendshapes), len(LABELS)))
    for c, label in enumerate(LABELS):
        units = FACS_EVIDENCE[label]
        if units:
            scores = [blendshapes[:, [_BLENDSHAPE_INDEX[n] for n in unit]].mean(axis=1) for unit in units]
            out[:, c] = np.mean(scores, axis=0)
    return out


def bundle_file(name: str) -> bytes:
    """One file of the shipped Face Landmarker bundle (a zip), e.g. 'face_blendshapes.tflite'."""
    with zipfile.ZipFile(weights_path(BUNDLE)) as bundle:
        return bundle.read(name)


@dataclass(frozen=True)
class _Canonical:
    """MediaPipe's canonical face (centimetres; x to the image's right, y up, z towards the camera for a face
    looking into it) and the landmarks and weights its geometry pipeline fits head pose with."""

    vertices: np.ndarray  # (468, 3) float64
    ids: np.ndarray  # (K,) int, the Procrustes landmarks
    weights: np.ndarray  # (K,) float64, summing to 1


@cache
def _canonical() -> _Canonical:
    from mediapipe.tasks.cc.vision.face_geometry.proto import geometry_pipeline_metadata_pb2

    meta = geometry_pipeline_metadata_pb2.GeometryPipelineMetadata()
    meta.ParseFromString(bundle_file("geometry_pipeline_metadata_landmarks.binarypb"))
    vertices = np.asarray(meta.canonical_mesh.vertex_buffer, np.float64).reshape(-1, 5)[:, :3]
    ids = np.array([b.landmark_id for b in meta.procrustes_landmark_basis])
    weights = np.array([b.weight for b in meta.procrustes_landmark_basis], np.float64)
    return _Canonical(vertices, ids, weights / weights.sum())


def _view(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks (x, y px down, z px with smaller nearer) as camera-view points: x right, y up, z towards the camera."""
    return np.asarray(landmarks, np.float64) * np.array([1.0, -1.0, -1.0])


def fit_head(landmarks: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Rotation R (3, 3), scale s and translation t with view(landmark) ~ s R canonical + t: a weighted Procrustes
    (Umeyama) fit on MediaPipe's geometry landmarks, orthographic (the mesh's z is already in image scale)."""
    face = _canonical()
    src = face.vertices[face.ids]
    dst = _view(landmarks[face.ids])
    w = face.weights[:, None]
    src_mean, dst_mean = (w * src).sum(0), (w * dst).sum(0)
    a, b = src - src_mean, dst - dst_mean
    u, sigma, vt = np.linalg.svd((w * b).T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / (w * a * a).sum())
    return rotation, scale, dst_mean - scale * rotation @ src_mean


def euler(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of R = Ry(yaw) Rx(-pitch) Rz(roll): yaw and pitch of the face's forward axis,
    then the roll about it (signs in the module's docstring)."""
    forward = rotation[:, 2]
    yaw = np.arctan2(forward[0], forward[2])
    pitch = np.arcsin(np.clip(forward[1], -1.0, 1.0))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    unyaw = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    unpitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rest = unpitch @ unyaw @ rotation
    return np.degrees([yaw, pitch, np.arctan2(rest[1, 0], rest[0, 0])])


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The head's rotation R = Ry(yaw) Rx(-pitch) Rz(roll) from its angles in degrees, the inverse of `euler`:
    column k is the head's axis k (x to its left-to-right, y up, z forward out of the face) in the camera's view
    (x right, y up, z towards the camera)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0.0, np.sin(y)], [0.0, 1.0, 0.0], [-np.sin(y), 0.0, np.cos(y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(p), np.sin(p)], [0.0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0.0], [np.sin(r), np.cos(r), 0.0], [0.0, 0.0, 1.0]])
    return ry @ rx @ rz


def eye_angles(landmarks: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch) degrees of the eyes relative to the head, the mean of both eyes: each iris centre's offset from
    its eye's centre (the midpoint of its corners), turned into the head's frame, over an eyeball radius of
    _EYEBALL_RADIUS eye widths, as the sine of the eye's rotation; pitch less _GAZE_PITCH_REST, so that eyes
    looking straight ahead read about zero."""
    ids = [_RIGHT_IRIS, *_RIGHT_EYE_CORNERS, _LEFT_IRIS, *_LEFT_EYE_CORNERS]
    iris, outer, inner = (_view(landmarks[ids]) @ rotation).reshape(2, 3, 3).transpose(1, 0, 2)  # head's axes
    radius = _EYEBALL_RADIUS * np.linalg.norm(outer[:, :2] - inner[:, :2], axis=1, keepdims=True)
    offset = (iris[:, :2] - (outer[:, :2] + inner[:, :2]) / 2) / np.maximum(radius, 1e-6)
    return np.degrees(np.arcsin(np.clip(offset, -1.0, 1.0))).mean(axis=0) - np.array([0.0, _GAZE_PITCH_REST])


@dataclass(frozen=True)
class FaceSignals:
    """One face's signals in one frame (the module's docstring gives the angle conventions)."""

    blendshapes: np.ndarray  # (52,) float32 in [0, 1], BLENDSHAPE_NAMES order
    head_pose: np.ndarray  # (3,) float32 degrees: yaw, pitch, roll of the head
    gaze: np.ndarray  # (2,) float32 degrees: yaw, pitch of the eyes relative to the head
    irises: np.ndarray  # (2, 2) float32 px: centres of the person's right and left iris (for drawing)

    @classmethod
    def of(cls, landmarks: np.ndarray, blendshapes: np.ndarray) -> FaceSignals:
        """Signals of a face from its 478 attention-mesh landmarks (px) and its blendshape scores."""
        rotation, _, _ = fit_head(landmarks[:468])
        return cls(
            blendshapes=np.asarray(blendshapes, np.float32),
            head_pose=euler(rotation).astype(np.float32),
            gaze=eye_angles(landmarks, rotation).astype(np.float32),
            irises=np.asarray(landmarks[[_RIGHT_IRIS, _LEFT_IRIS], :2], np.float32),
        )

    def vector(self) -> np.ndarray:
        """(S,) float32 for the model: blendshapes, then head pose and gaze divided by 90 degrees."""
        return np.concatenate([self.blendshapes, self.head_pose / 90.0, self.gaze / 90.0]).astype(np.float32)

    def with_vector(self, vector: np.ndarray) -> FaceSignals:
        """These signals with the values of a (smoothed) vector() in place of their own; irises unchanged."""
        n = len(BLENDSHAPE_NAMES)
        return FaceSignals(
            blendshapes=np.asarray(vector[:n], np.float32),
            head_pose=np.asarray(vector[n : n + 3] * 90.0, np.float32),
            gaze=np.asarray(vector[n + 3 : n + 5] * 90.0, np.float32),
            irises=self.irises,
        )
