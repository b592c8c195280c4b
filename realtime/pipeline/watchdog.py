"""The live loop's watchdog around the stylizer: a stall or a failure never freezes the picture.

:class:`GuardedStylizer` runs a stylizer on its own (daemon) thread and waits for each frame up to a deadline. When the
stylizer stalls past the deadline, or fails with a runtime error (CUDA out of memory, a driver error), the frame passes
through unstylized (the framed camera crop), a note is logged, and the stylizer is retried: at once when a stalled call
finally returns, after a cool-down (doubling up to a cap) after a failure. Style, seed and reset requests run on the
same thread between frames, so they never race a frame in flight.

Images are HxWx3 uint8 RGB numpy arrays at the model size; control maps HxW uint8.
"""
from __future__ import annotations

import logging
import queue
import statistics
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Protocol

import numpy as np

from realtime.config import StyleConfig
from realtime.errors import InputError, UsageError

log = logging.getLogger(__name__)


def _is_transient(exc: BaseException) -> bool:
    """Failures worth retrying: runtime errors (CUDA OOM is a RuntimeError subclass), MemoryError. Usage errors and
    programming errors (TypeError, ...) are bugs or bad settings: they propagate."""
    return isinstance(exc, (RuntimeError, MemoryError)) and not isinstance(exc, InputError)


def _free_accelerator_memory() -> None:
    """Empty the CUDA cache when torch is already imported (never imports it)."""
    try:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort only
        log.debug("emptying the CUDA cache failed", exc_info=True)


def _log_failure(what: str) -> Callable[[Future[Any]], None]:
    def done(fut: Future[Any]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None:
            text = str(exc).strip()
            log.warning("%s not applied: %s", what, text.splitlines()[0] if text else type(exc).__name__)

    return done


class LiveStylizer(Protocol):
    """What the live loop asks of a stylizer (:class:`~realtime.diffusion.stylizer.Stylizer`): the watchdog runs it
    on its own thread, the :class:`~realtime.pipeline.session.LiveSession` changes it between frames.

    - ``style``: the style it runs now. ``__call__(image, control)``: (H, W, 3) uint8 RGB crop at the model size and
      its (H, W) uint8 Canny map -> (H, W, 3) uint8 RGB; may raise ``RuntimeError`` (CUDA out of memory, a driver
      error) or ``MemoryError``, which the watchdog treats as transient.
    - ``set_style(style, wait=False)``: other prompt/numbers/LoRAs (LoRAs are written in place);
      ``set_seed(seed, blend=None)``; ``reset()``: forget the previous frame's latents.
    - ``conditioning(style)``: encode the style's prompt (or prompt mix) ahead of a guidance on/off switch (called on
      a background thread while frames keep flowing; the result is cached by the stylizer).
    - ``loras``: its :class:`~realtime.diffusion.lora_switch.LoraSwitcher` (``prepare(specs)`` reads the files on a
      background thread ahead of a LoRA change), or None when it cannot switch LoRAs.
    - ``close()``: free models and engines (idempotent).
    """

    @property
    def style(self) -> StyleConfig: ...

    def __call__(self, image: np.ndarray, control: np.ndarray) -> np.ndarray: ...

    def set_style(self, style: StyleConfig, *, wait: bool = False) -> object: ...

    def set_seed(self, seed: int, blend: tuple[int, float] | None = None) -> object: ...

    def reset(self) -> object: ...

    def conditioning(self, style: StyleConfig) -> object: ...

    @property
    def loras(self) -> Any: ...

    def close(self) -> None: ...


class Worker:
    """One daemon thread running submitted calls in order (a stuck call never blocks interpreter exit)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((fn, fut))
        return fut

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the waiting thread
                fut.set_exception(e)

    def stop(self, wait_s: float = 0.0) -> bool:
        """No more jobs; wait up to ``wait_s`` for the one running to finish. True when the thread has ended (a call
        still running in native code at interpreter exit can abort the process: torch's thread pools are gone)."""
        self._jobs.put(None)
        if wait_s > 0:
            self._thread.join(wait_s)
        return not self._thread.is_alive()


class GuardedStylizer:
    """A drop-in stylizer (``guard(image, control) -> image``) with a deadline and failure recovery.

    stylizer: the wrapped :class:`LiveStylizer` (the :class:`~realtime.diffusion.stylizer.Stylizer`). deadline_s: seconds to wait for one frame; None = automatic: ``max(min_deadline_s,
        deadline_factor * median of the recent frame times)`` (until times are known: ``first_deadline_s``).
    cooldown_s: pause after a failure before retrying (doubles with each consecutive failure, up to ``max_cooldown_s``).

    After each call ``last_ok`` says whether the returned image is stylized (False: it is ``image`` itself, passed
    through). Counters: ``stalls``, ``failures``, ``passed_through``.
    """

    def __init__(
        self, stylizer: LiveStylizer, *, deadline_s: float | None = None, min_deadline_s: float = 1.0,
        deadline_factor: float = 10.0, first_deadline_s: float = 60.0, cooldown_s: float = 2.0,
        max_cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, v in (("min_deadline_s", min_deadline_s), ("deadline_factor", deadline_factor),
                        ("first_deadline_s", first_deadline_s), ("cooldown_s", cooldown_s),
                        ("max_cooldown_s", max_cooldown_s)):
            if not v >= 0:
                raise UsageError(f"watchdog {name}={v!r}: must be >= 0")
        if deadline_s is not None and not deadline_s > 0:
            raise UsageError(f"watchdog deadline_s={deadline_s!r}: must be > 0 (or None for automatic)")
        self.stylizer = stylizer
        self.fixed_deadline_s = deadline_s
        self.min_deadline_s, self.deadline_factor = min_deadline_s, deadline_factor
        self.first_deadline_s = first_deadline_s
        self.cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self._clock = clock
        self._worker = Worker("stylecam-stylizer")
        self._times: deque[float] = deque(maxlen=30)
        self._busy: Future[Any] | None = None  # a stalled frame still running
        self._busy_since = 0.0
        self._last_stall_note = 0.0
        self._retry_at = 0.0
        self._failures_in_a_row = 0
        self._closed = False
        self.last_ok = True
        self.stalls = 0
        self.failures = 0
        self.passed_through = 0

    # ----------------------------------------------------------------------------------------------- delegation
    @property
    def style(self) -> StyleConfig:
        return self.stylizer.style

    def schedule(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn()`` on the stylizer's thread before the next frame (after the frame in flight, if any)."""
        return self._worker.submit(fn)

    def set_style(self, style: StyleConfig, *, wait: bool = False) -> Future[Any]:
        """Switch style between frames (a failure is logged, the running style stays); ``wait`` re-raises it."""
        fut = self.schedule(lambda: self.stylizer.set_style(style))
        if wait:
            fut.result()
        else:
            fut.add_done_callback(_log_failure(f"style {style.name!r}"))
        return fut

    def set_seed(self, seed: int, blend: tuple[int, float] | None = None) -> Future[Any]:
        fut = self.schedule(lambda: self.stylizer.set_seed(seed) if blend is None else self.stylizer.set_seed(seed, blend))
        fut.add_done_callback(_log_failure(f"seed {seed}"))
        return fut

    def reset(self) -> Future[Any]:
        return self.schedule(self.stylizer.reset)

    def observe(self, seconds: float) -> None:
        """Record a frame time measured elsewhere (the warm-up) for the automatic deadline."""
        self._times.append(float(seconds))

    @property
    def deadline_s(self) -> float:
        if self.fixed_deadline_s is not None:
            return self.fixed_deadline_s
        if not self._times:
            return self.first_deadline_s
        return max(self.min_deadline_s, self.deadline_factor * statistics.median(self._times))

    # ---------------------------------------------------------------------------------------------------- frames
    def __call__(self, image: np.ndarray, control: np.ndarray) -> np.ndarray:
        return self.guarded(lambda: self.stylizer(image, control), lambda: image)

    def guarded(self, run: Callable[[], np.ndarray], passthrough: Callable[[], np.ndarray]) -> np.ndarray:
        """``run()`` on the stylizer's thread within the deadline; on a stall, a failure or during a cool-down,
        ``passthrough()`` instead (on the calling thread; ``last_ok`` then False). ``__call__`` is this with the
        stylizer's own call and the crop itself."""
        if self._closed:
            raise RuntimeError("GuardedStylizer is closed")
        now = self._clock()
        if self._busy is not None:
            if not self._busy.done():
                if now - self._last_stall_note >= 10.0:
                    self._last_stall_note = now
                    log.warning("stylizer still stalled after %.0f s: passing frames through", now - self._busy_since)
                return self._pass(passthrough)
            fut, self._busy = self._busy, None
            exc = fut.exception()
            if exc is not None:
                self._failed(exc, now)
                return self._pass(passthrough)
            log.warning("stylizer is back after a %.1f s stall: stylizing again", now - self._busy_since)
            self._worker.submit(self.stylizer.reset)  # its latents are from a stale frame
        if now < self._retry_at:
            return self._pass(passthrough)
        t0 = time.perf_counter()
        fut = self._worker.submit(run)
        deadline = self.deadline_s
        try:
            out = fut.result(timeout=deadline)
        except FutureTimeout:
            self.stalls += 1
            self._busy, self._busy_since = fut, now
            self._last_stall_note = self._clock()
            log.warning("stylizer stalled (no frame within %.1f s): passing framed frames through until it answers",
                        deadline)
            return self._pass(passthrough)
        except BaseException as e:
            if not _is_transient(e):
                raise
            self._failed(e, self._clock())
            return self._pass(passthrough)
        self._times.append(time.perf_counter() - t0)
        if self._failures_in_a_row:
            log.warning("stylizer recovered: stylizing again")
            self._failures_in_a_row = 0
        self.last_ok = True
        return out

    def _pass(self, passthrough: Callable[[], np.ndarray]) -> np.ndarray:
        self.last_ok = False
        self.passed_through += 1
        return passthrough()

    def _failed(self, exc: BaseException, now: float) -> None:
        if not _is_transient(exc):
            raise exc
        self.failures += 1
        self._failures_in_a_row += 1
        pause = min(self.cooldown_s * 2 ** (self._failures_in_a_row - 1), self.max_cooldown_s)
        self._retry_at = now + pause
        what = "out of memory" if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError) else "failed"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        log.warning("stylizer %s (%s: %s): passing framed frames through, retrying in %.0f s", what,
                    type(exc).__name__, first, pause)
        _free_accelerator_memory()
        self._worker.submit(self.stylizer.reset)

    def close(self) -> None:
        """Stop the worker (a stalled call is abandoned on its daemon thread) and close the stylizer."""
        if self._closed:
            return
        self._closed = True
        # a frame still running (e.g. Ctrl-C/SIGTERM arrived while waiting for it) is waited for, within the deadline
        done = self._worker.stop(wait_s=0.0 if self._busy is not None else min(self.deadline_s, 30.0))
        if done:
            self.stylizer.close()
        else:
            log.warning("closing while the stylizer is stalled: abandoning its thread")

    def __enter__(self) -> "GuardedStylizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
