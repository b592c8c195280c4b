"""MediaPipe face detection -> a smoothed crop window that keeps the face framed (docs/design.md §3).

- :func:`resolve_face_model` finds the BlazeFace short-range ``.tflite``: an explicit path, then
  ``STYLECAM_FACE_MODEL``, then the cache, then the official download (size and sha256 verified).
- :class:`FaceDetector` wraps MediaPipe Tasks' ``FaceDetector`` in VIDEO mode; :class:`FaceBox` is one detection.
- :class:`FaceFramer` runs the detector and the pure framing logic of :mod:`realtime.vision.framing` (One Euro smoothing,
  face tracking, hold and ease) and returns a :class:`~realtime.geometry.CropWindow` per frame.

Frames are RGB uint8 numpy arrays, HxWx3. MediaPipe is imported lazily (only when a detector is created).
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import re
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import BackendUnavailable, BadInputFile, InputNotFound, ModelNotFound, UsageError
from realtime.vision.modelfiles import ModelFile, existing, model_cache_dir, resolve_model_file
from realtime.vision.framing import FACE_MODEL_RANGES, FaceBox, FaceTracker, FramingConfig, OneEuroFilter
from realtime.vision.search import Detector, FaceSearch
from realtime.geometry import CropWindow, Size

__all__ = [
    "FACE_MODEL_FILE",
    "FACE_MODEL_FULL_FILE",
    "FACE_MODEL_SHA256",
    "FACE_MODEL_SIZE",
    "FACE_MODEL_URL",
    "FaceBox",
    "Detector",
    "FaceDetector",
    "FaceFramer",
    "FaceSearch",
    "FaceTracker",
    "FramingConfig",
    "OneEuroFilter",
    "face_model_cache_dir",
    "face_model_range",
    "full_range_model",
    "quiet_native_stderr",
    "resolve_face_model",
]

log = logging.getLogger(__name__)

FACE_MODEL = ModelFile(
    what="MediaPipe face model",
    file="blaze_face_short_range.tflite",
    url="https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/float16/1/"
        "blaze_face_short_range.tflite",
    sha256="b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f",
    size=229_746,
    env="STYLECAM_FACE_MODEL",
    option="--face-model",
)
FACE_MODEL_FILE = FACE_MODEL.file
FACE_MODEL_URL = FACE_MODEL.url
FACE_MODEL_SIZE = FACE_MODEL.size
FACE_MODEL_SHA256 = FACE_MODEL.sha256
FACE_MODEL_FULL_FILE = "face_detection_full_range_sparse.tflite"  # from the mediapipe 0.10.21 wheel (Apache-2.0)
_FIX = FACE_MODEL.fix


# ------------------------------------------------------------------------------------------------- model resolution


def face_model_cache_dir() -> Path:
    """Where the downloaded face model is cached (:func:`realtime.vision.modelfiles.model_cache_dir`)."""
    return model_cache_dir()


def full_range_model() -> Path | None:
    """The full-range face model when one is there: ``$STYLECAM_FACE_MODEL_FULL`` (which must exist), else
    ``FACE_MODEL_FULL_FILE`` in :func:`face_model_cache_dir`; ``None`` otherwise (there is no official download)."""
    env = os.environ.get("STYLECAM_FACE_MODEL_FULL", "")
    if env:
        return existing(Path(env), "STYLECAM_FACE_MODEL_FULL", "point it at face_detection_full_range_sparse.tflite")
    cached = face_model_cache_dir() / FACE_MODEL_FULL_FILE
    return cached if cached.is_file() else None


def face_model_range(path: str | os.PathLike[str], requested: str = "auto") -> str:
    """``short`` or ``full``: ``requested`` unless ``auto``; then ``full`` for the full-range model's file name or the
    path :func:`full_range_model` gives, else ``short``."""
    if requested in ("short", "full"):
        return requested
    p = Path(path)
    if "full_range" in p.name.lower():
        return "full"
    with contextlib.suppress(InputNotFound, OSError):
        full = full_range_model()
        if full is not None and full.resolve() == p.resolve():
            return "full"
    return "short"


def resolve_face_model(explicit: str | os.PathLike[str] | None = None, face_range: str = "short") -> Path:
    """The face detector model to load.

    ``short`` (BlazeFace short range): ``explicit``, then ``$STYLECAM_FACE_MODEL``, then the cache, then the official
    download. ``full`` (full range, no official download): ``explicit``, then :func:`full_range_model`. ``auto``:
    ``explicit``, then the full-range model when there is one, else as ``short``.
    Raises :class:`InputNotFound` for an explicit or environment path that does not exist, and :class:`ModelNotFound`
    when the model is not cached and cannot be downloaded (``HF_HUB_OFFLINE``/``STYLECAM_OFFLINE`` set, or no network)
    or, for ``full``, is not there.
    """
    if face_range not in FACE_MODEL_RANGES:
        raise UsageError(f"face model range {face_range!r}: must be one of {', '.join(FACE_MODEL_RANGES)}")
    if explicit is not None and str(explicit) != "":
        return resolve_model_file(FACE_MODEL, explicit)
    if face_range != "short":
        full = full_range_model()
        if full is not None:
            return full
        if face_range == "full":
            raise ModelNotFound(
                f"no full-range face model: set STYLECAM_FACE_MODEL_FULL to face_detection_full_range_sparse.tflite "
                f"(from the mediapipe 0.10.21 wheel) or put it in {face_model_cache_dir()}, or use the short range"
            )
    return resolve_model_file(FACE_MODEL)


# ------------------------------------------------------------------------------------------------- native log spam

_NATIVE_LOG_LINE = re.compile(r"^(?:(?:INFO|WARNING|ERROR|VERBOSE\d*): |[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ )")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 inside the block (MediaPipe/LiteRT/absl write there
    directly and ignore ``GLOG_minloglevel``/``TF_CPP_MIN_LOG_LEVEL``). Native log lines go to this module's logger at
    DEBUG; anything else (another thread's output, say) is written back to stderr afterwards. The context value is a
    list that receives the native lines when the block ends."""
    native: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield native
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield native
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            other = []
            for line in tmp.read().decode("utf-8", errors="replace").splitlines():
                if _NATIVE_LOG_LINE.match(line) or "before InitGoogle()" in line:
                    log.debug("mediapipe: %s", line)
                    native.append(line)
                elif line.strip():
                    other.append(line)
            if other:
                with contextlib.suppress(Exception):
                    sys.stderr.write("\n".join(other) + "\n")
                    sys.stderr.flush()


def import_mediapipe(fix: str = "run with --no-face") -> tuple[Any, Any, Any]:
    """(mediapipe, vision, BaseOptions), with the library's own logging turned down first; ``fix`` ends the one-line
    error when mediapipe is not importable."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl-py is optional; MediaPipe's native logging is handled by quiet_native_stderr
        pass
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
    except ImportError as e:
        msg = f"mediapipe is not importable ({e}): pip install mediapipe, or {fix}"
        raise BackendUnavailable(msg) from e
    return mp, vision, BaseOptions


# ------------------------------------------------------------------------------------------------- detector


def _check_frame(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}"
        raise UsageError(f"face detection needs an HxWx3 uint8 RGB frame, got {got}")


# LiteRT logs "Input tensor memory is not aligned" once per process, at whichever inference first gets an unaligned
# buffer (not necessarily the first): detections are captured until that line has been seen.
_ALIGNMENT_WARNING = "inference_runner"
_alignment_warning_seen = False
_OPEN_DETECTORS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _close_open_detectors() -> None:
    """Close detectors nobody closed before MediaPipe's worker threads stop (its own finalizer fails noisily then)."""
    for det in list(_OPEN_DETECTORS):
        with contextlib.suppress(Exception):
            det.close()


def track_open(det: Any) -> None:
    """Close ``det`` (a MediaPipe task wrapper with ``close()``) at interpreter exit if nobody did."""
    if not getattr(track_open, "registered", False):
        # threading's exit hooks run in reverse order of registration, before concurrent.futures stops the executor
        # MediaPipe dispatches through; atexit handlers would run after it.
        register = getattr(threading, "_register_atexit", atexit.register)
        with contextlib.suppress(RuntimeError):
            register(_close_open_detectors)
        track_open.registered = True  # type: ignore[attr-defined]
    _OPEN_DETECTORS.add(det)


class FaceDetector:
    """MediaPipe Tasks face detector (BlazeFace short or full range) in VIDEO running mode.

    ``detect(rgb, timestamp_s)``: ``rgb`` HxWx3 uint8 RGB; returns the faces found, in pixels. Timestamps are turned
    into strictly increasing milliseconds (equal or earlier times are nudged forward by 1 ms), as MediaPipe requires.
    Model resolution as :func:`resolve_face_model` with ``face_range``; :attr:`face_range` is the model's range
    (``short`` or ``full``, :func:`face_model_range`). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        min_detection_confidence: float = 0.5,
        min_suppression_threshold: float = 0.3,
        face_range: str = "short",
    ) -> None:
        for name, v in (
            ("min_detection_confidence", min_detection_confidence),
            ("min_suppression_threshold", min_suppression_threshold),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise UsageError(f"face detector {name}={v!r}: must be a number in 0..1")
        self.model_path = resolve_face_model(model, face_range)
        self.face_range = face_model_range(self.model_path, face_range)
        mp, vision, base_options = import_mediapipe()
        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=base_options(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO,
            min_detection_confidence=float(min_detection_confidence),
            min_suppression_threshold=float(min_suppression_threshold),
        )
        self._last_ms = -1
        self._det: Any = None
        with quiet_native_stderr():
            try:
                self._det = vision.FaceDetector.create_from_options(options)
            except (ValueError, RuntimeError, OSError) as e:
                raise BadInputFile(
                    f"face model {self.model_path} cannot be loaded by MediaPipe ({e}): {_FIX} with a face detector"
                ) from e
            track_open(self)
            self._detect_ms(np.zeros((480, 640, 3), np.uint8), 0)  # warm-up: the first inference is the slowest
        log.debug("face detector ready: %s (%s range)", self.model_path, self.face_range)

    def _detect_ms(self, rgb: np.ndarray, ms: int) -> Any:
        global _alignment_warning_seen
        ms = max(ms, self._last_ms + 1)
        self._last_ms = ms
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if _alignment_warning_seen:
            return self._det.detect_for_video(image, ms)
        with quiet_native_stderr() as native:
            result = self._det.detect_for_video(image, ms)
        _alignment_warning_seen = any(_ALIGNMENT_WARNING in line for line in native)
        return result

    def detect(self, rgb: np.ndarray, timestamp_s: float) -> list[FaceBox]:
        if self._det is None:
            raise RuntimeError("FaceDetector is closed")
        _check_frame(rgb)
        h, w = rgb.shape[:2]
        result = self._detect_ms(rgb, int(round(float(timestamp_s) * 1000.0)))
        faces = []
        for d in result.detections:
            bb = d.bounding_box
            score = float(d.categories[0].score) if d.categories else 0.0
            kps = tuple((float(k.x) * w, float(k.y) * h) for k in (d.keypoints or ()))
            faces.append(FaceBox(float(bb.origin_x), float(bb.origin_y), float(bb.width), float(bb.height), score, kps))
        return faces

    def close(self) -> None:
        det, self._det = getattr(self, "_det", None), None
        _OPEN_DETECTORS.discard(self)
        if det is not None:
            with quiet_native_stderr():
                det.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------- framer


class FaceFramer:
    """Per frame: find the face and return the crop window that keeps the tracked face framed.

    cfg: framing settings. frame: the camera frame size. aspect: the window's aspect ratio (model width / height).
    detector: a :class:`FaceDetector` (or any object with ``detect``/``close``); ``None`` creates one from ``model``
    (resolved as :func:`resolve_face_model` with ``cfg.face_range``) when framing is enabled. A detector passed in is
    not closed by :meth:`close`; one created here is. The detector sees what :class:`~realtime.vision.search.FaceSearch`
    shows it (regions around the face, scan tiles, scaled to its input; faces confirmed over ``cfg.confirm_frames``).

    ``update(rgb, timestamp_s)`` takes the HxWx3 uint8 RGB frame and returns a :class:`CropWindow` of ``aspect``
    inside ``frame``. ``enabled`` can be switched while running: off eases to the centre window and skips detection.
    """

    def __init__(
        self,
        cfg: FramingConfig,
        frame: Size,
        aspect: float,
        detector: Detector | None = None,
        *,
        model: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(cfg, FramingConfig):
            raise UsageError(f"FaceFramer cfg must be a FramingConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.frame = frame
        self.aspect = float(aspect)
        # The tracker always frames; switching off is this class's job (so it can be switched back on).
        self.tracker = FaceTracker(dataclasses.replace(cfg, enabled=True), frame, aspect)
        self._model = model
        self._owns_detector = detector is None
        self._detector: Detector | None = None
        self.search: FaceSearch | None = None
        self._enabled = cfg.enabled
        if detector is not None:
            self._attach(detector)
        elif self._enabled:
            self._attach(self._new_detector())
        self.faces: list[FaceBox] = []  # the last frame's confirmed faces (for overlays and statistics)

    def _new_detector(self) -> FaceDetector:
        return FaceDetector(self._model, min_detection_confidence=self.cfg.min_score, face_range=self.cfg.face_range)

    def _attach(self, detector: Detector) -> None:
        self._detector = detector
        face_range = detector.face_range if isinstance(detector, FaceDetector) else "short"
        self.search = FaceSearch(detector, self.frame, face_range=face_range, confirm_frames=self.cfg.confirm_frames,
                                 hold_frames=self.cfg.hold_frames, min_score=self.cfg.min_score)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        if on and self._detector is None:
            self._attach(self._new_detector())
            self._owns_detector = True
        if on and not self._enabled and self.search is not None:
            self.search.reset()  # what it tracked before is stale: confirm afresh
        self._enabled = bool(on)

    @property
    def roll_deg(self) -> float:
        """The smoothed eye-line angle in degrees (0 unless ``level_eyes``); see :attr:`FaceTracker.roll_deg`."""
        return self.tracker.roll_deg

    def mirror(self) -> None:
        """Call when the frames start (or stop) arriving mirrored: the framing flips with them, without a jump."""
        self.tracker.mirror()
        if self.search is not None:
            self.search.mirror()

    def update(self, rgb: np.ndarray, timestamp_s: float) -> CropWindow:
        _check_frame(rgb)
        h, w = rgb.shape[:2]
        if (w, h) != (self.frame.width, self.frame.height):
            raise UsageError(f"frame of {w}x{h} given to a FaceFramer set up for {self.frame}")
        if not self._enabled or self.search is None:
            self.faces = []
            return self.tracker.step([], timestamp_s, release=True)
        self.faces = self.search.detect(rgb, timestamp_s)
        return self.tracker.step(self.faces, timestamp_s)

    def close(self) -> None:
        det, self._detector, self.search = self._detector, None, None
        if det is not None and self._owns_detector:
            det.close()

    def __enter__(self) -> "FaceFramer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
