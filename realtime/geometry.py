"""Sizes and crop windows: the one sizing rule of docs/design.md §3.

- ``--size WxH`` is the model resolution: multiples of 64, 64..2048 per side. ``auto`` picks the multiple-of-64 size whose
  aspect ratio is closest to the output's, with an area near 512x512 (16:9 -> 704x384, square -> 512x512).
- A crop window (in the model's aspect ratio) is cut from the camera frame, resized to the model size, stylized, then
  scaled to *cover* the output size and centre-cropped: no distortion, no letterboxing.

Images here are numpy arrays, HxWx3, uint8, RGB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from realtime.errors import UsageError

MIN_SIDE, MAX_SIDE, MULTIPLE = 64, 2048, 64
TARGET_AREA = 512 * 512


@dataclass(frozen=True)
class Size:
    """A width x height pair in pixels."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise UsageError(f"size must be positive, got {self.width}x{self.height}")

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(text: str, *, what: str = "--size", model: bool = False) -> Size:
    """Parse ``WxH``. With ``model=True`` the sides must be multiples of 64 within 64..2048."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected WxH, for example 512x512") from None
    if w <= 0 or h <= 0:
        raise UsageError(f"{what} {text!r}: sides must be positive")
    if model:
        check_model_size(Size(w, h), what=what)
    elif w > 8192 or h > 8192:
        raise UsageError(f"{what} {text!r}: at most 8192 per side")
    return Size(w, h)


def check_model_size(size: Size, *, what: str = "--size") -> Size:
    for side in (size.width, size.height):
        if side % MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
            raise UsageError(
                f"{what} {size}: each side must be a multiple of {MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}"
            )
    return size


def auto_model_size(output: Size, target_area: int = TARGET_AREA) -> Size:
    """The multiple-of-64 size closest to ``output``'s aspect ratio with an area within 0.8..1.25 of ``target_area``.

    Ties in aspect are broken by the area closest to the target. 1280x720 -> 704x384; 640x640 -> 512x512.
    """
    want = math.log(output.aspect)
    best: tuple[float, float, Size] | None = None
    for w in range(MIN_SIDE, MAX_SIDE + 1, MULTIPLE):
        for h in range(MIN_SIDE, MAX_SIDE + 1, MULTIPLE):
            area = w * h
            if not 0.8 * target_area <= area <= 1.25 * target_area:
                continue
            score = (round(abs(math.log(w / h) - want), 6), abs(area - target_area))
            if best is None or score < best[:2]:
                best = (*score, Size(w, h))
    assert best is not None  # the target area always admits some size
    return best[2]


@dataclass(frozen=True)
class CropWindow:
    """A window in frame pixel coordinates (floats; ``x, y`` top-left). It may extend past the frame edges only when
    the caller allows it; :func:`clamp_window` keeps it inside."""

    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @classmethod
    def from_centre(cls, cx: float, cy: float, w: float, h: float) -> "CropWindow":
        return cls(cx - w / 2, cy - h / 2, w, h)


def centre_window(frame: Size, aspect: float) -> CropWindow:
    """The largest window of ``aspect`` (w/h) centred in ``frame``: what is used without framing."""
    if frame.aspect > aspect:
        h = float(frame.height)
        w = h * aspect
    else:
        w = float(frame.width)
        h = w / aspect
    return CropWindow((frame.width - w) / 2, (frame.height - h) / 2, w, h)


def clamp_window(win: CropWindow, frame: Size) -> CropWindow:
    """Shrink ``win`` (keeping its aspect) to fit in ``frame`` and shift it inside."""
    scale = min(1.0, frame.width / win.w, frame.height / win.h)
    w, h = win.w * scale, win.h * scale
    x = min(max(win.cx - w / 2, 0.0), frame.width - w)
    y = min(max(win.cy - h / 2, 0.0), frame.height - h)
    return CropWindow(x, y, w, h)


def crop_resize(frame: np.ndarray, win: CropWindow, size: Size) -> np.ndarray:
    """Cut ``win`` out of ``frame`` (HxWx3 uint8) at sub-pixel precision and resize it to ``size``.

    Area interpolation when shrinking, linear when enlarging. Returns ``size.height x size.width x 3`` uint8.
    """
    import cv2

    sx, sy = size.width / win.w, size.height / win.h
    if abs(sx - 1) < 1e-9 and abs(sy - 1) < 1e-9 and float(win.x).is_integer() and float(win.y).is_integer():
        x, y = int(win.x), int(win.y)
        out = frame[y : y + size.height, x : x + size.width]
        if out.shape[:2] == (size.height, size.width):
            return np.ascontiguousarray(out)
    # Sub-pixel cut at the window's own scale (bilinear, replicated borders), then one resize: keeps the smoothed
    # window's sub-pixel motion (no 1-pixel steps) and is ~3x faster than a full-size affine warp.
    patch = (max(1, int(round(win.w))), max(1, int(round(win.h))))
    cut = cv2.getRectSubPix(frame, patch, (win.cx - 0.5, win.cy - 0.5))
    interp = cv2.INTER_AREA if sx < 1 and sy < 1 else cv2.INTER_LINEAR
    return cv2.resize(cut, (size.width, size.height), interpolation=interp)


def cover_resize(image: np.ndarray, out: Size) -> np.ndarray:
    """Scale ``image`` (HxWx3) to cover ``out`` and centre-crop: no distortion, no letterboxing."""
    import cv2

    h, w = image.shape[:2]
    if (w, h) == (out.width, out.height):
        return image
    # The window is fixed (centred), so an integer-aligned cut plus cv2.resize is exact enough and ~4x faster than a
    # sub-pixel warp (which the moving framing crop needs, this does not).
    win = centre_window(Size(w, h), out.aspect)
    x0, y0 = int(round(win.x)), int(round(win.y))
    x1, y1 = x0 + max(1, int(round(win.w))), y0 + max(1, int(round(win.h)))
    cut = image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    interp = cv2.INTER_AREA if cut.shape[1] > out.width else cv2.INTER_LINEAR
    return cv2.resize(cut, (out.width, out.height), interpolation=interp)
