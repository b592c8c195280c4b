"""Helpers for the live tests: a clip of skimage's astronaut moving with known affine motion plus a faceless
stretch (also used by the clip tests), and stand-ins for sinks and command sources. Readers of output files are in
``tests/clip_files.py``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from realtime.geometry import Size
from realtime.io.frames import Frame, SourceStats

FACE_XY = np.array([224.5, 129.5])  # the astronaut's face centre in the 512x512 image
CLIP_SIZE = (192, 144)
CLIP_FPS = 10
FACELESS = range(24, 30)  # frames without a face


def face_x(i: int, n: int) -> float:
    """Where the face centre is in frame ``i`` of ``n``: left to right across the frame."""
    return 55.0 + 80.0 * i / max(n - 1, 1)


def face_frame(astronaut: np.ndarray, i: int, n: int, size: tuple[int, int] = CLIP_SIZE,
               scale: float = 0.36) -> np.ndarray:
    """Frame ``i``: a smooth background with the astronaut scaled by ``scale``, its face centre at ``(face_x, 60)``
    (none in :data:`FACELESS`). HxWx3 uint8 RGB."""
    import cv2

    w, h = size
    bg = np.empty((h, w, 3), np.uint8)
    bg[..., 0] = 70
    bg[..., 1] = np.linspace(60, 150, w, dtype=np.uint8)[None, :]
    bg[..., 2] = np.linspace(150, 60, h, dtype=np.uint8)[:, None]
    if i in FACELESS:
        return bg
    fx, fy = face_x(i, n), 60.0
    m = np.array([[scale, 0, fx - scale * FACE_XY[0]], [0, scale, fy - scale * FACE_XY[1]]])
    cv2.warpAffine(astronaut, m, (w, h), dst=bg, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    return bg


def make_face_clip(path: Path, astronaut: np.ndarray, n: int = 40, rate: int = CLIP_FPS) -> Path:
    """``n`` frames of :func:`face_frame` (the face moves left to right, none in :data:`FACELESS`), H.264 at ``rate``
    fps, no audio: the one face clip of the tests (live, live controls, clip)."""
    import av

    w, h = CLIP_SIZE
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "12"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(face_frame(astronaut, i, n), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


class ListSource:
    """A FrameSource of ``n`` synthetic frames (a moving bar), timestamps at 30 fps."""

    def __init__(self, n: int) -> None:
        self.n, self.i, self.size, self.fps = n, 0, Size(128, 96), 30.0

    def read(self, timeout=None):
        if self.i >= self.n:
            return None
        img = np.full((self.size.height, self.size.width, 3), 60, np.uint8)
        img[:, (self.i * 3) % self.size.width] = 250
        self.i += 1
        return Frame(img, (self.i - 1) / 30.0, self.i - 1)

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self.i)

    def close(self) -> None:
        pass


class CaptureSink:
    """Keeps copies of the frames it is sent."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.timestamps: list[float | None] = []
        self.closed = False

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        self.frames.append(frame.copy())
        self.timestamps.append(timestamp)

    def close(self) -> None:
        self.closed = True


class ScriptedCommands:
    """A command source: ``script[k]`` (a list of commands) is returned by the poll before frame ``k`` is read
    (frame numbers count delivered frames, through ``loop``)."""

    def __init__(self, script: dict[int, list[Any]]) -> None:
        self.script = script
        self.loop: Any = None

    def poll(self) -> list[Any]:
        return self.script.pop(self.loop.delivered, []) if self.loop is not None else []

    def close(self) -> None:
        pass
