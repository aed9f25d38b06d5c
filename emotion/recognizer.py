"""The public Python API: `EmotionRecognizer` turns images, videos and live frames into per-face results.

It runs the pipeline source -> face stage -> per-track ring buffer -> model -> smoothing, timing every stage.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from emotion.device import resolve_device
from emotion.align import CropSpec
from emotion.face import Face, FaceAnalyzer, FaceConfig, load_mediapipe
from emotion.labels import circumplex_matrix
from emotion.model import CheckpointError, crops_to_tensor, default_model, load_checkpoint
from emotion.model.export import DEFAULT_ONNX, default_export_path
from emotion.runtime import Backend, create_streamer
from emotion.results import FaceResult, FrameResult
from emotion.signals import SIGNAL_DIM, emotion_evidence
from emotion.smoothing import Smoother, SmoothingConfig
from emotion.errors import EmotionError
from emotion.imaging import to_bgr
from emotion.io.files import VideoSource

class StageTimer:
    """Running mean of the wall time of each pipeline stage, in milliseconds per frame."""

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.last: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            ms = (time.perf_counter() - t0) * 1000.0
            self.total[stage] += ms
            self.count[stage] += 1
            self.last[stage] = ms

    def add(self, stage: str, ms: float) -> None:
        """Record a time measured elsewhere (e.g. on the decode or encode thread)."""
        self.total[stage] += ms
        self.count[stage] += 1
        self.last[stage] = ms

    def mean(self) -> dict[str, float]:
        return {k: self.total[k] / self.count[k] for k in self.total}

    def reset(self) -> None:
        self.total.clear()
        self.count.clear()
        self.last.clear()


def _mean_of_views(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Two views' outputs as one: the probabilities of their mean logits (the softmax of the mean log-probability),
    the mean valence and arousal."""
    with np.errstate(divide="ignore"):
        log_mean = (np.log(a["probabilities"]) + np.log(b["probabilities"])) / 2
    probabilities = np.exp(log_mean - log_mean.max(axis=-1, keepdims=True))
    out = {k: (a[k] + b[k]) / 2 for k in ("valence", "arousal")}
    return {"probabilities": probabilities / probabilities.sum(axis=-1, keepdims=True), **out}


def _circumplex(probabilities: np.ndarray) -> np.ndarray:
    """(2, N) valence and arousal of (N, 7) probabilities: their circumplex prior (README "What valence and arousal
    are"), for probabilities the recognizer changed after the model (mirror views, the blendshape prior)."""
    return (probabilities @ np.array(circumplex_matrix())).T


def _face_config_for(face_config: FaceConfig, signals: int) -> FaceConfig:
    """The face stage's config for a model: one with a signal stream (`signals` > 0) reads the face signals, so a
    config that turns them off is refused (and, were they off by default, they would be turned on)."""
    if signals and signals != SIGNAL_DIM:
        raise EmotionError(
            f"this model reads {signals} face signals per frame, this version of emotion gives {SIGNAL_DIM}",
            fix="retrain it with this version",
        )
    if not signals or face_config.signals:
        return face_config
    if FaceConfig().signals:
        raise EmotionError(
            "this model reads face signals (blendshapes, head pose, gaze), but they are turned off",
            fix="leave face signals on (FaceConfig(signals=True)), or use a model trained without a signal stream",
            cli_fix="leave out --no-signals, or pass --weights of a model trained with --no-signal-stream",
        )
    return replace(face_config, signals=True)


class EmotionRecognizer:
    """Facial emotion recognition for still images, video files and live streams.

    >>> rec = EmotionRecognizer()
    >>> result = rec.predict_image(cv2.imread("face.jpg"))
    >>> result.faces[0].emotion, result.faces[0].valence

    `backend` 'auto' runs the model on ONNX Runtime on the CPU when it is installed (several times faster than eager
    PyTorch for these small per-frame batches, same outputs to 1e-4), 'onnx' insists on it, 'torch' runs eager.
    `threads` is the ONNX Runtime session's own thread count; PyTorch's, a process-wide setting, is left to the
    application (emotion.runtime.set_threads, which the command line calls).

    `affect_source` says what valence/arousal are: 'circumplex', the circumplex prior of the probabilities (the
    default model), or 'learned', heads trained with valence/arousal labels (README, "What valence and arousal are").
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        face_config: FaceConfig = FaceConfig(),
        smoothing: SmoothingConfig = SmoothingConfig(),
        threads: int = 1,
        backend: Backend = "auto",
    ):
        self.device = resolve_device(device)
        load_mediapipe()  # before ONNX Runtime loads: loaded after it, MediaPipe's face stage ran slower (README)
        try:
            if weights is None:
                self.model, extra = default_model(self.device), {}
            else:
                self.model, _, extra = load_checkpoint(weights, self.device)
        except CheckpointError as exc:
            raise EmotionError(str(exc)) from None
        self.model.eval()
        self.face_config = _face_config_for(face_config, self.model.config.signals)
        self.affect_source: str = extra.get("affect", self.model.affect_source)
        self._crop = CropSpec.of(self.model.config)
        exported = DEFAULT_ONNX if weights is None else default_export_path(weights, "onnx")
        self.streamer = create_streamer(self.model, self.device, backend, exported, threads)
        self.backend = self.streamer.name
        self.smoothing = smoothing
        self.timer = StageTimer()
        self._state = self.streamer.init_state()
        self._last_seen: dict[int, int] = {}
        self._frame_count = 0
        self._smoother = Smoother(smoothing)
        self._signal_smoother = Smoother(smoothing)  # the face signals' FaceSignals.vector(), per track
        self._tracker: FaceAnalyzer | None = None
        self._detector: FaceAnalyzer | None = None

    def _faces(self, frame: np.ndarray, static: bool) -> list[Face]:
        if static:
            if self._detector is None:
                self._detector = FaceAnalyzer(self.face_config, static=True)
            return self._detector(frame)
        if self._tracker is None:
            self._tracker = FaceAnalyzer(self.face_config, static=False)
        return self._tracker(frame)

    def _infer(self, frame: np.ndarray, faces: list[Face], state, mirrored: bool = False) -> dict[str, np.ndarray]:
        """One batched model call for all faces of a frame: probabilities (N, 7), valence (N,), arousal (N,); with
        `mirrored` of the crops flipped left to right."""
        if not faces:
            return {"probabilities": np.zeros((0, 7)), "valence": np.zeros(0), "arousal": np.zeros(0)}
        with self.timer("crop/align"):
            crops = np.stack([self._crop(frame, f.landmarks) for f in faces])
            if mirrored:
                crops = np.ascontiguousarray(crops[:, :, ::-1])
            crops = crops_to_tensor(crops, self.model.pretrained_cfg).numpy()
            landmarks = np.stack([f.landmarks_norm for f in faces]).astype(np.float32, copy=False)
        signals = self._signals(faces)
        with self.timer("model"):
            out = self.streamer.step(state, crops, landmarks, [f.track_id for f in faces], signals)
        logits = out["logits"] + self._facs_prior(faces)
        logits -= logits.max(axis=-1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        valence, arousal = out["valence"], out["arousal"]
        if self.model.config.blendshape_prior and self.affect_source == "circumplex":  # of the probabilities shown
            valence, arousal = _circumplex(probabilities)
        return {"probabilities": probabilities, "valence": valence, "arousal": arousal}

    def _facs_prior(self, faces: list[Face]) -> np.ndarray | float:
        """(N, 7) logits the model's blendshape prior adds (ModelConfig.blendshape_prior times each face's FACS
        evidence, emotion.signals.emotion_evidence; nothing for a face without signals), or 0 without a prior."""
        weights = self.model.config.blendshape_prior
        if not weights:
            return 0.0
        with self.timer("signals"):
            signals = [f.signals for f in faces]
        none = np.zeros(len(weights))
        evidence = [none if s is None else emotion_evidence(s.blendshapes[None])[0] for s in signals]
        return np.array(evidence) * np.asarray(weights)

    def _signals(self, faces: list[Face]) -> np.ndarray | None:
        """(N, G) face signals for a model with a signal stream (zeros for a face without them; read here first, so
        timed as the stage 'signals'), else None."""
        g = self.model.config.signals
        if not g:
            return None
        with self.timer("signals"):
            zeros = np.zeros(g, np.float32)
            return np.stack([zeros if f.signals is None else f.signals.vector() for f in faces])

    def _forget_lost_tracks(self, faces: list[Face]) -> None:
        """Drop the ring buffer and smoothing of tracks unseen for longer than the face stage keeps them."""
        self._frame_count += 1
        for f in faces:
            self._last_seen[f.track_id] = self._frame_count
        live = [t for t, seen in self._last_seen.items() if self._frame_count - seen <= self.face_config.max_missed]
        self._last_seen = {t: self._last_seen[t] for t in live}
        self._state.retain(live)
        self._smoother.retain(live)
        self._signal_smoother.retain(live)

    def _results(self, faces: list[Face], outputs: dict[str, np.ndarray], smooth: bool) -> list[FaceResult]:
        results = []
        for i, face in enumerate(faces):
            probs = outputs["probabilities"][i]
            va = np.array([outputs["valence"][i], outputs["arousal"][i]])
            shown = self._smoother(face.track_id, np.concatenate([probs, va])) if smooth else np.concatenate([probs, va])
            signals = face.signals
            if smooth and signals is not None and self.smoothing.frames > 1:  # 1: raw, exactly (no x / 90 * 90)
                signals = signals.with_vector(self._signal_smoother(face.track_id, signals.vector()))
            results.append(
                FaceResult(
                    track_id=face.track_id,
                    box=face.box,
                    probabilities=shown[:7],
                    valence=float(shown[7]),
                    arousal=float(shown[8]),
                    raw_probabilities=probs,
                    raw_valence=float(va[0]),
                    raw_arousal=float(va[1]),
                    landmarks=face.landmarks,
                    source=face.source,
                    signals=signals,
                    raw_signals=face.signals,
                )
            )
        return results

    def step(self, frame: np.ndarray, index: int = 0, timestamp: float = 0.0) -> FrameResult:
        """Process the next frame of a stream: faces are tracked and each track's ring buffer grows by one frame."""
        frame, faces = self.detect(frame)
        return self.classify(frame, faces, index, timestamp)

    def detect(self, frame: np.ndarray) -> tuple[np.ndarray, list[Face]]:
        """The face stage of `step` (tracking): the frame as BGR and its faces, for `classify`.

        `detect` and `classify` may run on two threads (a pipeline), each called in frame order.
        """
        frame = to_bgr(frame)
        with self.timer("face"):
            return frame, self._faces(frame, static=False)

    def classify(self, frame: np.ndarray, faces: list[Face], index: int = 0, timestamp: float = 0.0) -> FrameResult:
        """The model and smoothing part of `step` for the faces `detect` found in `frame`."""
        outputs = self._infer(frame, faces, self._state)
        with self.timer("smoothing"):
            self._forget_lost_tracks(faces)
            return FrameResult(index, timestamp, self._results(faces, outputs, smooth=True), self.face_config.signals)

    def predict_image(self, image: np.ndarray) -> FrameResult:
        """Detect every face in a still image from scratch and classify it from this single frame."""
        image = to_bgr(image)
        with self.timer("face"):
            faces = self._faces(image, static=True)
        outputs = self._infer(image, faces, self.streamer.init_state())
        if self.model.config.flip_images and faces:
            outputs = _mean_of_views(outputs, self._infer(image, faces, self.streamer.init_state(), mirrored=True))
            if self.affect_source == "circumplex":  # of the probabilities shown (the views' mean was 0.014 off)
                outputs["valence"], outputs["arousal"] = _circumplex(outputs["probabilities"])
        return FrameResult(0, 0.0, self._results(faces, outputs, smooth=False), self.face_config.signals)

    def reset(self) -> None:
        """Forget all tracks, ring buffers and smoothing state (call between unrelated videos)."""
        if self._tracker is not None:
            self._tracker.reset()
        self._state.clear()
        self._last_seen.clear()
        self._frame_count = 0
        self._smoother.reset()
        self._signal_smoother.reset()
        self.timer.reset()

    def process_video(self, source: str | Path | VideoSource) -> Iterator[tuple[FrameResult, np.ndarray]]:
        """Yield (result, frame) for every frame of a video file, in order."""
        video = source if isinstance(source, VideoSource) else VideoSource(source)
        self.reset()
        try:
            for index, t, frame in video:
                yield self.step(frame, index, t), frame
        finally:
            if video is not source:
                video.close()

    def close(self) -> None:
        for analyzer in (self._tracker, self._detector):
            if analyzer is not None:
                analyzer.close()
        self._tracker = self._detector = None

    def __enter__(self) -> "EmotionRecognizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
