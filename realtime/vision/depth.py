"""Depth control: Depth Anything V2 Small (transformers) -> a normalised depth map for the depth ControlNet.

:class:`DepthEstimator` runs ``DepthAnythingForDepthEstimation`` in torch on the stylizer's device:
``__call__(rgb)`` takes the model-size crop (H, W, 3) uint8 RGB and returns (H, W) uint8, near = bright.

Normalisation (what the SD 2.1 depth ControlNet was trained on: MiDaS-style relative inverse depth, near = white):
the network predicts relative inverse depth; each frame's map is min-max normalised to 0..255, with the range
(min, max) smoothed over time (``smoothing`` = the weight of the previous frame's range; 0 = per frame) so the grey
levels of a still scene do not pump when something enters the picture. Values outside the smoothed range are
clipped. :func:`normalise_depth` is that step alone.

Specs: a hub id or local directory (default :data:`DEPTH_MODEL`, Apache-2.0), or ``random:<arch>`` for tests and
timing: ``random:sd-turbo`` is the real V2-Small architecture (24.8M parameters: DINOv2-S backbone + DPT head) with
random weights, ``random:tiny`` a tiny one.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from realtime.config import DEFAULT_DEPTH_MODEL as DEPTH_MODEL
from realtime.errors import ModelNotFound, UsageError

__all__ = ["DEPTH_ARCHS", "DEPTH_MODEL", "DepthEstimator", "build_random_depth", "normalise_depth"]

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: ``random:<arch>`` depth models: (DINOv2 backbone config, DepthAnything head config) keyword arguments.
DEPTH_ARCHS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sd-turbo": (  # Depth-Anything-V2-Small-hf's configuration
        dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=518, patch_size=14,
             out_features=["stage3", "stage6", "stage9", "stage12"], reshape_hidden_states=False, apply_layernorm=True),
        dict(reassemble_hidden_size=384, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64,
             head_hidden_size=32, depth_estimation_type="relative"),
    ),
    "tiny": (
        dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=56, patch_size=14,
             out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False, apply_layernorm=True),
        dict(reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16, head_hidden_size=8),
    ),
}


def build_random_depth(arch: str, seed: int = 0) -> Any:
    """``DepthAnythingForDepthEstimation`` of ``arch`` (:data:`DEPTH_ARCHS`) with random weights from ``seed``."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    if arch not in DEPTH_ARCHS:
        raise ModelNotFound(f"unknown random depth architecture random:{arch}: choose one of "
                            f"{', '.join('random:' + a for a in DEPTH_ARCHS)}")
    backbone, head = DEPTH_ARCHS[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DepthAnythingForDepthEstimation(DepthAnythingConfig(backbone_config=Dinov2Config(**backbone), **head))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load_pretrained(spec: str) -> Any:
    from transformers import DepthAnythingForDepthEstimation

    try:
        return DepthAnythingForDepthEstimation.from_pretrained(spec, local_files_only=True)
    except (OSError, ValueError) as e:
        if _offline():
            raise ModelNotFound(f"depth model {spec!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: run "
                                f"`stylecam models pull --control depth` on a connected machine, or unset "
                                f"HF_HUB_OFFLINE") from e
    log.info("downloading depth model %s from the Hugging Face hub (first run only)", spec)
    try:
        return DepthAnythingForDepthEstimation.from_pretrained(spec)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelNotFound(f"depth model {spec!r} could not be loaded ({first}): check the id and your network, or "
                            f"pass --depth-model DIR") from e


def normalise_depth(pred: Any, previous: tuple[float, float] | None, smoothing: float) -> tuple[Any, tuple[float, float]]:
    """``pred`` (H, W) float tensor of relative inverse depth -> ((H, W) uint8 tensor, the range used).

    The range is this frame's (min, max), mixed with ``previous`` (the last range) as
    ``smoothing * previous + (1 - smoothing) * this``; a flat map (max == min, to float precision) becomes black."""
    import torch

    lo, hi = float(pred.min()), float(pred.max())
    if previous is not None and smoothing > 0:
        lo = smoothing * previous[0] + (1 - smoothing) * lo
        hi = smoothing * previous[1] + (1 - smoothing) * hi
    span = hi - lo
    scale = 255.0 / span if span > 1e-6 * max(abs(hi), abs(lo), 1e-30) else 0.0  # relative: random weights are tiny
    out = ((pred.float() - lo) * scale).clamp(0, 255).round().to(torch.uint8)
    return out, (lo, hi)


class DepthEstimator:
    """Depth Anything on ``device``: ``__call__(rgb)`` (H, W, 3) uint8 RGB -> (H, W) uint8 normalised depth.

    The network sees the frame resized so its shorter side is the backbone's image size (518 for V2-Small), both
    sides multiples of its patch size (14), ImageNet-normalised; the prediction is resized back to (H, W) bilinearly
    and normalised by :func:`normalise_depth` (range smoothed over time with ``smoothing``). ``reset()`` forgets the
    range (after a cut)."""

    def __init__(self, spec: str = DEPTH_MODEL, *, device: Any = "cpu", dtype: Any = None, smoothing: float = 0.5,
                 seed: int = 0) -> None:
        import torch

        if not 0 <= smoothing < 1:
            raise UsageError(f"depth smoothing {smoothing}: must be in [0, 1)")
        self.spec = spec
        net = build_random_depth(spec.split(":", 1)[1], seed) if spec.startswith("random:") else _load_pretrained(spec)
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.net = net.to(self.device, self.dtype).eval().requires_grad_(False)
        backbone = net.config.backbone_config
        self.patch = int(getattr(backbone, "patch_size", 14))
        self.side = int(getattr(backbone, "image_size", 518))
        self.smoothing = smoothing
        self._range: tuple[float, float] | None = None
        self._mean = torch.tensor(_IMAGENET_MEAN, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """The network's input (height, width) for an (h, w) frame: shorter side ~ the backbone's image size."""
        k = self.side / min(h, w)
        return (max(self.patch, round(h * k / self.patch) * self.patch),
                max(self.patch, round(w * k / self.patch) * self.patch))

    def predict(self, rgb: np.ndarray) -> Any:
        """(H, W, 3) uint8 RGB -> (H, W) float tensor of relative inverse depth (bigger = nearer)."""
        import torch
        import torch.nn.functional as F

        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise UsageError(f"depth needs an HxWx3 uint8 RGB frame, got {getattr(rgb, 'shape', type(rgb))}")
        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1).unsqueeze(0)
        x = F.interpolate(x.to(self.dtype) / 255.0, size=self.input_size(h, w), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            pred = self.net(pixel_values=(x - self._mean) / self._std).predicted_depth
            return F.interpolate(pred.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[0, 0]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        out, self._range = normalise_depth(self.predict(rgb), self._range, self.smoothing)
        return out.cpu().numpy()

    def reset(self) -> None:
        self._range = None

    def close(self) -> None:
        self.net = None
