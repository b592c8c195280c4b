"""The one timing helper of the project: frame clocks per stage, stage means, percentile summaries (docs/design.md §9).

- A :class:`Clock` times the stages of one frame. :class:`PerfCounterClock` times every stage with
  ``time.perf_counter``; :class:`CudaEventClock` times *device* stages with CUDA events (host stages still with
  ``perf_counter``) and reads the events once per frame, after one synchronisation, so timing never serialises the
  stages it measures. :func:`make_clock` picks one for a torch device. The frame processor takes a clock, so
  ``stylecam bench`` times exactly what ``live`` runs.
- :class:`StageTimes`: running totals per stage (means for logs and summaries); :class:`StageLog`: every frame's
  times (for percentiles); :func:`summarize`: ``n, mean_ms, min_ms, p50_ms, p95_ms, p99_ms, max_ms`` of a list.

Every time is in milliseconds.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linearly interpolated percentile ``q`` (0..100) of an ascending sequence (numpy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summarize(values_ms: Sequence[float]) -> dict[str, float | int]:
    """``{n, mean_ms, min_ms, p50_ms, p95_ms, p99_ms, max_ms}`` of a non-empty list of milliseconds."""
    s = sorted(float(v) for v in values_ms)
    if not s:
        raise ValueError("no values to summarize")
    return {
        "n": len(s), "mean_ms": sum(s) / len(s), "min_ms": s[0], "p50_ms": percentile(s, 50),
        "p95_ms": percentile(s, 95), "p99_ms": percentile(s, 99), "max_ms": s[-1],
    }


@dataclass
class StageTimes:
    """Milliseconds spent per stage over the frames seen (for logs, summaries and the live status)."""

    totals: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + ms
        self.counts[stage] = self.counts.get(stage, 0) + 1

    def add_frame(self, stages: dict[str, float]) -> None:
        """One frame's times per stage (what :meth:`Clock.end` returns)."""
        for stage, ms in stages.items():
            self.add(stage, ms)

    def means(self) -> dict[str, float]:
        return {k: self.totals[k] / max(1, self.counts[k]) for k in self.totals}

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} ms" for k, v in self.means().items())


@dataclass(frozen=True)
class FrameTimes:
    """One frame: ``wall_ms`` from :meth:`Clock.begin` to the end of :meth:`Clock.end`, ``stages`` ms per stage."""

    wall_ms: float
    stages: dict[str, float]


@dataclass
class StageLog:
    """Every kept frame's times: ``frame_ms`` (wall time per frame) and ``stages`` (per stage, one value for each
    frame that ran it), ready for :func:`summarize`."""

    frame_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)

    def add(self, frame: FrameTimes, keep: bool = True) -> None:
        if not keep:
            return
        self.frame_ms.append(frame.wall_ms)
        for name, v in frame.stages.items():
            self.stages.setdefault(name, []).append(v)

    def fps(self, frames_per_call: int = 1) -> float:
        total = sum(self.frame_ms)
        return frames_per_call * 1000.0 * len(self.frame_ms) / total if total > 0 else 0.0


class Clock(Protocol):
    """Times the stages of one frame.

    ``begin()`` opens a frame; stages are timed with ``with clock.stage(name, device=...)`` (or ``start``/``stop``,
    e.g. from forward hooks); ``end()`` closes the frame (one synchronisation for device timers) and returns its
    :class:`FrameTimes`; ``cancel()`` drops a frame that failed. A stage run several times in one frame adds up; stages
    may nest (``stylize`` holds ``upload``, ``step`` and ``download``). ``device=True`` marks a stage that runs on the
    accelerator (timed with device events where the clock has them). ``timer[name]`` says which timer a stage used
    (``"perf_counter"`` or ``"cuda_event"``); ``in_frame`` whether a frame is open. Stages timed outside a frame are
    dropped by the next ``begin()``.
    """

    timer: dict[str, str]

    @property
    def in_frame(self) -> bool: ...

    def begin(self) -> None: ...

    def start(self, name: str, *, device: bool = False) -> None: ...

    def stop(self, name: str) -> None: ...

    def stage(self, name: str, *, device: bool = False) -> Any: ...

    def end(self) -> FrameTimes: ...

    def cancel(self) -> None: ...


class PerfCounterClock:
    """A :class:`Clock` that times every stage, host or device, with ``time.perf_counter`` (the CPU's clock: on a GPU a
    device stage then ends when the host call returns, not when the device work does)."""

    def __init__(self) -> None:
        self.timer: dict[str, str] = {}
        self._host: dict[str, float] = {}
        self._open: dict[str, Any] = {}
        self._t0: float | None = None

    @property
    def in_frame(self) -> bool:
        return self._t0 is not None

    def begin(self) -> None:
        self._host.clear()
        self._open.clear()
        self._t0 = time.perf_counter()

    def start(self, name: str, *, device: bool = False) -> None:
        self._open[name] = time.perf_counter()
        self.timer.setdefault(name, "perf_counter")

    def stop(self, name: str) -> None:
        begun = self._open.pop(name, None)
        if begun is None:
            raise RuntimeError(f"stage {name!r} stopped without being started")
        self._record(name, begun)

    def _record(self, name: str, begun: Any) -> None:
        self._host[name] = self._host.get(name, 0.0) + (time.perf_counter() - begun) * 1e3

    @contextmanager
    def stage(self, name: str, *, device: bool = False) -> Iterator[None]:
        self.start(name, device=device)
        try:
            yield
        finally:
            self.stop(name)

    def _sync(self) -> dict[str, float]:
        return {}

    def end(self) -> FrameTimes:
        if self._t0 is None:
            raise RuntimeError("Clock.end() without begin()")
        if self._open:
            raise RuntimeError(f"stages still open at the end of the frame: {', '.join(self._open)}")
        device_ms = self._sync()
        wall = (time.perf_counter() - self._t0) * 1e3
        ms = dict(self._host)
        for name, v in device_ms.items():
            ms[name] = ms.get(name, 0.0) + v
        self._t0 = None
        return FrameTimes(wall, ms)

    def cancel(self) -> None:
        self._open.clear()
        self._t0 = None


class CudaEventClock(PerfCounterClock):
    """A :class:`Clock` for a CUDA device: device stages with CUDA events on the current stream (read in :meth:`end`
    after one ``torch.cuda.synchronize``), host stages with ``perf_counter``."""

    def __init__(self, device: Any) -> None:
        import torch

        super().__init__()
        self.torch_device = torch.device(device)
        self._events: dict[str, list[tuple[Any, Any]]] = {}

    def begin(self) -> None:
        super().begin()
        self._events.clear()

    def start(self, name: str, *, device: bool = False) -> None:
        if not device:
            super().start(name)
            return
        import torch

        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self._open[name] = ev
        self.timer.setdefault(name, "cuda_event")

    def _record(self, name: str, begun: Any) -> None:
        if isinstance(begun, float):
            super()._record(name, begun)
            return
        import torch

        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self._events.setdefault(name, []).append((begun, ev))

    def _sync(self) -> dict[str, float]:
        import torch

        torch.cuda.synchronize(self.torch_device)
        out = {name: sum(a.elapsed_time(b) for a, b in pairs) for name, pairs in self._events.items()}
        self._events.clear()
        return out

    def cancel(self) -> None:
        super().cancel()
        self._events.clear()


def make_clock(device: Any = "cpu") -> PerfCounterClock:
    """CUDA events for device stages on a CUDA device, ``perf_counter`` everywhere else."""
    return CudaEventClock(device) if getattr(device, "type", str(device).split(":")[0]) == "cuda" else PerfCounterClock()
