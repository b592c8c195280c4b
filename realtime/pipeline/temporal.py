"""Temporal consistency on the host side (docs/design.md §4): the similarity filter and the runtime tuning of latent blending.

Fixed noise and (motion-adaptive) latent blending run inside :class:`~realtime.diffusion.stylizer.FrameStep` (its ``blend`` and
``motion_gain`` inputs, from :class:`~realtime.config.TemporalConfig`); nothing here duplicates them. What lives here:

- :class:`SimilarityFilter`: skip the stylizer when the model-size input crop barely changed since the last stylized
  one (cosine similarity of a small downscaled copy at or above a threshold), reusing the previous output, at most
  ``max_skips`` frames in a row.
- :func:`blend_toggled` / :func:`with_temporal`: switch blending off and back on, or retune it, while running.

Images are HxWx3 uint8 RGB numpy arrays.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from realtime.config import StyleConfig, TemporalConfig
from realtime.errors import UsageError

log = logging.getLogger(__name__)

#: Side of the square thumbnail the similarity is computed on (small: cheap, and blind to sensor noise).
SIMILARITY_SIDE = 32


def thumbnail(image: np.ndarray, side: int = SIMILARITY_SIDE) -> np.ndarray:
    """HxWx3 uint8 RGB -> flat float32 vector of a ``side`` x ``side`` area-averaged copy, values in [-1, 1]."""
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"similarity filter needs an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    small = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
    return small.reshape(-1).astype(np.float32) / 127.5 - 1.0


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two flat vectors (1 for identical directions); 1 when both are zero."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


class SimilarityFilter:
    """Decides per frame whether the stylizer can be skipped.

    ``skip(image)`` compares the model-size input crop (HxWx3 uint8 RGB) with the *reference*: the last crop that was
    stylized (not the previous frame, so slow drift over many skipped frames still triggers a new stylization). It
    returns True when the cosine similarity of their thumbnails is ``>= threshold`` and fewer than ``max_skips`` frames
    were skipped in a row; otherwise the crop becomes the new reference and it returns False (stylize it).
    ``max_skips=0`` never skips. Counters: ``skipped`` (total), ``run`` (current streak), ``similarity`` (last value).
    :meth:`reset` forgets the reference (after a style change, a cut, or a failed frame).
    """

    def __init__(self, threshold: float = 0.985, max_skips: int = 10, side: int = SIMILARITY_SIDE) -> None:
        self.configure(threshold, max_skips)
        if not isinstance(side, int) or not 4 <= side <= 512:
            raise UsageError(f"similarity side={side!r}: must be an integer in 4..512")
        self.side = side
        self.skipped = 0
        self.run = 0
        self.similarity: float | None = None
        self._ref: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: TemporalConfig) -> "SimilarityFilter | None":
        """A filter for ``cfg`` when its similarity filter is on, else None."""
        return cls(cfg.similarity_threshold, cfg.max_skips) if cfg.similarity_filter else None

    def configure(self, threshold: float, max_skips: int) -> None:
        """Change the threshold and the maximum run while running (the reference is kept)."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise UsageError(f"similarity threshold={threshold!r}: must be a number in [0, 1]")
        if isinstance(max_skips, bool) or not isinstance(max_skips, int) or not 0 <= max_skips <= 1000:
            raise UsageError(f"max_skips={max_skips!r}: must be an integer in [0, 1000]")
        self.threshold, self.max_skips = float(threshold), int(max_skips)

    def skip(self, image: np.ndarray) -> bool:
        vec = thumbnail(image, self.side)
        if self._ref is not None:
            self.similarity = cosine_similarity(vec, self._ref)
            if self.similarity >= self.threshold and self.run < self.max_skips:
                self.run += 1
                self.skipped += 1
                return True
        else:
            self.similarity = None
        self._ref = vec
        self.run = 0
        return False

    def reset(self) -> None:
        self._ref = None
        self.run = 0


def with_temporal(style: StyleConfig, **changes: Any) -> StyleConfig:
    """``style`` with its :class:`TemporalConfig` fields replaced (validated: a bad value raises UsageError)."""
    return dataclasses.replace(style, temporal=dataclasses.replace(style.temporal, **changes))


def blend_toggled(style: StyleConfig, remembered: float | None) -> tuple[StyleConfig, float | None]:
    """Blending off (weight 1) when on, back to the remembered weight when off.

    Returns the new style and the weight to remember (the one switched off, so switching on restores it). When the
    style's blending is already off and nothing is remembered, it comes back at the :class:`TemporalConfig` default.
    """
    current = style.temporal.blend
    if current < 1.0:
        return with_temporal(style, blend=1.0), current
    weight = remembered if remembered is not None and remembered < 1.0 else TemporalConfig().blend
    return with_temporal(style, blend=weight), None
