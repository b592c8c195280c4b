"""MediaPipe selfie segmentation: where the person is, as a confidence mask (``--region person|background``).

- :data:`SEGMENT_MODEL`: the general selfie segmentation model (256x256 input; Apache-2.0). Resolved like the face
  model (:func:`realtime.vision.modelfiles.resolve_model_file`): ``--segment-model PATH``, ``STYLECAM_SEGMENT_MODEL``,
  the cache, then the official download (sha256 from MediaPipe's own ``third_party/external_files.bzl``). The
  landscape variant (``selfie_segmentation_landscape.tflite``, 144x256) loads the same way through the option.
- :class:`SelfieSegmenter` wraps Tasks' ``ImageSegmenter`` in VIDEO mode: ``mask(rgb, timestamp_s)`` returns the
  person confidence (H, W) float32 in [0, 1] at the frame's size (1 = person).

Smoothing over time, feathering and compositing are :mod:`realtime.vision.regions` (torch, device-ready).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from realtime.errors import BadInputFile, UsageError
from realtime.vision.face import import_mediapipe, quiet_native_stderr, track_open
from realtime.vision.modelfiles import ModelFile, resolve_model_file

__all__ = ["SEGMENT_MODEL", "SelfieSegmenter", "resolve_segment_model"]

log = logging.getLogger(__name__)

SEGMENT_MODEL = ModelFile(
    what="MediaPipe selfie segmentation model",
    file="selfie_segmentation.tflite",
    url="https://storage.googleapis.com/mediapipe-assets/selfie_segmentation.tflite?generation=1661875931201364",
    sha256="8d13b7fae74af625c641226813616a2117bd6bca19eb3b75574621fc08557f27",
    size=None,  # MediaPipe's external_files.bzl pins the sha256 only
    env="STYLECAM_SEGMENT_MODEL",
    option="--segment-model",
)


def resolve_segment_model(explicit: str | os.PathLike[str] | None = None) -> Any:
    """The segmentation model file (see the module docstring for the order)."""
    return resolve_model_file(SEGMENT_MODEL, explicit)


class SelfieSegmenter:
    """Person confidence masks from MediaPipe Tasks' ``ImageSegmenter`` (VIDEO mode, confidence masks only).

    ``mask(rgb, timestamp_s)``: ``rgb`` (H, W, 3) uint8 RGB -> (H, W) float32 in [0, 1], 1 = person. Timestamps become
    strictly increasing milliseconds (as MediaPipe requires). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None) -> None:
        self.model_path = resolve_segment_model(model)
        mp, vision, base_options = import_mediapipe("use --region all")
        self._mp = mp
        options = vision.ImageSegmenterOptions(
            base_options=base_options(model_asset_path=str(self.model_path)), running_mode=vision.RunningMode.VIDEO,
            output_confidence_masks=True, output_category_mask=False,
        )
        self._last_ms = -1
        self._seg: Any = None
        with quiet_native_stderr():
            try:
                self._seg = vision.ImageSegmenter.create_from_options(options)
            except (ValueError, RuntimeError, OSError) as e:
                raise BadInputFile(f"segmentation model {self.model_path} cannot be loaded by MediaPipe ({e}): "
                                   f"{SEGMENT_MODEL.fix} with a selfie segmentation .tflite") from e
            track_open(self)
        log.debug("selfie segmenter ready: %s", self.model_path)

    def mask(self, rgb: np.ndarray, timestamp_s: float) -> np.ndarray:
        if self._seg is None:
            raise RuntimeError("SelfieSegmenter is closed")
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise UsageError(f"segmentation needs an HxWx3 uint8 RGB frame, got {getattr(rgb, 'shape', type(rgb))}")
        ms = max(int(round(float(timestamp_s) * 1000.0)), self._last_ms + 1)
        self._last_ms = ms
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with quiet_native_stderr():
            result = self._seg.segment_for_video(image, ms)
        conf = np.asarray(result.confidence_masks[-1].numpy_view(), dtype=np.float32)  # the last class: the person
        return np.clip(conf.reshape(rgb.shape[:2]), 0.0, 1.0)

    def close(self) -> None:
        seg, self._seg = getattr(self, "_seg", None), None
        if seg is not None:
            with quiet_native_stderr():
                seg.close()

    def __enter__(self) -> "SelfieSegmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
