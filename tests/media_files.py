"""Build small media files for tests with PyAV: clips (optionally with a tone, VFR, rotated), audio-only files,
bad files (truncated, zero frames, a corrupt frame in the middle, text, still image). Deterministic."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_image(i: int, width: int = 160, height: int = 120) -> np.ndarray:
    """Frame ``i`` of a test clip: HxWx3 uint8 RGB; red channel ramps with ``i``, a white marker in the top-left
    quarter (so rotations and flips are visible), the rest a smooth gradient (compresses well, survives x264)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (i * 9) % 200 + 20
    img[..., 1] = np.linspace(40, 160, width, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(40, 160, height, dtype=np.uint8)[:, None]
    img[: height // 4, : width // 4] = 255
    return img


def tone(n_samples: int, rate: int = 48000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(n_samples) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_tone(container, seconds: float, codec: str = "aac", rate: int = 48000) -> None:
    import av

    a = container.add_stream(codec, rate=rate)
    a.layout = "stereo"
    total = int(round(rate * seconds))
    samples = tone(total, rate)
    pos = 0
    packed_s16 = codec in ("pcm_s16le", "flac")
    while pos < total:
        chunk = samples[pos : pos + 1024]
        if packed_s16:
            data = (np.stack([chunk, chunk], axis=1) * 32767).astype(np.int16).reshape(1, -1)
            fr = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        else:
            fr = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        fr.sample_rate = rate
        fr.pts = pos
        for p in a.encode(fr):
            container.mux(p)
        pos += len(chunk)
    for p in a.encode():
        container.mux(p)


def make_clip(
    path: Path,
    n: int = 24,
    size: tuple[int, int] = (160, 120),
    rate: int = 25,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = False,
    audio_codec: str = "aac",
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    hflip: bool = False,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """A clip of ``n`` :func:`frame_image` frames. ``pts``+``time_base``: explicit (VFR) timestamps. ``rotation``:
    display matrix (counter-clockwise degrees, as ``VideoFrame.rotation`` reads it). ``audio``: a 440 Hz stereo tone
    as long as the video (``audio_codec``: aac, libmp3lame, pcm_s16le, flac, libopus)."""
    import av

    w, h = size
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if options:
            s.options = options
        if time_base is not None:
            s.time_base = time_base
            s.codec_context.time_base = time_base
        if rotation is not None or hflip:
            s.set_display_rotation(rotation or 0, hflip=hflip)
        if audio:
            seconds = n / rate if pts is None else float((pts[-1] + pts[-1] - pts[-2]) * time_base)
            _write_tone(c, seconds, audio_codec)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")
            f.pts = pts[i] if pts is not None else i
            if time_base is not None:
                f.time_base = time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


VFR_PTS = [0, 33, 50, 120, 121, 200, 400, 433, 466, 700]  # milliseconds


def make_vfr_clip(path: Path, audio: bool = False) -> Path:
    return make_clip(path, n=len(VFR_PTS), pts=VFR_PTS, time_base=Fraction(1, 1000), audio=audio)


def make_audio_only(path: Path, seconds: float = 0.5) -> Path:
    import av

    with av.open(str(path), "w") as c:
        _write_tone(c, seconds)
    return path


def make_zero_frame_video(path: Path) -> Path:
    """An AVI with a video stream and no frames (the name should end in .avi)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height = 160, 120
        c.start_encoding()
    return path


def make_truncated(src: Path, path: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_corrupt_middle(path: Path, n: int = 20, bad: int = 10, codec: str = "mjpeg") -> tuple[Path, int]:
    """An intra-only Matroska clip (MJPEG, or H.264 with every frame a key frame) whose frame ``bad`` has its data
    zeroed: the container is intact, that one frame cannot be decoded. Returns the path and the bad frame's pts (time
    base 1/1000). MJPEG fails loudly (a decode error); H.264 drops the frame silently (a gap in the timestamps)."""
    import av

    if codec == "mjpeg":
        make_clip(path, n=n, codec="mjpeg", pix_fmt="yuvj420p")
    else:
        make_clip(path, n=n, codec=codec, options={"g": "1", "bf": "0", "threads": "1"})
    with av.open(str(path)) as c:
        packets = [(p.pts, p.pos, bytes(p)) for p in c.demux(video=0) if p.size]
    pts, pos, payload = packets[bad]
    data = bytearray(path.read_bytes())
    start = data.index(payload[:16], pos)
    data[start + 4 : start + len(payload)] = bytes(len(payload) - 4)
    path.write_bytes(bytes(data))
    return path, pts


def make_png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(frame_image(0)).save(path)
    return path
