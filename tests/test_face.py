"""Face stage on real photos and clips: every face found, landmarks mapped right, tight eye-level crops, stable ids."""

import math
import time

import cv2
import mediapipe as mp
import numpy as np
import pytest

from emotion.align import BROWS, CHIN, LEFT_EYE, RIGHT_EYE, CropSpec, align_crop, canonical_landmarks, crop_matrix
from emotion.errors import EmotionError
from emotion.face import LANDMARK_COUNT, SOURCES, Face, FaceAnalyzer, FaceConfig
from emotion.recognizer import EmotionRecognizer
from support import crowd_frames, needs_shared, nonface_images, zidane_frames

SINGLE_FACE_PHOTOS = ["happy-baby.jpeg", "sad-baby.jpeg", "surprised.jpeg", "neutral.jpeg", "angry.jpg"]


@pytest.fixture(scope="module")
def images(shared_data):
    return shared_data / "images"


@pytest.fixture(scope="module")
def videos(shared_data):
    return shared_data / "videos"


@pytest.fixture(scope="module")
def photo_analyzer():
    with FaceAnalyzer(static=True) as analyzer:
        yield analyzer


def read(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def frames(path):
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[list(RIGHT_EYE), :2].mean(axis=0), landmarks[list(LEFT_EYE), :2].mean(axis=0)


def in_crop(landmarks: np.ndarray, size: int = 64) -> np.ndarray:
    """(L, 2) positions of the landmarks in the crop of align_crop."""
    matrix = crop_matrix(landmarks, size)
    return np.c_[landmarks[:, :2], np.ones(len(landmarks))] @ matrix.T


def check_face(face: Face, image: np.ndarray, size: int = 64) -> None:
    h, w = image.shape[:2]
    x, y, bw, bh = face.box
    assert all(isinstance(v, int) for v in face.box)
    assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
    assert face.landmarks.shape == (LANDMARK_COUNT, 3) and face.landmarks.dtype == np.float32
    assert face.landmarks_norm.shape == (LANDMARK_COUNT, 3) and face.landmarks_norm.dtype == np.float32
    crop = CropSpec(size)(image, face.landmarks)
    assert crop.shape == (size, size) and crop.dtype == np.uint8
    assert 0.0 <= face.score <= 1.0
    assert crop.std() > 5, "crop is flat: it missed the face"


def test_all_five_faces_of_multi_face_photo(photo_analyzer, images):
    image = read(images / "multi_face.jpg")
    faces = photo_analyzer(image)
    assert len(faces) == 5
    assert [f.track_id for f in faces] == [0, 1, 2, 3, 4]
    centres = [f.box[0] + f.box[2] / 2 for f in faces]
    assert centres == sorted(centres), "image mode numbers faces from left to right"
    for face in faces:
        check_face(face, image)
        assert face.score >= 0.5
    boxes = np.array([f.box for f in faces], float)
    for i in range(5):
        for j in range(i + 1, 5):
            a, b = boxes[i], boxes[j]
            assert max(a[0], b[0]) >= min(a[0] + a[2], b[0] + b[2]) or max(a[1], b[1]) >= min(a[1] + a[3], b[1] + b[3])


@pytest.mark.parametrize("name", SINGLE_FACE_PHOTOS)
def test_exactly_one_face_on_single_face_photos(photo_analyzer, images, name):
    image = read(images / name)
    faces = photo_analyzer(image)
    assert len(faces) == 1
    check_face(faces[0], image)
    assert faces[0].box[2] > image.shape[1] / 8, "the one face is the big face of the photo"


def test_group_photo_people_looking_down_and_the_face_cut_off_at_the_top(photo_analyzer, images):
    image = read(images / "group.jpeg")
    faces = photo_analyzer(image)
    assert len(faces) == 5, [f.box for f in faces]
    for face in faces:
        check_face(face, image)
    top_right = max(faces, key=lambda f: f.box[0] - f.box[1])
    assert top_right.box[1] == 0 and top_right.box[0] > image.shape[1] * 0.7, "the woman whose face the frame cuts"


def test_no_face_on_cartoon_sky(photo_analyzer, videos):
    """Frames where the full-range detector alone fires on the sky: the face mesh check rejects them."""
    for index, frame in enumerate(frames(videos / "face_noface.mov")):
        if index in (156, 161, 163, 168):
            assert photo_analyzer(frame) == [], f"frame {index}"


def test_landmarks_map_back_to_the_full_image(photo_analyzer, images):
    """Mesh on the detection crop, mapped back, agrees with FaceMesh on the whole photo (x, y and z)."""
    image = read(images / "neutral.jpeg")
    h, w = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True) as mesh:
        found = mesh.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).multi_face_landmarks[0]
    direct = np.array([(p.x * w, p.y * h, p.z * w) for p in found.landmark[:LANDMARK_COUNT]])
    ours = photo_analyzer(image)[0].landmarks
    right, left = eye_centres(direct)
    iod = np.linalg.norm(left - right)
    assert np.linalg.norm(ours[:, :2] - direct[:, :2], axis=1).mean() < 0.03 * iod
    assert np.abs(ours[:, 2] - direct[:, 2]).mean() < 0.03 * iod


def test_crop_is_tight_brows_to_chin(photo_analyzer, images):
    face = photo_analyzer(read(images / "neutral.jpeg"))[0]
    points = in_crop(face.landmarks)
    assert 0 <= points[list(BROWS), 1].min() < 0.1 * 64
    assert 0.9 * 64 < points[CHIN, 1] <= 64
    right, left = eye_centres(points)
    assert abs(right[1] - left[1]) < 0.5
    assert abs((right[0] + left[0]) / 2 - 31.5) < 0.1 * 64, "eyes centred horizontally"


def test_crop_of_rotated_photo_is_eye_level_and_matches(photo_analyzer, images):
    image = read(images / "neutral.jpeg")
    h, w = image.shape[:2]
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)
    rotated = cv2.warpAffine(image, rotation, (w, h), borderMode=cv2.BORDER_REPLICATE)
    upright, tilted = photo_analyzer(image)[0], photo_analyzer(rotated)[0]
    right, left = eye_centres(tilted.landmarks)
    assert abs(math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))) > 15, "the photo really is tilted"
    right, left = eye_centres(in_crop(tilted.landmarks))
    assert abs(right[1] - left[1]) < 1.0
    upright_crop, tilted_crop = align_crop(image, upright.landmarks), align_crop(rotated, tilted.landmarks)
    corr = np.corrcoef(upright_crop.ravel().astype(float), tilted_crop.ravel().astype(float))[0, 1]
    assert corr > 0.9
    back = np.c_[tilted.landmarks[:, :2], np.ones(LANDMARK_COUNT)] @ cv2.invertAffineTransform(rotation).T
    right, left = eye_centres(upright.landmarks)
    assert np.linalg.norm(back - upright.landmarks[:, :2], axis=1).mean() < 0.03 * np.linalg.norm(left - right)


def test_unrotated_and_whole_mesh_framings(photo_analyzer, images):
    """rotate=False keeps the image's axes (the tilt stays in the crop); framing "mesh" puts every landmark, the
    forehead included, inside the square, which a margin of 0 makes touch the square's edges."""
    image = read(images / "neutral.jpeg")
    h, w = image.shape[:2]
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))
    landmarks = photo_analyzer(tilted)[0].landmarks
    right, left = eye_centres(landmarks)
    tilt = math.atan2(left[1] - right[1], left[0] - right[0])
    matrix = crop_matrix(landmarks, 64, 0.1, rotate=False)
    assert abs(matrix[0, 1]) < 1e-9 and abs(matrix[1, 0]) < 1e-9, "no rotation"
    right, left = eye_centres(np.c_[landmarks[:, :2], np.ones(LANDMARK_COUNT)] @ matrix.T)
    assert abs(math.atan2(left[1] - right[1], left[0] - right[0]) - tilt) < 1e-6
    box = np.c_[landmarks[:, :2], np.ones(LANDMARK_COUNT)] @ crop_matrix(landmarks, 64, 0.0, "mesh", False).T
    assert box.min() >= -0.5 - 1e-6 and box.max() <= 63.5 + 1e-6 and (box.min() < -0.4 or box.max() > 63.4)
    crop = CropSpec(size=48, in_chans=3, framing="mesh", rotate=False)(tilted, landmarks)
    assert crop.shape == (48, 48, 3) and crop.std() > 5


def test_canonical_landmarks_remove_translation_scale_and_roll(photo_analyzer, images):
    landmarks = photo_analyzer(read(images / "surprised.jpeg"))[0].landmarks.astype(np.float64)
    reference = canonical_landmarks(landmarks)
    right, left = eye_centres(reference)
    assert abs(right[1] - left[1]) < 1e-5 and left[0] > right[0]
    assert np.linalg.norm(left - right) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(reference.mean(axis=0)).max() < 1e-5
    angle, scale = math.radians(37.0), 2.7
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = landmarks.copy()
    moved[:, :2] = (landmarks[:, :2] - [300.0, 500.0]) @ turn.T * scale + [-40.0, 1234.5]
    moved[:, 2] = landmarks[:, 2] * scale + 17.0
    np.testing.assert_allclose(canonical_landmarks(moved), reference, atol=1e-5)
    mirrored_depth = landmarks.copy()
    mirrored_depth[:, 2] *= -1
    assert np.abs(canonical_landmarks(mirrored_depth) - reference).max() > 0.1, "depth is kept, not discarded"


def test_align_crop_on_gray_bgr_and_bgra_and_other_sizes(photo_analyzer, images):
    image = read(images / "angry.jpg")
    landmarks = photo_analyzer(image)[0].landmarks
    bgr = align_crop(image, landmarks)
    gray = align_crop(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), landmarks)
    bgra = align_crop(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA), landmarks)
    assert bgr.shape == (64, 64) and bgr.dtype == np.uint8
    assert np.abs(bgr.astype(int) - gray).max() <= 1 and np.array_equal(bgr, bgra)
    small = align_crop(image, landmarks, size=48)
    wide = align_crop(image, landmarks, margin=0.3)
    assert small.shape == (48, 48)
    shrunk = cv2.resize(bgr, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(small.ravel().astype(float), shrunk.ravel().astype(float))[0, 1] > 0.95
    assert np.corrcoef(wide.ravel().astype(float), bgr.ravel().astype(float))[0, 1] < 0.9, "margin widens the crop"


@pytest.mark.parametrize("static", [True, False])
def test_gray_bgra_tiny_and_4k_frames(images, static):
    image = read(images / "single_face.jpg")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    canvas = np.full((2160, 3840, 3), 90, np.uint8)
    big = cv2.resize(image, (1600, 1572))
    canvas[300:1872, 1000:2600] = big
    inputs = {
        "bgr": image,
        "gray": gray,
        "gray1": gray[:, :, None],
        "bgra": cv2.cvtColor(image, cv2.COLOR_BGR2BGRA),
        "4k": canvas,
    }
    for name, frame in inputs.items():
        with FaceAnalyzer(static=static) as analyzer:
            faces = analyzer(frame)
        assert len(faces) == 1, name
        check_face(faces[0], frame)
        if name == "4k":
            x, y, w, h = faces[0].box
            assert 1000 <= x and x + w <= 2600 and 300 <= y and y + h <= 1872 and w > 500
    with FaceAnalyzer(static=static) as analyzer:
        for frame in (cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA), np.zeros((32, 32), np.uint8)):
            for face in analyzer(frame):
                check_face(face, frame)
        assert analyzer(np.zeros((64, 64, 3), np.float32)) == []
        with pytest.raises(EmotionError):
            analyzer(np.zeros((64, 64, 5), np.uint8))


def test_max_faces_keeps_the_largest(photo_analyzer, images):
    image = read(images / "multi_face.jpg")
    areas = sorted((f.box[2] * f.box[3] for f in photo_analyzer(image)), reverse=True)
    with FaceAnalyzer(FaceConfig(max_faces=2), static=True) as analyzer:
        faces = analyzer(image)
    assert sorted((f.box[2] * f.box[3] for f in faces), reverse=True) == areas[:2]


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def test_video_mode_finds_and_keeps_all_five_faces(photo_analyzer, images):
    """Same five faces, same ids every frame; once the mesh has settled the boxes agree with image mode."""
    image = read(images / "multi_face.jpg")
    with FaceAnalyzer() as analyzer:
        runs = [analyzer(image) for _ in range(10)]
    for faces in runs:
        assert [f.track_id for f in faces] == [0, 1, 2, 3, 4]
    still = [f.box for f in photo_analyzer(image)]
    for face in runs[-1]:
        assert max(iou(face.box, box) for box in still) > 0.85
def test_face_then_sky(videos):
    counts = []
    with FaceAnalyzer() as analyzer:
        for frame in frames(videos / "face_noface.mov"):
            counts.append(len(analyzer(frame)))
    assert len(counts) == 169
    assert sum(c == 1 for c in counts[:72]) >= 70
    assert counts[72:] == [0] * 97


def test_single_face_video_keeps_one_track_id(videos):
    ids = []
    with FaceAnalyzer() as analyzer:
        for frame in frames(videos / "single_face.mp4"):
            faces = analyzer(frame)
            assert len(faces) == 1
            check_face(faces[0], frame)
            ids.append(faces[0].track_id)
    assert len(ids) == 72 and set(ids) == {0}


def test_track_survives_max_missed_frames_then_gets_a_new_id(images):
    face = read(images / "single_face.jpg")
    blank = np.zeros_like(face)
    with FaceAnalyzer(FaceConfig(max_missed=3)) as analyzer:
        seen = [analyzer(frame) for frame in [face, face, blank, blank, blank, face]]
        assert [[f.track_id for f in faces] for faces in seen] == [[0], [0], [], [], [], [0]]
        seen = [analyzer(frame) for frame in [blank] * 4 + [face]]
        assert [[f.track_id for f in faces] for faces in seen] == [[], [], [], [], [1]]
        analyzer.reset()
        assert [f.track_id for f in analyzer(face)] == [0], "a new video numbers its faces from 0 again"


def test_video_speed_against_bare_face_mesh(videos):
    """Prints our video-mode cost per frame next to FaceMesh alone in tracking mode (one face), same frames."""
    ours = bare = 0.0
    found = total = 0
    with FaceAnalyzer() as analyzer, mp.solutions.face_mesh.FaceMesh(static_image_mode=False) as mesh:
        for frame in frames(videos / "WolfgangLanger_Pexels.mp4"):
            start = time.perf_counter()
            found += len(analyzer(frame)) == 1
            middle = time.perf_counter()
            mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            ours += middle - start
            bare += time.perf_counter() - middle
            total += 1
    print(
        f"\nWolfgangLanger_Pexels.mp4, {total} frames: face stage {1000 * ours / total:.2f} ms/frame, "
        f"bare FaceMesh tracking {1000 * bare / total:.2f} ms/frame"
    )
    assert total == 472 and found >= 0.9 * total


def test_mediapipe_start_up_and_reset_warnings_stay_off_stderr(capfd, images):
    """MediaPipe's graphs log from their own threads when they start and reset (absl/TFLite on file descriptor 2);
    none of it may reach the terminal, even after the calls have returned."""
    image = read(images / "neutral.jpeg")
    capfd.readouterr()
    for static in (True, False):
        with FaceAnalyzer(static=static) as analyzer:
            assert len(analyzer(image)) == 1
            analyzer.reset()
            time.sleep(0.5)
    assert capfd.readouterr().err == ""


def test_turned_shouting_face_of_the_zidane_clip_is_followed_and_read_angry():
    """The clip the demo once was: a man shouting with his head turned (MediaPipe's face detectors alone found him in
    2 of 72 frames) and another man; both faces in every frame, the shouting one angry in most."""
    both = angry = 0
    with EmotionRecognizer() as rec:
        clip = zidane_frames()
        for i, frame in enumerate(clip):
            faces = rec.step(frame, i, i / 24).faces
            both += len(faces) == 2
            shouting = [f for f in faces if f.box[0] + f.box[2] / 2 < frame.shape[1] * 0.55]
            angry += bool(shouting) and shouting[0].emotion == "angry"
            assert all(f.source in SOURCES for f in faces)
    assert both >= 70 and angry >= 48, (both, angry)


def test_every_labelled_photo_has_its_face(photo_analyzer, shared_data):
    """The 259 labelled photos (many pre-cropped faces of 60-350 px, some press photos): one face found in each."""
    paths = sorted(p for p in (shared_data / "faces").rglob("*.jpg"))
    assert len(paths) == 259
    missed = [p.name for p in paths if len(photo_analyzer(read(p))) != 1]
    assert missed == []


def test_tiny_gray_tight_crops_are_found_and_cropped_mode_takes_them_whole(photo_analyzer, images):
    """48x48 grayscale tight crops (as in FER2013) are found by the searches, and `cropped` mode gives one face per
    image without searching; neither sees a face in images without one."""
    crops = []
    for name in SINGLE_FACE_PHOTOS:
        image = read(images / name)
        x, y, w, h = photo_analyzer(image)[0].box
        tight = cv2.resize(image[y : y + h, x : x + w], (48, 48), interpolation=cv2.INTER_AREA)
        crops.append(cv2.cvtColor(tight, cv2.COLOR_BGR2GRAY))
    with FaceAnalyzer(FaceConfig(cropped=True), static=True) as cropped:
        for crop in crops:
            found, whole = photo_analyzer(crop), cropped(crop)
            assert len(found) == 1 and len(whole) == 1
            assert whole[0].source == "cropped" and whole[0].box[2] > 30
            check_face(whole[0], crop)
        for image in nonface_images(10):
            assert cropped(image) == []


def test_no_face_in_images_without_faces(photo_analyzer):
    """Noise, smooth noise, stripes, shapes and text: every search runs on them (nothing is found first) and the
    landmark model confirms none."""
    assert [len(photo_analyzer(image)) for image in nonface_images()] == [0] * 40


@needs_shared
def test_twenty_tiled_faces_are_all_found_within_ten_frames():
    """A mosaic of 20 real faces (MediaPipe's detectors on the whole frame find 11): the tiled search finds them."""
    with FaceAnalyzer(FaceConfig(max_faces=20)) as analyzer:
        counts = [len(analyzer(frame)) for frame in crowd_frames(20, 10)]
    assert max(counts) == 20 and counts[-1] == 20, counts


def test_sources_name_the_search_that_found_each_face(photo_analyzer, images):
    """Whole-frame detector faces say so; the JSON of a result carries the source."""
    faces = photo_analyzer(read(images / "multi_face.jpg"))
    assert [f.source for f in faces] == ["detector"] * 5
    with EmotionRecognizer() as rec:
        record = rec.predict_image(read(images / "group.jpeg")).to_dict()
    assert {face["source"] for face in record["faces"]} <= set(SOURCES)
    assert "tiled" in {face["source"] for face in record["faces"]}, "the face cut off at the top"
