"""Where the live loop and the web server meet (:class:`PanelHub`).

The loop's thread calls :meth:`PanelHub.poll` (the hub is a :class:`~realtime.pipeline.controls.CommandSource`),
:meth:`PanelHub.on_frame` after each delivered frame and :meth:`PanelHub.applied` after each command (the session's
``on_applied``). The server's threads call :meth:`PanelHub.submit`, :meth:`PanelHub.state` and
:meth:`PanelHub.preview`. What crosses threads: a queue of commands, a state dict replaced whole (never mutated), and
the latest JPEG of each side.

The frame thread's cost per frame: a few counters, a state snapshot every ``state_every_s`` and, while a client
watches (:meth:`PanelHub.watch`), at most ``preview_fps`` times a second and only when the encoder is idle, a strided copy of the output (and input) at about
``preview_width`` pixels wide. Resizing and JPEG encoding happen on the encoder's own thread; a frame that arrives while
it is busy is simply not previewed (counted in ``preview_dropped``).
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from realtime.errors import UsageError
from realtime.pipeline.controls import Command, drain, parse_command

if TYPE_CHECKING:
    from realtime.io.frames import Frame
    from realtime.pipeline.live import LiveLoop

log = logging.getLogger(__name__)

SIDES = ("output", "input")
#: Previews are taken only while a client asked for one within this many seconds (nobody watching: no cost at all).
WATCH_S = 2.0


def encode_jpeg(image: np.ndarray, quality: int = 75) -> bytes:
    """HxWx3 uint8 RGB -> JPEG bytes (OpenCV, which releases the GIL while it encodes)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _shrunk(image: np.ndarray, width: int) -> np.ndarray:
    """A contiguous copy of ``image`` taking every n-th pixel so it is at most about ``width`` wide (cheap: no
    filtering; the preview is small)."""
    step = max(1, math.ceil(image.shape[1] / width))
    return np.ascontiguousarray(image[::step, ::step])


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class PanelHub:
    """The panel's side of a live session. ``check_command(cmd) -> cmd`` (optional) refuses commands the panel may
    not send (a LoRA outside the configured folder) with a :class:`UsageError`, or returns the command to queue."""

    def __init__(self, *, preview_fps: float = 10.0, preview_width: int = 480, state_every_s: float = 0.25,
                 check_command: Callable[[Command], Command] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not preview_fps > 0 or preview_width < 16:
            raise UsageError(f"panel preview {preview_fps} fps, {preview_width} px: must be > 0 fps and >= 16 px")
        self.preview_fps, self.preview_width, self.state_every_s = preview_fps, preview_width, state_every_s
        self.check_command = check_command
        self._clock = clock
        self._queue: queue.Queue[Command] = queue.Queue()
        self._replies: dict[int, tuple[Command, Future[str | None]]] = {}
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"live": False, "settings": {}, "stats": {}, "history": []}
        self._jpeg: dict[str, tuple[int, bytes | None]] = {side: (0, None) for side in SIDES}
        self.want_input = False
        self._wanted = -math.inf  # when a client last asked for previews (:meth:`watch`)
        self.preview_dropped = self.previews = 0
        self._loop: LiveLoop | None = None
        self._last_state = self._last_preview = -math.inf
        self._deliveries: deque[float] = deque(maxlen=120)
        self._latencies: deque[float] = deque(maxlen=300)
        self._history: deque[tuple[float, float]] = deque(maxlen=60)
        self._history_t = -math.inf
        self._slot: tuple[np.ndarray, np.ndarray | None] | None = None
        self._wake = threading.Event()
        self._stopped = False
        self._encoder = threading.Thread(target=self._encode_loop, name="stylecam-panel-preview", daemon=True)
        self._encoder.start()

    # ------------------------------------------------------------------------------------------ the loop's side
    def attach(self, loop: LiveLoop) -> None:
        """Serve ``loop``: its frames feed the preview and the statistics, its session reports applied commands."""
        self._loop = loop
        loop.on_frame = self.on_frame
        loop.session.on_applied = self.applied
        self._state = self._snapshot(loop)

    def poll(self) -> list[Command]:
        return drain(self._queue)

    def applied(self, cmd: Command, error: str | None) -> None:
        with self._lock:
            entry = self._replies.pop(id(cmd), None)
        if entry is not None and entry[0] is cmd:
            entry[1].set_result(error)
            if self._loop is not None:  # the answer's state shows the change at once
                self._state = self._snapshot(self._loop)

    def on_frame(self, loop: LiveLoop, frame: Frame, out: np.ndarray) -> None:
        now = self._clock()
        self._deliveries.append(now)
        if loop.delivered > 2:  # the first frames waited through the warm-up: not the session's latency
            self._latencies.append(time.perf_counter() - frame.arrived)
        if now - self._last_preview >= 1.0 / self.preview_fps and now - self._wanted < WATCH_S:
            if self._slot is None:
                self._last_preview = now
                self._slot = (_shrunk(out, self.preview_width),
                              _shrunk(frame.image, self.preview_width) if self.want_input else None)
                self._wake.set()
            else:
                self.preview_dropped += 1
        if now - self._last_state >= self.state_every_s:
            self._last_state = now
            if now - self._history_t >= 1.0:
                self._history_t = now
                self._history.append((now, self._fps()))
            self._state = self._snapshot(loop)

    def _fps(self) -> float:
        d = self._deliveries
        if len(d) < 2 or d[-1] <= d[0]:
            return 0.0
        return (len(d) - 1) / (d[-1] - d[0])

    def _snapshot(self, loop: LiveLoop) -> dict[str, Any]:
        s, p = loop.session, loop.processor
        st, t = s.style, s.style.temporal
        pending = s.pending_style
        settings = {
            "style": st.name, "passthrough": st.passthrough, "prompt": st.prompt, "negative": st.negative_prompt,
            "strength": st.strength, "control": st.control_scale, "guidance": st.guidance,
            "loras": [str(x) for x in st.loras], "blend": t.blend, "motion_adaptive": t.motion_adaptive,
            "motion_threshold": t.motion_threshold, "similarity": t.similarity_filter,
            "similarity_threshold": t.similarity_threshold, "max_skips": t.max_skips, "mirror": p.mirror,
            "framing": p.framing, "mode": p.mode, "overlay": s.overlay, "model": p.stylizer is not None,
            "pending": None if pending is None else pending.name,
        }
        lat = [1e3 * x for x in self._latencies]
        src = loop.source.stats
        now = self._clock()
        stats = {
            "delivered": loop.delivered, "fps": round(self._fps(), 2), "input_fps": round(src.fps, 2),
            "latency_p50_ms": _percentile(lat, 50), "latency_p99_ms": _percentile(lat, 99), "dropped": src.dropped,
            "skipped": p.skipped, "passed_through": p.passed_through, "commands_applied": s.applied,
            "stages_ms": {k: round(v, 2) for k, v in p.times.means().items()},
            "preview_dropped": self.preview_dropped, "previews": self.previews,
        }
        history = [[round(tt - now, 1), round(f, 2)] for tt, f in self._history]
        return {"live": True, "settings": settings, "stats": stats, "history": history}

    # ----------------------------------------------------------------------------------------- the server's side
    @property
    def live(self) -> bool:
        return self._loop is not None

    def state(self) -> dict[str, Any]:
        """The latest snapshot: ``{"live", "settings", "stats", "history"}`` (a dict nobody mutates)."""
        return self._state

    def submit(self, text: str) -> Future[str | None]:
        """Parse a command line exactly as stdin does and queue it for the loop; the future gets None once applied,
        or the reason it was not. :class:`UsageError` for a line that does not parse (or that the panel refuses)."""
        if not isinstance(text, str) or "\n" in text.strip():
            raise UsageError("command: expected one line of text")
        cmd = parse_command(text, "panel")
        if cmd is None:
            raise UsageError("command: empty")
        if self._loop is None:
            raise UsageError("no live session: start `stylecam live --panel` to send commands")
        if self.check_command is not None:
            cmd = self.check_command(cmd)
        fut: Future[str | None] = Future()
        with self._lock:
            self._replies[id(cmd)] = (cmd, fut)
        self._queue.put(cmd)
        return fut

    def forget(self, fut: Future[str | None]) -> None:
        """Drop the reply slot of a request that stopped waiting."""
        with self._lock:
            for key, (_, f) in list(self._replies.items()):
                if f is fut:
                    del self._replies[key]

    def watch(self) -> None:
        """A client wants previews (the WebSocket calls it while connected, a preview request once)."""
        self._wanted = self._clock()

    def preview(self, side: str = "output") -> tuple[int, bytes | None]:
        """``(sequence number, JPEG bytes or None)`` of the latest preview of ``side`` (``output`` or ``input``)."""
        return self._jpeg[side]

    # ------------------------------------------------------------------------------------------- the encoder
    def _encode_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
            slot = self._slot
            if slot is None:
                continue
            try:
                for side, image in zip(SIDES, slot, strict=True):
                    if image is not None:
                        seq = self._jpeg[side][0] + 1
                        self._jpeg[side] = (seq, encode_jpeg(image))
                self.previews += 1
            except Exception:  # a preview must never take the session down
                log.debug("preview encoding failed", exc_info=True)
            finally:
                self._slot = None

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        with self._lock:
            replies, self._replies = list(self._replies.values()), {}
        for _, fut in replies:
            if not fut.done():
                fut.set_result("the live session ended")
        if self._loop is not None:
            self._loop.session.on_applied = None
