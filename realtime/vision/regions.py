"""Stylize only the person or only the background: the mask smoothed over time, feathered, and the two pictures
mixed in pixel space after decoding, so the part that is not stylized is the camera's own pixels (docs/design.md §3).

The maths is torch on whatever device its tensors are on (the device frame path can call :func:`composite` and
:class:`MaskFilter` on the GPU); :class:`RegionCompositor` is the numpy-facing stage
:class:`~realtime.pipeline.processor.FrameProcessor` calls after the stylizer, at the model size:

    w   = m (region person) or 1 - m (region background), m = the smoothed, feathered person mask in [0, 1]
    out = round(w * stylized + (1 - w) * rest)

``rest`` is the camera crop itself (``--background keep``), the crop blurred (``blur``: a Gaussian of ``blur`` px), or a
background image cover-resized to the model size (``FILE``). Where ``w`` is 0 the output is the input exactly.
Temporal smoothing: ``m_t = (1 - s) * raw_t + s * m_{t-1}`` (``s`` = ``RegionConfig.smoothing``; the first frame
and the first after :meth:`MaskFilter.reset` take the raw mask). Feathering: a separable Gaussian of ``feather`` px.
"""
from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from realtime.config import RegionConfig
from realtime.errors import UsageError
from realtime.geometry import Size, cover_resize

__all__ = ["MaskSource", "MaskFilter", "RegionCompositor", "composite", "gaussian_blur"]


class MaskSource(Protocol):
    """Where the person mask comes from (:class:`~realtime.vision.segment.SelfieSegmenter`)."""

    def mask(self, rgb: np.ndarray, timestamp_s: float) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 person confidence in [0, 1]."""
        ...

    def close(self) -> None: ...


def _kernel(sigma: float, device: Any, dtype: Any) -> Any:
    import torch

    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(x: Any, sigma: float) -> Any:
    """(N, C, H, W) float tensor -> the same blurred with a Gaussian of ``sigma`` px (separable, edges replicated);
    ``sigma`` <= 0 returns ``x``."""
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    k = _kernel(sigma, x.device, x.dtype)
    r, c = (k.numel() - 1) // 2, x.shape[1]
    x = F.pad(x, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def composite(stylized: Any, rest: Any, weight: Any) -> Any:
    """(H, W, 3) uint8 ``stylized`` and ``rest`` tensors, (H, W) float ``weight`` in [0, 1] (1 = stylized) ->
    (H, W, 3) uint8 ``round(weight * stylized + (1 - weight) * rest)``."""
    import torch

    w = weight.clamp(0, 1).unsqueeze(-1).to(torch.float32)
    mixed = w * stylized.to(torch.float32) + (1 - w) * rest.to(torch.float32)
    return mixed.round().clamp(0, 255).to(torch.uint8)


class MaskFilter:
    """The person mask over time: exponential smoothing (``smoothing`` = weight of the previous mask), then a
    Gaussian feather of ``feather`` px. ``__call__((H, W) float tensor) -> (H, W) float tensor`` in [0, 1]."""

    def __init__(self, smoothing: float, feather: float) -> None:
        self.smoothing, self.feather = smoothing, feather
        self._prev: Any = None

    def __call__(self, raw: Any) -> Any:
        m = raw.float().clamp(0, 1)
        if self._prev is not None and self._prev.shape == m.shape and self.smoothing > 0:
            m = (1 - self.smoothing) * m + self.smoothing * self._prev
        self._prev = m
        return gaussian_blur(m[None, None], self.feather)[0, 0].clamp(0, 1)

    def reset(self) -> None:
        self._prev = None


class RegionCompositor:
    """Mixes the stylized image with the camera's pixels by region (see the module docstring).

    ``cfg``: a :class:`~realtime.config.RegionConfig`. ``masks``: a :class:`MaskSource`; None: a
    :class:`~realtime.vision.segment.SelfieSegmenter` of ``segment_model`` is created when a region first needs it
    (so switching region while running works; its model resolution may raise then).
    ``background``: the decoded ``--background FILE`` image (H, W, 3) uint8 RGB, any size (cover-resized to the model
    size once). ``__call__(stylized, crop, timestamp_s)``: both (H, W, 3) uint8 RGB at the model size -> the
    composited (H, W, 3) uint8 RGB; with region ``all`` it returns ``stylized`` itself. ``last_mask`` is the filtered
    mask of the last frame (for tests and overlays). ``device``: where the torch maths runs (default the CPU).
    """

    def __init__(self, cfg: RegionConfig, masks: MaskSource | None = None, *, segment_model: str | None = None,
                 background: np.ndarray | None = None, device: Any = "cpu") -> None:
        self.masks, self.device, self.segment_model = masks, device, segment_model
        self._background_image = background
        self._background: Any = None
        self.filter = MaskFilter(cfg.smoothing, cfg.feather)
        self.last_mask: Any = None
        self.cfg = cfg
        self.configure(cfg, background)

    def configure(self, cfg: RegionConfig, background: np.ndarray | None = None) -> None:
        """Another region or background while running (the mask's smoothing carries on). ``background``: the
        decoded image when ``cfg.background`` is a file."""
        if cfg.active and self.masks is None:
            from realtime.vision.segment import SelfieSegmenter

            self.masks = SelfieSegmenter(self.segment_model)
        if cfg.background_file is not None and background is None and cfg.background != self.cfg.background:
            raise UsageError(f"--background {cfg.background}: the image must be decoded first")
        if background is not None:
            self._background_image, self._background = background, None
        self.filter.smoothing, self.filter.feather = cfg.smoothing, cfg.feather
        self.cfg = cfg

    def _rest(self, crop: Any) -> Any:
        import torch

        if self.cfg.background == "blur":
            blurred = gaussian_blur(crop.permute(2, 0, 1)[None].float(), self.cfg.blur)[0].permute(1, 2, 0)
            return blurred.round().clamp(0, 255).to(torch.uint8)
        if self.cfg.background_file is None:
            return crop
        h, w = crop.shape[:2]
        if self._background is None or tuple(self._background.shape[:2]) != (h, w):
            image = cover_resize(self._background_image, Size(w, h))
            self._background = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        return self._background

    def __call__(self, stylized: np.ndarray, crop: np.ndarray, timestamp_s: float = 0.0) -> np.ndarray:
        import torch

        if not self.cfg.active or self.masks is None or stylized is crop:
            return stylized
        if stylized.shape != crop.shape:
            raise UsageError(f"region compositing needs the stylized image and the crop at one size, got "
                             f"{stylized.shape} and {crop.shape}")
        raw = torch.from_numpy(np.ascontiguousarray(self.masks.mask(crop, timestamp_s))).to(self.device)
        m = self.filter(raw)
        self.last_mask = m
        weight = m if self.cfg.region == "person" else 1 - m
        crop_t = torch.from_numpy(np.ascontiguousarray(crop)).to(self.device)
        out = composite(torch.from_numpy(np.ascontiguousarray(stylized)).to(self.device), self._rest(crop_t), weight)
        return out.cpu().numpy()

    def reset(self) -> None:
        self.filter.reset()

    def close(self) -> None:
        if self.masks is not None:
            self.masks.close()
