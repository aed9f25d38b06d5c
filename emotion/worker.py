"""An ordered worker thread: the pipeline's model stage and the video encoder each run on one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class OrderedWorker:
    """Calls `work(*item)` for queued items on its own thread, in order (a bounded queue applies back-pressure).

    An exception in `work` is raised on the caller's next `put` or on `close`; `close()` first finishes every queued
    item, so an interrupted run still gets the results of the frames already handed over.
    """

    def __init__(self, work: Callable[..., object], name: str, depth: int = 4):
        self._work = work
        self._error: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._work(*item)
                except BaseException as exc:  # raised on the caller's thread
                    self._error = exc

    def put(self, *item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self, raise_error: bool = True) -> None:
        """Finish the queued items and stop the thread (once); re-raise a failure of `work` if `raise_error`."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if raise_error and self._error is not None:
            raise self._error
