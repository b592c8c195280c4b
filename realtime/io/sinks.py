"""Where stylized frames go: a virtual camera (pyvirtualcam), a preview window (OpenCV), a video file (PyAV), or nowhere.

Every sink keeps the :class:`~realtime.io.frames.Sink` contract: HxWx3 uint8 RGB frames at its own size through
``send(frame, timestamp=None)``, ``close()`` and context-manager support. Asking for a sink this machine cannot provide raises
:class:`~realtime.errors.DeviceUnavailable` with the fix in one line. pyvirtualcam and OpenCV are imported lazily.
"""
from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import socket
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np

from realtime.errors import BackendUnavailable, DeviceUnavailable, UsageError
from realtime.io.frames import Sink
from realtime.io.videowriter import VideoFileSink

log = logging.getLogger(__name__)

__all__ = [
    "NullSink", "VirtualCameraSink", "WindowSink", "VideoFileSink", "KEY_ACTIONS", "open_sinks",
    "virtual_camera_status", "virtual_camera_fix", "use_virtual_camera",
]

#: ``factory(width, height, fps, *, fmt, backend, device)`` -> a camera object (``send(frame)``, ``close()``,
#: ``backend``, ``device``) used instead of ``pyvirtualcam.Camera``; set by :func:`use_virtual_camera`.
_vcam_factory: Callable[..., Any] | None = None


@contextlib.contextmanager
def use_virtual_camera(factory: Callable[..., Any]) -> Iterator[None]:
    """A documented seam: while the block runs, :class:`VirtualCameraSink` opens its device with
    ``factory(width, height, fps, fmt=..., backend=..., device=...)`` instead of ``pyvirtualcam.Camera`` (the same
    arguments; the object needs ``send(frame)``, ``close()``, ``backend`` and ``device``). Tests inject virtual
    cameras that fail mid-run; a factory raising is a device that does not open."""
    global _vcam_factory
    previous, _vcam_factory = _vcam_factory, factory
    try:
        yield
    finally:
        _vcam_factory = previous

NO_DISPLAY = "no display for a window: use --output vcam or a file path"


def _check_frame(frame: np.ndarray, width: int, height: int, what: str) -> None:
    if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
        raise UsageError(f"frame for the {what} must be {height}x{width}x3 uint8, got {frame.shape} {frame.dtype}")


class NullSink:
    """``--output none``: frames are counted and dropped."""

    def __init__(self) -> None:
        self.frames = 0

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        self.frames += 1

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- virtual camera -------------------------------------------------------------------------------------------------

def virtual_camera_fix(system: str | None = None) -> str:
    """The one-line fix that makes a virtual camera available on ``system`` (default: this OS)."""
    system = system or platform.system()
    if system == "Linux":
        return ("sudo apt install v4l2loopback-dkms, then "
                "sudo modprobe v4l2loopback exclusive_caps=1 card_label=stylecam")
    return "install OBS Studio (obsproject.com) and start its Virtual Camera once"


def _loopback_devices(sysfs: str = "/sys/devices/virtual/video4linux") -> list[str]:
    """v4l2loopback nodes (registered as virtual devices) as ``/dev/videoN (label)``."""
    root = Path(sysfs)
    if not root.is_dir():
        return []
    found = []
    for node in sorted(root.glob("video*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
        try:
            label = (node / "name").read_text().strip()
        except OSError:
            label = ""
        found.append(f"/dev/{node.name}" + (f" ({label})" if label else ""))
    return found


def virtual_camera_status(probe: bool | None = None) -> tuple[bool, str]:
    """``(available, line)`` for ``stylecam doctor``/``devices``: the backend and its devices, or the fix.

    Linux reads the v4l2loopback devices from sysfs (nothing opened). Elsewhere, with ``probe`` (the default there), a
    tiny virtual camera is opened and closed to find out whether the OBS Virtual Camera is installed.
    """
    try:
        from pyvirtualcam import camera as vcam
    except ImportError:
        return False, "pyvirtualcam is not installed: pip install pyvirtualcam"
    backends = sorted(vcam.BACKENDS)
    if not backends:
        return False, f"pyvirtualcam has no virtual camera backend for {platform.system()}"
    if platform.system() == "Linux":
        devices = _loopback_devices()
        if devices:
            return True, f"v4l2loopback: {', '.join(devices)}"
        return False, f"no v4l2loopback device: {virtual_camera_fix('Linux')}"
    if probe is False:
        return True, f"backends {', '.join(backends)} (not opened)"
    try:
        import pyvirtualcam

        with pyvirtualcam.Camera(64, 64, 5) as cam:
            return True, f"{cam.backend}: {cam.device}"
    except Exception as e:
        log.debug("virtual camera probe failed: %s", e)
        return False, f"no virtual camera: {virtual_camera_fix()}"


class VirtualCameraSink:
    """A virtual camera that video-call apps see as a webcam (pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera
    on Windows/macOS). Frames: HxWx3 uint8 RGB at ``width`` x ``height``. The caller paces itself (no sleeping here).
    ``backend``/``device`` pick a pyvirtualcam backend and device (``/dev/video10``, ``OBS Virtual Camera``)."""

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30, backend: str | None = None,
                 device: str | None = None) -> None:
        if width <= 0 or height <= 0 or not fps or fps <= 0:
            raise UsageError(f"virtual camera needs a positive size and fps, got {width}x{height} at {fps!r}")
        try:
            import pyvirtualcam
            from pyvirtualcam import camera as vcam
        except ImportError as e:
            raise BackendUnavailable("pyvirtualcam is not installed: pip install pyvirtualcam") from e
        factory = _vcam_factory or pyvirtualcam.Camera
        backends = sorted(vcam.BACKENDS) if _vcam_factory is None else [backend or "injected"]
        if backend is not None and backend not in backends:
            raise UsageError(
                f"virtual camera backend {backend!r} is not available on {platform.system()}: "
                f"use {' or '.join(backends) or 'none (no backend for this OS)'}"
            )
        if not backends:
            raise DeviceUnavailable(f"pyvirtualcam has no virtual camera backend for {platform.system()}")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        try:
            self._cam = factory(self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                            backend=backend, device=device)
        except Exception as e:  # pyvirtualcam reports every backend failure as RuntimeError (ValueError for args)
            raise DeviceUnavailable(_vcam_error(e, device)) from e
        self.backend, self.device = self._cam.backend, self._cam.device
        self.frames = 0
        log.info("virtual camera %s (%s) %dx%d at %g fps", self.device, self.backend, self.width, self.height,
                 self.fps)

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        _check_frame(frame, self.width, self.height, "virtual camera")
        self._cam.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        cam, self._cam = getattr(self, "_cam", None), None
        if cam is not None:
            cam.close()

    def __enter__(self) -> "VirtualCameraSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _vcam_error(exc: BaseException, device: str | None) -> str:
    reason = " ".join(str(exc).split())
    reason = re.sub(r"'[\w-]+' backend: ", "", reason)
    fix = virtual_camera_fix()
    if "No v4l2 loopback device found" in reason:
        return f"no virtual camera device (v4l2loopback is not loaded): {fix}"
    if device and "does not exist" in reason:
        return f"virtual camera device {device} does not exist: {fix}"
    reason = reason.split(". ")[0][:160]
    return f"virtual camera unavailable ({reason}): {fix}"


# --- preview window -------------------------------------------------------------------------------------------------

def _x_display_reachable(display: str) -> bool:
    """Whether an X server answers at ``display`` (``:0``, ``unix:1``, ``localhost:10.0``, a socket path)."""
    m = re.fullmatch(r"(?P<host>.*):(?P<num>\d+)(\.\d+)?", display)
    if not m:
        return False
    host, num = m["host"], int(m["num"])
    if host.startswith("/"):  # XQuartz launchd socket
        return os.path.exists(display)
    if host in ("", "unix"):
        for address in (f"/tmp/.X11-unix/X{num}", f"\0/tmp/.X11-unix/X{num}"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                try:
                    sock.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        socket.create_connection((host, 6000 + num), timeout=1.0).close()
        return True
    except OSError:
        return False


def _check_display() -> None:
    """:class:`DeviceUnavailable` when a window cannot open. On Linux this is checked before OpenCV tries: its Qt
    backend aborts the whole process (not an exception) when the X display cannot be reached."""
    if not sys.platform.startswith("linux"):
        return
    display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if display:
        if not _x_display_reachable(display):
            raise DeviceUnavailable(f"no display for a window (X display {display} does not answer): use --output "
                                    f"vcam or a file path")
        return
    if not wayland:
        raise DeviceUnavailable(NO_DISPLAY)
    import cv2

    platforms = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms"
    if platforms.is_dir() and not any("wayland" in p.name for p in platforms.iterdir()):
        raise DeviceUnavailable("no display for a window (this OpenCV needs X11: start XWayland or set DISPLAY): "
                                "use --output vcam or a file path")


KEY_ACTIONS: dict[str, str] = {
    "q": "quit", "\x1b": "quit", "m": "mirror", "n": "next_style", "p": "prev_style", "f": "framing",
    "b": "blend", "o": "overlay", " ": "bypass", "k": "blank", "r": "region", "g": "background",
}


class WindowSink:
    """A preview window (OpenCV HighGUI). Frames: HxWx3 uint8 RGB (converted to BGR here).

    Keys become action names (:data:`KEY_ACTIONS`: q/Esc quit, m mirror, n/p next/previous style, f framing, b blend,
    o overlay, space bypass, k blank, r region, g background); closing the window is ``"quit"``. Each action is passed to ``on_key`` as it is
    seen and returned by :meth:`poll`. :meth:`set_overlay` sets text lines (fps, latency) drawn over the next frames;
    an empty list draws nothing. ``gui`` replaces ``cv2`` for the HighGUI calls (tests).
    """

    def __init__(self, title: str = "stylecam", width: int = 1280, height: int = 720,
                 on_key: Callable[[str], None] | None = None, gui: Any = None) -> None:
        if width <= 0 or height <= 0:
            raise UsageError(f"window size must be positive, got {width}x{height}")
        if gui is None:
            _check_display()
            import cv2

            gui = cv2
        self.title, self.width, self.height = title, int(width), int(height)
        self.on_key = on_key
        self._gui = gui
        self._actions: deque[str] = deque()
        self._overlay: list[str] = []
        self._shown = False
        self._closed = False
        try:
            gui.namedWindow(title, getattr(gui, "WINDOW_NORMAL", 0) | getattr(gui, "WINDOW_KEEPRATIO", 0))
            gui.resizeWindow(title, self.width, self.height)
        except Exception as e:  # cv2.error: no display, or an OpenCV built without GUI support
            raise DeviceUnavailable(NO_DISPLAY) from e

    def set_overlay(self, lines: list[str] | None) -> None:
        self._overlay = [str(line) for line in (lines or [])]

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        import cv2

        _check_frame(frame, self.width, self.height, "window")
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if self._overlay:
            scale = max(self.height / 720, 0.4) * 0.7
            step = int(32 * scale / 0.7)
            for i, line in enumerate(self._overlay):
                org = (12, step * (i + 1))
                cv2.putText(bgr, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
                cv2.putText(bgr, line, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
        self._gui.imshow(self.title, bgr)
        self._shown = True
        self._pump()

    def _pump(self) -> None:
        key = self._gui.waitKey(1)
        found: list[str] = []
        if key is not None and key >= 0:
            action = KEY_ACTIONS.get(chr(key & 0xFF).lower())
            if action:
                found.append(action)
        if self._shown:
            try:
                visible = self._gui.getWindowProperty(self.title, getattr(self._gui, "WND_PROP_VISIBLE", 4))
            except Exception:
                visible = 0
            if visible is not None and visible < 1:
                found.append("quit")
        for action in found:
            self._actions.append(action)
            if self.on_key is not None:
                self.on_key(action)

    def poll(self) -> list[str]:
        """Process window events; the actions seen since the last call, oldest first."""
        if not self._closed:
            self._pump()
        out = list(self._actions)
        self._actions.clear()
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._gui.destroyWindow(self.title)
            self._gui.waitKey(1)
        except Exception:
            log.debug("closing the window failed", exc_info=True)

    def __enter__(self) -> "WindowSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- from --output values -------------------------------------------------------------------------------------------

def open_sinks(
    specs: list[str],
    width: int,
    height: int,
    fps: float,
    *,
    overwrite: bool = False,
    codec: str | None = None,
    crf: int | None = 18,
    pix_fmt: str = "yuv420p",
    vcam_backend: str | None = None,
    vcam_device: str | None = None,
    on_key: Callable[[str], None] | None = None,
    title: str = "stylecam",
) -> list[Sink]:
    """Sinks for ``--output`` values: ``vcam``, ``window``, ``none`` or a file path (all at ``width`` x ``height``).
    File sinks expect ``send(frame, timestamp)`` with capture times (a live recording keeps real time).

    When one cannot be opened, those already opened are closed (file sinks aborted: no files left) and the error
    propagates.
    """
    if not specs:
        raise UsageError("--output needs at least one of vcam, window, none or a file path")
    keys = [s.strip() for s in specs]
    if len(set(keys)) != len(keys):
        raise UsageError(f"--output given twice: {', '.join(sorted({k for k in keys if keys.count(k) > 1}))}")
    if "none" in keys and len(keys) > 1:
        raise UsageError("--output none cannot be combined with other outputs")
    sinks: list[Sink] = []
    try:
        for key in keys:
            if key == "none":
                sinks.append(NullSink())
            elif key == "vcam":
                sinks.append(VirtualCameraSink(width, height, fps, backend=vcam_backend, device=vcam_device))
            elif key == "window":
                sinks.append(WindowSink(title, width, height, on_key=on_key))
            else:
                # A live recording: frames carry capture times and some are dropped, so the rate varies.
                sinks.append(VideoFileSink(Path(key).expanduser(), width, height, fps, codec=codec, crf=crf,
                                           pix_fmt=pix_fmt, overwrite=overwrite, variable_rate=True))
    except BaseException:
        for sink in reversed(sinks):
            try:
                sink.abort() if isinstance(sink, VideoFileSink) else sink.close()
            except Exception:
                log.debug("closing a sink after a failed open failed", exc_info=True)
        raise
    return sinks
