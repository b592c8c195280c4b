"""Quality metrics for stylized images and clips: pure functions on numpy arrays.

What they measure (``scripts/evaluate.py`` reports them; they are what latent blending and presets are tuned with):

- **Structure preservation.** :func:`edge_f1` compares the Canny edge maps of the input and the output with a small pixel
  tolerance (1.0 = every input edge is still there and no new ones appeared). :func:`ssim_luma` is the SSIM of the
  luminance (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5), 1.0 for identical images.
- **Temporal consistency.** :func:`warp_error`: dense optical flow is estimated on consecutive *input* frames, the previous
  *output* is warped along it to the current time and compared with the current output, over pixels whose flow passes the
  forward-backward consistency check (occlusions excluded). Near 0 for an output that moves with its input.
  :func:`flicker_index`: the mean change of the output on pixels whose input did not change (static regions).
- **Face preservation.** :func:`box_iou` of the output's face box with the input's (the detection itself is MediaPipe's,
  wired in :mod:`realtime.research.evaluation`).

Unless said otherwise, frames are numpy arrays HxWx3, dtype uint8, RGB, values 0..255; errors are reported in [0, 1] units
(a difference of 255 is 1.0). Everything here is deterministic and CPU-only (OpenCV, numpy).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from realtime.errors import BadInputFile, UsageError
from realtime.geometry import Size, cover_resize

log = logging.getLogger(__name__)

FLOW_METHODS = ("dis", "farneback")


@dataclass(frozen=True)
class MetricSettings:
    """Parameters of the metrics (all reported in the JSON next to the numbers).

    - ``edge_tolerance``: an edge pixel counts as matched when the other map has an edge within this many pixels
      (Chebyshev distance, via dilation with a (2t+1)x(2t+1) square). 0..10.
    - ``canny_sigma``: automatic Canny thresholds ``lo=(1-sigma)*median``, ``hi=(1+sigma)*median`` of the grey image.
    - ``canny_blur``: Gaussian kernel size before Canny (0 = off, odd 1..31), as the pipeline's Canny (default 3).
    - ``ssim_sigma``: standard deviation of the SSIM Gaussian window (window side ``2*round(3.5*sigma)+1``, 11 for 1.5).
    - ``flow``: ``dis`` (OpenCV DIS, medium preset) or ``farneback``.
    - ``fb_alpha``, ``fb_beta``: forward-backward consistency: a pixel is valid when
      ``|f_b + f_f(x + f_b)|^2 <= fb_alpha * (|f_b|^2 + |f_f(x + f_b)|^2) + fb_beta`` (Sundaram et al. 2010).
    - ``static_threshold``: a pixel is static for the flicker index when its input luminance changes by at most this
      many levels (0..255) between consecutive frames.
    """

    edge_tolerance: int = 1
    canny_sigma: float = 0.33
    canny_blur: int = 3
    ssim_sigma: float = 1.5
    flow: str = "dis"
    fb_alpha: float = 0.01
    fb_beta: float = 0.5
    static_threshold: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.edge_tolerance <= 10:
            raise UsageError(f"edge_tolerance={self.edge_tolerance}: must be an integer in 0..10 pixels")
        if not 0.0 < self.canny_sigma < 1.0:
            raise UsageError(f"canny_sigma={self.canny_sigma}: must be in (0, 1)")
        if not (self.canny_blur == 0 or (self.canny_blur % 2 == 1 and 1 <= self.canny_blur <= 31)):
            raise UsageError(f"canny_blur={self.canny_blur}: must be 0 (off) or an odd kernel size 1..31")
        if not 0.1 <= self.ssim_sigma <= 10.0:
            raise UsageError(f"ssim_sigma={self.ssim_sigma}: must be in 0.1..10")
        if self.flow not in FLOW_METHODS:
            raise UsageError(f"flow={self.flow!r}: must be one of {', '.join(FLOW_METHODS)}")
        if self.fb_alpha < 0 or self.fb_beta < 0:
            raise UsageError(f"fb_alpha={self.fb_alpha}, fb_beta={self.fb_beta}: must be >= 0")
        if not 0.0 <= self.static_threshold <= 255.0:
            raise UsageError(f"static_threshold={self.static_threshold}: must be in 0..255 luminance levels")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_rgb(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise UsageError(f"{what}: expected an HxWx3 uint8 RGB array, got {got}")


def _check_same_shape(*images: np.ndarray) -> None:
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise UsageError(f"frames must have the same shape, got {sorted(shapes)}; match sizes first (match_size)")


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an HxWx3 uint8 RGB image: HxW float32 in 0..255."""
    _check_rgb(image, "luma")
    rgb = image.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def mean_grey_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the :func:`luma` of two same-sized HxWx3 uint8 RGB images, in grey levels (0..255):
    how far a segmented clip's frame at a join is from the single-process one."""
    _check_same_shape(a, b)
    return float(np.abs(luma(a) - luma(b)).mean())


def match_size(output: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, bool]:
    """``output`` brought to ``reference``'s height and width (cover + centre-crop, no distortion).

    Returns ``(frame, resized)``: the HxWx3 uint8 RGB frame and whether it had to be resized. Raises
    :class:`~realtime.errors.BadInputFile` when either image is degenerate (a side under 8 pixels) and cannot be reconciled.
    """
    _check_rgb(output, "output")
    _check_rgb(reference, "reference")
    if output.shape == reference.shape:
        return output, False
    for name, im in (("output", output), ("input", reference)):
        if min(im.shape[:2]) < 8:
            raise BadInputFile(f"the {name} is {im.shape[1]}x{im.shape[0]}: too small to compare (at least 8x8)")
    h, w = reference.shape[:2]
    return np.ascontiguousarray(cover_resize(output, Size(w, h))), True


# ---------------------------------------------------------------------------------------------------------------- structure


def canny_edges(image: np.ndarray, sigma: float = 0.33, blur: int = 3) -> np.ndarray:
    """Canny edge map of an HxWx3 uint8 RGB image, computed exactly as the pipeline computes its ControlNet input
    (:func:`realtime.vision.edges.canny_cpu`): grey, ``blur``x``blur`` Gaussian (0 = off), thresholds
    ``lo = max(0, (1 - sigma) * median)``, ``hi = min(255, (1 + sigma) * median)`` of the blurred grey image, OpenCV
    Canny with the L2 gradient. Returns an HxW bool array, True on edge pixels.
    """
    from realtime.vision.edges import CannyConfig, canny_cpu

    _check_rgb(image, "canny_edges")
    return canny_cpu(image, CannyConfig(sigma=sigma, blur=blur)) > 0


@dataclass(frozen=True)
class EdgeScore:
    """Edge agreement: ``precision`` = fraction of output edges near an input edge, ``recall`` = fraction of input edges
    near an output edge, ``f1`` their harmonic mean. All in [0, 1]."""

    precision: float
    recall: float
    f1: float


def edge_f1(edges_in: np.ndarray, edges_out: np.ndarray, tolerance: int = 1) -> EdgeScore:
    """Edge F1 between two HxW bool edge maps, matching within ``tolerance`` pixels (Chebyshev distance).

    Two empty maps agree perfectly (1, 1, 1); one empty map against a non-empty one scores 0.
    """
    import cv2

    if edges_in.shape != edges_out.shape or edges_in.ndim != 2:
        raise UsageError(f"edge maps must be HxW of the same shape, got {edges_in.shape} and {edges_out.shape}")
    a, b = edges_in.astype(bool), edges_out.astype(bool)
    n_a, n_b = int(a.sum()), int(b.sum())
    if n_a == 0 and n_b == 0:
        return EdgeScore(1.0, 1.0, 1.0)
    if n_a == 0 or n_b == 0:
        return EdgeScore(0.0, 0.0, 0.0)
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    near_a = cv2.dilate(a.astype(np.uint8), kernel) > 0
    near_b = cv2.dilate(b.astype(np.uint8), kernel) > 0
    precision = float((b & near_a).sum()) / n_b
    recall = float((a & near_b).sum()) / n_a
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return EdgeScore(precision, recall, f1)


def ssim_luma(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM of the luminance of two HxWx3 uint8 RGB images of the same shape, in [-1, 1] (1 = identical).

    Wang et al. 2004 with a Gaussian window: local means, variances and covariance under a Gaussian of ``sigma``
    (truncated at 3.5 sigma, reflected borders), ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, averaged over the
    pixels at least half a window from the border (as ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False, data_range=255``).
    """
    import cv2

    _check_same_shape(a, b)
    x, y = luma(a).astype(np.float64), luma(b).astype(np.float64)
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape) < 2 * radius + 1:
        raise UsageError(f"ssim_luma: images of {x.shape[1]}x{x.shape[0]} are smaller than the {2 * radius + 1}px window")

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[radius:-radius, radius:-radius].mean())


# ----------------------------------------------------------------------------------------------------------------- temporal


class FlowEstimator:
    """Dense optical flow between two HxW uint8 grey frames; holds the OpenCV DIS object (not thread-safe: one per thread).

    ``flow(a, b)`` returns HxWx2 float32 ``(dx, dy)`` such that ``a(p) ~ b(p + flow(p))``.
    """

    def __init__(self, method: str = "dis") -> None:
        import cv2

        if method not in FLOW_METHODS:
            raise UsageError(f"flow={method!r}: must be one of {', '.join(FLOW_METHODS)}")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if method == "dis" else None

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        if self._dis is not None:
            return self._dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)


def _grey_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(luma(image) + 0.5, 0, 255).astype(np.uint8)


def _sample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class WarpResult:
    """Warp error of one frame pair: ``error`` (mean absolute difference in [0, 1] over valid pixels and channels, None
    when no pixel is valid) and ``valid_fraction`` (share of pixels that passed the consistency check)."""

    error: float | None
    valid_fraction: float


def warp_error(
    in_prev: np.ndarray,
    in_cur: np.ndarray,
    out_prev: np.ndarray,
    out_cur: np.ndarray,
    settings: MetricSettings | None = None,
    flow: FlowEstimator | None = None,
) -> WarpResult:
    """Warp error of the output at time t, using motion measured on the input (all HxWx3 uint8 RGB, same shape).

    The backward flow ``f_b`` (time t to t-1) and forward flow ``f_f`` (t-1 to t) are estimated on the input's
    luminance; ``out_prev`` is sampled at ``p + f_b(p)`` (bilinear) to bring it to time t and compared with ``out_cur``:
    ``mean |out_cur - warp(out_prev)| / 255`` over the pixels that land inside the frame and pass the forward-backward
    check (see :class:`MetricSettings`), averaged over the three channels.
    """
    settings = settings or MetricSettings()
    flow = flow or FlowEstimator(settings.flow)
    _check_same_shape(in_prev, in_cur, out_prev, out_cur)
    g_prev, g_cur = _grey_u8(in_prev), _grey_u8(in_cur)
    f_b = flow.flow(g_cur, g_prev)  # p at t  ->  p + f_b(p) at t-1
    f_f = flow.flow(g_prev, g_cur)  # q at t-1 -> q + f_f(q) at t
    h, w = g_cur.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = xs + f_b[..., 0], ys + f_b[..., 1]
    f_f_at = _sample(f_f, map_x, map_y)
    round_trip = f_b + f_f_at
    lhs = (round_trip**2).sum(-1)
    rhs = settings.fb_alpha * ((f_b**2).sum(-1) + (f_f_at**2).sum(-1)) + settings.fb_beta
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    valid = inside & (lhs <= rhs)
    warped = _sample(out_prev, map_x, map_y)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return WarpResult(None, 0.0)
    diff = np.abs(out_cur.astype(np.float32) - warped.astype(np.float32)).mean(-1)
    return WarpResult(float(diff[valid].mean()) / 255.0, n_valid / valid.size)


@dataclass(frozen=True)
class FlickerResult:
    """Flicker of one frame pair: ``index`` (mean absolute output change in [0, 1] over static pixels, None when no pixel
    is static) and ``static_fraction`` (share of pixels whose input is static)."""

    index: float | None
    static_fraction: float


def flicker_index(
    in_prev: np.ndarray, in_cur: np.ndarray, out_prev: np.ndarray, out_cur: np.ndarray, threshold: float = 2.0
) -> FlickerResult:
    """Mean ``|out_cur - out_prev| / 255`` (over channels) on the pixels whose input luminance changed by at most
    ``threshold`` levels (0..255) between the two frames. All frames HxWx3 uint8 RGB of the same shape."""
    _check_same_shape(in_prev, in_cur, out_prev, out_cur)
    static = np.abs(luma(in_cur) - luma(in_prev)) <= threshold
    n_static = int(static.sum())
    if n_static == 0:
        return FlickerResult(None, 0.0)
    diff = np.abs(out_cur.astype(np.float32) - out_prev.astype(np.float32)).mean(-1)
    return FlickerResult(float(diff[static].mean()) / 255.0, n_static / static.size)


# --------------------------------------------------------------------------------------------------------------------- faces


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two boxes given as ``(x, y, w, h)`` (top-left corner and size, same units), in [0, 1]."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = max(aw, 0.0) * max(ah, 0.0) + max(bw, 0.0) * max(bh, 0.0) - inter
    return 0.0 if union <= 0 else inter / union


# -------------------------------------------------------------------------------------------------------------- aggregation


class RunningMean:
    """Mean of a stream of floats, skipping ``None`` (memory flat); ``value`` is None until something was added."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, x: float | None) -> None:
        if x is not None and math.isfinite(x):
            self.total += float(x)
            self.count += 1

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None
