"""Where to look for the face, and when to believe it: region-of-interest tracking, a multi-scale scan, confirmation.

BlazeFace (short range) sees only faces that fill a good part of its 128x128 input: run on a whole 1280x720 frame it
misses a face 100 px wide, and it fires now and then on faceless things (cars, textures). :class:`FaceSearch` wraps
any :class:`Detector` (the MediaPipe one, or a fake) and decides what part of the frame it sees:

- **tracking**: each frame, a square region around the tracked face (:data:`ROI_FACE_SIDES` face sizes, widening
  with each miss), scaled to the detector's input: the face fills a quarter of it, as the model likes;
- **scanning** (no face tracked): a multi-scale set of overlapping tiles (:func:`scan_regions`: the whole frame, then
  tiles of the frame height, then of half of it for the short-range model), a few tiles per frame, round-robin, so
  the cost per frame stays about that of one or two detections; while tracking, one tile every
  :data:`SCAN_EVERY_TRACKED` frames (a face lost by its region is found again there);
- **confirmation**: a detection found by the scan is a *candidate*; it becomes the tracked face only after it was
  found again, in the same place and size, on ``confirm_frames`` frames (one miss allowed), each time with a confident
  score (:data:`CONFIRM_SCORE`). Until then nothing is reported, so a single-frame false positive never moves the
  window. A confirmed face stays tracked through up to ``hold_frames`` missed frames (found again only by a confident
  detection of its size); after that it must be confirmed again.

Everything here is geometry and bookkeeping in frame pixels (x right, y down); the detector does the seeing.
:meth:`FaceSearch.detect` returns the confirmed face(s) of this frame, which :class:`~realtime.vision.framing.FaceTracker`
then smooths.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from realtime.errors import UsageError
from realtime.geometry import Size
from realtime.vision.framing import GATE_FACE_HEIGHTS, GATE_MAX_FACE_HEIGHTS, GATE_PER_MISS, GATE_SIZE_RATIO, FaceBox

# A tracked face's region is this many face sizes wide (the face fills ~1/4 of the detector's input: BlazeFace short
# range finds the astronaut at 0.9+ from 1.5 to 6 face sizes, 0.7 at 8), widened by ROI_GROWTH per missed frame.
ROI_FACE_SIDES = 4.0
ROI_GROWTH = 1.5
# Scan tiles overlap by a third of their side (a face up to a third of a tile lies wholly inside one of them).
TILE_STEP = 2.0 / 3.0
MIN_TILE = 96  # no tiles smaller than this (pixels): tiny frames are scanned whole and at their height
SCAN_PER_FRAME = 2  # tiles scanned per frame while no face is tracked
SCAN_EVERY_TRACKED = 6  # while a face is tracked, one tile every this many frames
CANDIDATE_MISSES = 1  # misses a candidate survives before it is dropped
# A candidate counts a frame toward its confirmation only with a confident detection of a steady size: real faces
# score 0.9+ in their region; the detector's false positives (textures, objects) hover at 0.5-0.7 with box sizes that
# swing by a third from frame to frame.
CONFIRM_SCORE = 0.75
CONFIRM_SIZE_RATIO = 1.3
FACE_RANGES = ("short", "full")
# The detector's input side (pixels): regions are scaled so their longer side is this.
INPUT_SIDE = {"short": 128, "full": 192}


class Detector(Protocol):
    """Anything that finds faces in a picture: ``detect(rgb, timestamp_s)`` -> faces in that picture's pixels."""

    def detect(self, rgb: np.ndarray, timestamp_s: float) -> list[FaceBox]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Region:
    """A rectangle of the frame, in pixels: top-left ``x, y``, size ``w, h`` (integers, inside the frame)."""

    x: int
    y: int
    w: int
    h: int


def _positions(extent: int, side: int) -> list[int]:
    """Tile origins along one axis: ``side``-long tiles covering ``extent``, overlapping by ``1 - TILE_STEP``."""
    if side >= extent:
        return [0]
    n = math.ceil((extent - side) / (side * TILE_STEP)) + 1
    return [round(i * (extent - side) / (n - 1)) for i in range(n)]


def scan_regions(frame: Size, face_range: str = "short") -> list[Region]:
    """The scan's regions, coarse to fine: the whole frame, then square tiles of the frame's shorter side, then (short
    range only) of half of it. The short-range model sees faces from ~1/8 to ~2/3 of its input, so half-height tiles
    reach faces of ~1/16 of the frame height (45 px at 720 lines); the full-range one sees smaller faces in a tile."""
    if face_range not in FACE_RANGES:
        raise UsageError(f"face range {face_range!r}: must be one of {', '.join(FACE_RANGES)}")
    w, h = frame.width, frame.height
    regions = [Region(0, 0, w, h)]
    sides = [min(w, h)] + ([min(w, h) // 2] if face_range == "short" else [])
    for side in sides:
        if side < MIN_TILE or side >= max(w, h):
            continue
        for y in _positions(h, side):
            for x in _positions(w, side):
                regions.append(Region(x, y, min(side, w), min(side, h)))
    return regions


def roi_region(face: FaceBox, frame: Size, misses: int = 0) -> Region:
    """The square region around ``face`` (``ROI_FACE_SIDES`` face sizes, times ``ROI_GROWTH`` per miss), moved inside
    the frame (never cropped to a sliver at a border); the whole frame once it would not fit."""
    side = ROI_FACE_SIDES * max(face.w, face.h) * ROI_GROWTH ** min(max(misses, 0), 6)
    side = int(round(min(max(side, 16.0), float(min(frame.width, frame.height)))))
    x = int(round(min(max(face.cx - side / 2, 0.0), frame.width - side)))
    y = int(round(min(max(face.cy - side / 2, 0.0), frame.height - side)))
    return Region(x, y, side, side)


def agrees(face: FaceBox, track: FaceBox, misses: int = 0) -> bool:
    """Whether ``face`` continues ``track``: centre within the tracker's gate (face heights, widening per miss) and
    size within its ratio (:mod:`realtime.vision.framing`'s gates)."""
    if track.h <= 0 or face.h <= 0:
        return False
    ratio = face.h / track.h
    if not 1.0 / GATE_SIZE_RATIO <= ratio <= GATE_SIZE_RATIO:
        return False
    gate = min(GATE_FACE_HEIGHTS + GATE_PER_MISS * misses, GATE_MAX_FACE_HEIGHTS) * track.h
    return math.hypot(face.cx - track.cx, face.cy - track.cy) <= gate


def _nearest(faces: Sequence[FaceBox], track: FaceBox, misses: int) -> FaceBox | None:
    ok = [f for f in faces if agrees(f, track, misses)]
    return min(ok, key=lambda f: math.hypot(f.cx - track.cx, f.cy - track.cy)) if ok else None


def _steady(face: FaceBox, track: FaceBox) -> bool:
    """A candidate's next detection: confident and of nearly the same size (:data:`CONFIRM_SCORE`,
    :data:`CONFIRM_SIZE_RATIO`)."""
    ratio = face.h / track.h if track.h > 0 else math.inf
    return face.score >= CONFIRM_SCORE and 1.0 / CONFIRM_SIZE_RATIO <= ratio <= CONFIRM_SIZE_RATIO


def _start_score(face: FaceBox, frame: Size) -> float:
    """Largest and most central (as the tracker picks its first face)."""
    fw, fh = frame.width, frame.height
    d = math.hypot(face.cx - fw / 2, face.cy - fh / 2) / math.hypot(fw / 2, fh / 2)
    return face.h * face.score * (1.0 - 0.5 * min(d, 1.0))


def _check_count(name: str, v: object, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise UsageError(f"face search {name}={v!r}: must be an integer in {lo}..{hi}")
    return v


class FaceSearch:
    """Region tracking + multi-scale scan + confirmation around a ``detector`` (see the module docstring).

    frame: the frame size. face_range: ``short`` or ``full`` (the detector's model: sets the scan's tiles and the size
    regions are scaled to). confirm_frames: frames a candidate must be found on before it is reported (1: at once).
    hold_frames: missed frames a confirmed face stays tracked. min_score: detections below are ignored.
    ``detect(rgb, timestamp_s)``: ``rgb`` HxWx3 uint8 RGB of ``frame``'s size; returns this frame's confirmed faces
    (at most one: the tracked face, found this frame) in frame pixels. :attr:`calls` counts detector calls.
    The detector is not closed here.
    """

    def __init__(self, detector: Detector, frame: Size, *, face_range: str = "short", confirm_frames: int = 3,
                 hold_frames: int = 8, min_score: float = 0.5) -> None:
        self.detector, self.frame = detector, frame
        self.regions = scan_regions(frame, face_range)
        self.input_side = INPUT_SIDE[face_range]
        self.confirm_frames = _check_count("confirm_frames", confirm_frames, 1, 100)
        self.hold_frames = _check_count("hold_frames", hold_frames, 0, 10_000)
        self.min_score = float(min_score)
        self.calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget the tracked face or candidate (the scan restarts from the whole frame)."""
        self.track: FaceBox | None = None
        self.confirmed = False
        self.hits = 0
        self.misses = 0
        self._next_region = 0
        self._frames = 0

    def mirror(self) -> None:
        """The frames now arrive flipped left-right: flip the tracked face with them (the track is kept)."""
        if self.track is not None:
            t, w = self.track, float(self.frame.width)
            self.track = FaceBox(w - t.x - t.w, t.y, t.w, t.h, t.score, tuple((w - x, y) for x, y in t.keypoints))

    # -- seeing a region
    def detect_in(self, rgb: np.ndarray, region: Region, timestamp_s: float) -> list[FaceBox]:
        """The detector's faces in ``region`` of ``rgb`` (scaled so its longer side is the detector's input side),
        mapped back to frame pixels, those below ``min_score`` left out."""
        import cv2

        crop = rgb[region.y:region.y + region.h, region.x:region.x + region.w]
        k = self.input_side / max(region.w, region.h)
        if k < 1.0:
            size = (max(1, round(region.w * k)), max(1, round(region.h * k)))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        else:
            k = 1.0
        sx, sy = region.w / crop.shape[1], region.h / crop.shape[0]
        self.calls += 1
        out = []
        for f in self.detector.detect(np.ascontiguousarray(crop), timestamp_s):
            if f.score < self.min_score or f.w <= 0 or f.h <= 0:
                continue
            kps = tuple((region.x + x * sx, region.y + y * sy) for x, y in f.keypoints)
            out.append(FaceBox(region.x + f.x * sx, region.y + f.y * sy, f.w * sx, f.h * sy, f.score, kps))
        return out

    def _scan(self, rgb: np.ndarray, timestamp_s: float, n: int) -> list[FaceBox]:
        found: list[FaceBox] = []
        for _ in range(n):
            region = self.regions[self._next_region % len(self.regions)]
            self._next_region = (self._next_region + 1) % len(self.regions)
            found += self.detect_in(rgb, region, timestamp_s)
        return found

    # -- one frame
    def detect(self, rgb: np.ndarray, timestamp_s: float) -> list[FaceBox]:
        self._frames += 1
        if self.track is not None:
            self._follow(rgb, timestamp_s)
        if self.track is None:
            found = self._scan(rgb, timestamp_s, SCAN_PER_FRAME)
            found = [f for f in found if f.score >= CONFIRM_SCORE or self.confirm_frames <= 1]
            if found:
                self.track = max(found, key=lambda f: _start_score(f, self.frame))
                self.hits, self.misses, self.confirmed = 1, 0, self.confirm_frames <= 1
        elif self.confirmed and (self.misses > 0 or self._frames % SCAN_EVERY_TRACKED == 0):
            match = _nearest(self._scan(rgb, timestamp_s, 1), self.track, self.misses)
            if match is not None and self.misses > 0 and _steady(match, self.track):
                self.track, self.misses = match, 0
        return [self.track] if self.track is not None and self.confirmed and self.misses == 0 else []

    def _follow(self, rgb: np.ndarray, timestamp_s: float) -> None:
        """Look for the tracked face (or candidate) in its region; confirm, keep or drop it."""
        assert self.track is not None
        match = _nearest(self.detect_in(rgb, roi_region(self.track, self.frame, self.misses), timestamp_s),
                         self.track, self.misses)
        if match is not None and (not self.confirmed or self.misses > 0) and not _steady(match, self.track):
            match = None
        if match is not None:
            self.track, self.misses, self.hits = match, 0, self.hits + 1
            if self.hits >= self.confirm_frames:
                self.confirmed = True
            return
        self.misses += 1
        if self.misses > (self.hold_frames if self.confirmed else CANDIDATE_MISSES):
            self.track, self.confirmed, self.hits, self.misses = None, False, 0, 0
