"""The frame step's runners: guidance on/off without a rebuild (two variants, built once and kept; docs/design.md §6),
and constant inputs bound to a runner's static buffers (:func:`bound`).

A variant is ``(FrameStep, runner)``: one UNet pass (guidance 1) or the CFG batch of two. :class:`StepVariants` builds
each at most once (thread-safe: the stylizer's background preparation builds the other one while frames flow) and
hands the kept one back on every later switch. A variant whose engine holds its own weights (onnxruntime, TensorRT:
``runner.module_released``) is closed when switched away from, so one engine's weights are in memory at a time; it is
built again (from the engine cache) the next time it is needed.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Variant = tuple[Any, Any]  # (FrameStep, runner); runner is the step itself when eager


class StepVariants:
    """The frame-step variants by CFG on/off. ``builds`` counts how many were built (tests check switches reuse)."""

    def __init__(self) -> None:
        self._kept: dict[bool, Variant] = {}
        self._lock = threading.Lock()
        self.builds = 0

    def __contains__(self, cfg: bool) -> bool:
        return cfg in self._kept

    def kept(self, cfg: bool) -> Variant | None:
        return self._kept.get(cfg)

    def get(self, cfg: bool, build: Callable[[], Variant]) -> Variant:
        """The kept variant for ``cfg``, or ``build()`` it now (once, under the lock) and keep it."""
        with self._lock:
            if cfg not in self._kept:
                self._kept[cfg] = build()
                self.builds += 1
            return self._kept[cfg]

    def refit(self, new_state: Any) -> None:
        """Refit every kept variant's engine (the running one, and one prepared in the background) to ``new_state``."""
        for step, runner in list(self._kept.values()):
            if runner is not step:
                runner.refit(new_state)

    def switched_away(self, cfg: bool, variant: Variant) -> None:
        """``variant`` (for ``cfg``) is no longer the running one: close it when its engine holds its own weights."""
        step, runner = variant
        if runner is step or not getattr(runner, "module_released", False):
            return
        with self._lock:
            if self._kept.get(cfg) is variant:
                del self._kept[cfg]
        runner.close()
        log.info("guidance %s: closed that variant's engine to free its memory", "on" if cfg else "off")

    def close(self) -> None:
        with self._lock:
            variants, self._kept = list(self._kept.values()), {}
        for step, runner in variants:
            close = getattr(runner, "close", None)
            if callable(close) and runner is not step:
                close()


def bound(runner: Any, name: str, value: Any) -> Any:
    """``value`` written into ``runner``'s static input buffer ``name`` and that buffer returned (an input that is its
    buffer costs the runner no copy per call: ``engines.Runner.input_buffers``); ``value`` itself when the runner has
    no such buffer (eager, not captured yet) or it already is the buffer."""
    buf = (getattr(runner, "input_buffers", None) or {}).get(name)
    if buf is None or value is buf or buf.shape != value.shape or buf.dtype != value.dtype:
        return value
    buf.copy_(value)
    return buf
