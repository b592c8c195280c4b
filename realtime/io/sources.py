"""A frame source from a ``--source`` value: a camera (index or device path) or a video file.

The one place that knows both kinds; it imports :mod:`realtime.io.camera` and :mod:`realtime.io.videofile`, which know
nothing of each other (both build on :mod:`realtime.io.frames`).
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from realtime.errors import DeviceUnavailable, InputNotFound, UsageError
from realtime.io.camera import CameraSource, Opener
from realtime.io.frames import FrameSource
from realtime.io.videofile import FileSource

__all__ = ["open_source", "use_camera_opener"]

_camera_opener: Opener | None = None  # set by use_camera_opener: what opens cameras when open_source gets none


@contextlib.contextmanager
def use_camera_opener(opener: Opener) -> Iterator[None]:
    """A documented seam: while the block runs, cameras that :func:`open_source` opens without an explicit
    ``opener`` (``stylecam live --source 0``) are opened with ``opener(device)`` instead of ``cv2.VideoCapture``. Tests
    inject cameras that fail, stall or vanish mid-run; an embedding application can supply its own capture. The
    opener returns an object with the :class:`~realtime.io.camera.Capture` interface (or None: no camera)."""
    global _camera_opener
    previous, _camera_opener = _camera_opener, opener
    try:
        yield
    finally:
        _camera_opener = previous


def open_source(
    spec: str,
    *,
    width: int = 1280,
    height: int = 720,
    fps: float = 30,
    mjpg: bool = True,
    paced: bool = True,
    start: float | None = None,
    end: float | None = None,
    opener: Opener | None = None,
) -> FrameSource:
    """A source from a ``--source`` value: ``"0"`` -> camera index, ``/dev/...`` -> camera path (``width``, ``height``,
    ``fps``, ``mjpg`` are asked of it; ``opener`` replaces ``cv2.VideoCapture``, for tests), an existing file ->
    :class:`~realtime.io.videofile.FileSource` (``paced`` by default, standing in for a camera; ``start``/``end`` select
    a range). Anything else -> :class:`~realtime.errors.InputNotFound`."""
    text = str(spec).strip()
    if re.fullmatch(r"\d+", text) or text.startswith("/dev/"):
        if start is not None or end is not None:
            raise UsageError("--start/--end apply to video files, not to cameras")
        device: int | str = int(text) if text.isdigit() else text
        if isinstance(device, str) and not os.path.exists(device) and (opener or _camera_opener) is None:
            raise DeviceUnavailable(f"no camera at {device}: run `stylecam devices` to list cameras")
        return CameraSource(device, width=width, height=height, fps=fps, mjpg=mjpg, opener=opener or _camera_opener)
    if Path(text).expanduser().exists():
        return FileSource(Path(text).expanduser(), paced=paced, start=start, end=end)
    raise InputNotFound(
        f"no such file or camera: {text!r} (use a camera index like 0, a device path like /dev/video0, or a video file)"
    )
