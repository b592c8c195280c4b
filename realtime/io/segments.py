"""Long clips cut into segments for several workers, and the stylized segments joined back without re-encoding.

:func:`plan_segments` reads the input's video packets (no decoding) and cuts its frame range at key frames about every
``seconds``. Each :class:`Segment` says which frames a worker writes and from where it decodes: ``warmup`` frames
before its first frame are decoded and stylized but not written, so the temporal state (latent blending, face
framing) is warm at the join. Every segment keeps the timestamps of the whole output (``pts_offset``), so
:func:`join_segments` copies the segments' packets one after another into one file (PyAV remux: no re-encode) and
copies the original audio once, as :class:`~realtime.io.videowriter.VideoFileSink` does for an unsegmented clip.
The segments are encoded without B-frames (``SEGMENT_ENCODER_OPTIONS``): each then starts with a key frame whose
decode time is its presentation time, so the joined decode timestamps increase across every join.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from realtime.errors import BadInputFile, OutputError, UsageError
from realtime.files import atomic_output, check_output_path
from realtime.io.audio import AudioMux
from realtime.io.media import open_input

log = logging.getLogger(__name__)

#: encoder options of every segment (FFmpeg's generic ``bf``: no B-frames, so decode order is presentation order)
SEGMENT_ENCODER_OPTIONS = {"bf": "0"}


@dataclass(frozen=True)
class Segment:
    """One worker's share of a clip. ``decode_from``/``end``: seconds from the input's start, as
    :class:`~realtime.io.videofile.FileSource` takes them (``decode_from`` is the first warm-up frame's time, ``None``
    for the clip's own start; ``end`` the next segment's first frame, ``None`` for the clip's own end). ``first_pts``:
    the first frame written (input time base); frames before it are warm-up. ``pts_offset``: subtracted from every
    input pts (the unsegmented output's time 0). ``frames``: frames written; ``warmup``: frames decoded before."""

    index: int
    decode_from: float | None
    end: float | None
    first_pts: int
    pts_offset: int
    frames: int
    warmup: int
    start_s: float  # where the segment starts in the output (seconds): for messages and seam reports


def _frame_times(path: Path) -> tuple[list[int], set[int], Fraction, float]:
    """Presentation timestamps of every video packet (sorted), those of key frames, the time base and the
    container's start time (seconds)."""
    import av

    with open_input(path) as c:
        vs = c.streams.video[0]
        tb = vs.time_base or Fraction(1, 90000)
        origin = c.start_time / av.time_base if c.start_time is not None else 0.0
        pts: list[int] = []
        keys: set[int] = set()
        try:
            for p in c.demux(vs):
                if p.pts is None or not p.size or p.is_discard:
                    continue
                pts.append(p.pts)
                if p.is_keyframe:
                    keys.add(p.pts)
        except av.error.FFmpegError as e:
            raise BadInputFile(f"{path}: cannot read its video packets to cut it ({e})") from e
    return sorted(set(pts)), keys, tb, origin


def plan_segments(path: str | os.PathLike[str], seconds: float, *, warmup: int, start: float | None = None,
                  end: float | None = None) -> list[Segment]:
    """Cut ``path``'s ``start``..``end`` range at key frames, a new segment at the first key frame at least
    ``seconds`` after the previous cut. One segment when the clip is shorter or has no key frame to cut at."""
    if not seconds > 0:
        raise UsageError(f"--segment-seconds {seconds!r}: must be > 0")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UsageError(f"--warmup-frames {warmup!r}: must be an integer >= 0")
    path = Path(path)
    pts, keys, tb, origin = _frame_times(path)
    lo, hi = start if start is not None else float("-inf"), end if end is not None else float("inf")

    def t(p: int) -> float:  # exactly FileSource's clock: float(pts * time_base) - origin
        return float(p * tb) - origin

    frames = [p for p in pts if lo - 1e-6 <= t(p) < hi]
    if not frames:
        raise BadInputFile(f"{path}: no video frames to cut between --start {start or 0} and --end {end}")
    cuts = [0]
    for i, p in enumerate(frames):
        if i and p in keys and t(p) >= t(frames[cuts[-1]]) + seconds:
            cuts.append(i)
    offset = int(round(((start or 0.0) + origin) / tb))
    bounds = [*cuts, len(frames)]
    segments = []
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        w = min(warmup, a)
        segments.append(Segment(
            index=n, decode_from=start if n == 0 else t(frames[a - w]), end=end if b == len(frames) else t(frames[b]),
            first_pts=frames[a], pts_offset=offset, frames=b - a, warmup=w, start_s=float((frames[a] - offset) * tb),
        ))
    return segments


def segment_path(output: Path, index: int) -> Path:
    """Where segment ``index`` of ``output`` is written: a hidden file beside it, same suffix."""
    return output.parent / f".{output.name}.part{index:03d}{output.suffix}"


def join_segments(parts: list[Path], output: Path, *, audio_from: str | os.PathLike[str] | None,
                  audio_start: float | None = None, audio_end: float | None = None, overwrite: bool = False) -> int:
    """Copy the video packets of ``parts`` (in order, each encoded from the same settings) into ``output`` with the
    audio of ``audio_from`` (its ``audio_start``..``audio_end`` range, copied; re-encoded only when the container
    cannot hold it). Atomic: nothing at ``output`` unless complete. Returns the number of video packets."""
    if not parts:
        raise UsageError("join_segments: no segments")
    check_output_path(output, overwrite=overwrite, inputs=(*parts, audio_from))
    with atomic_output(output) as tmp:
        for reencode in (False, True):
            try:
                return _join(parts, tmp, audio_from, audio_start, audio_end, reencode)
            except _AudioCopyRefused as e:
                log.info("audio cannot be copied into %s (%s): re-encoding it", output.suffix, e)
    raise AssertionError("unreachable")  # pragma: no cover


class _AudioCopyRefused(Exception):
    pass


def _join(parts: list[Path], tmp: Path, audio_from: Any, audio_start: float | None, audio_end: float | None,
          reencode: bool) -> int:
    import av

    with av.open(str(parts[0])) as first, av.open(str(tmp), mode="w") as out:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        vs = out.add_stream_from_template(template)
        vs.time_base = template.time_base
        audio = AudioMux(out, audio_from, audio_start, audio_end, reencode=reencode) if audio_from else None
        try:
            try:
                out.start_encoding()
            except av.error.FFmpegError as e:
                if audio is not None and audio.copying and not reencode:
                    raise _AudioCopyRefused(str(e)) from e
                raise OutputError(f"cannot write {tmp.suffix} output: {e}") from e
            if audio is not None:
                audio.started()
            count = _copy_video(parts, out, vs, extradata, audio)
            if audio is not None:
                audio.finish()
        finally:
            if audio is not None:
                audio.close()
    return count


def _copy_video(parts: list[Path], out: Any, vs: Any, extradata: bytes | None, audio: AudioMux | None) -> int:
    """Every video packet of ``parts`` into ``vs`` (rescaled to its time base), audio interleaved up to each."""
    import av

    last_dts: int | None = None
    count = 0
    for part in parts:
        with av.open(str(part)) as c:
            s = c.streams.video[0]
            if s.codec_context.extradata != extradata:
                raise OutputError(f"{part.name}: encoded with other parameters than the first segment: cannot join")
            for p in c.demux(s):
                if p.pts is None or not p.size:
                    continue
                if s.time_base != vs.time_base:
                    p.pts, p.dts = _rescale(p.pts, s.time_base, vs.time_base), _rescale(p.dts, s.time_base, vs.time_base)
                    p.duration = _rescale(p.duration, s.time_base, vs.time_base)
                if p.dts is not None and last_dts is not None and p.dts <= last_dts:
                    raise OutputError(f"{part.name}: decode times go back at the join ({p.dts} after {last_dts})")
                last_dts = p.dts if p.dts is not None else last_dts
                if audio is not None:
                    audio.mux_until(float(p.pts * vs.time_base))
                p.stream = vs
                try:
                    out.mux(p)
                except av.error.FFmpegError as e:
                    raise OutputError(f"joining {part.name} failed: {e}") from e
                count += 1
    return count


def _rescale(value: int | None, src: Fraction, dst: Fraction) -> int | None:
    return None if value is None else int(round(value * src / dst))
