"""A batch of videos on Ray (`--cluster`): one actor per worker holds a loaded EmotionRecognizer, each video is a
task that writes its outputs as the single-machine batch does (`emotion.jobs.run_job`), a worker that dies has its
video retried on a new one, and a stop request lets the running videos close their outputs, unmarked."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from emotion.errors import EmotionError
from emotion.face import FaceConfig
from emotion.jobs import BatchJob, BatchRow, finished, run_job
from emotion.overlay import OverlayConfig
from emotion.smoothing import SmoothingConfig
from emotion.text import plural

INSTALL_FIX = 'pip install "emotion[cluster]"'


def import_ray():
    """The `ray` module, or one EmotionError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise EmotionError("--cluster needs Ray, which is not installed", fix=INSTALL_FIX) from None
    return ray


@dataclass(frozen=True)
class WorkerConfig:
    """How each worker builds its recognizer and writes a video: the options of a single-machine run."""

    weights: str | None = None
    device: str = "auto"
    backend: str = "auto"
    threads: int = 1
    face: FaceConfig = FaceConfig()
    smoothing: SmoothingConfig = SmoothingConfig()
    overlay: OverlayConfig = OverlayConfig()


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide to run: `address` is "local" (a Ray started here for this run), "auto" (the cluster this
    machine belongs to) or a cluster address ("ray://host:10001" or the head's "host:6379"); `workers` actors (None:
    one per CPU of the cluster); a video is tried on at most `retries` + 1 workers before it counts as failed."""

    address: str = "local"
    workers: int | None = None
    retries: int = 2


class VideoWorker:
    """The Ray actor (wrapped by `ray.remote` in `run_cluster`): a recognizer loaded once, then one video per call."""

    def __init__(self, config: WorkerConfig):
        self._stopping = threading.Event()
        self._config = config
        self._recognizer = None
        self._problem: tuple[str, str | None, str | None] | None = None
        try:
            from emotion.recognizer import EmotionRecognizer
            from emotion.runtime import set_threads

            set_threads(config.threads)
            self._recognizer = EmotionRecognizer(weights=config.weights, device=config.device, face_config=config.face,
                                                 smoothing=config.smoothing, threads=config.threads,
                                                 backend=config.backend)  # fmt: skip
        except EmotionError as exc:
            self._problem = (exc.problem, exc.fix, exc.cli_fix)

    def ready(self) -> tuple[int, tuple[str, str | None, str | None] | None]:
        """This worker's process id, and the problem that kept its recognizer from loading (None when it loaded)."""
        return os.getpid(), self._problem

    def process(self, job: BatchJob, overwrite: bool) -> BatchRow:
        if self._stopping.is_set():
            return BatchRow(job.source, stopped=True)
        return run_job(self._recognizer, job, overwrite, self._config.overlay, marker=True, stop=self._stopping.is_set)

    def stop(self) -> None:
        """End the running video after its current frame (called on the actor's second thread)."""
        self._stopping.set()


def _connect(ray, cluster: ClusterConfig) -> None:
    """Start a local Ray or join a cluster (quietly: no dashboard, no log echo), refusing too many workers."""
    options = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_quiet_token_notice)
    if cluster.address not in ("local", "auto"):
        _check_reachable(cluster.address)
    try:
        if cluster.address == "local":
            cpus = max(os.cpu_count() or 1, cluster.workers or 1)
            ray.init(address="local", num_cpus=cpus, **options)
        else:
            ray.init(address=cluster.address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmotionError(f"cannot join the Ray cluster {cluster.address}: {first}",
                           fix="start it with `ray start --head` and give its address") from None  # fmt: skip
    # Ray prints what its raylet reports (a worker that died, with a paragraph of advice) on the driver's stdout, in
    # the middle of the summary table; the table gives the reason per video, so the driver does not echo them.
    worker_module = getattr(getattr(ray, "_private", None), "worker", None)
    if hasattr(worker_module, "_worker_logs_enabled"):
        worker_module._worker_logs_enabled = False


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing answers (Ray itself retries for minutes, logging each attempt)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EmotionError(f"{address} is not a Ray cluster address",
                           fix="give local, auto, ray://HOST:PORT (Ray Client, port 10001) or the head's HOST:PORT")  # fmt: skip
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise EmotionError(f"nothing answers at {address} ({exc.strerror or exc})",
                           fix="check that `ray start --head` runs there and the port is open") from None  # fmt: skip


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    """Drop Ray's notice that token authentication is on (its default), which would break the one-line error
    contract on stderr; its warning that authentication is off still shows."""
    return not record.getMessage().startswith("Token authentication is enabled")


def run_cluster(
    jobs: list[BatchJob],
    config: WorkerConfig,
    cluster: ClusterConfig = ClusterConfig(),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> tuple[list[BatchRow], float]:
    """Process `jobs` on Ray; returns the rows in job order and the seconds from start to end (Ray start-up and model
    loading included). Each finished video gets a done-marker; with `resume` a video that has one is skipped and the
    outputs of the others are replaced. KeyboardInterrupt (Ctrl-C) stops scheduling, asks the running videos to stop
    and close their outputs (left without a marker), then is raised again with the rows on `exc.rows` (a video that
    never started is a stopped row without a summary) and the seconds on `exc.elapsed`."""
    ray = import_ray()
    t0 = time.perf_counter()
    rows: dict[int, BatchRow] = {}
    todo: deque[int] = deque()
    for i, job in enumerate(jobs):
        done = finished(job) if resume else None
        if done is not None:
            rows[i] = BatchRow(job.source, done=done)
        else:
            todo.append(i)
    if not todo:
        return [rows[i] for i in range(len(jobs))], time.perf_counter() - t0
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, cluster)
    try:
        _Scheduler(ray, jobs, config, cluster, overwrite or resume, rows, todo, progress).run()
    except KeyboardInterrupt as exc:
        exc.rows = [rows.get(i) or BatchRow(job.source, stopped=True) for i, job in enumerate(jobs)]
        exc.elapsed = time.perf_counter() - t0
        raise
    finally:
        if started_here:
            ray.shutdown()
    return [rows[i] for i in range(len(jobs))], time.perf_counter() - t0


class _Scheduler:
    """Hands the videos to the actors, one running video per actor, and replaces an actor that dies."""

    def __init__(self, ray, jobs, config, cluster, overwrite, rows, todo, progress):
        self.ray, self.jobs, self.config, self.overwrite = ray, jobs, config, overwrite
        self.rows, self.todo, self.retries = rows, todo, cluster.retries
        self.actor_class = ray.remote(num_cpus=1, max_concurrency=2)(VideoWorker)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = cluster.workers or cpus
        if workers > cpus:
            raise EmotionError(f"{workers} workers need {workers} CPUs, but the Ray cluster has {cpus}",
                               fix=f"run at most {cpus} workers", cli_fix=f"pass --workers {cpus} or fewer")  # fmt: skip
        self.workers = min(workers, len(todo))
        self.failures: dict[int, list[str]] = {}
        self.running: dict = {}  # task ref -> (actor, job index)
        self.actors: list = []  # every actor started, so that all are ended
        self.bar = tqdm(total=len(todo), unit="video", desc="videos", disable=not progress)

    def _start(self, count: int) -> list:
        """`count` new workers, once each has loaded its recognizer; a model that cannot load, or a worker that cannot
        even start (emotion missing on a node), is one EmotionError."""
        try:
            actors = [self.actor_class.remote(self.config) for _ in range(count)]
            self.actors += actors
            ready = self.ray.get([actor.ready.remote() for actor in actors])
        except (EmotionError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise EmotionError(f"the Ray workers could not start: {_reason(exc)}",
                               fix=f"install this version of emotion on every node of the cluster ({INSTALL_FIX})") from None  # fmt: skip
        for _, problem in ready:
            if problem is not None:
                raise EmotionError(*problem)
        return actors

    def _submit(self, actor) -> None:
        """Start the next video on `actor`; a retry replaces the outputs its dead worker left."""
        if self.todo:
            i = self.todo.popleft()
            self.running[actor.process.remote(self.jobs[i], self.overwrite or i in self.failures)] = (actor, i)

    def run(self) -> None:
        try:
            for actor in self._start(self.workers):
                self._submit(actor)
            while self.running:
                ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5)
                for ref in ready:
                    self._collect(ref)
        except KeyboardInterrupt:
            self._stop()
            raise
        finally:
            self.bar.close()
            for actor in self.actors:
                self.ray.kill(actor)

    def _collect(self, ref) -> None:
        """The outcome of one finished task: its row, or, if its worker died, a retry on a new worker."""
        actor, i = self.running.pop(ref)
        try:
            self.rows[i] = self.ray.get(ref)
            self.rows[i].retried = len(self.failures.get(i, []))
        except self.ray.exceptions.RayActorError:
            self.failures.setdefault(i, []).append("the worker process died: killed, out of memory or crashed")
            if len(self.failures[i]) > self.retries:
                died = plural(len(self.failures[i]), "time")
                self.rows[i] = BatchRow(self.jobs[i].source, error=f"its worker died {died} ({self.failures[i][-1]})")
            else:
                self.todo.appendleft(i)
            self.ray.kill(actor)
            actor = self._start(1)[0]
        except self.ray.exceptions.RayTaskError as exc:
            self.rows[i] = BatchRow(self.jobs[i].source, error=_reason(exc))
        if i in self.rows:
            self.bar.update(1)
        self._submit(actor)

    def _stop(self) -> None:
        """After Ctrl-C: nothing new starts, the running videos stop after their current frame and are collected."""
        from emotion.interrupts import ignore_signals

        ignore_signals()
        self.todo.clear()
        for actor in self.actors:
            actor.stop.remote()
        deadline = time.monotonic() + 60
        while self.running and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, i = self.running.pop(ref)
                try:
                    self.rows[i] = self.ray.get(ref)
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.RayTaskError) as exc:
                    self.rows[i] = BatchRow(self.jobs[i].source, error=_reason(exc), stopped=True)
        for actor, i in self.running.values():
            self.rows[i] = BatchRow(self.jobs[i].source, stopped=True)


def _reason(exc: Exception) -> str:
    """A one-line reason from a Ray error (their messages span many lines)."""
    text = " ".join(str(exc).split())
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, BaseException):
        cause = None
    if cause is not None:
        text = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    return text[:200] + ("..." if len(text) > 200 else "")


def absolute(job: BatchJob) -> BatchJob:
    """`job` with absolute paths, so a worker whose working folder differs writes where this machine would."""
    def full(path: Path | None) -> Path | None:
        return Path(os.path.abspath(path)) if path is not None else None

    return BatchJob(full(job.source), full(job.output), full(job.json_path), full(job.csv_path))
