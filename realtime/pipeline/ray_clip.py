"""``stylecam clip IN... -o DIR --ray [ADDRESS]``: a clip batch spread over the workers of a Ray cluster.

Ray (extra ``stylecam[ray]``) schedules; the work is the single-process clip code. Each worker is a Ray actor holding
one :class:`~realtime.pipeline.clip.ClipJob` (models loaded once, :func:`~realtime.pipeline.clip.open_clip_job`) and
running whole files, or segments of long files (:mod:`realtime.io.segments`), through ``ClipJob.process``: streaming,
outputs atomic, audio kept. One actor per GPU (``num_gpus=1``; Ray gives each its own ``CUDA_VISIBLE_DEVICES``) or
``--workers N`` CPU actors. The driver (this process) hands the longest task to the next idle worker, shows one
progress bar over every frame, logs a line per finished file and per failed one, joins the segments of a file when
its last one is back, and records each finished output in the manifest (:mod:`realtime.pipeline.manifest`). On
Ctrl-C the workers are told to stop (each aborts its output: nothing partial is left), then killed; segments and
temporaries are removed and the manifest still lists exactly the complete outputs.

Inputs and the output directory must be at the same paths on every node (a shared file system) and stylecam installed
there; the models must be cached on each node (a shared ``HF_HOME``, or ``stylecam models pull`` on each).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from realtime.config import ModelConfig, RunConfig, StyleConfig
from realtime.errors import DeviceUnavailable, InputError, UsageError, missing_extra
from realtime.io.segments import Segment, join_segments, plan_segments, segment_path
from realtime.pipeline.clip import ClipOptions, open_clip_job, progress_bar

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0  # how long stopped workers get to abort their outputs before they are killed
_POLL_S = 0.25


def import_ray() -> Any:
    """The ``ray`` module, or the one-line error naming the extra."""
    try:
        import ray
    except ImportError as e:
        raise missing_extra("ray", "ray") from e
    return ray


@dataclass(frozen=True)
class RayOptions:
    """``address``: ``None`` joins the local instance started with ``ray start`` (or ``RAY_ADDRESS``), else starts
    one; an address (``host:port``, ``ray://host:10001``) joins that cluster. ``workers``: CPU actors (``None``: one
    actor per GPU of the cluster). ``segment_seconds``: cut clips longer than that at key frames;
    ``warmup_frames``: frames each segment stylizes before its first one (dropped) so the joins are smooth."""

    address: str | None = None
    workers: int | None = None
    segment_seconds: float | None = None
    warmup_frames: int = 8

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise UsageError(f"--workers {self.workers!r}: must be an integer >= 1")
        if self.segment_seconds is not None and not (isinstance(self.segment_seconds, (int, float))
                                                     and 0 < self.segment_seconds < 1e7):
            raise UsageError(f"--segment-seconds {self.segment_seconds!r}: must be a number of seconds > 0")
        if isinstance(self.warmup_frames, bool) or not isinstance(self.warmup_frames, int) or not 0 <= self.warmup_frames <= 1000:
            raise UsageError(f"--warmup-frames {self.warmup_frames!r}: must be an integer in 0..1000")


@dataclass(frozen=True)
class ClipTask:
    """One unit of work for a worker: a whole file, or one segment of it (written to a hidden part file)."""

    src: Path
    dst: Path
    frames: int
    overwrite: bool
    segment: Segment | None = None

    @property
    def target(self) -> Path:
        return self.dst if self.segment is None else segment_path(self.dst, self.segment.index)


@dataclass
class FileJob:
    """A file of the batch: its tasks (one, or one per segment) and what has come back."""

    src: Path
    dst: Path
    frames: int
    overwrite: bool
    segments: list[Segment] | None = None
    finished: set[int] = field(default_factory=set)
    failed: bool = False
    bad_frames: int = 0  # undecodable input frames replaced by the previous one (a segment's warm-up range included)
    cpu_seconds: float = 0.0  # CPU time its tasks took in their workers (decode and encode threads included)

    def tasks(self) -> list[ClipTask]:
        if not self.segments:
            return [ClipTask(self.src, self.dst, self.frames, self.overwrite)]
        return [ClipTask(self.src, self.dst, s.frames, True, s) for s in self.segments]

    def parts(self) -> list[Path]:
        return [segment_path(self.dst, s.index) for s in self.segments or ()]


def file_jobs(checked: list[tuple[Path, Path, Any]], options: ClipOptions, ray_options: RayOptions,
              overwrite: set[Path]) -> tuple[list[FileJob], list[tuple[Path, InputError]]]:
    """Each checked input as a :class:`FileJob` (absolute paths: workers need not share this process's directory),
    cut into segments when ``segment_seconds`` is set and the clip is longer; and the inputs that could not be
    planned, with their errors."""
    from realtime.io.videofile import FileSource

    jobs, failed = [], []
    for src, dst, _ in checked:
        try:
            with FileSource(src, queue_size=1, start=options.start, end=options.end) as probe:
                frames = probe.frame_count
            segments = None
            if ray_options.segment_seconds is not None:
                segments = plan_segments(src, ray_options.segment_seconds, warmup=ray_options.warmup_frames,
                                         start=options.start, end=options.end)
                frames = sum(s.frames for s in segments)
                segments = segments if len(segments) > 1 else None
        except InputError as e:
            failed.append((src, e))
            continue
        jobs.append(FileJob(src.resolve(), dst.resolve(), frames, options.overwrite or dst in overwrite, segments))
    return jobs, failed


class ClipWorker:
    """The body of one Ray actor: the models loaded once (:func:`open_clip_job`), then one task at a time.
    ``progress`` and ``stop`` answer while a task runs (the actor runs two threads)."""

    def __init__(self, options: ClipOptions, style: StyleConfig, model: ModelConfig, run: RunConfig | None) -> None:
        self._stop = threading.Event()
        self._done = 0
        self.job = open_clip_job(replace(options, progress=False), style, model, run)

    def ready(self) -> str:
        stylizer = self.job.stylizer
        device = getattr(stylizer, "device", None) if stylizer is not None else "no model"
        return f"{socket.gethostname()} pid {os.getpid()} ({device})"

    def process(self, task: ClipTask) -> tuple[int, float, int, float]:
        """Run one task: (frames written, seconds, undecodable frames replaced, CPU seconds of this worker process)."""
        self._done = 0

        def tick(n: int) -> None:
            self._done = n
            if self._stop.is_set():
                raise KeyboardInterrupt("stopped by the driver")

        cpu = time.process_time()
        result = self.job.process(task.src, task.target, overwrite=task.overwrite, segment=task.segment, on_frame=tick)
        return result.frames, result.wall_seconds, result.bad_frames, time.process_time() - cpu

    def progress(self) -> int:
        return self._done

    def stop(self) -> None:
        self._stop.set()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` or ``ray://host:port`` address that answers on TCP, else a one-line
    :class:`DeviceUnavailable` (Ray itself retries an unreachable address for minutes, logging as it goes).
    Other forms (``auto``, ``local``) are left to Ray."""
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise DeviceUnavailable(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): is `ray start "
                                "--head` running there, and is the port open?") from e


def connect(ray: Any, address: str | None, *, worker_logs: bool = False) -> bool:
    """Join (or start) the Ray instance; returns whether this call connected (so it disconnects at the end).
    ``worker_logs``: the workers' log lines are shown here (Ray prefixes them with the worker)."""
    if ray.is_initialized():
        return False
    if address is not None:
        check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=worker_logs,
                 **({"include_dashboard": False} if address is None else {}))
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        where = f"at {address}" if address else "on this machine"
        raise DeviceUnavailable(f"cannot start or reach a Ray instance {where}: {str(e).splitlines()[0]}") from e
    return True


def worker_resources(ray: Any, workers: int | None, device: str) -> tuple[int, dict[str, float]]:
    """How many actors and what each asks for: one per GPU of the cluster, or ``workers`` CPU actors."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
    if device.startswith("cuda") or (device == "auto" and gpus > 0):
        if gpus == 0:
            raise DeviceUnavailable("the Ray cluster has no GPU: use --device cpu --workers N for CPU workers (slow) "
                                    "or the address of a cluster with GPUs")
        n = workers or gpus
        if n > gpus:
            raise UsageError(f"--workers {n}: the Ray cluster has {gpus} GPU(s), one worker each")
        return n, {"num_gpus": 1, "num_cpus": 1}
    if workers is None:
        raise DeviceUnavailable("the Ray cluster has no GPU: give --workers N for CPU workers (slow) or the address "
                                "of a cluster with GPUs")
    if workers > cpus:
        raise UsageError(f"--workers {workers}: the Ray cluster has {cpus} CPU(s), one worker each")
    return workers, {"num_gpus": 0, "num_cpus": 1}


def _cause(exc: BaseException) -> BaseException:
    """The worker's own exception inside a Ray error (``RayTaskError.cause``), else ``exc``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove %s", path)


def remove_leftovers(jobs: list[FileJob]) -> None:
    """Segment files and the temporaries of killed workers: nothing of an unfinished output stays behind."""
    from realtime.io.videowriter import sink_temporaries

    for job in jobs:
        for path in [*job.parts(), job.dst]:
            if path != job.dst:
                _unlink_quietly(path)
            for tmp in sink_temporaries(path):
                _unlink_quietly(tmp)


def _shrink(bar: Any, frames: int) -> None:
    """A failed or dropped task's frames leave the bar's total (a bar without a total stays without)."""
    if bar.total:
        bar.total = max(bar.total - frames, 0)


class RayBatch:
    """The driver side: ``n`` workers started, tasks handed out longest first, results collected in this thread."""

    def __init__(self, ray: Any, actors: list[Any], options: ClipOptions) -> None:
        self.ray, self.actors, self.options = ray, actors, options

    @classmethod
    def start(cls, ray: Any, n: int, resources: dict[str, float], options: ClipOptions, style: StyleConfig,
              model: ModelConfig, run: RunConfig | None) -> "RayBatch":
        """Start the workers and wait until each has its models loaded (a worker's load error is raised here)."""
        remote = ray.remote(ClipWorker).options(max_concurrency=2, **resources)
        batch = cls(ray, [remote.remote(options, style, model, run) for _ in range(n)], options)
        try:
            where = ray.get([a.ready.remote() for a in batch.actors])
        except BaseException as e:
            batch.kill()
            cause = _cause(e)
            if cause is e or isinstance(e, KeyboardInterrupt):
                raise
            raise cause from None
        log.info("%d Ray worker(s): %s", n, "; ".join(where))
        return batch

    def run(self, jobs: list[FileJob], *, progress: bool, on_done: Callable[[FileJob, int, float], None],
            on_fail: Callable[[FileJob, BaseException], None]) -> None:
        """Every task of ``jobs``, longest first, each to the next idle worker; ``on_done(job, frames, seconds)`` when
        a file is complete (segments joined), ``on_fail(job, error)`` once when a file failed (its other tasks are
        dropped). Ctrl-C: the workers are stopped (outputs aborted) and the KeyboardInterrupt goes on."""
        pending = sorted(((t, j) for j in jobs for t in j.tasks()), key=lambda tj: -tj[0].frames)
        idle = list(self.actors)
        running: dict[Any, tuple[Any, ClipTask, FileJob]] = {}
        done = 0
        with progress_bar("all files", sum(t.frames for t, _ in pending), enabled=progress) as bar:
            try:
                while pending or running:
                    while idle and pending:
                        task, job = pending.pop(0)
                        if job.failed:
                            _shrink(bar, task.frames)
                            continue
                        actor = idle.pop(0)
                        running[actor.process.remote(task)] = (actor, task, job)
                    if not running:
                        if pending and not idle:  # every worker gone (none idle, none busy): nothing can go on
                            raise RuntimeError("every Ray worker died: the batch cannot go on")
                        continue
                    ready, _ = self.ray.wait(list(running), num_returns=len(running), timeout=_POLL_S)
                    for ref in ready:
                        actor, task, job = running.pop(ref)
                        frames, ok = self._collect(ref, task, job, on_done, on_fail)
                        done += frames
                        if not ok:
                            _shrink(bar, task.frames)
                        if self._alive(actor):
                            idle.append(actor)
                    bar.n = done + self._in_flight(running)
                    bar.refresh()
            except BaseException:
                self.halt(running)
                raise

    def _collect(self, ref: Any, task: ClipTask, job: FileJob, on_done: Callable[[FileJob, int, float], None],
                 on_fail: Callable[[FileJob, BaseException], None]) -> tuple[int, bool]:
        """One finished task: (frames written, succeeded)."""
        try:
            frames, wall, bad, cpu = self.ray.get(ref)
        except Exception as e:  # the worker's error (or its death): this file fails, the batch goes on
            if not job.failed:
                job.failed = True
                on_fail(job, _cause(e))
            return 0, False
        if job.failed:
            return frames, True
        job.bad_frames += bad
        job.cpu_seconds += cpu
        if task.segment is None:
            on_done(job, frames, wall)
            return frames, True
        job.finished.add(task.segment.index)
        if len(job.finished) == len(job.segments or ()):
            try:
                o = self.options
                join_segments(job.parts(), job.dst, audio_from=job.src, audio_start=o.start, audio_end=o.end,
                              overwrite=job.overwrite)
            except Exception as e:
                job.failed = True
                on_fail(job, e)
                return frames, True
            finally:
                for part in job.parts():
                    _unlink_quietly(part)
            on_done(job, sum(s.frames for s in job.segments or ()), wall)
        return frames, True

    def _alive(self, actor: Any) -> bool:
        try:
            self.ray.get(actor.progress.remote(), timeout=10)
            return True
        except Exception:  # noqa: BLE001 - a dead or unreachable worker gets no more work
            log.warning("a Ray worker stopped answering: it gets no more files")
            return False

    def _in_flight(self, running: dict[Any, tuple[Any, ClipTask, FileJob]]) -> int:
        if not running:
            return 0
        try:
            return sum(self.ray.get([a.progress.remote() for a, _, _ in running.values()], timeout=5))
        except Exception:  # noqa: BLE001 - progress is cosmetic; the task's own result tells what happened
            return 0

    def halt(self, running: dict[Any, tuple[Any, ClipTask, FileJob]]) -> None:
        """Tell every worker to stop (each aborts its output), wait for them a while, then kill them."""
        for actor in self.actors:
            try:
                actor.stop.remote()
            except Exception:  # noqa: BLE001 - a dead worker has nothing to stop
                pass
        if running:
            self.ray.wait(list(running), num_returns=len(running), timeout=STOP_TIMEOUT_S)
        self.kill()

    def kill(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []


def run_ray_batch(jobs: list[FileJob], options: ClipOptions, style: StyleConfig, model: ModelConfig,
                  run: RunConfig | None, ray_options: RayOptions, *, device: str, progress: bool,
                  worker_logs: bool = False,
                  on_done: Callable[[FileJob, int, float], None],
                  on_fail: Callable[[FileJob, BaseException], None]) -> None:
    """Connect to Ray, start the workers, run ``jobs``; always kill the workers, remove leftovers and disconnect."""
    ray = import_ray()
    connected = connect(ray, ray_options.address, worker_logs=worker_logs)
    try:
        n, resources = worker_resources(ray, ray_options.workers, device)
        n = min(n, sum(len(j.tasks()) for j in jobs))  # no worker loads models for nothing
        t0 = time.perf_counter()
        batch = RayBatch.start(ray, n, resources, options, style, model, run)
        log.debug("workers ready in %.1f s", time.perf_counter() - t0)
        try:
            batch.run(jobs, progress=progress, on_done=on_done, on_fail=on_fail)
        finally:
            batch.kill()
            remove_leftovers(jobs)
    finally:
        if connected:
            ray.shutdown()
