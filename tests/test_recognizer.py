"""The public Python API: what `EmotionRecognizer` accepts and how it reports what it cannot."""

import numpy as np
import pytest
import torch
from support import assert_clean_error, cli, write_clip

from emotion import EmotionError, EmotionRecognizer
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
