"""The video file source (keeps the :class:`~realtime.io.frames.FrameSource` contract).

PyAV decodes on a thread. Unpaced (clips): a bounded queue, nothing dropped, back-pressure on the decoder, end of
stream marked. Paced (a clip standing in for a camera): frames are released at the clip's own timestamps and the newest
wins, as with a camera. Frames are HxWx3 uint8 RGB with the display rotation applied.
"""
from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from realtime.errors import BadInputFile, UsageError
from realtime.geometry import Size
from realtime.io.frames import EndOfStream, FpsMeter, Frame, Mailbox, SourceStats
from realtime.io.media import apply_ops, display_ops, open_input

log = logging.getLogger(__name__)

_WARN_FIRST = 5  # bad frames logged one by one; after that every 100th
#: demuxers whose packets carry real presentation times (B-frames included); others (AVI, ASF, MXF, ...) may give a
#: frame its packet's decode-order time
_PTS_SAFE_DEMUXERS = {"mov", "mp4", "matroska", "webm", "mpegts", "mpeg", "flv", "nut", "ogg", "h264", "hevc"}


class FileSource:
    """Frames of a video file, decoded with PyAV on a daemon thread.

    ``paced=False``: every frame in order through a queue of ``queue_size`` (the decoder waits when it is full), then
    ``read()`` returns ``None``. ``paced=True``: frames are released at their own timestamps (the clock starts at the
    first ``read()``), the newest wins and unread ones are counted as dropped. ``start``/``end`` (seconds from the
    start of the input) select a range. The display matrix (or legacy ``rotate`` tag) is honoured.

    Attributes: ``size`` (after rotation), ``fps`` (average rate), ``time_base`` (of ``Frame.pts``), ``duration``
    (seconds of the selected range, ``None`` when unknown), ``frame_count`` (estimate for the range, for progress
    bars), ``has_audio``, ``pts_offset`` (subtract from ``Frame.pts`` to count from ``start``: the timeline that
    ``VideoFileSink(audio_start=start)`` uses).

    An undecodable frame in the middle is skipped, counted in ``stats.bad_frames`` and logged; with ``repeat_bad``
    the previous good image is delivered in its place (``Frame.repeat=True``) so frame count and timing are kept.
    Bad input raises :class:`~realtime.errors.InputNotFound` or :class:`~realtime.errors.BadInputFile` here; errors met
    later on the decode thread are re-raised by ``read()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        paced: bool = False,
        queue_size: int = 8,
        start: float | None = None,
        end: float | None = None,
        repeat_bad: bool = True,
    ) -> None:
        if queue_size < 1:
            raise UsageError(f"queue_size must be >= 1, got {queue_size!r}")
        if start is not None and start < 0:
            raise UsageError(f"--start must be >= 0 seconds, got {start!r}")
        if end is not None and (end <= 0 or (start is not None and end <= start)):
            raise UsageError(f"--end must be after --start, got start={start!r} end={end!r}")
        self.path = Path(path)
        self.paced = bool(paced)
        self.repeat_bad = bool(repeat_bad)
        self._start, self._end = start, end
        self._stop = threading.Event()
        self._clock_started = threading.Event()
        self._mailbox: Mailbox[Frame] = Mailbox()
        self._queue: queue.Queue[Frame | EndOfStream] = queue.Queue(maxsize=queue_size)
        self._meter = FpsMeter()
        self._frames = 0
        self._bad = 0
        self._index = 0
        self._emitted: int | None = None  # pts of the last frame yielded: they only increase
        self._ended: EndOfStream | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._container = open_input(self.path)
        try:
            self._setup()
            self._gen = self._with_durations(self._decode())
            first = next(self._gen, None)
            if first is None:
                raise BadInputFile(self._no_frames_message())
        except BaseException:
            self._container.close()
            raise
        self.size = Size(first.image.shape[1], first.image.shape[0])
        self._release(first)
        self._thread = threading.Thread(target=self._run, name=f"decode-{self.path.name}", daemon=True)
        self._thread.start()

    # --- setup (calling thread) ---
    def _setup(self) -> None:
        import av

        c = self._container
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        self._stream = vs
        self.time_base: Fraction = vs.time_base or Fraction(1, 90000)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        self.fps = float(rate) if rate else 30.0
        self._origin = c.start_time / av.time_base if c.start_time is not None else 0.0
        if vs.duration:
            total = float(vs.duration * self.time_base)
        elif c.duration:
            total = c.duration / av.time_base
        else:
            total = None
        self.input_duration: float | None = total
        first_s = self._start or 0.0
        last_s = self._end if self._end is not None else total
        if total is not None and last_s is not None:
            last_s = min(last_s, total)
        self.duration: float | None = None if last_s is None else max(last_s - first_s, 0.0)
        if vs.frames and self._start is None and self._end is None:
            self.frame_count = int(vs.frames)
        else:
            self.frame_count = int(round(self.duration * self.fps)) if self.duration is not None else 0
        self.has_audio = bool(c.streams.audio)
        # AVI (ASF, MXF, ...) store decode order only: a frame's pts is its packet's, which B-frames (or packed DivX)
        # reorder. Frames still come out of the decoder in presentation order, so each takes the earliest time read.
        codec = vs.codec_context.codec
        safe = bool(set(c.format.name.split(",")) & _PTS_SAFE_DEMUXERS)
        self._reorder = not safe and not getattr(codec, "intra_only", False)
        self._check_complete()
        self.pts_offset = int(round((first_s + self._origin) / self.time_base))
        if self._start:
            try:
                c.seek(self.pts_offset, stream=vs, backward=True, any_frame=False)
            except av.error.FFmpegError as e:
                raise BadInputFile(f"{self.path}: cannot seek to {self._start} s ({e})") from e

    def _check_complete(self) -> None:
        """:class:`BadInputFile` when the container's index (MP4/MOV sample tables, Matroska cues) points past the end
        of the file: a truncated copy or an interrupted download whose index was written first."""
        try:
            size = self.path.stat().st_size
            end = max((e.pos + e.size for e in self._stream.index_entries or () if e.pos >= 0), default=0)
        except (OSError, AttributeError, TypeError):
            return
        if end > size:
            raise BadInputFile(f"{self.path} is truncated: its index expects {end} bytes, the file has {size}")

    def _no_frames_message(self) -> str:
        if self._bad:
            return f"{self.path}: none of its video frames could be decoded ({self._bad} tried): corrupt file"
        if self._start is not None or self._end is not None:
            length = f" (the video lasts {self.input_duration:.2f} s)" if self.input_duration else ""
            return f"{self.path}: no video frames between --start {self._start or 0} and --end {self._end}{length}"
        return f"{self.path} has no video frames"

    # --- decoding (first frame on the calling thread, the rest on the decode thread) ---
    def _decode(self) -> Iterator[Frame]:
        """Frames in presentation order. A frame whose packet was read but which never came out of the decoder (an
        error, or a reference missing) is found from the gap in packet timestamps; see :meth:`_missing`."""
        import av

        vs, tb = self._stream, self.time_base
        step = max(int(round(1 / (self.fps * tb))), 1)
        start = self._start if self._start is not None else float("-inf")
        end = self._end if self._end is not None else float("inf")
        self._expected: list[int] = []  # heap: pts of packets read whose frames have not come out yet
        tracking = True  # off when decoded frames do not carry their packets' pts (gaps cannot be told then)
        errors = skipped_order = 0
        last: np.ndarray | None = None
        last_pts: int | None = None
        try:
            for packet in self._container.demux(vs):
                if self._stop.is_set():
                    return
                if tracking and packet.size and packet.pts is not None and not packet.is_discard:
                    heapq.heappush(self._expected, packet.pts)
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as e:
                    errors += 1
                    if errors <= _WARN_FIRST or errors % 100 == 0:
                        where = f" at {float(packet.pts * tb) - self._origin:.3f} s" if packet.pts is not None else ""
                        log.warning("%s: undecodable video data%s skipped (%s)", self.path.name, where,
                                    getattr(e, "strerror", None) or e)
                    continue
                for f in decoded:
                    if self._reorder and self._expected:  # frames come in presentation order: the earliest slot
                        pts = heapq.heappop(self._expected)
                    else:
                        pts = f.pts if f.pts is not None else (last_pts + step if last_pts is not None else 0)
                        if tracking and last is None and pts not in self._expected:
                            tracking = False
                            self._expected.clear()
                    last_pts = pts
                    t = float(pts * tb) - self._origin
                    image = apply_ops(f.to_ndarray(format="rgb24"), display_ops(f, vs)) if t < end else None
                    yield from self._missing(pts, last if last is not None else image, start, end, step)
                    while self._expected and self._expected[0] == pts:
                        heapq.heappop(self._expected)
                    if t >= end:
                        return
                    last = image
                    if t < start - 1e-6:
                        continue  # pre-roll after the seek to a key frame
                    if self._emitted is not None and pts <= self._emitted:
                        skipped_order += 1  # a broken file repeating or reordering timestamps: keep them increasing
                        if skipped_order == 1:
                            log.warning("%s: frame at %.3f s is not after the previous one: skipped", self.path.name, t)
                        continue
                    yield self._frame(image, t, pts, f.duration or None)
        except av.error.FFmpegError as e:
            raise BadInputFile(
                f"{self.path}: corrupt video data after {self._index} frames ({getattr(e, 'strerror', None) or e})"
            ) from e
        yield from self._missing(float("inf"), last, start, end, step)
        if self._bad:
            log.warning("%s: %d video frame(s) could not be decoded%s", self.path.name, self._bad,
                        " and were replaced by the previous frame" if self.repeat_bad and last is not None else "")
        if skipped_order:
            log.warning("%s: %d frame(s) with out-of-order timestamps skipped", self.path.name, skipped_order)

    def _frame(self, image: np.ndarray, t: float, pts: int, duration: int | None, repeat: bool = False) -> Frame:
        frame = Frame(image, t, self._index, pts, duration, repeat=repeat)
        self._index += 1
        self._emitted = pts
        return frame

    def _missing(self, before: float, image: np.ndarray | None, start: float, end: float, step: int) -> Iterator[Frame]:
        """Frames (in range, before pts ``before``) whose packets were read but that the decoder never produced:
        decoders emit frames in presentation order, so none of them can still come. Counted as bad; with
        ``repeat_bad`` each is replaced by ``image`` at its own pts."""
        while self._expected and self._expected[0] < before:
            pts = heapq.heappop(self._expected)
            t = float(pts * self.time_base) - self._origin
            if not start - 1e-6 <= t < end or (self._emitted is not None and pts <= self._emitted):
                continue
            self._bad += 1
            if self.repeat_bad and image is not None:
                yield self._frame(image, t, pts, step, repeat=True)

    def _with_durations(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        """Give each frame its display duration (the gap to the next frame's pts; for the last one the decoder's value
        or one frame at ``fps``, cut at ``end``): decoders report packet durations, which B-frames scramble."""
        held: Frame | None = None
        for frame in frames:
            if held is not None:
                gap = frame.pts - held.pts if frame.pts is not None and held.pts is not None else 0
                yield replace(held, duration=gap if gap > 0 else held.duration)
            held = frame
        if held is not None:
            duration = held.duration or max(int(round(1 / (self.fps * self.time_base))), 1)
            if self._end is not None and held.pts is not None:
                end_pts = int(round((self._end + self._origin) / self.time_base))
                duration = min(duration, end_pts - held.pts) if end_pts > held.pts else duration
            yield replace(held, duration=duration)

    def _release(self, frame: Frame) -> None:
        now = time.perf_counter()
        frame = replace(frame, arrived=now)
        self._frames += 1
        self._meter.tick(now)
        if self.paced:
            self._mailbox.put(frame)
        else:
            self._put(frame)

    def _put(self, item: Frame | EndOfStream) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            clock: tuple[float, float] | None = None
            for frame in self._gen:
                if self._stop.is_set():
                    break
                if self.paced:
                    while not self._clock_started.wait(0.05):
                        if self._stop.is_set():
                            return
                    if clock is None:
                        clock = (time.perf_counter(), frame.timestamp)
                    delay = clock[0] + (frame.timestamp - clock[1]) - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                self._release(frame)
        except BaseException as e:  # never die silently: read() re-raises it
            error = e
        finally:
            try:
                self._container.close()
            except Exception:
                log.debug("closing %s failed", self.path, exc_info=True)
            if self.paced:
                self._mailbox.finish(error)
            else:
                self._put(EndOfStream(error))

    # --- consumer side ---
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (unpaced) or the newest released one (paced); ``None`` at the end of the stream (and after
        ``close()``). Re-raises errors of the decode thread; ``TimeoutError`` when nothing came within ``timeout``."""
        if self.paced:
            self._clock_started.set()
            return self._mailbox.get(timeout)
        if self._ended is not None:
            if self._ended.error is not None:
                raise self._ended.error
            return None
        if self._closed:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no frame from {self.path.name} within {timeout:.3g} s") from None
        if isinstance(item, EndOfStream):
            self._ended = item
            return self.read()
        return item

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self._frames, dropped=self._mailbox.dropped, bad_frames=self._bad,
                           fps=self._meter.fps())

    def close(self) -> None:
        """Stop the decode thread (promptly, even when the queue is full) and close the file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._clock_started.set()
        self._mailbox.finish()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("decode thread of %s did not stop within 5 s", self.path.name)

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
