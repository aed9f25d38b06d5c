"""Exported STNet for fast CPU inference: an ONNX Runtime streaming backend and ONNX / TorchScript model files.

The exported graph is one streaming step for N faces: it encodes the new crops and runs the temporal head over each
track's full ring buffer (its `window - 1` previous frames plus the new one), all in one call per frame. A track
with a shorter history (its first frames) takes the eager PyTorch head over exactly its frames, so every output
equals `STNet.step` up to float rounding (tests/test_export.py checks 1e-4). On this 2-core CPU ONNX Runtime runs
the step about 5x faster than eager PyTorch (see README, "Measured on this machine").
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emotion import weights
from emotion.atomic import atomic_open
from emotion.model import CACHE_KEYS, STNet
from emotion.errors import EmotionError

BACKENDS = ("auto", "torch", "onnx")
"""Model runtimes the recognizer can use; 'auto' takes ONNX Runtime on the CPU when it is installed."""

EXPORT_FORMATS = ("onnx", "torchscript")

DEFAULT_ONNX = weights.path("stnet.onnx")
"""The default model's exported step, shipped in the package; re-exported in memory if missing or stale.

A maintainer regenerates it with `python main.py --export onnx --output emotion/weights/stnet.onnx --overwrite`."""

OPSET = 17
PROBE_TOLERANCE = 1e-4
"""Largest difference to eager PyTorch, on a random probe, at which an exported file is trusted."""


class StreamStep(nn.Module):
    """One streaming step as one graph: crops (N, C, S, S) in [-1, 1], landmarks (N, L, 3), history (N, W-1, F)
    -> frame rows (N, F) to push into the ring buffers, logits (N, 7), valence (N,), arousal (N,) of the newest step."""

    def __init__(self, model: STNet) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, crops: torch.Tensor, landmarks: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cache = self.model.encode_frames(crops, landmarks)
        rows = torch.cat([cache[k] for k in CACHE_KEYS], dim=-1)
        clips = torch.cat([history, rows[:, None]], dim=1)
        out = self.model.forward_last(clips)
        return rows, out["logits"][:, -1], out["valence"][:, -1], out["arousal"][:, -1]


def row_size(model: STNet) -> int:
    """F, the length of one packed frame row (STNet.row_sizes side by side)."""
    return sum(model.row_sizes())


def _example_inputs(model: STNet, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    crops = torch.rand(n, c.in_chans, c.crop_size, c.crop_size, generator=g) * 2 - 1
    landmarks = torch.randn(n, c.landmarks, c.landmark_dims, generator=g)
    history = torch.randn(n, c.window - 1, row_size(model), generator=g)
    return crops, landmarks, history


def _atanh_symbolic(g, x):
    return g.op("Atanh", x)


def export_onnx(model: STNet, path: str | Path | None = None) -> bytes:
    """Export the streaming step to ONNX (dynamic N); returns the model bytes and writes them to `path` if given."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise EmotionError("exporting to ONNX needs the 'onnx' package (pip install 'onnx==1.17.0')") from None
    torch.onnx.register_custom_op_symbolic("aten::atanh", _atanh_symbolic, 9)
    was_training = model.training
    step = StreamStep(model).eval()
    names = ["crops", "landmarks", "history", "rows", "logits", "valence", "arousal"]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            _example_inputs(model),
            buffer,
            input_names=names[:3],
            output_names=names[3:],
            dynamic_axes={name: {0: "n"} for name in names},
            opset_version=OPSET,
            dynamo=False,
        )
    model.train(was_training)
    data = buffer.getvalue()
    if path is not None:
        with atomic_open(path) as f:
            f.write(data)
    return data


def export_torchscript(model: STNet, path: str | Path) -> Path:
    """Trace the streaming step to a TorchScript file (load with torch.jit.load; same inputs and outputs as ONNX)."""
    was_training = model.training
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(StreamStep(model).eval(), _example_inputs(model), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    model.train(was_training)
    with atomic_open(path) as f:
        f.write(buffer.getvalue())
    return Path(path)


def export_model(model: STNet, fmt: str, path: str | Path) -> Path:
    """Write the streaming step of `model` as `fmt` ('onnx' or 'torchscript') to `path`."""
    if fmt not in EXPORT_FORMATS:
        raise EmotionError(f"unknown export format '{fmt}' (use {' or '.join(EXPORT_FORMATS)})")
    path = Path(path)
    if fmt == "onnx":
        export_onnx(model, path)
    else:
        export_torchscript(model, path)
    return path


def default_export_path(checkpoint: str | Path | None, fmt: str) -> Path:
    """Where an export goes by default: beside a checkpoint (`models/mine/best.onnx` for `models/mine/best.pt`, where
    the recognizer looks for it), and `models/stnet.onnx` in the current folder for the default model, never the
    shipped file (DEFAULT_ONNX). `.torchscript.pt` instead of `.onnx` for TorchScript."""
    base = Path("models") / "stnet" if checkpoint is None else Path(checkpoint).with_suffix("")
    return base.with_name(base.name + (".onnx" if fmt == "onnx" else ".torchscript.pt"))


class RingBuffers:
    """Per-track ring buffers of the last `window` packed frame rows (F,) in preallocated numpy arrays."""

    def __init__(self, window: int, features: int) -> None:
        self.window = window
        self.features = features
        self._rows: dict[Hashable, np.ndarray] = {}
        self._length: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, track: Hashable) -> bool:
        return track in self._rows

    def history(self, track: Hashable) -> int:
        """Frames currently buffered for a track (0 if unknown), at most `window`."""
        return self._length.get(track, 0)

    def frames(self, track: Hashable) -> np.ndarray:
        """The buffered rows of a track, oldest first: (history, F), a view."""
        n = self._length.get(track, 0)
        return self._rows[track][self.window - n :] if n else np.zeros((0, self.features), np.float32)

    def push(self, track: Hashable, row: np.ndarray) -> None:
        """Append one frame's row, dropping the oldest beyond the window (rows are kept right-aligned)."""
        buf = self._rows.get(track)
        if buf is None:
            buf = self._rows[track] = np.zeros((self.window, self.features), np.float32)
            self._length[track] = 0
        buf[:-1] = buf[1:]
        buf[-1] = row
        self._length[track] = min(self._length[track] + 1, self.window)

    def retain(self, tracks: Sequence[Hashable]) -> None:
        """Forget every track not in `tracks`."""
        keep = set(tracks)
        for track in [t for t in self._rows if t not in keep]:
            del self._rows[track], self._length[track]

    def drop(self, track: Hashable) -> None:
        self._rows.pop(track, None)
        self._length.pop(track, None)

    def clear(self) -> None:
        self._rows.clear()
        self._length.clear()


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxStreamer:
    """STNet streaming on ONNX Runtime: `step(state, crops, landmarks, track_ids)` like `STNet.step`, numpy in/out.

    Loads `path` when it exists and matches the model on a random probe (to PROBE_TOLERANCE), else exports the
    model in memory (needs the `onnx` package).
    """

    def __init__(self, model: STNet, path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        self.model = model.eval()
        self.config = model.config
        self.features = row_size(model)
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
        self.session = session or self._session(export_onnx(model))
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _session(self, data: bytes):
        import onnxruntime as ort

        return ort.InferenceSession(data, self._options, providers=["CPUExecutionProvider"])

    def _probe_error(self, session) -> float:
        """Largest difference between the outputs of the session and of eager PyTorch on a random step of 2 faces.

        The untrained default model's landmark encoder is random in each process but only meets zero-initialised
        residual layers, so its outputs, not its cached rows, decide whether an exported file computes this model.
        """
        inputs = _example_inputs(self.model, n=2, seed=1)
        try:
            got = session.run(None, dict(zip(("crops", "landmarks", "history"), (x.numpy() for x in inputs))))
        except Exception:  # a file for another model (other shapes) fails here
            return float("inf")
        with torch.inference_mode():
            want = StreamStep(self.model)(*inputs)
        pairs = list(zip(got, want))[1:]  # the outputs; cached rows may differ where they only meet zero weights
        if any(g.shape != tuple(w.shape) for g, w in pairs):
            return float("inf")
        return max(float(np.abs(g - w.numpy()).max()) for g, w in pairs)

    def init_state(self) -> RingBuffers:
        return RingBuffers(self.config.window, self.features)

    def step(
        self, state: RingBuffers, crops: np.ndarray, landmarks: np.ndarray, track_ids: Sequence[Hashable]
    ) -> dict[str, np.ndarray]:
        """N new faces: crops (N, C, S, S) float32 in [-1, 1], landmarks (N, L, 3) -> logits (N, 7), valence (N,),
        arousal (N,) of each track's newest step; the rows are pushed into the tracks' ring buffers."""
        n, w = len(track_ids), self.config.window
        if len(set(track_ids)) != n or crops.shape[0] != n:
            raise ValueError(f"need {crops.shape[0]} distinct track ids, got {list(track_ids)}")
        history = np.zeros((n, w - 1, self.features), np.float32)
        short = []
        for i, track in enumerate(track_ids):
            if state.history(track) >= w - 1:
                history[i] = state.frames(track)[-(w - 1) :]
            else:
                short.append(i)
        rows, logits, valence, arousal = self.session.run(
            self._outputs, {"crops": crops, "landmarks": landmarks, "history": history}
        )
        for i, track in enumerate(track_ids):
            state.push(track, rows[i])
        if short:
            self._eager_heads(state, [track_ids[i] for i in short], short, logits, valence, arousal)
        return {"logits": logits, "valence": valence, "arousal": arousal}

    @torch.inference_mode()
    def _eager_heads(self, state, tracks, positions, logits, valence, arousal) -> None:
        """The temporal head over exactly the buffered frames of tracks shorter than the window, grouped by length."""
        groups: dict[int, list[int]] = {}
        for k, track in enumerate(tracks):
            groups.setdefault(state.history(track), []).append(k)
        for members in groups.values():
            clips = torch.from_numpy(np.stack([state.frames(tracks[k]) for k in members]))
            out = self.model.forward_last(clips)
            rows = [positions[k] for k in members]
            logits[rows] = out["logits"][:, -1].numpy()
            valence[rows] = out["valence"][:, -1].numpy()
            arousal[rows] = out["arousal"][:, -1].numpy()


class TorchStreamer:
    """Eager PyTorch streaming (`STNet.step`) behind the same numpy interface as OnnxStreamer; any device."""

    source = "torch"

    def __init__(self, model: STNet, device: torch.device) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = device

    def init_state(self):
        return self.model.init_state()

    def step(
        self, state, crops: np.ndarray, landmarks: np.ndarray, track_ids: Sequence[Hashable]
    ) -> dict[str, np.ndarray]:
        x = torch.from_numpy(crops).to(self.device)
        lm = torch.from_numpy(landmarks).to(self.device)
        out = self.model.step(state, x, lm, list(track_ids))
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def create_streamer(
    model: STNet, device: torch.device, backend: str = "auto", path: str | Path | None = None, threads: int = 1
) -> OnnxStreamer | TorchStreamer:
    """The model runtime: ONNX Runtime for 'onnx' (and for 'auto' on the CPU when installed), else eager PyTorch."""
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
