"""Per-track temporal smoothing of the displayed output (the model's raw outputs are kept alongside)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from emotion.configargs import ConfigError, check_min, option

MODES = ("ema", "mean")


@dataclass(frozen=True)
class SmoothingConfig:
    """How displayed values follow the model: over `frames` frames, by moving average or exponential average."""

    frames: int = option(  # window length (mean) or span (ema, alpha = 2 / (frames + 1)); 1 turns smoothing off
        "smooth the shown emotion per face over about N frames; 1 turns it off. The JSON keeps the raw model output "
        "under 'raw' as well",
        5,
        name="--smoothing",
        metavar="N",
    )
    mode: str = option(  # "ema" (exponential moving average) or "mean" (moving average over the last `frames`)
        "exponential or moving average", "ema", name="--smoothing-mode", choices=MODES
    )

    def __post_init__(self) -> None:
        check_min(self, 1, "frames")
        if self.mode not in MODES:
            raise ConfigError(f"{{}} must be one of {', '.join(MODES)}", "mode")


class Smoother:
    """Smooths one vector per track id; tracks not updated in a frame are forgotten by `retain`."""

    def __init__(self, config: SmoothingConfig = SmoothingConfig()):
        self.config = config
        self._alpha = 2.0 / (config.frames + 1)
        self._state: dict[int, np.ndarray | deque] = {}

    def __call__(self, track_id: int, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.config.frames == 1:
            return value
        if self.config.mode == "mean":
            window = self._state.setdefault(track_id, deque(maxlen=self.config.frames))
            window.append(value)
            return np.mean(window, axis=0)
        previous = self._state.get(track_id)
        smoothed = value if previous is None else previous + self._alpha * (value - previous)
        self._state[track_id] = smoothed
        return smoothed

    def retain(self, track_ids) -> None:
        """Drop the state of every track not in `track_ids`."""
        keep = set(track_ids)
        for tid in [t for t in self._state if t not in keep]:
            del self._state[tid]

    def reset(self) -> None:
        self._state.clear()
