"""Helpers for ``tests/test_clip.py``: clips with a real face, and readers of what an output file holds (video
timestamps, decoded frames, audio packets). Builders of ordinary test clips are in ``tests/media_files.py``."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_face_clip(path: Path, face: np.ndarray, n: int = 12, size: tuple[int, int] = (192, 128), rate: int = 25) -> Path:
    """``n`` frames of ``face`` (HxWx3 uint8 RGB, e.g. skimage's astronaut) scaled to the clip height and placed at the
    left edge of a grey canvas, so face framing moves the window away from the centre. H.264, no audio."""
    import av
    import cv2

    w, h = size
    scaled = cv2.resize(face, (h, h), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.full((h, w, 3), 110, np.uint8)
            img[:, :h] = scaled
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def video_pts(path: Path) -> list[float]:
    """Presentation times (seconds, sorted) of the decoded video frames of ``path``."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(f.pts * s.time_base) for f in c.decode(s))


def video_frames(path: Path) -> list[np.ndarray]:
    """Every decoded video frame of ``path`` as HxWx3 uint8 RGB (as stored: no rotation applied)."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def video_end(path: Path) -> float:
    """Where the video stream ends: the last packet's pts + duration, in seconds."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ends = [float((p.pts + (p.duration or 0)) * s.time_base) for p in c.demux(s) if p.pts is not None]
    return max(ends)


def audio_packets(path: Path) -> tuple[str | None, list[tuple[float, bytes]]]:
    """The first audio stream's codec name and its packets as (pts seconds, payload), in order."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None, []
        s = c.streams.audio[0]
        name = s.codec_context.name
        return name, [(float(p.pts * s.time_base), bytes(p)) for p in c.demux(s) if p.size and p.pts is not None]


def audio_seconds(path: Path) -> float:
    """Decoded audio length in seconds (samples / rate) of the first audio stream, 0 without audio."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        s = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(s))
        return samples / s.codec_context.sample_rate


def has_display_matrix(path: Path) -> bool:
    import av

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            return any("DISPLAYMATRIX" in str(getattr(sd, "type", "")).upper() for sd in (f.side_data or ()))
    return False


def leftovers(directory: Path) -> list[str]:
    """Hidden files (the sinks' temporaries start with a dot) left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))

