"""Per-stage timing for benchmarks: CUDA events on the GPU, ``perf_counter`` on the CPU.

    timer = StageTimer(device)
    with timer.stage("unet"):
        ...
    timer.summary()  # {"unet": {"n": 100, "p50_ms": ..., "p95_ms": ..., "p99_ms": ..., "mean_ms": ...}}

CUDA events are recorded on the current stream and read only in :meth:`StageTimer.times_ms` (one synchronization),
so timing does not serialize the stages it measures.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator, Sequence


class StageTimer:
    def __init__(self, device: Any = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._pending: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        self._ms: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending[name].append((start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._ms[name].append((time.perf_counter() - t0) * 1e3)

    def times_ms(self) -> dict[str, list[float]]:
        """Every recorded duration per stage, in milliseconds (synchronizes CUDA once if events are pending)."""
        if self._pending:
            import torch

            torch.cuda.synchronize(self.device)
            for name, pairs in self._pending.items():
                self._ms[name].extend(s.elapsed_time(e) for s, e in pairs)
            self._pending.clear()
        return {k: list(v) for k, v in self._ms.items()}

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, ms in self.times_ms().items():
            if not ms:
                continue
            s = sorted(ms)
            out[name] = {"n": len(s), "mean_ms": sum(s) / len(s), "p50_ms": percentile(s, 50),
                         "p95_ms": percentile(s, 95), "p99_ms": percentile(s, 99)}
        return out

    def reset(self) -> None:
        self._pending.clear()
        self._ms.clear()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linearly interpolated percentile of an ascending sequence (numpy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))
