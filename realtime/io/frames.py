"""What flows through the io room: :class:`Frame`, and the two contracts every source and every sink keeps.

:class:`FrameSource` (camera, video file) and :class:`Sink` (virtual camera, window, video file, nowhere) are
documented Protocols, in the style of pyvirtualcam's ``Backend``: the live loop, the clip job and the benchmark depend
on these and on nothing else of a source or a sink. :class:`Mailbox` and :class:`FpsMeter` are the building blocks the
sources share (a reading thread hands frames to the consumer; arrival times give the measured rate).

Images are HxWx3 uint8 RGB numpy arrays (converted once, on the source's thread) everywhere in this module.
Nothing here imports OpenCV or PyAV.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from realtime.errors import UsageError
from realtime.geometry import Size

__all__ = ["Frame", "SourceStats", "FrameSource", "Sink", "EndOfStream", "Mailbox", "FpsMeter"]


@dataclass(frozen=True)
class Frame:
    """One captured or decoded frame.

    ``image``: HxWx3 uint8 RGB. ``timestamp``: for cameras ``time.perf_counter()`` at capture; for files the
    presentation time in seconds from the start of the input. ``index``: 0-based count of frames produced by the source
    (gaps in the indices a consumer sees are dropped frames). ``pts``/``duration``: file timestamps in the stream's
    ``time_base`` (``None`` for cameras). ``arrived``: ``time.perf_counter()`` when the frame became available (cameras:
    capture time; paced files: release time; unpaced files: decode time): where latency is measured from.
    ``repeat``: the frame could not be decoded and ``image`` repeats the previous good one (a consumer that keeps the
    frame count reuses its previous output for it).
    """

    image: np.ndarray
    timestamp: float
    index: int
    pts: int | None = None
    duration: int | None = None
    arrived: float = field(default_factory=time.perf_counter)
    repeat: bool = False

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            got = f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}"
            raise UsageError(f"Frame.image must be an HxWx3 uint8 array, got {got}")


@dataclass(frozen=True)
class SourceStats:
    """Counters of a source: ``frames`` captured/decoded, ``dropped`` (stale, replaced by a newer one before being
    read), ``bad_frames`` (undecodable, files only), ``reconnects`` (cameras), ``fps`` measured from arrival times."""

    frames: int = 0
    dropped: int = 0
    bad_frames: int = 0
    reconnects: int = 0
    fps: float = 0.0


@runtime_checkable
class FrameSource(Protocol):
    """A stream of frames read on the source's own thread (:class:`~realtime.io.camera.CameraSource`,
    :class:`~realtime.io.videofile.FileSource`; :func:`~realtime.io.sources.open_source` picks one).

    - ``size``: the frames' width x height (what the camera really delivers; a video after its display rotation).
      Fixed for the life of the source.
    - ``fps``: frames per second: measured from arrival times for a camera (its reported rate until a few frames came
      in), the average rate for a file. A hint for pacing and sink set-up, never a promise.
    - ``read(timeout)``: the next :class:`Frame` (cameras and paced files: the newest one not yet read; older ones are
      dropped and counted). Blocks up to ``timeout`` seconds (``None``: no limit), then raises ``TimeoutError``.
      Returns ``None`` at the end of the stream and after ``close()``. An error met on the reading thread (a camera
      lost, a corrupt file) is raised here, in the consumer's thread. Call it from one consumer thread.
    - ``stats``: a :class:`SourceStats` snapshot; safe to read from any thread, also after ``close()``.
    - ``close()``: stops the reading thread promptly (even when it is waiting on a full queue) and releases the device
      or file. Idempotent; never raises for an already stopped source. A source is also a context manager that closes
      on exit.
    """

    @property
    def size(self) -> Size: ...

    @property
    def fps(self) -> float: ...

    def read(self, timeout: float | None = None) -> Frame | None: ...

    @property
    def stats(self) -> SourceStats: ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where output frames go (:class:`~realtime.io.sinks.NullSink`, :class:`~realtime.io.sinks.VirtualCameraSink`,
    :class:`~realtime.io.sinks.WindowSink`, :class:`~realtime.io.videowriter.VideoFileSink`;
    :func:`~realtime.io.sinks.open_sinks` opens them from ``--output`` values).

    - A sink has a fixed size, set when it is opened; it never resizes.
    - ``send(frame, timestamp=None)``: ``frame`` is HxWx3 uint8 RGB at the sink's size (anything else raises
      :class:`~realtime.errors.UsageError`); the sink converts to its own pixel format (BGR for a window, YUV for a
      file) and does not keep a reference to ``frame`` after returning. ``timestamp`` is seconds on any clock that
      only increases (the first one a file sink sees is its time 0); ``None``: frames are numbered at the nominal
      rate. A sink never sleeps: the caller paces. Call it from one thread.
    - ``close()``: finalizes and releases: a file sink flushes and moves its file into place (or raises
      :class:`~realtime.errors.OutputError` and leaves nothing), a virtual camera or a window is released.
      Idempotent. A sink is also a context manager that closes on exit (a file sink leaving with an exception aborts:
      no file left).
    """

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sink: ...

    def __exit__(self, *exc: object) -> None: ...


class EndOfStream:
    """Marker for the end of a stream (optionally carrying the error that ended it, raised by the consumer)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


T = TypeVar("T")


class Mailbox(Generic[T]):
    """A one-slot box between a reading thread and its consumer: ``put`` replaces an unread item (counted in
    ``dropped``); ``get`` waits for a new one, returns ``None`` once :meth:`finish` was called and nothing is left
    (raising the error ``finish`` was given, if any), and raises ``TimeoutError`` after ``timeout`` seconds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._end: EndOfStream | None = None
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            if self._end is None:
                self._end = EndOfStream(error)
            self._cond.notify_all()

    def get(self, timeout: float | None) -> T | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._end is not None, timeout):
                raise TimeoutError(f"no new frame within {timeout:.3g} s")
            if self._item is not None:
                item, self._item = self._item, None
                return item
            assert self._end is not None
            if self._end.error is not None:
                raise self._end.error
            return None


class FpsMeter:
    """Frames per second from the last ``window`` arrival times (``time.perf_counter()`` values). Not thread-safe:
    the owner locks around it."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window + 1)

    def tick(self, t: float) -> None:
        self._times.append(t)

    def fps(self) -> float:
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    @property
    def samples(self) -> int:
        return max(len(self._times) - 1, 0)
