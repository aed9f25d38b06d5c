"""Ctrl-C, SIGTERM and SIGHUP (terminal closed) end a run once, and never while its outputs are being finalised."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
"""The signals that stop a run; each raises KeyboardInterrupt in the main thread."""


_fired: list[int] = []


def stop_on_signals() -> None:
    """The first stop signal raises KeyboardInterrupt; later ones are ignored, so the outputs being closed after the
    first are not cut short by an impatient second Ctrl-C."""
    _fired.clear()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)


def _stop(signum, frame) -> None:
    if not _fired:
        _fired.append(signum)
        raise KeyboardInterrupt


def stop_requested() -> bool:
    """Whether a stop signal came since `stop_on_signals` (an interrupt inside an import of a C extension can surface
    as another exception, such as ImportError)."""
    return bool(_fired)


def ignore_signals() -> None:
    """Ignore every stop signal from now on (the process is already ending)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold the stop signals while the block runs (it finalises files); one that came is delivered after the block,
    unless the block ends by an exception (then the run is stopping anyway). Only the main thread handles signals,
    so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in STOP_SIGNALS}
    finished = False
    try:
        yield
        finished = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if held and finished:
            signal.raise_signal(held[0])
