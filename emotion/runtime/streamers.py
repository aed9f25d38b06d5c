"""Streamers run a model over face tracks one frame at a time: ONNX Runtime on the CPU, or eager PyTorch on any device.

Both take numpy in and out and keep each track's last `window` packed frame rows in a `RingBuffer`. The ONNX graph
(emotion.model.export.StreamStep) runs the whole step for all faces of a frame in one call over full buffers; a track
with a shorter history (its first frames) takes the eager temporal head over exactly its frames, so every output
equals the eager streamer's up to float rounding (tests/test_runtime.py checks 1e-4).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import torch

from emotion.errors import EmotionError
from emotion.model import ClipConfig, ClipModel
from emotion.model.export import StreamStep, example_inputs, export_onnx, input_names
from emotion.runtime.ring import RingBuffer

Backend = Literal["auto", "onnx", "torch"]
"""Model runtime to use: 'auto' takes ONNX Runtime on the CPU when it is installed, else eager PyTorch."""

BACKENDS: tuple[str, ...] = get_args(Backend)

PROBE_TOLERANCE = 1e-4
"""Largest difference to eager PyTorch, on a random probe, at which an exported file is trusted."""

Outputs = dict[str, np.ndarray]
"""logits (N, 7), valence (N,) and arousal (N,) of each track's newest step, float32."""


class Streamer(Protocol):
    """One streaming step for the faces of a frame; `name` is the runtime that computes it ('onnx' or 'torch')."""

    name: str
    config: ClipConfig

    def init_state(self) -> RingBuffer:
        """Empty ring buffers for this streamer's tracks."""

    def step(
        self,
        state: RingBuffer,
        crops: np.ndarray,
        landmarks: np.ndarray,
        track_ids: Sequence[Hashable],
        signals: np.ndarray | None = None,
    ) -> Outputs:
        """N new faces: crops (N, C, S, S) float32 in [-1, 1], landmarks (N, L, 3) float32, distinct track ids and,
        for a model with a signal stream (config.signals = G > 0), face signals (N, G) float32 (zeros for a face
        without them) -> Outputs; each face's frame row is pushed into its track's ring buffer."""


class _RingStreamer:
    """What both streamers share: the model in eval mode, its ring buffers and the eager temporal head over them."""

    def __init__(self, model: ClipModel, device: torch.device) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = device
        self.features = sum(model.row_sizes())

    def init_state(self) -> RingBuffer:
        return RingBuffer(self.config.window, self.features)

    def _check(self, crops: np.ndarray, track_ids: Sequence[Hashable], signals: np.ndarray | None) -> list[Hashable]:
        ids = list(track_ids)
        if len(ids) != crops.shape[0] or len(set(ids)) != len(ids):
            raise ValueError(f"need {crops.shape[0]} distinct track ids for {crops.shape[0]} faces, got {ids}")
        g = self.config.signals
        if g and (signals is None or signals.shape != (crops.shape[0], g)):
            got = "none" if signals is None else f"shape {signals.shape}"
            raise ValueError(f"this model has a signal stream: it needs face signals ({crops.shape[0]}, {g}), got {got}")
        return ids

    @torch.inference_mode()
    def _eager_heads(self, state: RingBuffer, tracks: list[Hashable], positions: list[int], out: Outputs) -> None:
        """The temporal head's newest step over exactly the buffered frames of `tracks`, one batch per history
        length, written to out[key][positions]."""
        for members, clips in state.batches(tracks):
            result = self.model.forward_last(torch.from_numpy(clips).to(self.device))
            rows = [positions[k] for k in members]
            for key, value in out.items():
                value[rows] = result[key][:, -1].float().cpu().numpy()


class TorchStreamer(_RingStreamer):
    """Eager PyTorch: the backbone once over all faces, then the temporal head per history length; any device."""

    name = "torch"

    def __init__(self, model: ClipModel, device: torch.device = torch.device("cpu")) -> None:
        super().__init__(model, device)

    @torch.inference_mode()
    def step(
        self,
        state: RingBuffer,
        crops: np.ndarray,
        landmarks: np.ndarray,
        track_ids: Sequence[Hashable],
        signals: np.ndarray | None = None,
    ) -> Outputs:
        ids = self._check(crops, track_ids, signals)
        x, lm = torch.from_numpy(crops).to(self.device), torch.from_numpy(landmarks).to(self.device)
        a = torch.from_numpy(signals).to(self.device) if self.config.signals else None
        rows = self.model.encode_rows(x, lm, a).float().cpu().numpy()
        for row, track in zip(rows, ids):
            state.push(track, row)
        n = len(ids)
        out = {
            "logits": np.empty((n, self.config.num_classes), np.float32),
            "valence": np.empty(n, np.float32),
            "arousal": np.empty(n, np.float32),
        }
        self._eager_heads(state, ids, list(range(n)), out)
        return out


class OnnxStreamer(_RingStreamer):
    """ONNX Runtime on the CPU: the exported step for all faces of a frame in one call.

    Loads `path` when it exists and matches the model on a random probe (to PROBE_TOLERANCE), else exports the model
    in memory (needs the `onnx` package); `source` says which. `threads` is this session's intra-op thread count.
    """

    name = "onnx"

    def __init__(self, model: ClipModel, path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        super().__init__(model, torch.device("cpu"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._options = options
        self.source = "memory"
        session = None
        if path is not None and Path(path).is_file():
            session = self._session(Path(path).read_bytes())
            if self._probe_error(session) <= PROBE_TOLERANCE:
                self.source = str(path)
            else:
                session = None
        if session is None:
            data = export_onnx(model)
            try:
                session = self._session(data)
            except Exception as exc:  # an operator ONNX Runtime lacks
                raise EmotionError(
                    f"ONNX Runtime cannot run the exported {model.config.arch} model ({type(exc).__name__})",
                    fix="run it with backend='torch'",
                    cli_fix="run it with --backend torch",
                ) from exc
        self.session = session
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._inputs = _input_names(session)

    def _session(self, data: bytes):
        import onnxruntime as ort

        return ort.InferenceSession(data, self._options, providers=["CPUExecutionProvider"])

    def _probe_error(self, session) -> float:
        """Largest difference between the outputs of the session and of eager PyTorch on a random step of 2 faces.

        The untrained default model's landmark encoder is random in each process but only meets zero-initialised
        residual layers, so its outputs, not its cached rows, decide whether an exported file computes this model.
        """
        inputs = example_inputs(self.model, n=2, seed=1)
        feed = dict(zip(input_names(self.model), (x.numpy() for x in inputs), strict=True))
        try:
            got = session.run(None, _only(_input_names(session), feed))
        except Exception:  # a file for another model (other shapes) fails here
            return float("inf")
        with torch.inference_mode():
            want = StreamStep(self.model)(*inputs)
        pairs = list(zip(got, want))[1:]  # the outputs; cached rows may differ where they only meet zero weights
        if any(g.shape != tuple(w.shape) for g, w in pairs):
            return float("inf")
        return max(float(np.abs(g - w.numpy()).max()) for g, w in pairs)

    def step(
        self,
        state: RingBuffer,
        crops: np.ndarray,
        landmarks: np.ndarray,
        track_ids: Sequence[Hashable],
        signals: np.ndarray | None = None,
    ) -> Outputs:
        ids = self._check(crops, track_ids, signals)
        w = self.config.window
        history = np.zeros((len(ids), w - 1, self.features), np.float32)
        short = []
        for i, track in enumerate(ids):
            if state.history(track) >= w - 1:
                history[i] = state.frames(track)[-(w - 1) :]
            else:
                short.append(i)
        feed = {"crops": crops, "landmarks": landmarks, "history": history}
        if self.config.signals:
            feed["signals"] = signals
        rows, logits, valence, arousal = self.session.run(self._outputs, _only(self._inputs, feed))
        for row, track in zip(rows, ids):
            state.push(track, row)
        out = {"logits": logits, "valence": valence, "arousal": arousal}
        if short:
            self._eager_heads(state, [ids[i] for i in short], short, out)
        return out


def _input_names(session) -> frozenset[str]:
    """The inputs a session's graph takes: the exporter drops those a model never reads (the zoo's landmarks)."""
    return frozenset(i.name for i in session.get_inputs())


def _only(names: frozenset[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The part of `feed` a graph with inputs `names` takes."""
    return {k: v for k, v in feed.items() if k in names}


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def create_streamer(
    model: ClipModel,
    device: torch.device,
    backend: Backend = "auto",
    path: str | Path | None = None,
    threads: int = 1,
) -> Streamer:
    """The model runtime: ONNX Runtime for 'onnx' (and for 'auto' on the CPU when installed), else eager PyTorch.

    `path` is an exported step to try first (see OnnxStreamer); `threads` the ONNX Runtime session's own threads.
    """
    if backend not in BACKENDS:
        raise EmotionError(f"unknown backend '{backend}' (use {', '.join(BACKENDS)})")
    if backend == "torch" or (backend == "auto" and (device.type != "cpu" or not onnxruntime_available())):
        return TorchStreamer(model, device)
    if device.type != "cpu":
        raise EmotionError(
            "the onnx backend runs on the CPU only",
            fix="use device='cpu', or backend='torch' on the GPU",
            cli_fix="use --device cpu, or --backend torch on the GPU",
        )
    if not onnxruntime_available():
        raise EmotionError("the onnx backend needs the 'onnxruntime' package", fix="pip install onnxruntime")
    try:
        return OnnxStreamer(model, path, threads)
    except EmotionError:
        if backend == "auto":
            return TorchStreamer(model, device)
        raise
