"""The public Python API: what `EmotionRecognizer` accepts and how it reports what it cannot."""

import cv2
import numpy as np
import pytest
import torch
from support import SHARED, assert_clean_error, cli, needs_shared, signals_args, write_clip

from emotion import EmotionError, EmotionRecognizer
from emotion.align import CropSpec
from emotion.face import FaceConfig
from emotion.labels import circumplex_matrix
from emotion.model import crops_to_tensor
from emotion.signals import emotion_evidence
from emotion.device import resolve_device


@pytest.fixture(scope="module")
def recognizer():
    with EmotionRecognizer() as rec:
        yield rec


@pytest.mark.parametrize(
    "image, words",
    [
        (None, ["got None", "cv2.imread"]),
        ("photo.jpg", ["not an image", "str"]),
        ([[0, 0], [0, 0]], ["not an image", "list"]),
        (np.zeros((0, 10, 3), np.uint8), ["shape (0, 10, 3)"]),
        (np.zeros((10, 10, 2), np.uint8), ["shape (10, 10, 2)"]),
        (np.zeros((2, 10, 10, 3), np.uint8), ["shape (2, 10, 10, 3)"]),
        (np.zeros((10, 10, 3), bool), ["bool values"]),
        (np.zeros((10, 10, 3), object), ["object values"]),
    ],
)
def test_predict_image_refuses_what_is_not_an_image(recognizer, image, words):
    with pytest.raises(EmotionError) as info:
        recognizer.predict_image(image)
    assert all(w in str(info.value) for w in words), str(info.value)
    with pytest.raises(EmotionError):
        recognizer.step(image)


def test_gray_and_float_images_are_images(recognizer):
    assert recognizer.predict_image(np.zeros((48, 64), np.uint8)).faces == []
    assert recognizer.predict_image(np.random.default_rng(0).random((48, 64, 3))).faces == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA to ask for a missing GPU")
def test_library_messages_name_no_flags_and_the_command_line_adds_them(tmp_path):
    with pytest.raises(EmotionError) as info:
        resolve_device("cuda")
    assert "--" not in str(info.value) and "'cpu'" in str(info.value)
    write_clip(tmp_path / "a.avi")
    assert_clean_error(cli("--video", tmp_path / "a.avi", "--device", "cuda"), "no CUDA GPU", "--device cpu")


@needs_shared
def test_still_images_average_the_mirror_image_and_video_does_not(recognizer):
    """The shipped model (flip_images): predict_image's probabilities are those of the mean logits of the crop and
    its mirror image, computed here from the FER2013 network directly; a video step sees the crop alone."""
    image = cv2.imread(str(SHARED / "images" / "surprised.jpeg"))
    face = recognizer.predict_image(image).faces[0]
    config = recognizer.model.config
    assert config.flip_images and not config.crop_rotate and config.prior_strength == 0.75
    landmarks = recognizer._detector(image)[0].landmarks
    crop = CropSpec.of(config)(image, landmarks)
    views = crops_to_tensor(np.stack([crop, crop[:, ::-1]]), recognizer.model.backbone.pretrained_cfg)
    with torch.inference_mode():
        logits = recognizer.model.backbone(views) + recognizer.model.logit_adjustment
    prior = torch.tensor(np.asarray(config.blendshape_prior) * emotion_evidence(face.raw_signals.blendshapes[None]))
    logits = logits + prior.float()  # the same evidence in both views: the mirror keeps the face's blendshapes
    expected = torch.softmax(logits.mean(0), -1).numpy()
    np.testing.assert_allclose(face.raw_probabilities, expected, atol=1e-4)
    recognizer.reset()
    step = recognizer.step(image).faces[0]
    np.testing.assert_allclose(step.raw_probabilities, torch.softmax(logits[0], -1).numpy(), atol=1e-3)


@needs_shared
def test_a_signal_stream_model_gets_the_face_signals(tmp_path):
    """A checkpoint with a signal stream is fed each face's FaceSignals.vector(): its outputs are those of the model
    on that face's crop, landmarks and signals. With the signals turned off, or for another number of signals, it is
    refused with the fix (on the command line: one error line naming the flag)."""
    from dataclasses import replace

    from modeltools import model_for

    from emotion.face import FaceAnalyzer, FaceConfig
    from emotion.model import create_model, save_checkpoint

    model = model_for("mini_xception", signals=True)
    checkpoint = save_checkpoint(tmp_path / "signals.pt", model, model.config)
    image = cv2.imread(str(SHARED / "images" / "single_face.jpg"))
    with EmotionRecognizer(checkpoint, device="cpu", backend="torch") as rec:
        assert rec.face_config.signals
        face = rec.predict_image(image).faces[0]
    off = signals_args(False)
    with pytest.raises(EmotionError, match="turned off") as refused:
        EmotionRecognizer(checkpoint, device="cpu", face_config=FaceConfig(signals=False))
    assert "--" not in str(refused.value)
    refused = cli("--image", SHARED / "images" / "single_face.jpg", "--weights", checkpoint, *off)
    assert_clean_error(refused, "turned off", f"leave out {off[0]}")
    with FaceAnalyzer(FaceConfig(signals=True), static=True) as analyzer:
        found = analyzer(image)[0]
        vector = found.signals.vector()
    crop = crops_to_tensor(CropSpec.of(model.config)(image, found.landmarks)[None], model.backbone.pretrained_cfg)
    inputs = crop[None], torch.from_numpy(found.landmarks_norm)[None, None]
    with torch.inference_mode():
        out = model(*inputs, torch.from_numpy(vector)[None, None])
        blind = model(*inputs, torch.zeros(1, 1, model.config.signals))
    np.testing.assert_allclose(face.raw_probabilities, torch.softmax(out["logits"][0, 0], -1), atol=1e-5)
    assert np.abs(face.raw_probabilities - torch.softmax(blind["logits"][0, 0], -1).numpy()).max() > 1e-3
    ten = create_model(replace(model.config, signals=10))
    other = save_checkpoint(tmp_path / "other.pt", ten, ten.config)
    with pytest.raises(EmotionError, match="reads 10 face signals per frame") as info:
        EmotionRecognizer(other, device="cpu")
    assert "retrain" in str(info.value)


@needs_shared
def test_facs_prior_adds_disgust_and_surprise_evidence_only_with_the_signals():
    """The shipped blendshape prior: the open-mouthed Santa's surprise logit rises by 5.25 times his surprise
    evidence (read surprise, not fear); without the face signals there is no prior, and valence/arousal stay the
    circumplex of the probabilities shown."""
    image = cv2.imread(str(SHARED / "images" / "surprised.jpeg"))
    with EmotionRecognizer() as rec, EmotionRecognizer(face_config=FaceConfig(signals=False)) as plain:
        face, bare = rec.predict_image(image).faces[0], plain.predict_image(image).faces[0]
    evidence = emotion_evidence(face.raw_signals.blendshapes[None])[0]
    shift = np.log(face.raw_probabilities) - np.log(bare.raw_probabilities)
    expected = np.asarray(rec.model.config.blendshape_prior) * evidence
    np.testing.assert_allclose(shift - shift.mean(), expected - expected.mean(), atol=1e-3)
    assert (face.emotion, bare.emotion) == ("surprise", "fear")
    assert bare.raw_signals is None
    va = face.raw_probabilities @ np.array(circumplex_matrix())
    np.testing.assert_allclose([face.raw_valence, face.raw_arousal], va, atol=1e-4)
