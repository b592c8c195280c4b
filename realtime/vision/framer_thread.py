"""Face framing off the frame thread: detection on its own thread, on a downscaled copy, its window applied to the
next frame (docs/design.md §5).

:class:`ThreadedFramer` is a :class:`~realtime.vision.protocols.Framer`: ``update(rgb, t)`` hands the frame to the
detection thread (the newest frame wins when it is still busy: a frame it never saw is counted in ``skipped``) and
returns the window of the previous frame's detection, predicted forward to ``t`` from the tracker's smoothed velocity
(:meth:`~realtime.vision.framing.FaceTracker.predict`), scaled back to the frame. With ``wait=True`` (the default)
an update first waits for the previous frame's detection to finish: exactly one frame behind, so the result never
depends on thread timing, and detection of frame N overlaps everything else the frame thread does for frame N (the
step): the frame thread waits only when detection is the slowest stage. ``wait=False`` never waits (the newest
finished detection, possibly older).

The inner framer (a :class:`~realtime.vision.face.FaceFramer`) is made for the downscaled size
(:func:`detection_size`) and is only ever called on the detection thread, under a lock that :meth:`mirror` and
``enabled`` take too.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from realtime.geometry import CropWindow, Size, centre_window, clamp_window

log = logging.getLogger(__name__)

#: Frames wider than this are downscaled (by a whole-frame area resize on the detection thread) before detection.
DETECT_WIDTH = 640


def detection_size(frame: Size, width: int = DETECT_WIDTH) -> Size:
    """The size detection runs at: ``frame`` scaled to at most ``width`` wide (never enlarged)."""
    if frame.width <= width:
        return frame
    s = width / frame.width
    return Size(width, max(1, round(frame.height * s)))


class ThreadedFramer:
    """Runs ``make(detection_size(frame))`` (a framer for the small size) on its own thread. See the module docstring.

    frame: the camera frame size; aspect: the window's aspect (model w/h); make: builds the inner framer for a size;
    wait: wait for the previous frame's detection on every update (one frame behind, deterministic; default).
    """

    def __init__(self, frame: Size, aspect: float, make: Callable[[Size], Any], *, wait: bool = True) -> None:
        self.frame, self.aspect, self.wait = frame, float(aspect), wait
        self.small = detection_size(frame)
        self.scale = frame.width / self.small.width  # frame pixels per detection pixel
        self.inner = make(self.small)
        self._lock = threading.Lock()  # the inner framer: one caller at a time
        self._cv = threading.Condition()
        self._pending: tuple[np.ndarray, float] | None = None
        self._busy = False
        self._stop = False
        self._error: BaseException | None = None
        self._window = centre_window(frame, self.aspect)
        self.skipped = 0  # frames replaced by a newer one before detection saw them
        self.detected = 0  # frames detection ran on
        self._thread = threading.Thread(target=self._run, name="stylecam-face", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ Framer protocol
    @property
    def enabled(self) -> bool:
        return bool(self.inner.enabled)

    @enabled.setter
    def enabled(self, on: bool) -> None:
        with self._lock:
            self.inner.enabled = on

    @property
    def faces(self) -> list[Any]:
        """The last detection's faces, in frame pixels."""
        s = self.scale
        return [type(f)(f.x * s, f.y * s, f.w * s, f.h * s, f.score, tuple((x * s, y * s) for x, y in f.keypoints))
                for f in getattr(self.inner, "faces", [])]

    @property
    def roll_deg(self) -> float:
        return float(getattr(self.inner, "roll_deg", 0.0))

    def mirror(self) -> None:
        """The frames start (or stop) arriving mirrored: the framing state flips with them (after any detection in
        flight, which saw the frame the old way)."""
        self._drain()
        with self._lock:
            self.inner.mirror()
            self._window = self._scaled(self.inner.tracker.window)

    def update(self, rgb: np.ndarray, timestamp_s: float) -> CropWindow:
        """Hand ``rgb`` (H, W, 3) uint8 of the frame size to detection; return the latest window predicted to
        ``timestamp_s``. An error on the detection thread is raised here (on the next update)."""
        if self.wait:
            self._drain()
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        with self._cv:
            if self._pending is not None:
                self.skipped += 1
            self._pending = (rgb, float(timestamp_s))
            self._cv.notify()
        with self._lock:
            tracker = getattr(self.inner, "tracker", None)
            if tracker is None or not self.inner.enabled:
                return self._window
            return self._scaled(tracker.predict(float(timestamp_s)))

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5.0)
        with self._lock:
            self.inner.close()

    def __enter__(self) -> "ThreadedFramer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------- the thread
    def _drain(self) -> None:
        """Wait until the detection thread has nothing pending and nothing running."""
        with self._cv:
            while (self._pending is not None or self._busy) and not self._stop and self._thread.is_alive():
                self._cv.wait(timeout=1.0)

    def _scaled(self, win: CropWindow) -> CropWindow:
        s = self.scale
        return clamp_window(CropWindow(win.x * s, win.y * s, win.w * s, win.h * s), self.frame)

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        if self.small == self.frame:
            return rgb
        import cv2

        return cv2.resize(np.ascontiguousarray(rgb), (self.small.width, self.small.height),
                          interpolation=cv2.INTER_AREA)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                rgb, t = self._pending  # type: ignore[misc]
                self._pending, self._busy = None, True
            try:
                small = self._small(rgb)
                with self._lock:
                    win = self.inner.update(small, t)
                    self._window = self._scaled(win)
                self.detected += 1
            except BaseException as e:  # noqa: BLE001 - handed to the frame thread
                log.debug("face detection failed", exc_info=True)
                self._error = e
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
