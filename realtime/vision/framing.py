"""The pure logic of face framing, free of MediaPipe: boxes in, a smoothed crop window out.

- :class:`OneEuroFilter` (Casiez, Roussel and Vogel, CHI 2012): a low-pass filter whose cutoff rises with speed, so a
  still face is held very steady and a moving face is followed with little lag.
- :class:`FaceTracker`: picks the face to follow (largest and most central at start, then always the one nearest the
  tracked face, never a different face far away), turns it into a window of the model's aspect ratio (face at a set
  place and size), smooths the window with the One Euro filter, holds it through missed detections, then eases out to
  the centre window and eases back in when the face returns, without jumps.

Coordinates are frame pixels (x right, y down). :mod:`realtime.vision.face` feeds real MediaPipe detections through this;
tests feed synthetic boxes as well.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from realtime.errors import UsageError
from realtime.geometry import CropWindow, Size, centre_window, clamp_window

# Tracking gates: a detection continues the track when its centre is within this many face heights of the tracked
# face (widening per missed frame, up to the cap) or overlaps it by this IoU, and its size is within the ratio.
GATE_FACE_HEIGHTS = 0.75
GATE_PER_MISS = 0.25
GATE_MAX_FACE_HEIGHTS = 2.0
GATE_MIN_IOU = 0.3
GATE_SIZE_RATIO = 2.0
# The detector's box height is noisier than its centre (and people zoom slower than they move): the window height's
# One Euro beta is this fraction of the configured one.
SIZE_BETA_FACTOR = 0.25
# Prediction: the face's own velocity is the finite difference of its targets, low-passed at PREDICT_CUTOFF Hz;
# speeds below STILL_SPEED (frame heights per second) count as still and the prediction comes in fully by
# MOVING_SPEED (no lead on a still face: no jitter); the lead fades out over EDGE_EASE frame heights before the frame
# edge the window moves towards (no slam, no bounce); predict() extrapolates at most MAX_PREDICT_S ahead.
PREDICT_CUTOFF = 1.5
STILL_SPEED = 0.04
MOVING_SPEED = 0.12
EDGE_EASE = 0.15
MAX_PREDICT_S = 0.25
# The filter's ramp lag 1/(2 pi f_c) is reached only after about that long in motion: at the start of a motion (low
# cutoff, long time constant) the lead is capped at this many seconds, so it never jumps ahead of the face.
MAX_LEAD_S = 0.08
FACE_MODEL_RANGES = ("auto", "short", "full")


@dataclass(frozen=True)
class FaceBox:
    """One detected face in frame pixels: top-left ``x, y``, size ``w, h``, detector ``score`` (0..1), and MediaPipe's
    six keypoints ``(x, y)`` in pixels: right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion
    ("right"/"left" are the subject's, so the right eye is on the image's left)."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    keypoints: tuple[tuple[float, float], ...] = ()

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    def iou(self, other: "FaceBox") -> float:
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0

    def roll(self) -> float | None:
        """The eye line's angle in radians (y down: positive when the image-right eye is lower), or None."""
        if len(self.keypoints) < 2:
            return None
        (rx, ry), (lx, ly) = self.keypoints[0], self.keypoints[1]
        if rx == lx and ry == ly:
            return None
        return math.atan2(ly - ry, lx - rx)


def _check_number(where: str, name: str, v: object, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and v <= hi  # type: ignore[operator]
    if not ok:
        span = f"{'>' if lo_open else '>='} {lo} and <= {hi}"
        raise UsageError(f"{where} {name}={v!r}: must be a number {span}")


class OneEuroFilter:
    """One Euro filter on a scalar or a numpy vector (each element filtered on its own).

    min_cutoff: cutoff frequency in Hz when still (lower = steadier, more lag). beta: how fast the cutoff rises with
    speed (in Hz per value-unit per second; higher = less lag on motion). d_cutoff: cutoff in Hz for the speed estimate.
    ``min_cutoff`` and ``beta`` may also be sequences, one per vector element.
    ``filter(value, t)`` with ``t`` in seconds returns the filtered value (same shape). Non-increasing times are
    treated as a tiny step (the output barely moves). :meth:`reset` forgets the state.
    """

    def __init__(
        self, min_cutoff: float | Sequence[float] = 1.0, beta: float | Sequence[float] = 0.0, d_cutoff: float = 1.0
    ) -> None:
        for v in np.ravel(np.asarray(min_cutoff, dtype=object)):
            _check_number("OneEuroFilter", "min_cutoff", v, 0.0, 1e6, lo_open=True)
        for v in np.ravel(np.asarray(beta, dtype=object)):
            _check_number("OneEuroFilter", "beta", v, 0.0, 1e9)
        _check_number("OneEuroFilter", "d_cutoff", d_cutoff, 0.0, 1e6, lo_open=True)
        self.min_cutoff = np.asarray(min_cutoff, dtype=np.float64)
        self.beta = np.asarray(beta, dtype=np.float64)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    @staticmethod
    def _alpha(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, value: float | np.ndarray, t: float) -> float | np.ndarray:
        x = np.array(value, dtype=np.float64)
        if self._x is None or self._dx is None:
            for name, p in (("min_cutoff", self.min_cutoff), ("beta", self.beta)):
                if p.ndim and p.shape != x.shape:
                    raise UsageError(f"OneEuroFilter {name} has shape {p.shape} but the value has shape {x.shape}")
            self._x, self._dx, self._t = x, np.zeros_like(x), float(t)
            return float(x) if x.ndim == 0 else x.copy()
        dt = float(t) - self._t
        if dt <= 0:
            dt = 1e-6
        self._t = float(t)
        a_d = self._alpha(dt, self.d_cutoff)
        dx = a_d * ((x - self._x) / dt) + (1.0 - a_d) * self._dx
        a = self._alpha(dt, self.min_cutoff + self.beta * np.abs(dx))
        self._x = a * x + (1.0 - a) * self._x
        self._dx = dx
        return float(self._x) if self._x.ndim == 0 else self._x.copy()


@dataclass(frozen=True)
class FramingConfig:
    """Face framing settings.

    enabled: follow the face (False: always the centre window).
    face_scale: window height as a multiple of the face box height (2.6 shows head and shoulders).
    face_y: where the face centre sits in the window, as a fraction of its height from the top.
    min_cutoff, beta, d_cutoff: the One Euro filter on the window (centre and height in frame heights, so the defaults
        do not depend on the camera resolution): steady when still, quick on motion at 30 fps.
    hold_frames: missed-detection frames during which the last window is held.
    ease_frames: frames to ease out to the centre window after the hold (and to ease back in when a face returns).
    min_score: detections below this score are ignored (also the detector's confidence threshold).
    level_eyes: estimate the eye-line roll angle (smoothed) for a rotation step; the crop stays axis-aligned.
    confirm_frames: frames a newly seen face must be found on (same place and size) before framing follows it, so a
        single-frame false positive never moves the window (1: at once; :mod:`realtime.vision.search`).
    predict: prediction: the window centre is put ahead along the face's smoothed velocity by the One Euro filter's
        own lag at its current cutoff (``1 / (2 pi f_c)``) plus ``lead_s``, which takes back the filter's lag on a
        moving face and leaves a still one alone (below a speed threshold nothing is added); it fades out near the
        frame edge the face moves towards. ``predict`` also lets :meth:`FaceTracker.predict` carry a window to a
        later frame (detection one frame behind).
    lead_s: extra lead in seconds on top of the filter's lag (a display or pipeline delay), 0..2.
    edge_zoom: near a side edge of the frame the window would be pushed off the face (it cannot leave the frame): it
        shrinks around the face instead (zooms in), down to this fraction of its size, and grows back as the face
        returns (continuous in the face position: no jump). 1 = never zoom (the face drifts towards the edge).
    face_range: the face model: ``short`` (BlazeFace short range), ``full`` (full range: ``$STYLECAM_FACE_MODEL_FULL``
        or the cache) or ``auto`` (full range when it is there, else short); see
        :func:`realtime.vision.face.resolve_face_model`.
    """

    enabled: bool = True
    face_scale: float = 2.6
    face_y: float = 0.42
    min_cutoff: float = 0.3
    beta: float = 8.0
    d_cutoff: float = 1.0
    hold_frames: int = 8
    ease_frames: int = 20
    min_score: float = 0.5
    level_eyes: bool = False
    confirm_frames: int = 3
    face_range: str = "auto"
    predict: bool = True
    lead_s: float = 0.0
    edge_zoom: float = 0.6

    def __post_init__(self) -> None:
        for name in ("enabled", "level_eyes", "predict"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"framing {name}={getattr(self, name)!r}: must be true or false")
        _check_number("framing", "face_scale", self.face_scale, 1.0, 10.0)
        _check_number("framing", "face_y", self.face_y, 0.1, 0.9)
        _check_number("framing", "min_cutoff", self.min_cutoff, 0.0, 100.0, lo_open=True)
        _check_number("framing", "beta", self.beta, 0.0, 1e4)
        _check_number("framing", "d_cutoff", self.d_cutoff, 0.0, 100.0, lo_open=True)
        _check_number("framing", "min_score", self.min_score, 0.0, 1.0)
        _check_number("framing", "lead_s", self.lead_s, 0.0, 2.0)
        _check_number("framing", "edge_zoom", self.edge_zoom, 0.2, 1.0)
        for name, lo in (("hold_frames", 0), ("ease_frames", 0), ("confirm_frames", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 10_000:
                raise UsageError(f"framing {name}={v!r}: must be an integer in {lo}..10000")
        if self.face_range not in FACE_MODEL_RANGES:
            raise UsageError(f"framing face_range={self.face_range!r}: must be one of {', '.join(FACE_MODEL_RANGES)}")


def _smoothstep(p: float) -> float:
    p = min(max(p, 0.0), 1.0)
    return p * p * (3.0 - 2.0 * p)


class FaceTracker:
    """Faces in, crop window out (the framing logic, no detector).

    ``step(faces, timestamp_s)`` takes this frame's detections and returns a :class:`CropWindow` of ``aspect`` (w/h)
    inside ``frame``. The window state is ``[cx, cy, h, roll]`` with positions in frame heights and roll in radians.
    """

    def __init__(self, cfg: FramingConfig, frame: Size, aspect: float) -> None:
        _check_number("framing", "aspect", aspect, 0.0, 100.0, lo_open=True)
        self.cfg, self.frame, self.aspect = cfg, frame, float(aspect)
        self._centre = centre_window(frame, self.aspect)
        self._centre_p = self._params(self._centre, 0.0)
        self.reset()

    def reset(self) -> None:
        cfg = self.cfg
        betas = [cfg.beta, cfg.beta, cfg.beta * SIZE_BETA_FACTOR, cfg.beta]
        self._filter = OneEuroFilter(cfg.min_cutoff, betas, cfg.d_cutoff)
        self._track: FaceBox | None = None
        self._misses = cfg.hold_frames + cfg.ease_frames + 1  # "lost": the first face eases in from the centre
        self._out = self._centre_p.copy()
        self._held = self._out.copy()
        self._ease_from: np.ndarray | None = None
        self._ease_len = 0
        self._ease_pos = 0
        self._vel = np.zeros(2)  # predicted centre velocity, frame heights per second (0 = no prediction)
        self._t: float | None = None
        self._v_raw = np.zeros(2)  # low-passed finite difference of the targets
        self._last_target: tuple[np.ndarray, float] | None = None
        self.window = self._centre

    # -- state the loop may show
    @property
    def tracked(self) -> FaceBox | None:
        """The detection the window currently follows (None when no face is tracked)."""
        return self._track

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def roll_deg(self) -> float:
        """Smoothed eye-line angle in degrees (0 unless ``level_eyes``). Positive when the image-right eye is lower;
        rotating the crop counter-clockwise by this angle (``cv2.getRotationMatrix2D(centre, roll_deg, 1)``) levels
        the eyes. Eases back to 0 with the window when the face is lost."""
        return math.degrees(float(self._out[3]))

    def mirror(self) -> None:
        """Flip the state left-right, for when the frames start arriving mirrored (a mirror toggle): the window, the
        tracked face and the filter follow the flip at once, so nothing jumps and the track is kept."""
        span = self.frame.width / float(self.frame.height)  # frame width in frame heights

        def flip(p: np.ndarray | None, speed: bool = False) -> np.ndarray | None:
            if p is None or p.ndim == 0 or p is self._centre_p:
                return p
            q = p.copy()
            q[0] = -q[0] if speed else span - q[0]
            q[3] = -q[3]
            return q

        self._out, self._held = flip(self._out), flip(self._held)  # type: ignore[assignment]
        self._vel, self._v_raw, self._last_target = np.zeros(2), np.zeros(2), None  # prediction starts afresh
        self._ease_from = flip(self._ease_from)
        self._filter._x, self._filter._dx = flip(self._filter._x), flip(self._filter._dx, speed=True)
        if self._track is not None:
            t, w = self._track, float(self.frame.width)
            kps = [(w - x, y) for x, y in t.keypoints]
            for a, b in ((0, 1), (4, 5)):  # the subject's right eye/ear now appear on the image's right
                if len(kps) > b:
                    kps[a], kps[b] = kps[b], kps[a]
            self._track = FaceBox(w - t.x - t.w, t.y, t.w, t.h, t.score, tuple(kps))
        self.window = self._window(self._out)

    # -- geometry
    def _params(self, win: CropWindow, roll: float) -> np.ndarray:
        hgt = float(self.frame.height)
        return np.array([win.cx / hgt, win.cy / hgt, win.h / hgt, roll], dtype=np.float64)

    def _window(self, p: np.ndarray) -> CropWindow:
        if p is self._centre_p:
            return self._centre
        hgt = float(self.frame.height)
        h = max(float(p[2]) * hgt, 1.0)
        cx = p[0] * hgt
        room = 2.0 * min(cx, self.frame.width - cx)  # the widest window centred on cx that fits across the frame
        w = h * self.aspect
        if self.cfg.edge_zoom < 1.0 and w > room:  # near a side edge: zoom in (to a limit) rather than let the face go
            h *= max(self.cfg.edge_zoom, room / w)
        return clamp_window(CropWindow.from_centre(cx, p[1] * hgt, h * self.aspect, h), self.frame)

    def _target(self, face: FaceBox) -> np.ndarray:
        """Window params that put ``face`` at ``face_y`` of a window ``face_scale`` face heights tall (unclamped)."""
        hgt = float(self.frame.height)
        h = self.cfg.face_scale * face.h
        cy = face.cy + (0.5 - self.cfg.face_y) * h
        roll = face.roll() if self.cfg.level_eyes else 0.0
        if roll is None:
            roll = float(self._out[3])
        return np.array([face.cx / hgt, cy / hgt, h / hgt, roll], dtype=np.float64)

    # -- tracking
    def _start_score(self, face: FaceBox) -> float:
        """Largest and most central: face height, discounted by up to half at the frame corners."""
        fw, fh = self.frame.width, self.frame.height
        d = math.hypot(face.cx - fw / 2, face.cy - fh / 2) / math.hypot(fw / 2, fh / 2)
        return face.h * (1.0 - 0.5 * min(d, 1.0))

    def _select(self, faces: Sequence[FaceBox]) -> FaceBox | None:
        if not faces:
            return None
        last = self._track
        if last is None:
            return max(faces, key=self._start_score)
        gate = min(GATE_FACE_HEIGHTS + GATE_PER_MISS * self._misses, GATE_MAX_FACE_HEIGHTS) * last.h
        best, best_d = None, math.inf
        for f in faces:
            ratio = f.h / last.h if last.h > 0 else math.inf
            if not 1.0 / GATE_SIZE_RATIO <= ratio <= GATE_SIZE_RATIO:
                continue
            d = math.hypot(f.cx - last.cx, f.cy - last.cy)
            if (d <= gate or f.iou(last) >= GATE_MIN_IOU) and d < best_d:
                best, best_d = f, d
        return best

    def step(self, faces: Sequence[FaceBox], timestamp_s: float, *, release: bool = False) -> CropWindow:
        """Advance one frame. ``release=True`` ignores ``faces`` and eases out at once (framing switched off)."""
        cfg = self.cfg
        if not cfg.enabled:
            return self._centre
        usable = [] if release else [f for f in faces if f.score >= cfg.min_score and f.w > 0 and f.h > 0]
        match = self._select(usable)
        target: np.ndarray | None = None
        if match is not None:
            if self._track is None or self._misses > cfg.hold_frames:
                self._filter.reset()  # the old state is stale; the ease-in hides the restart
            target = self._target(match)
            smooth = np.asarray(self._filter(target, float(timestamp_s)))
            if self._misses > 0:  # (re)acquired: ease in from what is on screen
                self._ease_len = min(cfg.ease_frames, self._misses)
                self._ease_from = self._out.copy() if self._ease_len > 1 else None
                self._ease_pos = 0
            self._misses = 0
            self._track = match
            if self._ease_from is not None:
                self._ease_pos += 1
                p = _smoothstep(self._ease_pos / self._ease_len)
                raw = self._ease_from + (smooth - self._ease_from) * p
                if self._ease_pos >= self._ease_len:
                    self._ease_from = None
            else:
                raw = smooth
        else:
            self._misses += 1
            if self._misses == 1:
                self._held = self._out.copy()  # what was on screen when the face went
            self._ease_from = None
            k = self._misses - (0 if release else cfg.hold_frames)
            if self._track is None:
                raw = self._centre_p
            elif k <= 0:
                raw = self._held
            elif k >= cfg.ease_frames:
                raw = self._centre_p
                self._track = None  # lost: the next face is chosen afresh (and eased in)
            else:
                raw = self._held + (self._centre_p - self._held) * _smoothstep(k / cfg.ease_frames)
        raw = self._lead(raw, target if match is not None and self._ease_from is None else None,
                         float(timestamp_s))
        win = self._window(raw)
        self._out = self._params(win, float(raw[3]))
        self._t = float(timestamp_s)
        self.window = win
        return win

    # -- prediction
    def _edge_factor(self, p: np.ndarray, vel: np.ndarray) -> np.ndarray:
        """Per axis, 1 far from the frame edge the window moves towards, easing to 0 at that edge."""
        hgt = float(self.frame.height)
        half = np.array([p[2] * self.aspect / 2.0, p[2] / 2.0])
        size = np.array([self.frame.width / hgt, 1.0])
        room = np.where(vel > 0, size - (p[:2] + half), p[:2] - half)
        return np.array([_smoothstep(float(r) / EDGE_EASE) for r in room])

    def _lead(self, raw: np.ndarray, target: np.ndarray | None, t: float) -> np.ndarray:
        """``raw`` moved ahead along the face's smoothed velocity by the filter's lag (+ ``lead_s``), while a face is
        followed and not eased in; otherwise the velocity is forgotten."""
        last, self._last_target = self._last_target, (None if target is None else (target, t))
        if target is None or last is None or not self.cfg.predict or t <= last[1]:
            self._vel, self._v_raw = np.zeros(2), np.zeros(2)
            return raw
        dt = t - last[1]
        a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * PREDICT_CUTOFF * dt))
        self._v_raw = a * (target[:2] - last[0][:2]) / dt + (1.0 - a) * self._v_raw
        speed = np.abs(self._v_raw)
        gain = np.array([_smoothstep((float(v) - STILL_SPEED) / (MOVING_SPEED - STILL_SPEED)) for v in speed])
        self._vel = self._v_raw * gain
        f = self._filter
        dx = np.abs(f._dx[:2]) if f._dx is not None and f._dx.ndim else np.zeros(2)
        cutoff = np.broadcast_to(f.min_cutoff, (4,))[:2] + np.broadcast_to(f.beta, (4,))[:2] * dx
        lag = np.minimum(1.0 / (2.0 * math.pi * cutoff), MAX_LEAD_S)  # a first-order low-pass lags a ramp by this
        lead = lag + self.cfg.lead_s
        out = raw.copy()
        out[:2] = raw[:2] + self._vel * lead * self._edge_factor(raw, self._vel)
        return out

    def predict(self, timestamp_s: float) -> CropWindow:
        """The window extrapolated from the last :meth:`step` to ``timestamp_s`` along the predicted velocity (at
        most :data:`MAX_PREDICT_S` ahead; the last window itself when still or not tracking): what a frame gets when
        its own detection is still running (:class:`~realtime.vision.framer_thread.ThreadedFramer`)."""
        if self._t is None or not self._vel.any() or not self.cfg.enabled or not self.cfg.predict:
            return self.window
        dt = min(max(float(timestamp_s) - self._t, 0.0), MAX_PREDICT_S)
        p = self._out.copy()
        p[:2] = p[:2] + self._vel * dt * self._edge_factor(p, self._vel)
        return self._window(p)
