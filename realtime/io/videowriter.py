"""The video file sink (part of :mod:`realtime.io.sinks`' API, kept in its own module for size).

PyAV encodes HxWx3 uint8 RGB frames into a temporary file next to the target, renamed over it only by ``close()``;
``abort()`` (or leaving the ``with`` block with an exception, Ctrl-C included) deletes it. Timestamps given with the
frames are kept (variable frame rate survives). Audio of another file can be copied in (or re-encoded when the
container cannot hold its codec), trimmed to a time range.
"""
from __future__ import annotations

import io
import logging
import os
import secrets
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import DeviceUnavailable, OutputError, UsageError
from realtime.files import check_output_path
from realtime.io.audio import AudioMux

log = logging.getLogger(__name__)

_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libsvtav1", "libvpx-vp9", "libvpx", "libaom-av1"}
_MOV_FAMILY = {"mp4", "mov", "m4v", "3gp", "3g2", "ipod", "psp", "ismv", "f4v"}
_HW_MARKERS = ("nvenc", "qsv", "amf", "vaapi", "videotoolbox", "v4l2m2m", "mediacodec")
_AUDIO_PREFERENCE = ("aac", "opus", "mp3", "flac", "pcm_s16le")  # re-encode target: first one the container takes
_SOME_CODECS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4", "mjpeg", "ffv1", "h264_nvenc")


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip().rstrip(".")


def _as_fraction(fps: float | Fraction) -> Fraction:
    if isinstance(fps, Fraction):
        return fps
    frac = Fraction(fps).limit_denominator(1001)
    return frac if abs(float(frac) - float(fps)) < 1e-6 else Fraction(fps).limit_denominator(100000)


def check_video_codec(codec: str) -> Any:
    """The PyAV encoder for ``codec`` or :class:`UsageError` listing a few valid names."""
    from av.codec import Codec

    try:
        enc = Codec(codec, "w")
    except Exception:
        enc = None
    if enc is None or enc.type != "video":
        import av

        valid = [c for c in _SOME_CODECS if c in av.codecs_available]
        raise UsageError(f"unknown video codec {codec!r}: try one of {', '.join(valid)}")
    return enc


#: encoders tried, in order, for an output whose command named no ``--codec``: the first this PyAV has and the
#: container takes (libx264 for MP4/MKV/MOV/AVI, VP9 for WebM, ...)
AUTO_CODECS = ("libx264", "libvpx-vp9", "libvpx", "mpeg4")
#: muxers that write still pictures (or image sequences), never a video file stylecam can promise
_IMAGE_MUXERS = {"image2", "image2pipe", "gif", "apng", "webp", "ico", "jpegxl_anim"}
#: containers known to keep each frame's presentation time apart from its decode order (B-frames survive). Any other
#: (AVI, ASF/WMV, MXF, ...) gets no B-frames: there they come back with scrambled timestamps, shown out of order.
PTS_SAFE_MUXERS = {"mp4", "mov", "ipod", "3gp", "3g2", "ismv", "psp", "f4v", "matroska", "webm", "mpegts", "mpeg",
                   "vob", "svcd", "vcd", "dvd", "flv", "nut", "ogg", "ogv", "h264", "hevc"}
_VIDEO_SUFFIXES = ".mp4, .mkv, .mov or .webm"
#: audio suffixes whose muxer would take a video stream anyway (.m4a is MP4's, .mka Matroska's)
_AUDIO_SUFFIXES = {".m4a", ".m4b", ".mka", ".weba", ".mp3", ".wav", ".flac", ".opus", ".oga", ".aac", ".ac3", ".wma",
                   ".aif", ".aiff"}


class _NamedBuffer(io.BytesIO):
    """An in-memory file with a name: PyAV guesses the container format from it, and nothing touches the disk."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def _muxer(path: Path) -> Any:
    """An in-memory PyAV output container of the format ``path``'s suffix names, or :class:`UsageError` when there is
    none or it is an image format (``.png``, ``.gif``, ``.jpg``, ...: a picture, not a video)."""
    import av

    try:
        container = av.open(_NamedBuffer(path.name), mode="w")
    except (ValueError, av.error.FFmpegError) as e:
        raise UsageError(f"cannot tell the container format from {path.name!r}: use {_VIDEO_SUFFIXES}") from e
    name = container.format.name.split(",")[0]
    if name in _IMAGE_MUXERS or name.endswith("_pipe") or "image" in (container.format.long_name or "").lower():
        container.close()
        raise UsageError(f"output {path.name}: {path.suffix or name} is an image format, not a video file: use "
                         f"{_VIDEO_SUFFIXES} (`stylecam image` writes pictures)")
    video = str(getattr(container, "default_video_codec", "") or "none")
    if path.suffix.lower() in _AUDIO_SUFFIXES or video in ("none", "png", "mjpeg"):  # mp3/flac: cover art only
        container.close()
        raise UsageError(f"output {path.name}: {path.suffix or name} is an audio format, not a video file: use "
                         f"{_VIDEO_SUFFIXES}")
    return container


def _cleanup_quietly(container: Any) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - a probe in memory: nothing to report
        pass


def video_codec_for(path: str | os.PathLike[str], codec: str | None = None, *, codec_option: bool = True) -> str:
    """The video encoder to write ``path`` with: ``codec`` when the container (from the suffix) can hold it, else
    :class:`UsageError`; ``codec=None`` (no ``--codec`` given): the first of :data:`AUTO_CODECS` that this PyAV has and
    the container takes. Image and unknown suffixes are :class:`UsageError`. Checked in memory (nothing on disk).
    ``codec_option``: the command has ``--codec`` (an error suggests it)."""
    import av

    path = Path(path)
    _muxer(path).close()
    if codec is not None:
        codec = check_video_codec(codec).name  # an unknown name: that error first
    fmt = ""
    candidates = (codec,) if codec is not None else tuple(c for c in AUTO_CODECS if c in av.codecs_available)
    for name in candidates:
        container = _muxer(path)
        fmt = container.format.name.split(",")[0]
        try:
            vs = container.add_stream(name, rate=25)
            if not any(m in vs.codec_context.name for m in _HW_MARKERS):  # hardware: checked by opening it
                vs.width, vs.height = 64, 64
                formats = [f.name for f in (vs.codec_context.codec.video_formats or [])]
                vs.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
                container.start_encoding()  # the muxer's own check: some take the stream, then refuse the header
        except (ValueError, av.error.FFmpegError):
            continue
        finally:
            _cleanup_quietly(container)
        return name
    other = ", or another --codec" if codec_option else ""
    if codec is None:
        raise UsageError(f"output {path.name}: this PyAV has no video encoder that the {fmt} container takes "
                         f"(use {_VIDEO_SUFFIXES})")
    raise UsageError(f"output {path.name}: the {fmt} container cannot hold {codec} video (use .mp4, .mkv or "
                     f".mov{other})")


#: a sink's temporary file beside its target: ``.<name>.tmp-<8 hex><suffix>``
_TMP_PREFIX = ".{name}.tmp-"


def sink_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files that sinks writing ``path`` have left (a process killed while writing cannot remove its
    own): what a supervisor removes after killing a worker."""
    path = Path(path)
    prefix = _TMP_PREFIX.format(name=path.name)
    try:
        return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(path.suffix))
    except OSError:
        return []


def _cleanup(container: Any, tmp: str) -> None:
    """Close ``container`` (errors ignored) and remove the temporary file: what an abandoned sink leaves."""
    try:
        container.close()
    except Exception:
        pass
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("could not remove temporary file %s", tmp)


class VideoFileSink:
    """Encode RGB frames to ``path`` (container from the extension) with PyAV.

    ``fps``: nominal rate (a ``Fraction`` for exact NTSC rates). ``time_base``: the unit of ``pts`` given to
    :meth:`send` (for example a :class:`~realtime.io.videofile.FileSource`'s ``time_base``); default ``1/fps``.
    ``audio_from``: copy that file's audio streams (re-encoded only when this container cannot hold their codec),
    ``audio_start``/``audio_end`` seconds from the start of that input; ``audio_start`` becomes time 0 of the output.
    ``variable_rate``: frames may come at uneven times (default: when ``time_base`` is given; a live recording sending
    ``timestamp`` should say so); MP4/MOV then get no B-frames so their duration comes out right. ``codec``: the video
    encoder, ``None`` for the container's default (:func:`video_codec_for`: libx264, VP9 for WebM). A container that
    does not keep presentation times apart (AVI, WMV, MXF: not in :data:`PTS_SAFE_MUXERS`) never gets B-frames (they
    would come back out of order). ``options``: extra encoder
    options. Nothing appears at ``path`` until :meth:`close` succeeds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float | Fraction,
        codec: str | None = None,
        crf: int | None = 18,
        pix_fmt: str = "yuv420p",
        overwrite: bool = False,
        time_base: Fraction | None = None,
        audio_from: str | os.PathLike[str] | None = None,
        audio_start: float | None = None,
        audio_end: float | None = None,
        options: dict[str, str] | None = None,
        variable_rate: bool | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise UsageError(f"output size must be positive, got {width}x{height}")
        if not fps or fps <= 0:
            raise UsageError(f"fps must be positive, got {fps!r}")
        if crf is not None and not 0 <= crf <= 63:
            raise UsageError(f"--crf must be within 0..63, got {crf!r}")
        if audio_end is not None and audio_start is not None and audio_end <= audio_start:
            raise UsageError(f"audio_end must be after audio_start, got {audio_start!r}..{audio_end!r}")
        self.path = Path(path)
        check_output_path(self.path, overwrite=overwrite, inputs=(audio_from,))
        enc = check_video_codec(video_codec_for(self.path, codec))
        formats = [f.name for f in (enc.video_formats or [])]
        if formats and pix_fmt not in formats:
            raise UsageError(f"codec {enc.name} cannot take pixel format {pix_fmt!r}: use one of {', '.join(formats[:6])}")
        if pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "nv21", "yuv422", "yuvj422")) and (width % 2 or height % 2):
            raise UsageError(f"{pix_fmt} needs an even width and height, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.overwrite = overwrite
        self.rate = _as_fraction(fps)
        self.variable_rate = time_base is not None if variable_rate is None else bool(variable_rate)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.rate
        self._step = max(int(round(1 / (self.rate * self.time_base))), 1)
        self.frames = 0
        self._last_pts: int | None = None
        self._t0: float | None = None
        self._durations: dict[int, int] = {}
        self._done = False
        tmp = self.path.parent / f"{_TMP_PREFIX.format(name=self.path.name)}{secrets.token_hex(4)}{self.path.suffix}"
        self._tmp = str(tmp)
        opts = dict(options or {})
        if crf is not None and enc.name in _CRF_CODECS:
            opts.setdefault("crf", str(crf))
            if enc.name.startswith("libvpx"):
                opts.setdefault("b", "0")
        elif crf is not None and crf != 18:
            log.info("--crf does not apply to codec %s: ignored", enc.name)
        if enc.name.startswith("libvpx"):  # VP8/VP9 (WebM's default): threads across rows; a live recording (frames
            opts.setdefault("row-mt", "1")  # timed by the capture clock, no time_base) at real-time speed: the
            if time_base is None:  # default 'good' deadline costs ~70 ms a 720p frame on two cores, 'realtime' ~12
                opts.setdefault("deadline", "realtime")
                opts.setdefault("cpu-used", "8")
        for reencode in (False, True):
            try:
                self._open(enc, pix_fmt, opts, audio_from, audio_start, audio_end, reencode)
                break
            except _CopyFailed as e:
                log.info("audio cannot be copied into %s (%s): re-encoding it", self.path.suffix or "this file", e)
        self._finalizer = weakref.finalize(self, _cleanup, self._container, self._tmp)

    def _open(self, enc: Any, pix_fmt: str, opts: dict[str, str], audio_from: str | os.PathLike[str] | None,
              audio_start: float | None, audio_end: float | None, reencode: bool) -> None:
        import av

        try:
            container = av.open(self._tmp, mode="w")
        except ValueError as e:
            raise UsageError(
                f"cannot tell the container format from {self.path.name!r}: use .mp4, .mkv, .mov or .webm"
            ) from e
        except (OSError, av.error.FFmpegError) as e:
            raise OutputError(f"cannot write {self.path}: {_reason(e)}") from e
        self._container = container
        self._audio = None
        try:
            vs = container.add_stream(enc.name, rate=self.rate)
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, pix_fmt
            vs.time_base = self.time_base
            vs.codec_context.time_base = self.time_base
            stream_opts = dict(opts)
            fmt = container.format.name.split(",")[0]
            if fmt not in PTS_SAFE_MUXERS:
                # AVI (and ASF, MXF, ...) keep decode order only: a B-frame's presentation time is lost and players
                # show frames out of order. Without B-frames both orders are one (``bf``: FFmpeg's generic option).
                stream_opts["bf"] = "0"
            elif self.variable_rate and fmt in _MOV_FAMILY and enc.name in ("libx264", "libx265"):
                # MP4 derives its duration from decode timestamps: with B-frames and uneven frame times it comes out
                # short. Without B-frames the decode and presentation times coincide and VFR clips keep their length.
                stream_opts.setdefault("bf", "0")
            vs.options = stream_opts
            self._video = vs
            if audio_from is not None:
                self._audio = AudioMux(container, audio_from, audio_start, audio_end, reencode=reencode)
            try:
                container.start_encoding()
            except av.error.FFmpegError as e:
                if isinstance(e, OSError):
                    raise OutputError(f"cannot write {self.path}: {_reason(e)}") from e
                if self._audio is not None and self._audio.copying and not reencode:
                    raise _CopyFailed(_reason(e)) from e
                if any(m in enc.name for m in _HW_MARKERS):
                    raise DeviceUnavailable(f"encoder {enc.name} cannot be used on this machine ({_reason(e)})") from e
                raise UsageError(
                    f"cannot encode {enc.name} {pix_fmt} {self.width}x{self.height} into {self.path.suffix}: "
                    f"{_reason(e)}"
                ) from e
            if self._audio is not None:
                self._audio.started()
        except BaseException:
            if self._audio is not None:
                self._audio.close()
            _cleanup(container, self._tmp)
            raise

    def send(self, frame: np.ndarray, timestamp: float | None = None, *, pts: int | None = None,
             duration: int | None = None) -> None:
        """Encode one HxWx3 uint8 RGB frame (the sink's size).

        ``pts`` (in ``time_base``) keeps the input's timing; else ``timestamp`` (seconds, any origin: the first one is
        time 0) is converted; else frames are numbered at ``fps``. ``duration`` (in ``time_base``) is the frame's own
        length, used for the last frame's end. Explicit ``pts`` must increase.
        """
        import av

        if self._done:
            raise UsageError(f"{self.path.name}: send() after close() or abort()")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise UsageError(
                f"frame for {self.path.name} must be {self.height}x{self.width}x3 uint8, got {frame.shape} {frame.dtype}"
            )
        if pts is None:
            if timestamp is not None:
                if self._t0 is None:
                    self._t0 = timestamp
                pts = int(round((timestamp - self._t0) / self.time_base))
            else:
                pts = self.frames * self._step
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
        elif self._last_pts is not None and pts <= self._last_pts:
            raise UsageError(f"{self.path.name}: pts must increase, got {pts} after {self._last_pts}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = pts
        vf.time_base = self.time_base
        if duration:
            self._durations[pts] = int(duration)  # encoders drop frame durations: put them back on the packets
        try:
            for packet in self._video.encode(vf):
                self._mux_video(packet)
            if self._audio is not None:
                self._audio.mux_until(float(pts * self.time_base))
        except av.error.FFmpegError as e:
            raise OutputError(f"writing {self.path} failed: {_reason(e)}") from e
        self._last_pts = pts
        self.frames += 1

    def _mux_video(self, packet: Any) -> None:
        if self._durations and packet.pts is not None:
            duration = self._durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
        self._container.mux(packet)

    def close(self) -> None:
        """Flush, finalize and move the file into place. Any failure removes the temporary file and re-raises."""
        if self._done:
            return
        import av

        try:
            for packet in self._video.encode(None):
                self._mux_video(packet)
            if self._audio is not None:
                self._audio.finish()
            self._container.close()
            if self.frames == 0:
                raise OutputError(f"no frames were written: {self.path} not created")
            if self.path.exists() and not self.overwrite:
                raise OutputError(f"{self.path} appeared while writing: use --overwrite to replace it")
            os.replace(self._tmp, self.path)
        except BaseException as e:
            self.abort()
            if isinstance(e, av.error.FFmpegError):
                raise OutputError(f"finishing {self.path} failed: {_reason(e)}") from e
            raise
        self._done = True
        self._finalizer.detach()
        log.info("wrote %s (%d frames)", self.path, self.frames)

    def abort(self) -> None:
        """Stop without output: the temporary file is removed, nothing is left at ``path``."""
        self._done = True
        if self._audio is not None:
            self._audio.close()
        self._finalizer()

    def __enter__(self) -> "VideoFileSink":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _CopyFailed(Exception):
    """The container rejected a copied audio stream at header time: retry with re-encoding."""
