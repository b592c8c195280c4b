"""``stylecam live``: camera (or a clip standing in for one) -> face framing -> Canny -> stylizer -> virtual camera,
window and/or file, with runtime control, a watchdog and statistics.

:class:`LiveLoop` is the loop itself (no argparse; tests drive it directly): it reads the newest frame, applies the
commands that came in (window keys, stdin, control file) between frames, processes the frame and sends it to every
sink. :mod:`realtime.cli.live` builds everything from the command line. Frames are HxWx3 uint8 RGB numpy arrays throughout.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from realtime.errors import OutputError, UsageError
from realtime.pipeline.controls import Command, key_command

if TYPE_CHECKING:  # annotations only: `stylecam --help` registers the live command without loading these
    from realtime.io.frames import Frame, FrameSource, Sink
    from realtime.pipeline.controls import CommandSource
    from realtime.pipeline.processor import FrameProcessor
    from realtime.pipeline.session import LiveSession

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class LiveResult:
    """What a session did: frames ``delivered`` to the sinks, ``seconds`` of loop time, how it ``ended``
    (``frames``, ``quit``, ``interrupted``, ``end of input``), and the counters of the source and the processor."""

    delivered: int
    seconds: float
    ended: str
    input_frames: int
    dropped: int
    skipped: int
    passed_through: int
    mean_latency_ms: float
    stage_ms: dict[str, float]

    @property
    def output_fps(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


class _Window:
    """Counters over the last stats period (differences of running totals)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.delivered = 0
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.latencies: list[float] = []


def _stage_line(totals: dict[str, float], counts: dict[str, int], prev: _Window | None = None) -> str:
    parts = []
    for k, total in totals.items():
        n = counts.get(k, 0) - (prev.counts.get(k, 0) if prev else 0)
        if n > 0:
            parts.append(f"{k} {(total - (prev.totals.get(k, 0.0) if prev else 0.0)) / n:.1f}")
    return ", ".join(parts) + " ms" if parts else "-"


# --------------------------------------------------------------------------------------------------------- outputs
class OutputThread:
    """Sends frames to the outputs on its own thread, in the order given, each exactly once, with its own
    timestamp: the sink writes of frame N overlap the processing of frame N+1 (docs/design.md §3, pipelining).

    ``put(sinks, frame, out)`` queues one frame for those sinks (it blocks while ``depth`` frames are still queued:
    back-pressure, nothing dropped). A sink that raises is never sent to again; ``done()`` hands the loop what
    happened since the last call (failed sinks with their exception, and per frame ``(frame, send_ms, finished_at,
    outputs that took it)``).
    ``drain()`` waits until every queued frame was sent; ``stop()`` drains and ends the thread.
    """

    def __init__(self, depth: int = 2) -> None:
        self._q: queue.Queue[tuple[list[Sink], Frame, np.ndarray] | None] = queue.Queue(maxsize=depth)
        self._lock = threading.Lock()
        self._failed: list[tuple[Sink, BaseException]] = []
        self._dead: set[int] = set()
        self._sent: list[tuple[Frame, float, float, int]] = []
        self._thread = threading.Thread(target=self._run, name="stylecam-output", daemon=True)
        self._thread.start()

    def put(self, sinks: list[Sink], frame: Frame, out: np.ndarray) -> None:
        self._q.put((sinks, frame, out))

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                sinks, frame, out = item
                t0 = time.perf_counter()
                ok = 0
                for sink in sinks:
                    if id(sink) in self._dead:
                        continue
                    try:
                        sink.send(out, frame.timestamp)
                        ok += 1
                    except Exception as e:  # noqa: BLE001 - reported to the loop, which drops the sink
                        self._dead.add(id(sink))
                        with self._lock:
                            self._failed.append((sink, e))
                now = time.perf_counter()
                with self._lock:
                    self._sent.append((frame, (now - t0) * 1e3, now, ok))
            finally:
                self._q.task_done()

    def done(self) -> tuple[list[tuple[Sink, BaseException]], list[tuple[Frame, float, float, int]]]:
        with self._lock:
            failed, sent = self._failed, self._sent
            self._failed, self._sent = [], []
        return failed, sent

    def drain(self) -> None:
        self._q.join()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.drain()
            self._q.put(None)
            self._thread.join(timeout=10.0)


# ------------------------------------------------------------------------------------------------------------ loop
class LiveLoop:
    """The live loop.

    source: a :class:`~realtime.io.frames.FrameSource` (``read(timeout)`` -> the newest Frame, None at the end).
    processor: the :class:`~realtime.pipeline.processor.FrameProcessor` (the one frame path). sinks:
    :class:`~realtime.io.frames.Sink` objects, each sent every output frame with its capture timestamp; a
    :class:`~realtime.io.sinks.WindowSink` also gets the overlay lines and has its key events pumped while the loop
    waits. session: the :class:`~realtime.pipeline.session.LiveSession` (commands are applied to it; its ``quit`` and
    ``overlay`` flags are read). command_sources: :class:`~realtime.pipeline.controls.CommandSource` objects (stdin,
    control file). frames: stop after this many frames delivered. fps: deliver at most this many frames per second.
    stats_every_s: period of the statistics log line. on_frame(loop, frame, out): called after each delivered frame
    (tests, overlays). Pipelined (docs/design.md §3): face detection runs on its own thread when the processor's
    framer is a :class:`~realtime.vision.framer_thread.ThreadedFramer`, and the outputs other than windows are sent
    on an :class:`OutputThread` (frame N is written while N+1 is processed; ``delivered`` counts frames handed to the
    outputs, and every frame handed over is written, in order, before :meth:`run` returns). Commands, windows and
    ``on_frame`` run on the calling thread, between frames; only :attr:`stop_requested` may be set from a signal
    handler.
    """

    def __init__(
        self, source: FrameSource, processor: FrameProcessor, sinks: Sequence[Sink], session: LiveSession, *,
        command_sources: Sequence[CommandSource] = (), frames: int | None = None, fps: float | None = None,
        stats_every_s: float = 5.0, read_timeout_s: float = 0.25,
        on_frame: Callable[[LiveLoop, Frame, np.ndarray], None] | None = None,
    ) -> None:
        if frames is not None and frames < 1:
            raise UsageError(f"--frames {frames}: must be at least 1")
        if fps is not None and not fps > 0:
            raise UsageError(f"--fps {fps}: must be positive")
        from realtime.io.sinks import WindowSink  # kept out of `stylecam --help` (see the imports)

        self.source, self.processor, self.sinks, self.session = source, processor, list(sinks), session
        self.windows = [sink for sink in self.sinks if isinstance(sink, WindowSink)]
        self.command_sources = list(command_sources)
        self.frames, self.fps = frames, fps
        self.stats_every_s, self.read_timeout_s = stats_every_s, read_timeout_s
        self.on_frame = on_frame
        self.delivered = 0
        self.stop_requested = False
        self.dropped_sinks: list[Sink] = []  # outputs that failed mid-run (closed, no longer sent to)
        self.keys: deque[Command] = deque()  # window key commands (filled from the window's callback)
        self._latency_total = 0.0
        self._started = 0.0
        self._first_at: float | None = None
        self._last_send = 0.0
        self._fps_ema: float | None = None
        self._win = _Window()
        self._outputs: OutputThread | None = None
        self._written = 0  # frames that reached at least one output
        self.session.on_stats = self.log_stats

    def on_key(self, action: str) -> None:
        """Window key callback (:class:`~realtime.io.sinks.WindowSink` ``on_key``)."""
        cmd = key_command(action)
        if cmd is not None:
            self.keys.append(cmd)

    def _commands(self) -> None:
        while self.keys:
            self.session.apply(self.keys.popleft())
        for src in self.command_sources:
            for cmd in src.poll():
                self.session.apply(cmd)

    def _pump_windows(self) -> None:
        for window in self.windows:
            window.poll()  # its on_key callback already queued the actions

    def _wait_for_slot(self) -> None:
        if self.fps is None or self.delivered == 0:
            return
        due = self._last_send + 1.0 / self.fps
        while not self.stop_requested and (left := due - time.perf_counter()) > 0:
            time.sleep(min(left, 0.05))

    def run(self) -> LiveResult:
        self._started = time.perf_counter()
        self._win = _Window()
        self._outputs = OutputThread()
        try:
            ended = self._loop()
            self._outputs.drain()  # every frame handed over is written before the result
            self._collect()
        finally:
            self._outputs.stop()
        return self.result(ended)

    def _loop(self) -> str:
        ended = "quit"
        while True:
            self._collect()
            if self.stop_requested:
                ended = "interrupted"
                break
            if self.frames is not None and self.delivered >= self.frames:
                ended = "frames"
                break
            self._commands()
            if self.session.quit:
                ended = "quit"
                break
            self._wait_for_slot()
            try:
                frame = self.source.read(timeout=self.read_timeout_s)
            except TimeoutError:
                self._pump_windows()
                self._maybe_log()
                continue
            if frame is None:
                ended = "end of input"
                log.info("end of input")
                break
            self.session.tick()
            out = self.processor.process(frame.image, frame.timestamp)
            self._deliver(frame, out)
            if self.on_frame is not None:
                self.on_frame(self, frame, out)
            self._maybe_log()
        return ended

    def _collect(self) -> None:
        """What the output thread did since the last call: drop the sinks that failed, record the latencies."""
        if self._outputs is None:
            return
        failed, sent = self._outputs.done()
        self._written += sum(1 for *_, ok in sent if ok)
        for sink, exc in failed:
            if sink in self.sinks:
                self._drop_sink(sink, exc)
        for frame, send_ms, finished, _ in sent:
            self.processor.times.add("output", send_ms)
            latency = finished - max(frame.arrived, self._started)  # waiting since before the loop: from the start
            self._latency_total += latency
            self._win.latencies.append(latency)

    def _deliver(self, frame: Frame, out: np.ndarray) -> None:
        overlay = self._overlay_lines() if self.session.overlay else []
        for window in self.windows:
            window.set_overlay(overlay)
        for window in list(self.windows):  # windows on this thread (GUI toolkits want it), the rest on the outputs'
            try:
                window.send(out, frame.timestamp)
            except Exception as e:  # noqa: BLE001 - one output failing must not stop the others
                self._drop_sink(window, e)
        others = [sink for sink in self.sinks if sink not in self.windows]
        assert self._outputs is not None
        if others:
            self._outputs.put(others, frame, out)
        else:  # windows only: delivered now
            self._written += 1
            now = time.perf_counter()
            latency = now - max(frame.arrived, self._started)
            self._latency_total += latency
            self._win.latencies.append(latency)
        now = time.perf_counter()
        if self.delivered:
            dt = now - self._last_send
            if dt > 0:
                self._fps_ema = 1 / dt if self._fps_ema is None else 0.9 * self._fps_ema + 0.1 / dt
        else:
            self._first_at = now
            log.info("first frame delivered (%.2f s after the loop started)", now - self._started)
        self._last_send = now
        self.delivered += 1

    def _drop_sink(self, sink: Sink, exc: BaseException) -> None:
        """An output failed mid-run (a virtual camera gone, a disk full, a recording's directory removed): one
        warning, the sink is closed (a file keeps the frames written so far when it can still be finalized, else it
        is removed) and the other outputs continue. The last output failing is a runtime failure (raised)."""
        self.sinks.remove(sink)
        if sink in self.windows:
            self.windows.remove(sink)
        text = " ".join(str(exc).split()) or type(exc).__name__
        kept = ""
        try:
            sink.close()
        except Exception as close_exc:  # noqa: BLE001 - nothing more to save
            log.debug("closing the failed output failed", exc_info=True)
            kept = f" (and it could not be finalized: {' '.join(str(close_exc).split())[:120]})"
        self.dropped_sinks.append(sink)
        what = describe_sink(sink)
        if not self.sinks:
            self.delivered = self._written  # frames handed over after the last output failed never reached one
            raise OutputError(f"{what} failed ({text[:160]}){kept}: no output left") from exc
        log.warning("%s failed (%s): dropped%s; the other outputs continue", what, text[:160], kept)

    def _overlay_lines(self) -> list[str]:
        from realtime.pipeline.watchdog import GuardedStylizer

        p, s = self.processor, self.session
        failing = isinstance(p.stylizer, GuardedStylizer) and not p.stylizer.last_ok and p.mode == "stylize"
        fps = f"{self._fps_ema:.1f} fps" if self._fps_ema else "-- fps"
        lat = f"{1e3 * self._win.latencies[-1]:.0f} ms" if self._win.latencies else "-- ms"
        flags = [x for x, on in (("PASS-THROUGH (stylizer failing)", failing), ("BYPASS", p.mode == "bypass"), ("BLANK", p.mode == "blank"),
                                 ("mirror", p.mirror), ("framing", p.framing),
                                 ("blend", not s.style.passthrough and s.style.temporal.blend < 1.0),
                                 ("switching...", s.pending_style is not None)) if on]
        name = s.style.name
        if isinstance(p.stylizer, GuardedStylizer) and not s.style.passthrough and s.pending_style is None:
            name = p.stylizer.style.name  # what really runs (a switch that failed, e.g. out of memory, kept the old)
        return [f"{name}  {fps}  {lat}", " ".join(flags)]

    # ---------------------------------------------------------------------------------------------- statistics
    def _maybe_log(self) -> None:
        if time.perf_counter() - self._win.t >= self.stats_every_s:
            self.log_stats()

    def log_stats(self) -> None:
        """One line: input and output fps, dropped/skipped/pass-through frames, latency, per-stage milliseconds
        since the last line."""
        now = time.perf_counter()
        w = self._win
        span = max(now - w.t, 1e-9)
        st = self.source.stats
        lat = w.latencies
        lat_txt = f"latency {1e3 * sum(lat) / len(lat):.0f} ms (max {1e3 * max(lat):.0f})" if lat else "latency -"
        times = self.processor.times
        log.info("in %.1f fps, out %.1f fps, dropped %d, skipped %d, passed through %d, %s; %s",
                 st.fps, (self.delivered - w.delivered) / span, st.dropped, self.processor.skipped,
                 self.processor.passed_through, lat_txt, _stage_line(times.totals, times.counts, w))
        nw = _Window()
        nw.t, nw.delivered = now, self.delivered
        nw.totals, nw.counts = dict(times.totals), dict(times.counts)
        self._win = nw

    def result(self, ended: str) -> LiveResult:
        secs = (self._last_send - self._first_at) if self._first_at is not None and self.delivered > 1 else 0.0
        secs = secs * self.delivered / (self.delivered - 1) if self.delivered > 1 else secs
        st = self.source.stats
        return LiveResult(
            delivered=self.delivered, seconds=secs, ended=ended, input_frames=st.frames, dropped=st.dropped,
            skipped=self.processor.skipped, passed_through=self.processor.passed_through,
            mean_latency_ms=1e3 * self._latency_total / self.delivered if self.delivered else 0.0,
            stage_ms=self.processor.times.means(),
        )


def describe_sink(sink: object) -> str:
    """A sink as a user names it: ``recording NAME``, ``virtual camera DEVICE``, ``window``, ``output``."""
    from realtime.io.sinks import VideoFileSink, VirtualCameraSink, WindowSink

    if isinstance(sink, VideoFileSink):
        return f"recording {sink.path.name}"
    if isinstance(sink, VirtualCameraSink):
        return f"virtual camera {sink.device}"
    return "window" if isinstance(sink, WindowSink) else f"output {type(sink).__name__}"


def log_summary(r: LiveResult) -> None:
    log.info("%d frames delivered in %.1f s (%.1f fps; %s), input frames %d, dropped %d, skipped %d, "
             "passed through %d, mean latency %.0f ms", r.delivered, r.seconds, r.output_fps, r.ended,
             r.input_frames, r.dropped, r.skipped, r.passed_through, r.mean_latency_ms)
    if r.stage_ms:
        log.info("per-stage means: %s", ", ".join(f"{k} {v:.1f} ms" for k, v in r.stage_ms.items()))


@contextlib.contextmanager
def graceful_sigint(loop: LiveLoop) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM) asks the loop to stop after the current frame (sinks are then closed normally); a
    second one raises KeyboardInterrupt at once. Only in the main thread (elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if loop.stop_requested:
            raise KeyboardInterrupt
        loop.stop_requested = True
        log.info("stopping (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    previous_term = signal.signal(signal.SIGTERM, handler)  # `kill`, a service manager: the same normal stop
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


class Closable(Protocol):
    def close(self) -> None: ...


def close_all(sinks: Sequence[Sink], others: Sequence[Closable | None]) -> None:
    """Close sinks (file sinks finalized and kept), then ``others``; Ctrl-C is ignored meanwhile. A file that cannot
    be finalized is raised after everything else is closed (a file with no frames is only a warning)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    error: BaseException | None = None
    try:
        for obj in [*sinks, *others]:
            if obj is None:
                continue
            try:
                obj.close()
            except OutputError as e:
                if "no frames were written" in str(e):
                    log.warning("%s", e)
                elif error is None:
                    error = e
            except OSError as e:  # a recording whose folder was removed, a disk that filled at the end
                log.debug("closing %s failed", type(obj).__name__, exc_info=True)
                if error is None:
                    error = _lost_output(obj, e)
            except Exception as e:  # keep closing the rest; report the first failure
                log.debug("closing %s failed", type(obj).__name__, exc_info=True)
                if error is None:
                    error = e
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if error is not None:
        raise error


def _lost_output(sink: object, exc: OSError) -> OutputError:
    """An output that could not be finalized, as one line naming it and why (never the temporary file's name)."""
    from realtime.io.sinks import VideoFileSink

    if isinstance(sink, VideoFileSink) and not sink.path.parent.is_dir():
        return OutputError(f"{describe_sink(sink)} not kept: its folder {sink.path.parent} was removed while "
                           f"recording")
    return OutputError(f"{describe_sink(sink)} could not be finalized: {exc.strerror or exc}")
