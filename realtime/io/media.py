"""Small shared helpers for PyAV and OpenCV: open an input with one-line errors, honour display rotation, quiet OpenCV.

Used by :mod:`realtime.io.camera` and :mod:`realtime.io.videofile` (reading) and :mod:`realtime.io.audio` (audio copy).
Images are numpy arrays, HxWx3, uint8, RGB. PyAV and OpenCV are imported inside the functions so importing this module
stays cheap.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from realtime.errors import BadInputFile, InputNotFound

log = logging.getLogger(__name__)

# PyAV names demuxers of single still images like this; such files open as a one-frame "video".
_IMAGE_DEMUXERS = {"image2", "apng", "webp"}


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own logging (camera probing prints warnings to stderr) inside the block."""
    import cv2

    logging_mod = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_mod is None:  # pragma: no cover - very old OpenCV
        yield
        return
    previous = logging_mod.getLogLevel()
    logging_mod.setLogLevel(logging_mod.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_mod.setLogLevel(previous)


def _ffmpeg_reason(exc: BaseException) -> str:
    """The FFmpeg message of a PyAV error without the errno and file name decorations."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().rstrip(".").lower() or type(exc).__name__


def open_input(path: str | os.PathLike[str], *, need_video: bool = True) -> Any:
    """Open a media file with PyAV for reading, turning every failure into a one-line project error.

    Missing -> :class:`InputNotFound`; a directory, not a media file, a truncated or corrupt container, a still image,
    or (with ``need_video``) no video stream -> :class:`BadInputFile`. Returns an ``av.container.InputContainer``.
    """
    import av

    p = Path(path)
    if not p.exists():
        raise InputNotFound(f"no such file: {p}")
    if p.is_dir():
        raise BadInputFile(f"{p} is a directory, not a video file")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise BadInputFile(f"{p} is not a readable video ({_ffmpeg_reason(e)}): truncated, corrupt or not a video") from e
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInputFile(f"{p} cannot be opened as a video ({e})") from e
    try:
        fmt = container.format.name or ""
        if need_video and (fmt in _IMAGE_DEMUXERS or fmt.endswith("_pipe")):
            raise BadInputFile(f"{p} is a still image, not a video: use `stylecam image` for images")
        if need_video and not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise BadInputFile(f"{p} has no video stream (it holds {', '.join(kinds)})")
    except BaseException:
        container.close()
        raise
    return container


# --- display orientation -------------------------------------------------------------------------------------------

def _matrix_ops(m: tuple[int, ...]) -> tuple[str, ...]:
    """The operations that display a frame with FFmpeg display matrix ``m`` (9 ints, 16.16 fixed point), following the
    ffmpeg command line's autorotate rules (fftools: transpose/hflip/vflip by the matrix's rotation and signs)."""
    a, b, c, d = (x / 65536.0 for x in (m[0], m[1], m[3], m[4]))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0 or s1 == 0:
        return ()
    # av_display_rotation_get() is -atan2(b, a) (counter-clockwise degrees); ffmpeg's get_rotation negates it again.
    theta = round(math.degrees(math.atan2(b / s1, a / s0)))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return ("transpose",) if m[3] > 0 else ("clock",)  # transpose=cclock_flip is the plain transpose
    if abs(theta - 180) < 1:
        return tuple(op for op, on in (("hflip", m[0] < 0), ("vflip", m[4] < 0)) if on)
    if abs(theta - 270) < 1:
        return ("antitranspose",) if m[3] < 0 else ("cclock",)
    if abs(theta) < 1:
        return ("vflip",) if m[4] < 0 else ()
    log.warning("display rotation of %s degrees is not a multiple of 90: ignored", theta)
    return ()


def display_ops(frame: Any, stream: Any) -> tuple[str, ...]:
    """How to turn a decoded frame into what a player shows: from the frame's display matrix side data, else the
    stream's legacy ``rotate`` tag (clockwise degrees). Returns a tuple of op names for :func:`apply_ops`."""
    for sd in getattr(frame, "side_data", None) or ():
        if "DISPLAYMATRIX" in str(getattr(sd, "type", "")).upper():
            raw = bytes(sd)
            if len(raw) >= 36:
                return _matrix_ops(struct.unpack("<9i", raw[:36]))
    tag = (getattr(stream, "metadata", None) or {}).get("rotate")
    if tag:
        try:
            deg = int(float(tag)) % 360
        except ValueError:
            return ()
        return {90: ("clock",), 180: ("hflip", "vflip"), 270: ("cclock",)}.get(deg, ())
    return ()


def apply_ops(image: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """Apply display ops to an HxWxC array; returns a C-contiguous array (a copy only when something changed)."""
    for op in ops:
        if op == "clock":
            image = np.rot90(image, -1)
        elif op == "cclock":
            image = np.rot90(image, 1)
        elif op == "transpose":
            image = image.transpose(1, 0, 2)
        elif op == "antitranspose":
            image = np.rot90(image, -1)[::-1]
        elif op == "hflip":
            image = image[:, ::-1]
        elif op == "vflip":
            image = image[::-1]
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown display op {op!r}")
    return np.ascontiguousarray(image)
