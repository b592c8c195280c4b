"""A frame source from a ``--source`` value: a camera (index or device path) or a video file.

The one place that knows both kinds; it imports :mod:`realtime.io.camera` and :mod:`realtime.io.videofile`, which know
nothing of each other (both build on :mod:`realtime.io.frames`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from realtime.errors import DeviceUnavailable, InputNotFound, UsageError
from realtime.io.camera import CameraSource, Opener
from realtime.io.frames import FrameSource
from realtime.io.videofile import FileSource

__all__ = ["open_source"]


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
        if isinstance(device, str) and not os.path.exists(device):
            raise DeviceUnavailable(f"no camera at {device}: run `stylecam devices` to list cameras")
        return CameraSource(device, width=width, height=height, fps=fps, mjpg=mjpg, opener=opener)
    if Path(text).expanduser().exists():
        return FileSource(Path(text).expanduser(), paced=paced, start=start, end=end)
    raise InputNotFound(
        f"no such file or camera: {text!r} (use a camera index like 0, a device path like /dev/video0, or a video file)"
    )
