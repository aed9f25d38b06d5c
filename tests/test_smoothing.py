"""Per-track smoothing of displayed values."""

import numpy as np
import pytest

from emotion.smoothing import Smoother, SmoothingConfig


def test_ema_follows_a_step_gradually_and_tracks_are_independent():
    s = Smoother(SmoothingConfig(frames=3, mode="ema"))
    assert s(0, np.zeros(2)).tolist() == [0.0, 0.0]
    first = s(0, np.ones(2))
    assert first.tolist() == pytest.approx([0.5, 0.5])
    assert s(1, np.ones(2)).tolist() == [1.0, 1.0]
    assert s(0, np.ones(2)).tolist() == pytest.approx([0.75, 0.75])


def test_mean_window_and_retain():
    s = Smoother(SmoothingConfig(frames=2, mode="mean"))
    s(0, np.array([0.0]))
    assert s(0, np.array([1.0]))[0] == pytest.approx(0.5)
    assert s(0, np.array([3.0]))[0] == pytest.approx(2.0)
    s.retain([])
    assert s(0, np.array([5.0]))[0] == 5.0


def test_frames_one_is_off_and_bad_config_rejected():
    s = Smoother(SmoothingConfig(frames=1))
    s(0, np.array([0.0]))
    assert s(0, np.array([1.0]))[0] == 1.0
    with pytest.raises(ValueError):
        SmoothingConfig(frames=0)
    with pytest.raises(ValueError):
        SmoothingConfig(mode="median")
