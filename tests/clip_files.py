"""Readers of what an output file holds (video timestamps, decoded frames, audio packets, display matrix) and of what a
writer left behind (:func:`leftovers`): the one copy of each for every test. Builders of ordinary test clips are in
``tests/media_files.py``; the clip of a moving face is ``tests/live_clips.py``'s :func:`make_face_clip`."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
    """Hidden files (the sinks' and atomic writers' temporaries start with a dot) left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))

