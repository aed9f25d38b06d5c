"""Runtime: the ring buffer, streaming = whole clip, ONNX Runtime = eager PyTorch, backend choice, the thread setting."""

import numpy as np
import pytest
import torch
from modeltools import clip, face_signals, max_diff, model_for, needs_weights, with_active_residuals, with_signals

from emotion.align import CropSpec
from emotion.errors import EmotionError
from emotion.labels import LABELS
from emotion.model import ModelConfig, create_model, crops_to_tensor, default_model
from emotion.model.export import DEFAULT_ONNX, export_onnx
from emotion.runtime import OnnxStreamer, RingBuffer, TorchStreamer, create_streamer, set_threads

TOLERANCE = 1e-4


def rows(*values: float) -> list[np.ndarray]:
    """One 2-feature row per value: (value, -value)."""
    return [np.array([v, -v], np.float32) for v in values]


def test_ring_buffer_keeps_the_last_window_rows_of_each_track():
    ring = RingBuffer(window=3, features=2)
    assert len(ring) == 0 and ring.history("a") == 0 and ring.frames("a").shape == (0, 2)
    for row in rows(1, 2, 3, 4, 5):
        ring.push("a", row)
    ring.push("b", rows(9)[0])
    assert ring.history("a") == 3 and ring.history("b") == 1 and len(ring) == 2 and "a" in ring
    np.testing.assert_array_equal(ring.frames("a"), np.stack(rows(3, 4, 5)))
    np.testing.assert_array_equal(ring.frames("b"), np.stack(rows(9)))


def test_ring_buffer_batches_tracks_by_history_length():
    """One batch per history length, positions in the order asked, each track exactly its own frames (no padding)."""
    ring = RingBuffer(window=4, features=2)
    for track, count in (("a", 2), ("b", 4), ("c", 2), ("d", 6)):
        for i in range(count):
            ring.push(track, rows(10 * ord(track) + i)[0])
    order = ["d", "a", "b", "c"]
    batches = {clips.shape[1]: (positions, clips) for positions, clips in ring.batches(order)}
    assert sorted(batches) == [2, 4]
    assert batches[4][0] == [0, 2] and batches[2][0] == [1, 3]
    for positions, clips in batches.values():
        assert clips.shape == (2, clips.shape[1], 2)
        for k, position in enumerate(positions):
            np.testing.assert_array_equal(clips[k], ring.frames(order[position]))
    np.testing.assert_array_equal(batches[4][1][0, :, 0], [10 * ord("d") + i for i in range(2, 6)])


def test_ring_buffer_retain_drop_and_clear_forget_tracks():
    ring = RingBuffer(window=2, features=2)
    for track in (1, 2, 3):
        ring.push(track, rows(track)[0])
    ring.retain([1, 3, 99])
    assert 2 not in ring and len(ring) == 2 and ring.history(99) == 0
    ring.drop(1)
    ring.push(1, rows(7)[0])
    assert ring.history(1) == 1, "a dropped track starts a new history"
    np.testing.assert_array_equal(ring.frames(1), np.stack(rows(7)))
    ring.clear()
    assert len(ring) == 0 and ring.history(3) == 0


def test_streaming_equals_whole_clip_and_batches_tracks_of_different_lengths():
    model = model_for("mini_xception")
    streamer = TorchStreamer(model)
    x, lm = clip(model.config, 3, 16)
    starts = (0, 3, 9)
    with torch.inference_mode():
        whole = [model(x[i : i + 1, : 16 - s], lm[i : i + 1, : 16 - s]) for i, s in enumerate(starts)]
    state = streamer.init_state()
    for frame in range(16):
        tracks = [i for i, s in enumerate(starts) if frame >= s]
        idx = [frame - starts[i] for i in tracks]
        out = streamer.step(state, x[tracks, idx].numpy(), lm[tracks, idx].numpy(), [f"face{i}" for i in tracks])
        for row, (i, t) in enumerate(zip(tracks, idx)):
            expected = {k: v[0, t] for k, v in whole[i].items()}
            assert max_diff({k: v[row] for k, v in out.items()}, expected) < 1e-5, (i, t)
            assert state.history(f"face{i}") == t + 1
    one = streamer.step(streamer.init_state(), x[0, :1].numpy(), lm[0, :1].numpy(), [0])
    assert one["logits"].shape == (1, len(LABELS)) and one["valence"].shape == one["arousal"].shape == (1,)
    assert max_diff({k: v[0] for k, v in one.items()}, {k: v[0, 0] for k, v in whole[0].items()}) < 1e-5


def test_streaming_a_long_sequence_uses_the_last_window():
    model = model_for("mini_xception")
    streamer = TorchStreamer(model)
    window = model.config.window
    x, lm = clip(model.config, 1, 40)
    state = streamer.init_state()
    streamed = [streamer.step(state, x[0, t : t + 1].numpy(), lm[0, t : t + 1].numpy(), ["a"]) for t in range(40)]
    assert state.history("a") == window
    starts = range(40 - window + 1)
    with torch.inference_mode():
        windows = model(
            torch.stack([x[0, s : s + window] for s in starts]), torch.stack([lm[0, s : s + window] for s in starts])
        )
    for t in range(40):
        first = max(0, t - window + 1)
        expected = {k: v[first, t - first] for k, v in windows.items()}
        assert max_diff({k: v[0] for k, v in streamed[t].items()}, expected) < 1e-5, t


def test_dropped_track_restarts_and_retain_forgets():
    model = model_for("mini_xception")
    streamer = TorchStreamer(model)
    x, lm = clip(model.config, 1, 4)
    x, lm = x.numpy(), lm.numpy()
    state = streamer.init_state()
    for t in range(3):
        streamer.step(state, x[0, t : t + 1], lm[0, t : t + 1], [7])
    streamer.step(state, x[0, :1], lm[0, :1], [8])
    state.drop(7)
    restarted = streamer.step(state, x[0, 3:4], lm[0, 3:4], [7])
    with torch.inference_mode():
        fresh = model(torch.from_numpy(x[:, 3:4]), torch.from_numpy(lm[:, 3:4]))
    assert max_diff({k: v[0] for k, v in restarted.items()}, {k: v[0, 0] for k, v in fresh.items()}) < 1e-6
    state.retain([7])
    assert 7 in state and 8 not in state and len(state) == 1
    with pytest.raises(ValueError):
        streamer.step(state, x[0, :2], lm[0, :2], [1, 1])
    with pytest.raises(ValueError):
        streamer.step(state, x[0, :2], lm[0, :2], [1])


def test_streaming_with_signals_equals_whole_clip_and_needs_them():
    model = model_for("mini_xception", signals=True)
    streamer = TorchStreamer(model)
    x, lm = clip(model.config, 1, 20)
    signals = face_signals(model.config, 1, 20)
    state = streamer.init_state()
    streamed = [
        streamer.step(state, x[0, t : t + 1].numpy(), lm[0, t : t + 1].numpy(), ["a"], signals[0, t : t + 1].numpy())
        for t in range(20)
    ]
    with torch.inference_mode():
        whole = model(x[:, 4:], lm[:, 4:], signals[:, 4:])  # the last window, as the ring buffer holds it
    assert max_diff({k: v[0] for k, v in streamed[-1].items()}, {k: v[0, -1] for k, v in whole.items()}) < 1e-5
    with pytest.raises(ValueError, match="signal stream"):
        streamer.step(state, x[0, :1].numpy(), lm[0, :1].numpy(), ["a"])


def test_faces_in_one_call_equal_separate_calls():
    model = model_for("mini_xception")
    streamer = TorchStreamer(model)
    x, lm = clip(model.config, 16, 1)
    crops, marks = x[:, 0].numpy(), lm[:, 0].numpy()
    alone = [streamer.step(streamer.init_state(), crops[i : i + 1], marks[i : i + 1], [0]) for i in range(16)]
    together = streamer.step(streamer.init_state(), crops, marks, list(range(16)))
    for i in range(16):
        assert max_diff({k: v[i] for k, v in together.items()}, {k: v[0] for k, v in alone[i].items()}) < 1e-5


@needs_weights
def test_default_model_streams_real_faces_to_their_expressions(shared_data):
    """Real photos through the real face stage: the untrained default model names each expression (FER2013 prior)."""
    cv2 = pytest.importorskip("cv2")
    from emotion.face import FaceAnalyzer

    expected = {
        "happy-baby.jpeg": "happy",
        "sad-baby.jpeg": "sad",
        "surprised.jpeg": "surprise",
        "neutral.jpeg": "neutral",
        "angry.jpg": "angry",
    }
    model = default_model("cpu")
    streamer = TorchStreamer(model)
    state = streamer.init_state()
    with FaceAnalyzer(static=True) as analyzer:
        for track, (name, label) in enumerate(expected.items()):
            image = cv2.imread(str(shared_data / "images" / name))
            faces = analyzer(image)
            assert len(faces) == 1, name
            crop = CropSpec()(image, faces[0].landmarks)  # the eye-level 0.1-margin crop (surprised.jpeg: see README)
            crop = crops_to_tensor(crop[None], model.backbone.pretrained_cfg).numpy()
            out = streamer.step(state, crop, faces[0].landmarks_norm[None], [track])
            assert LABELS[out["logits"][0].argmax()] == label, name
            assert -1 <= out["valence"][0] <= 1 and -1 <= out["arousal"][0] <= 1


@pytest.fixture(scope="module")
def trained_like() -> torch.nn.Module:
    """The pretrained model with non-zero residual heads, so every temporal layer reaches the outputs."""
    torch.manual_seed(0)
    return with_active_residuals(create_model(ModelConfig(), pretrained=True)).eval()


@pytest.fixture(scope="module")
def trained_like_with_signals(trained_like) -> torch.nn.Module:
    """trained_like with a signal stream whose projection is active."""
    model = create_model(with_signals(trained_like.config))
    model.load_state_dict(trained_like.state_dict(), strict=False)
    return with_active_residuals(model).eval()


def _stream(streamer, frames: int = 40, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Faces entering and leaving over `frames` frames (histories from 1 to beyond the window), one step each; for a
    signal-stream model with signals, face 2's all zero (a face without signals)."""
    g = np.random.default_rng(seed)
    state, outs = streamer.init_state(), []
    for t in range(frames):
        ids = [i for i in range(5) if (t + 2 * i) % 9 != 0] if t > 3 else [0, 1]
        crops = g.uniform(-1, 1, (len(ids), 1, 64, 64)).astype(np.float32)
        landmarks = g.normal(size=(len(ids), 468, 3)).astype(np.float32)
        signals = None
        if streamer.config.signals:
            signals = face_signals(streamer.config, 1, len(ids), seed=t)[0].numpy()
            signals[[i == 2 for i in ids]] = 0
        outs.append(streamer.step(state, crops, landmarks, ids, signals))
        state.retain(ids)
    return outs


@pytest.mark.parametrize("signals", [False, True], ids=["landmarks", "signals"])
def test_onnx_streaming_equals_eager_streaming(trained_like, trained_like_with_signals, signals):
    pytest.importorskip("onnxruntime")
    model = trained_like_with_signals if signals else trained_like
    frames = 24 if signals else 40  # beyond the window either way
    onnx_outs = _stream(OnnxStreamer(model), frames)
    torch_outs = _stream(TorchStreamer(model, torch.device("cpu")), frames)
    assert len(onnx_outs) == len(torch_outs) == frames
    for a, b in zip(onnx_outs, torch_outs):
        for key in ("logits", "valence", "arousal"):
            np.testing.assert_allclose(a[key], b[key], atol=TOLERANCE, rtol=0)


def test_an_export_of_another_model_is_not_trusted(trained_like, trained_like_with_signals, tmp_path):
    """A file exported from different weights, or with(out) a signals input, fails the probe and is replaced by a
    fresh in-memory export."""
    pytest.importorskip("onnxruntime")
    stale = tmp_path / "stale.onnx"
    export_onnx(trained_like, stale)
    assert OnnxStreamer(default_model(), stale).source == "memory"
    assert OnnxStreamer(trained_like_with_signals, stale).source == "memory"
    export_onnx(trained_like_with_signals, stale)
    assert OnnxStreamer(trained_like, stale).source == "memory"
    assert OnnxStreamer(trained_like_with_signals, stale).source == str(stale)


def test_backend_choice_and_names():
    pytest.importorskip("onnxruntime")
    model = default_model()
    cpu = torch.device("cpu")
    auto = create_streamer(model, cpu, "auto", DEFAULT_ONNX)
    assert isinstance(auto, OnnxStreamer) and auto.name == "onnx"
    eager = create_streamer(model, cpu, "torch")
    assert isinstance(eager, TorchStreamer) and eager.name == "torch"
    with pytest.raises(EmotionError, match="unknown backend"):
        create_streamer(model, cpu, "tensorrt")


def test_recognizer_backends_agree_on_a_real_clip(shared_data):
    """Real MediaPipe faces through both runtimes: the same raw probabilities, valence and arousal per frame."""
    pytest.importorskip("onnxruntime")
    from emotion.recognizer import EmotionRecognizer
    from emotion.io.files import VideoSource

    results = {}
    for backend in ("onnx", "torch"):
        with EmotionRecognizer(device="cpu", backend=backend) as rec, VideoSource(
            shared_data / "videos" / "single_face.mp4"
        ) as video:
            assert rec.backend == backend
            results[backend] = [rec.step(frame, i, t).faces for (i, t, frame), _ in zip(video, range(40))]
    faces = sum(len(f) for f in results["onnx"])
    assert faces >= 30
    for a, b in zip(results["onnx"], results["torch"], strict=True):
        assert [f.track_id for f in a] == [f.track_id for f in b]
        for fa, fb in zip(a, b):
            np.testing.assert_allclose(fa.raw_probabilities, fb.raw_probabilities, atol=TOLERANCE, rtol=0)
            assert abs(fa.raw_valence - fb.raw_valence) < TOLERANCE and abs(fa.raw_arousal - fb.raw_arousal) < TOLERANCE


def test_threads_are_a_setting_not_a_side_effect_of_the_recognizer():
    from emotion.recognizer import EmotionRecognizer

    before = torch.get_num_threads()
    try:
        set_threads(2)
        with EmotionRecognizer(device="cpu", threads=1):
            assert torch.get_num_threads() == 2, "building a recognizer must not change PyTorch's threads"
        set_threads(1)
        assert torch.get_num_threads() == 1
        for bad in (0, -1, 1.5, True):
            with pytest.raises(EmotionError, match="threads"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)
