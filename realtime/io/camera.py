"""The camera source: a camera read on its own thread (the newest frame wins, stale ones dropped and counted), with
reconnects; and the camera list of ``stylecam devices``.

:class:`CameraSource` keeps the :class:`~realtime.io.frames.FrameSource` contract: :class:`~realtime.io.frames.Frame`
objects whose ``image`` is HxWx3 uint8 RGB (converted once, on the capture thread). OpenCV is imported lazily.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from realtime.errors import DeviceUnavailable, UsageError
from realtime.geometry import Size
from realtime.io.frames import FpsMeter, Frame, Mailbox, SourceStats
from realtime.io.media import quiet_opencv

log = logging.getLogger(__name__)

__all__ = ["CameraSource", "CameraLost", "CameraInfo", "CameraMode", "list_cameras"]


class CameraLost(RuntimeError):
    """The camera stopped delivering frames and did not come back after the reconnect attempts (exit code 1)."""


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a camera source uses (tests pass a fake through ``opener``). ``read()``
    returns ``(ok, image)`` with ``image`` HxWx3 BGR (or BGRA, or HxW grey) uint8; ``get``/``set`` take ``CAP_PROP_*``
    numbers. Called from one thread at a time."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


Opener = Callable[[int | str], Capture | None]


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """An OpenCV capture image (BGR, BGRA or grey, uint8) -> HxWx3 uint8 RGB."""
    import cv2

    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _device_label(device: int | str) -> str:
    return f"index {device}" if isinstance(device, int) else str(device)


def _default_opener(device: int | str) -> Capture:
    """``cv2.VideoCapture`` for an index or a device path (V4L2 by node number on Linux), OpenCV logging silenced."""
    import cv2

    with quiet_opencv():
        if sys.platform.startswith("linux"):
            if isinstance(device, str):
                m = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(device))
                if m:
                    return cv2.VideoCapture(int(m.group(1)), cv2.CAP_V4L2)
                return cv2.VideoCapture(device, cv2.CAP_V4L2)
            return cv2.VideoCapture(device, cv2.CAP_V4L2)
        return cv2.VideoCapture(device)


class CameraSource:
    """A camera read on its own daemon thread; the newest frame wins.

    ``device``: an index or a device path (``/dev/video2``). The requested ``width``x``height``, ``fps`` and MJPG are
    asked for; what the camera really delivers is read back (size) and measured (fps from frame arrival times).
    ``opener(device)`` returns an object with the ``cv2.VideoCapture`` interface (``isOpened/read/set/get/release``):
    the default opens a real camera; tests inject a fake. A camera that fails mid-stream is reopened up to
    ``reconnect_attempts`` times, ``reconnect_delay`` seconds apart; then ``read`` raises :class:`CameraLost`.
    Frames are HxWx3 uint8 RGB; ``Frame.timestamp`` is ``time.perf_counter()`` right after the capture returned.
    """

    def __init__(
        self,
        device: int | str,
        width: int = 1280,
        height: int = 720,
        fps: float = 30,
        mjpg: bool = True,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 0.5,
        opener: Opener | None = None,
    ) -> None:
        for name, value in (("width", width), ("height", height), ("fps", fps)):
            if not value > 0:
                raise UsageError(f"camera {name} must be positive, got {value!r}")
        if reconnect_attempts < 0 or reconnect_delay < 0:
            raise UsageError(
                f"reconnect_attempts and reconnect_delay must be >= 0, got {reconnect_attempts!r}, {reconnect_delay!r}"
            )
        self.device = device
        self.requested = (int(width), int(height), float(fps), bool(mjpg))
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_delay = float(reconnect_delay)
        self._opener = opener or _default_opener
        self._mailbox: Mailbox[Frame] = Mailbox()
        self._meter = FpsMeter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._frames = 0
        self._reconnects = 0
        self._closed = False

        cap = self._open()
        if cap is None:
            raise DeviceUnavailable(f"no camera at {_device_label(device)}: run `stylecam devices` to list cameras")
        image = self._grab(cap)
        if image is None:
            cap.release()
            raise DeviceUnavailable(
                f"camera {_device_label(device)} opened but delivers no frames (in use by another application?)"
            )
        self._cap = cap
        self.size = Size(image.shape[1], image.shape[0])
        reported = float(cap.get(_prop("CAP_PROP_FPS")) or 0.0)
        self._nominal_fps = reported if 0 < reported < 1000 else float(fps)
        if self.size != Size(int(width), int(height)):
            log.info("camera %s delivers %s (asked for %dx%d)", _device_label(device), self.size, width, height)
        self._deliver(image, time.perf_counter())
        self._thread = threading.Thread(target=self._run, name=f"camera-{device}", daemon=True)
        self._thread.start()

    # --- device handling (capture thread) ---
    def _open(self) -> Capture | None:
        try:
            cap = self._opener(self.device)
        except Exception as e:  # an opener raising is the same as a camera that does not open
            log.debug("opening camera %s failed: %s", self.device, e)
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        width, height, fps, mjpg = self.requested
        # V4L2 wants the pixel format before the size, the size before the rate.
        if mjpg:
            cap.set(_prop("CAP_PROP_FOURCC"), float(_fourcc("MJPG")))
        cap.set(_prop("CAP_PROP_FRAME_WIDTH"), float(width))
        cap.set(_prop("CAP_PROP_FRAME_HEIGHT"), float(height))
        cap.set(_prop("CAP_PROP_FPS"), float(fps))
        return cap

    @staticmethod
    def _grab(cap: Capture) -> np.ndarray | None:
        try:
            ok, image = cap.read()
        except Exception as e:
            log.debug("camera read raised: %s", e)
            return None
        if not ok or image is None or getattr(image, "size", 0) == 0:
            return None
        return image

    def _deliver(self, image: np.ndarray, t: float) -> None:
        rgb = _to_rgb(image)
        with self._lock:
            index = self._frames
            self._frames += 1
            self._meter.tick(t)
        self._mailbox.put(Frame(rgb, t, index, arrived=t))

    def _reconnect(self) -> Capture | None:
        label = _device_label(self.device)
        self._cap.release()
        for attempt in range(1, self.reconnect_attempts + 1):
            log.warning("camera %s stopped delivering frames: reconnect attempt %d/%d", label, attempt,
                        self.reconnect_attempts)
            if self._stop.wait(self.reconnect_delay):
                return None
            cap = self._open()
            if cap is None:
                continue
            image = self._grab(cap)
            if image is None:
                cap.release()
                continue
            with self._lock:
                self._reconnects += 1
            log.warning("camera %s is back", label)
            self._cap = cap
            self._deliver(image, time.perf_counter())
            return cap
        return None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                image = self._grab(self._cap)
                t = time.perf_counter()
                if image is not None:
                    self._deliver(image, t)
                    continue
                if self._stop.is_set():
                    break
                if self._reconnect() is None:
                    if not self._stop.is_set():
                        self._mailbox.finish(CameraLost(
                            f"camera {_device_label(self.device)} was lost and did not come back after "
                            f"{self.reconnect_attempts} reconnect attempts: check the cable and that no other "
                            f"application took it"
                        ))
                    return
        except BaseException as e:  # never die silently: the consumer's read() re-raises it
            log.debug("camera thread failed", exc_info=True)
            self._mailbox.finish(e)
        finally:
            self._mailbox.finish()

    # --- consumer side ---
    @property
    def fps(self) -> float:
        """Measured frame rate (from arrival times, once a few frames came in; the camera's reported rate before)."""
        with self._lock:
            measured, samples = self._meter.fps(), self._meter.samples
        return measured if samples >= 5 and measured > 0 else self._nominal_fps

    @property
    def stats(self) -> SourceStats:
        with self._lock:
            return SourceStats(frames=self._frames, dropped=self._mailbox.dropped, reconnects=self._reconnects,
                               fps=self._meter.fps())

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet read (waits for one). ``None`` after ``close()``; raises :class:`CameraLost` when
        the camera is gone, ``TimeoutError`` when no frame came within ``timeout`` seconds."""
        return self._mailbox.get(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._mailbox.finish()
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.warning("camera thread did not stop within 2 s; releasing the camera anyway")
        try:
            self._cap.release()
        except Exception:  # releasing twice or a dead device: nothing left to do
            log.debug("camera release failed", exc_info=True)

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prop(name: str) -> int:
    import cv2

    return int(getattr(cv2, name))


def _fourcc(code: str) -> int:
    import cv2

    return int(cv2.VideoWriter_fourcc(*code))


@dataclass(frozen=True)
class CameraMode:
    width: int
    height: int
    fps: float


@dataclass(frozen=True)
class CameraInfo:
    """A camera for ``stylecam devices``: ``index`` (what ``--source`` takes), device ``path`` (Linux), ``name``,
    the ``modes`` probed cheaply (size set and read back, no frames grabbed), and ``virtual`` (a loopback device)."""

    index: int
    path: str | None
    name: str
    modes: tuple[CameraMode, ...] = ()
    virtual: bool = False


_PROBE_SIZES = ((640, 480), (1280, 720), (1920, 1080))


def _probe_modes(cap: Capture) -> tuple[CameraMode, ...]:
    modes: list[CameraMode] = []
    for w, h in _PROBE_SIZES:
        cap.set(_prop("CAP_PROP_FRAME_WIDTH"), float(w))
        cap.set(_prop("CAP_PROP_FRAME_HEIGHT"), float(h))
        got = (int(cap.get(_prop("CAP_PROP_FRAME_WIDTH"))), int(cap.get(_prop("CAP_PROP_FRAME_HEIGHT"))))
        if got == (w, h):
            modes.append(CameraMode(w, h, round(float(cap.get(_prop("CAP_PROP_FPS")) or 0.0), 2)))
    return tuple(modes)


def list_cameras(
    max_index: int = 10,
    *,
    opener: Opener | None = None,
    sysfs: str | os.PathLike[str] = "/sys/class/video4linux",
) -> list[CameraInfo]:
    """Cameras on this machine (an empty list when there are none), OpenCV's own warnings silenced.

    On Linux the V4L2 nodes under ``sysfs`` are listed (metadata nodes skipped) and each is opened briefly; elsewhere
    indices ``0..max_index-1`` are probed.
    """
    opener = opener or _default_opener
    candidates: list[tuple[int, str | None, str, bool]] = []
    root = Path(sysfs)
    if sys.platform.startswith("linux") or root != Path("/sys/class/video4linux"):
        if not root.is_dir():
            return []
        for node in sorted(root.glob("video*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
            number = re.sub(r"\D", "", node.name)
            if not number:
                continue
            if _read_text(node / "index") not in ("", "0"):
                continue  # a second node of the same device (UVC metadata), not a capture node
            name = _read_text(node / "name") or node.name
            virtual = "/virtual/" in os.path.realpath(node)
            candidates.append((int(number), f"/dev/{node.name}", name, virtual))
    else:
        candidates = [(i, None, f"camera {i}", False) for i in range(max_index)]

    found: list[CameraInfo] = []
    with quiet_opencv():
        for index, path, name, virtual in candidates:
            try:
                cap = opener(index)
            except Exception:
                log.debug("probing camera %s failed", index, exc_info=True)
                continue
            try:
                if cap is None or not cap.isOpened():
                    continue
                found.append(CameraInfo(index, path, name, _probe_modes(cap), virtual))
            finally:
                if cap is not None:
                    cap.release()
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
