"""Audio of an input file carried into an output container, in step with the video being written.

Streams are copied packet by packet (no re-encoding) when the output container can hold their codec; otherwise they are
decoded and re-encoded to the first codec the container takes among aac, opus, mp3, flac and 16-bit PCM. A time range
of the input (``start``/``end`` seconds from its beginning) can be selected: ``start`` becomes time 0 of the output.
Copied audio is cut at packet boundaries, re-encoded audio at decoded-frame boundaries (a packet or frame is kept when its
middle lies in the range, so either end is off by at most half a packet, about 10 ms for AAC).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

from realtime.errors import UsageError
from realtime.io.media import open_input

log = logging.getLogger(__name__)

_AUDIO_PREFERENCE = ("aac", "opus", "mp3", "flac", "pcm_s16le")


@dataclass
class _Track:
    src: Any
    out: Any
    copy: bool
    resampler: Any = None
    next_pts: int | None = None  # output sample count (re-encoding)
    done: bool = False
    offset: dict[Fraction, int] = field(default_factory=dict)


def _pick_encoder(out: Any) -> str | None:
    from av.codec import Codec

    for name in _AUDIO_PREFERENCE:
        if name not in out.supported_codecs:
            continue
        try:
            enc = Codec(name, "w")
        except Exception:
            continue
        if not enc.experimental:
            return enc.name
    return None


class AudioMux:
    """Copy or re-encode the audio streams of ``src`` into the output container ``out`` (before its header is
    written). Call :meth:`started` once the header is written, :meth:`mux_until` as video advances (output seconds),
    :meth:`finish` at the end and :meth:`close` always."""

    def __init__(self, out: Any, src: str | os.PathLike[str], start: float | None, end: float | None, *,
                 reencode: bool = False) -> None:
        import av

        self.src = Path(src)
        self._out = out
        self._in = open_input(self.src, need_video=False)
        self._closed = False
        try:
            origin = self._in.start_time / av.time_base if self._in.start_time is not None else 0.0
            self._t0 = origin + (start or 0.0)
            self._t1 = origin + end if end is not None else math.inf
            self._trim = bool(start)
            self._tracks: dict[int, _Track] = {}
            for s in self._in.streams.audio:
                name = s.codec_context.codec.canonical_name  # "mp3", not the decoder's "mp3float"
                if not reencode and name in out.supported_codecs:
                    self._tracks[s.index] = _Track(s, out.add_stream_from_template(s), copy=True)
                    continue
                target = _pick_encoder(out)
                if target is None:
                    raise UsageError(f"{Path(out.name).suffix or 'this container'} cannot hold audio: use .mp4 or .mkv")
                enc = av.codec.Codec(target, "w")
                rate = s.codec_context.sample_rate or 48000
                rates = enc.audio_rates
                if rates and rate not in rates:
                    rate = 48000 if 48000 in rates else max(rates)
                o = out.add_stream(target, rate=rate)
                channels = s.codec_context.channels or 2
                if channels == 1:
                    o.layout = "mono"
                elif channels == 2 or target == "libopus":
                    o.layout = "stereo"
                else:
                    o.layout = s.codec_context.layout.name
                formats = [f.name for f in (enc.audio_formats or [])]
                if formats:
                    o.format = formats[0]
                self._tracks[s.index] = _Track(s, o, copy=False)
                log.info("audio stream %d (%s) of %s: re-encoding to %s", s.index, name, self.src.name, target)
            self.copying = any(t.copy for t in self._tracks.values())
            if not self._tracks:
                log.info("%s has no audio: the output has none either", self.src.name)
            if self._trim:
                self._in.seek(int(max(self._t0 - 1.0, 0.0) * av.time_base), backward=True, any_frame=False)
            self._packets: Iterator[Any] = (
                self._in.demux(*(t.src for t in self._tracks.values())) if self._tracks else iter(())
            )
            self._pending: Any = None
        except BaseException:
            self._in.close()
            raise

    def started(self) -> None:
        """Set up resamplers for re-encoded streams (needs the encoders opened by the header)."""
        import av

        for t in self._tracks.values():
            if not t.copy:
                cc = t.out.codec_context
                t.resampler = av.AudioResampler(format=cc.format, layout=cc.layout, rate=cc.sample_rate,
                                                frame_size=cc.frame_size or None)

    def _time(self, packet: Any) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return float(ts * packet.time_base)

    def mux_until(self, t_out: float) -> None:
        """Write the audio up to output time ``t_out`` seconds."""
        while True:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            t = self._time(packet)
            if t is not None and t - self._t0 > t_out:
                self._pending = packet
                return
            self._process(packet, t)

    def _process(self, packet: Any, t: float | None) -> None:
        import av

        track = self._tracks.get(packet.stream.index)
        if track is None or track.done:
            return
        if track.copy:
            if t is None or packet.size == 0:
                return
            mid = t + float((packet.duration or 0) * packet.time_base) / 2  # a packet belongs where most of it is
            if mid >= self._t1:
                track.done = True
                return
            if self._trim and mid < self._t0:
                return
            tb = packet.time_base
            off = track.offset.setdefault(tb, int(round(self._t0 / tb)))
            packet.pts = packet.pts - off if packet.pts is not None else None
            packet.dts = packet.dts - off if packet.dts is not None else None
            packet.stream = track.out
            self._out.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            log.warning("%s: undecodable audio packet skipped (%s)", self.src.name, e)
            return
        for frame in frames:
            self._encode(track, frame)

    def _encode(self, track: _Track, frame: Any) -> None:
        if frame is not None:
            ft = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
            mid = None if ft is None else ft + frame.samples / (2 * (frame.sample_rate or 48000))
            if mid is not None and mid >= self._t1:
                track.done = True
                return
            if mid is not None and self._trim and mid < self._t0:
                return
            if track.next_pts is None:
                start = 0.0 if ft is None else max(ft - self._t0, 0.0)
                track.next_pts = int(round(start * track.out.codec_context.sample_rate))
            frame.pts = None
        for rf in track.resampler.resample(frame):
            rf.pts = track.next_pts or 0
            rf.time_base = Fraction(1, track.out.codec_context.sample_rate)
            track.next_pts = rf.pts + rf.samples
            for p in track.out.encode(rf):
                self._out.mux(p)

    def finish(self) -> None:
        """Write the rest of the selected range and flush the encoders."""
        self.mux_until(math.inf)
        for track in self._tracks.values():
            if track.copy:
                continue
            self._encode(track, None)  # the demuxer's final empty packet already flushed the decoder
            for p in track.out.encode(None):
                self._out.mux(p)
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._in.close()
