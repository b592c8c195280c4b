"""The soak: a live session kept running for minutes, watched for leaks, slow-downs and recording faults.

:func:`run_soak` drives the real :class:`~realtime.pipeline.live.LiveLoop` (built by the caller exactly like
``stylecam live`` builds it: :mod:`realtime.cli.soak`) from a :class:`LoopingSource` (a clip read again and again at
its own rate, timestamps continuing across passes), with runtime commands written on a schedule into a pipe that a
:class:`~realtime.pipeline.controls.StdinCommands` reads (the very path of commands typed on stdin). While it runs it
samples the process (:class:`ResourceSampler`: RSS, open file descriptors, threads, CUDA memory) and every frame's
latency; at the end :func:`soak_report` gives slopes per minute (after a warm-up), per-window latency p50/p99 and,
once the file sink is closed, :func:`check_recording` compares the recording's timestamps with the frames delivered
(none lost, none duplicated).

Frames are HxWx3 uint8 RGB throughout (see :mod:`realtime.io.frames`).
"""
from __future__ import annotations

import dataclasses
import gc
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import UsageError
from realtime.io.frames import Frame, FrameSource, Sink, SourceStats
from realtime.pipeline.controls import CommandSource, StdinCommands
from realtime.pipeline.live import LiveLoop, LiveResult

log = logging.getLogger(__name__)

__all__ = ["SoakConfig", "LoopingSource", "ScheduledCommands", "ResourceSampler", "default_schedule", "run_soak",
           "soak_report", "check_recording", "slope_per_minute", "write_random_lora"]


@dataclass(frozen=True)
class SoakConfig:
    """``seconds`` of live loop; ``fps`` cap of the loop (the looped clip's own rate paces it too); a resource sample
    every ``sample_every_s``; latency percentiles per ``window_s``; one scheduled command every ``command_every_s``;
    slopes are fitted after ``warmup_s`` (default: the first minute, or the first quarter of a shorter run)."""

    seconds: float
    fps: float = 30.0
    sample_every_s: float = 2.0
    window_s: float = 60.0
    command_every_s: float = 2.5
    warmup_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("seconds", "fps", "sample_every_s", "window_s", "command_every_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise UsageError(f"soak {name}={v!r}: must be a positive number")
        if self.warmup_s is not None and not 0 <= self.warmup_s < self.seconds:
            raise UsageError(f"soak warmup_s={self.warmup_s!r}: must be >= 0 and below seconds={self.seconds!r}")

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(60.0, self.seconds / 4)


# ---------------------------------------------------------------------------------------------------- the source
class LoopingSource:
    """A :class:`~realtime.io.frames.FrameSource` that plays ``open_pass()`` sources one after the other (a clip
    looped): when one ends, the next is opened; ``Frame.timestamp`` and ``Frame.index`` continue from the previous
    pass (one frame period after its last frame), so a file sink sees one continuous, increasing timeline.
    ``first``: an already open first pass (e.g. the one ``stylecam live``'s set-up opened). ``passes`` counts them."""

    def __init__(self, open_pass: Callable[[], FrameSource], first: FrameSource | None = None) -> None:
        self._open_pass = open_pass
        self._cur: FrameSource = first if first is not None else open_pass()
        self.size = self._cur.size
        self.passes = 1
        self._t_offset = 0.0
        self._i_offset = 0
        self._last: Frame | None = None  # the last frame handed out, offsets applied
        self._done = SourceStats()  # counters of the finished passes
        self._closed = False

    @property
    def fps(self) -> float:
        return self._cur.fps

    @property
    def stats(self) -> SourceStats:
        cur, done = self._cur.stats, self._done
        return SourceStats(frames=done.frames + cur.frames, dropped=done.dropped + cur.dropped,
                           bad_frames=done.bad_frames + cur.bad_frames, fps=cur.fps)

    def read(self, timeout: float | None = None) -> Frame | None:
        for _ in range(2):  # at most one new pass per read (an empty new pass is the end)
            if self._closed:
                return None
            frame = self._cur.read(timeout)
            if frame is not None:
                out = dataclasses.replace(frame, timestamp=frame.timestamp + self._t_offset,
                                          index=frame.index + self._i_offset)
                self._last = out
                return out
            self._next_pass()
        return None

    def _next_pass(self) -> None:
        old = self._cur
        st = old.stats
        self._done = SourceStats(frames=self._done.frames + st.frames, dropped=self._done.dropped + st.dropped,
                                 bad_frames=self._done.bad_frames + st.bad_frames)
        period = 1.0 / old.fps if old.fps > 0 else 1.0 / 30
        if self._last is not None:
            self._t_offset = self._last.timestamp + period
        self._i_offset += st.frames
        old.close()
        self._cur = self._open_pass()
        del old
        # A closed FileSource's decoder (and its FFmpeg threads, dozens of them) is freed only when the garbage
        # collector breaks its reference cycle; a camera never reopens, so the looping must not pile them up.
        gc.collect()
        self.passes += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cur.close()

    def __enter__(self) -> LoopingSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------------ commands
def default_schedule(lora: str | None = None, styles: Sequence[str] = ("anime", "watercolor", "cel-shaded")) -> list[str]:
    """The command lines a soak cycles through: style, prompt, mirror, framing, bypass, blank and, given a LoRA file,
    its scale (``lora PATH:0.5`` / ``PATH:1`` / ``none``: each a background reload of the models)."""
    lines = [f"style {styles[0]}", "prompt a portrait in soft pastel colours", "mirror on", "framing off",
             "bypass on", "bypass off", "mirror off", f"style {styles[1 % len(styles)]}", "framing on", "blank on",
             "blank off", "strength 0.6", f"style {styles[2 % len(styles)]}", "prompt a comic book hero"]
    if lora:
        lines[3:3] = [f"lora {lora}:0.5"]
        lines[9:9] = [f"lora {lora}:1.0"]
        lines.append("lora none")
    return lines


class ScheduledCommands:
    """Writes ``lines`` (cycled) one every ``every_s`` seconds into a pipe read by a
    :class:`~realtime.pipeline.controls.StdinCommands`: the commands take exactly the path of lines typed on stdin.
    A :class:`~realtime.pipeline.controls.CommandSource` (``poll``); ``sent`` counts the lines written."""

    def __init__(self, lines: Sequence[str], every_s: float) -> None:
        if not lines:
            raise UsageError("a soak needs at least one scheduled command")
        self.lines, self.every_s = list(lines), float(every_s)
        r, w = os.pipe()
        self._reader = io.TextIOWrapper(io.FileIO(r, "r"), encoding="utf-8")
        self._writer = io.FileIO(w, "w")
        self._stdin = StdinCommands(self._reader)
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="soak-commands", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            line = self.lines[self.sent % len(self.lines)]
            try:
                self._writer.write((line + "\n").encode())
            except OSError:
                return
            self.sent += 1

    def poll(self) -> list[Any]:
        return self._stdin.poll()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.every_s + 1)
        self._writer.close()  # the reader thread sees the end of its input and stops
        self._reader.close()  # waits for a read in progress (it returns at once: end of input)


# ----------------------------------------------------------------------------------------------------- sampling
def _proc_status() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


class ResourceSampler:
    """Samples of this process: seconds since start, RSS in MiB, open file descriptors, OS threads (Python threads
    too), CUDA memory allocated/reserved in MiB when torch is imported and CUDA is up. Linux reads ``/proc``; elsewhere
    psutil when installed (else those values are None)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.samples: list[dict[str, float | int | None]] = []

    def sample(self) -> dict[str, float | int | None]:
        st = _proc_status()
        rss = st["VmRSS"] / 1024 if "VmRSS" in st else None
        threads: int | None = st.get("Threads")
        try:
            fds: int | None = len(os.listdir("/proc/self/fd"))
        except OSError:
            fds = None
        if rss is None or fds is None or threads is None:
            try:
                import psutil

                p = psutil.Process()
                rss = rss if rss is not None else p.memory_info().rss / 2**20
                threads = threads if threads is not None else p.num_threads()
                fds = fds if fds is not None else (p.num_fds() if hasattr(p, "num_fds") else p.num_handles())
            except ImportError:
                pass
        s: dict[str, float | int | None] = {"t": time.perf_counter() - self.t0, "rss_mib": rss, "fds": fds,
                                            "threads": threads, "py_threads": threading.active_count()}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            s["gpu_allocated_mib"] = torch.cuda.memory_allocated() / 2**20
            s["gpu_reserved_mib"] = torch.cuda.memory_reserved() / 2**20
        self.samples.append(s)
        return s


def slope_per_minute(ts: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per minute; None with fewer than 3 points."""
    pts = [(t, y) for t, y in zip(ts, ys, strict=True) if y is not None]
    if len(pts) < 3:
        return None
    t = np.array([p[0] for p in pts], float) / 60.0
    y = np.array([p[1] for p in pts], float)
    if np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, y, 1)[0])


# ------------------------------------------------------------------------------------------------------ the run
@dataclass
class SoakRun:
    """What :func:`run_soak` collected: the loop's result, the samples, every frame's (time since start, latency
    in seconds, timestamp), the commands sent and applied, the passes of the source."""

    result: LiveResult
    samples: list[dict[str, float | int | None]]
    frames: list[tuple[float, float, float]] = field(default_factory=list)
    commands_sent: int = 0
    commands_applied: int = 0
    passes: int = 1


def run_soak(source: FrameSource, processor: Any, sinks: Sequence[Sink], session: Any, config: SoakConfig,
             commands: CommandSource | None = None) -> SoakRun:
    """Run a :class:`~realtime.pipeline.live.LiveLoop` for ``config.seconds`` and sample it. The caller owns (and
    closes: :func:`~realtime.pipeline.live.close_all`) the source, sinks, session, processor and ``commands``."""
    sampler = ResourceSampler()
    frames: list[tuple[float, float, float]] = []
    next_sample = [0.0]

    def on_frame(loop: LiveLoop, frame: Frame, out: np.ndarray) -> None:
        now = time.perf_counter()
        elapsed = now - sampler.t0
        frames.append((elapsed, now - max(frame.arrived, sampler.t0), frame.timestamp))
        if elapsed >= next_sample[0]:
            sampler.sample()
            next_sample[0] = elapsed + config.sample_every_s
        if elapsed >= config.seconds:
            loop.stop_requested = True

    loop = LiveLoop(source, processor, sinks, session, command_sources=[commands] if commands else [],
                    fps=config.fps, on_frame=on_frame, stats_every_s=max(config.window_s, 5.0))
    timer = threading.Timer(config.seconds + 5.0, lambda: setattr(loop, "stop_requested", True))  # no frames at all
    timer.daemon = True
    timer.start()
    sampler.sample()
    try:
        result = loop.run()
    finally:
        timer.cancel()
    sampler.sample()
    return SoakRun(result, sampler.samples, frames, getattr(commands, "sent", 0), session.applied,
                   getattr(source, "passes", 1))


def _percentiles(lat_s: list[float]) -> dict[str, float]:
    a = np.asarray(lat_s, float) * 1e3
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def soak_report(run: SoakRun, config: SoakConfig) -> dict[str, Any]:
    """Slopes (RSS MiB/min, fds/min, threads/min after the warm-up), per-window latency and the goals
    (RSS slope <= 1 MiB/min, fds and threads flat, last window p99 <= 1.2x the first)."""
    after = [s for s in run.samples if float(s["t"] or 0) >= config.warmup] or run.samples
    ts = [float(s["t"] or 0) for s in after]
    slopes = {k: slope_per_minute(ts, [s.get(key) for s in after]) for k, key in
              (("rss_mib_per_min", "rss_mib"), ("fds_per_min", "fds"), ("threads_per_min", "threads"),
               ("gpu_allocated_mib_per_min", "gpu_allocated_mib"))}
    spans = {key: (min(v), max(v)) for key in ("fds", "threads", "py_threads")
             if (v := [int(s[key]) for s in after if s.get(key) is not None])}
    windows: list[dict[str, float]] = []
    n_windows = max(1, int(np.ceil(config.seconds / config.window_s)))
    for w in range(n_windows):
        lat = [lat for t, lat, _ in run.frames if w * config.window_s <= t < (w + 1) * config.window_s
               or (w == n_windows - 1 and t >= (w + 1) * config.window_s)]
        if lat:
            windows.append({"window": w, "start_s": w * config.window_s, **_percentiles(lat)})
    for w in windows:
        lo, hi = w["start_s"], w["start_s"] + config.window_s
        th = [int(x["threads"]) for x in run.samples if x.get("threads") is not None and lo <= float(x["t"] or 0) < hi]
        if th:
            w["threads_median"], w["threads_max"] = float(np.median(th)), max(th)
    ratio = windows[-1]["p99_ms"] / windows[0]["p99_ms"] if windows and windows[0]["p99_ms"] > 0 else None
    r = run.result
    rss = slopes["rss_mib_per_min"]
    return {
        "seconds": config.seconds, "warmup_s": config.warmup, "window_s": config.window_s,
        "delivered": r.delivered, "output_fps": r.output_fps, "ended": r.ended, "input_frames": r.input_frames,
        "dropped": r.dropped, "skipped": r.skipped, "passed_through": r.passed_through,
        "mean_latency_ms": r.mean_latency_ms, "stage_ms": r.stage_ms, "source_passes": run.passes,
        "commands_sent": run.commands_sent, "commands_applied": run.commands_applied,
        "slopes": slopes, "spans_after_warmup": {k: {"min": a, "max": b} for k, (a, b) in spans.items()},
        "latency_windows": windows, "p99_last_over_first": ratio,
        "goals": {
            "rss_slope_le_1_mib_per_min": rss is not None and rss <= 1.0,
            "fds_flat": "fds" in spans and spans["fds"][1] - spans["fds"][0] <= 2,
            # OS threads swing by dozens from one sample to the next (the decoder's FFmpeg threads come and go), so
            # flat means: no trend, and no Python thread left behind.
            "threads_flat": slopes["threads_per_min"] is not None and abs(slopes["threads_per_min"]) <= 5.0
            and "py_threads" in spans and spans["py_threads"][1] - spans["py_threads"][0] <= 2,
            "p99_ratio_le_1_2": ratio is not None and ratio <= 1.2,
        },
        "samples": run.samples,
    }


def check_recording(path: Path, timestamps: Sequence[float], fps: float) -> dict[str, Any]:
    """Compare a finalized recording with the capture ``timestamps`` of the frames sent to it (seconds; the first is
    time 0, at ``fps`` ticks): ``frames`` in the file, ``expected``, ``lost`` (sent, not in the file), ``duplicated``
    (a timestamp twice, or not increasing), ``ok`` when none of them is off."""
    from fractions import Fraction

    import av

    expected = [int(round((t - timestamps[0]) * fps)) for t in timestamps] if timestamps else []
    got: list[int] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        tb = stream.time_base or Fraction(1, int(round(fps)))
        for frame in c.decode(stream):
            if frame.pts is not None:
                got.append(int(round(float(frame.pts * tb) * fps)))
    got0 = [g - got[0] for g in got] if got else []
    dup = sum(1 for a, b in zip(got0, got0[1:], strict=False) if b <= a)
    exp_set, got_set = set(expected), set(got0)
    lost = len(exp_set - got_set) + (len(expected) - len(exp_set))  # expected ticks twice: the sink shifted one
    return {"path": path.name, "frames": len(got), "expected": len(expected), "lost": lost, "duplicated": dup,
            "unexpected": len(got_set - exp_set), "ok": len(got) == len(expected) and lost == 0 and dup == 0
            and got0 == expected}


def write_random_lora(unet: Any, path: Path, *, rank: int = 4, seed: int = 1) -> Path:
    """A kohya-format LoRA with random weights on the attention projections of ``unet`` (the soak's LoRA for
    random:* models, whose scale commands reload the models in the background)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Any] = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in ("to_q", "to_k", "to_v") \
                and "attentions" in name:
            key = "lora_unet_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.05
            sd[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.05
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    if not sd:
        raise UsageError("no attention projections in this UNet for a LoRA")
    save_file(sd, str(path))
    return path
