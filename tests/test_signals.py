"""Face signals (emotion.signals): blendshapes, head pose and gaze from the face stage's real MediaPipe graphs, checked
against known geometry, mirrored photos and MediaPipe's own Face Landmarker on the shipped bundle."""

import math

import cv2
import numpy as np
import pytest

from emotion.face import FaceAnalyzer, FaceConfig
from emotion.signals import BLENDSHAPE_NAMES, SIGNAL_DIM, FaceSignals, _canonical, euler, eye_angles, fit_head
from support import zidane_frames

SMILE = [BLENDSHAPE_NAMES.index(n) for n in ("mouthSmileLeft", "mouthSmileRight")]
BROW_INNER_UP = BLENDSHAPE_NAMES.index("browInnerUp")
JAW_OPEN = BLENDSHAPE_NAMES.index("jawOpen")


@pytest.fixture(scope="module")
def analyzer():
    with FaceAnalyzer(static=True) as a:
        yield a


@pytest.fixture(scope="module")
def photo(shared_data, analyzer):
    """The faces of a shared photo, by name, and of its mirror image."""

    def faces(name: str, mirrored: bool = False):
        image = cv2.imread(str(shared_data / "images" / name))
        assert image is not None, name
        return analyzer(np.ascontiguousarray(image[:, ::-1]) if mirrored else image)

    return faces


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Ry(yaw) Rx(-pitch) Rz(roll), degrees: the decomposition emotion.signals.euler inverts."""
    y, p, r = np.radians([yaw, -pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return ry @ rx @ rz


def posed_landmarks(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """MediaPipe's canonical face turned by the angles and drawn as image landmarks (px, y down, z smaller nearer)."""
    view = 12.0 * _canonical().vertices @ rotation(yaw, pitch, roll).T + np.array([320.0, -240.0, 0.0])
    return (view * np.array([1.0, -1.0, -1.0])).astype(np.float32)


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 0, 0), (-25, 10, 0), (10, -20, 15), (-40, 15, -20)])
def test_head_pose_recovers_known_rotations_of_the_canonical_face(angles):
    """Yaw to the image's right, pitch up and counter-clockwise roll are positive, exact on the canonical face."""
    rotation_fit, scale, _ = fit_head(posed_landmarks(*angles))
    assert np.allclose(euler(rotation_fit), angles, atol=0.05)
    assert scale == pytest.approx(12.0, rel=1e-4)


def test_face_turned_to_the_image_right_has_positive_yaw():
    """The nose of a face turned to the image's right moves right: the convention the README states."""
    turned = posed_landmarks(30, 0, 0)
    assert turned[1, 0] > posed_landmarks(0, 0, 0)[1, 0] + 5


def test_gaze_follows_the_irises_in_the_heads_frame(photo):
    """On a real face's mesh with the irises put at the eyes' centres, moving them towards the image's right turns
    the gaze yaw positive and upwards the pitch positive, each without moving the other angle."""
    face = photo("neutral.jpeg")[0]
    refined = np.array(face.landmarks, np.float64)
    width = np.linalg.norm(refined[33, :2] - refined[133, :2])
    points = np.zeros((478, 3))
    points[:468] = refined
    points[468:473] = (refined[33] + refined[133]) / 2
    points[473:478] = (refined[263] + refined[362]) / 2
    rot, _, _ = fit_head(points[:468])
    centred = eye_angles(points, rot)
    right, up = points.copy(), points.copy()
    right[468:, 0] += 0.1 * width
    up[468:, 1] -= 0.1 * width
    assert eye_angles(right, rot)[0] > centred[0] + 5
    assert eye_angles(up, rot)[1] > centred[1] + 5
    assert abs(eye_angles(right, rot)[1] - centred[1]) < 2 and abs(eye_angles(up, rot)[0] - centred[0]) < 2
    assert np.allclose(centred, [0, -7.5], atol=1)  # an iris on the corners' line looks slightly down


def test_every_face_has_52_blendshapes_in_range_and_a_signal_vector(photo):
    faces = photo("multi_face.jpg")
    assert len(faces) == 5
    for face in faces:
        s = face.signals
        assert s.blendshapes.shape == (52,) and ((s.blendshapes >= 0) & (s.blendshapes <= 1)).all()
        assert s.head_pose.shape == (3,) and s.gaze.shape == (2,) and s.irises.shape == (2, 2)
        x, y, w, h = face.box
        assert ((s.irises >= (x, y)) & (s.irises <= (x + w, y + h))).all()
        vector = s.vector()
        assert vector.shape == (SIGNAL_DIM,) and np.allclose(s.with_vector(vector).vector(), vector)


def test_smiles_brows_and_open_mouths_score_where_the_photos_show_them(photo):
    """Smiling group: mouthSmile high on most faces. The laughing baby smiles more than the neutral and the
    surprised face; the surprised face raises its inner brows and opens its jaw more than the neutral one."""
    group = [f.signals.blendshapes[SMILE].mean() for f in photo("multi_face.jpg")]
    assert sum(s > 0.7 for s in group) >= 4, group
    names = ("happy-baby.jpeg", "neutral.jpeg", "surprised.jpeg")
    baby, neutral, surprised = (photo(n)[0].signals.blendshapes for n in names)
    assert baby[SMILE].mean() > max(neutral[SMILE].mean(), surprised[SMILE].mean()) + 0.15
    assert surprised[BROW_INNER_UP] > neutral[BROW_INNER_UP] + 0.15
    assert surprised[JAW_OPEN] > neutral[JAW_OPEN] + 0.05


def test_mirroring_flips_yaw_and_roll_and_keeps_pitch(photo):
    """The turned baby (yaw about -13 degrees) mirrored: yaw and roll change sign with about the same size."""
    a, b = photo("happy-baby.jpeg")[0].signals, photo("happy-baby.jpeg", mirrored=True)[0].signals
    assert abs(a.head_pose[0]) > 8
    assert np.sign(a.head_pose[0]) == -np.sign(b.head_pose[0])
    assert abs(a.head_pose[0] + b.head_pose[0]) < 4 and abs(a.head_pose[1] - b.head_pose[1]) < 4
    assert abs(a.head_pose[2] + b.head_pose[2]) < 4


def test_frontal_face_has_yaw_near_zero(photo):
    yaw, pitch, roll = photo("neutral.jpeg")[0].signals.head_pose
    assert abs(yaw) < 6 and abs(roll) < 6 and abs(pitch) < 10


def test_signals_agree_with_mediapipes_face_landmarker_on_the_shipped_bundle(shared_data, photo):
    """MediaPipe's Tasks API with its own detector and landmark model on the same bundle: blendshapes within 0.1 on
    average and head pose (its transformation matrix) within 6 degrees on the single-face photos."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from emotion.signals import BUNDLE
    from emotion.weights import path

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path(BUNDLE))),
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    blend, pose = [], []
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for name in ("happy-baby.jpeg", "sad-baby.jpeg", "surprised.jpeg", "neutral.jpeg", "angry.jpg"):
            image = cv2.imread(str(shared_data / "images" / name))
            rgb = np.ascontiguousarray(image[:, :, ::-1])
            ref = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            ours = photo(name)[0].signals
            blend.append(np.abs(ours.blendshapes - [c.score for c in ref.face_blendshapes[0]]).mean())
            pose.append(np.abs(ours.head_pose - euler(np.asarray(ref.facial_transformation_matrixes[0])[:3, :3])))
    assert np.mean(blend) < 0.1, blend
    assert np.mean(pose, axis=0).max() < 6, pose


def test_signals_off_leaves_faces_as_they_were(shared_data):
    """Without signals a face has none, and its landmarks are the ones the face stage gives with signals."""
    image = cv2.imread(str(shared_data / "images" / "multi_face.jpg"))
    with FaceAnalyzer(FaceConfig(signals=False), static=True) as off, FaceAnalyzer(static=True) as on:
        plain, rich = off(image), on(image)
        assert [f.signals for f in plain] == [None] * 5
        assert all(f.signals is not None for f in rich)
    for a, b in zip(plain, rich):
        assert a.box == b.box and np.array_equal(a.landmarks, b.landmarks) and a.score == b.score


def test_turned_face_followed_in_video_keeps_its_signals():
    """The zidane clip's shouting man, turned away (the attention mesh alone rejects him): signals on every face
    of every frame, and his head yaw stays large and of one sign."""
    yaws = []
    with FaceAnalyzer() as analyzer:
        for frame in zidane_frames(24):
            faces = analyzer(frame)
            assert len(faces) == 2 and all(f.signals is not None for f in faces)
            left = min(faces, key=lambda f: f.box[0])
            yaws.append(left.signals.head_pose[0])
    assert min(np.abs(yaws)) > 15 and len(set(np.sign(yaws))) == 1, yaws


def test_face_signals_dataclass_is_a_value():
    s = FaceSignals(np.zeros(52, np.float32), np.array([90, -45, 0], np.float32), np.zeros(2), np.zeros((2, 2)))
    assert np.allclose(s.vector()[52:55], [1.0, -0.5, 0.0])


def test_signals_read_after_the_face_stage_closed_is_a_clear_error(shared_data):
    """Signals are computed on first use (on the pipeline's model thread); read after the face stage closed: a
    clear EmotionError with the fix."""
    from emotion.errors import EmotionError

    image = cv2.imread(str(shared_data / "images" / "neutral.jpeg"))
    with FaceAnalyzer(static=True) as analyzer:
        early, late = analyzer(image)[0], analyzer(image)[0]
        assert early.signals is not None
    assert early.signals is not None  # computed once, kept
    with pytest.raises(EmotionError, match="read Face.signals before closing"):
        late.signals
