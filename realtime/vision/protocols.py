"""The vision stages' contracts with the frame processor (documented in the style of pyvirtualcam's ``Backend``).

:class:`Framer` is the face framing stage (:class:`~realtime.vision.face.FaceFramer`); :class:`EdgeMap` the Canny stage
(:class:`~realtime.vision.edges.EdgeDetector`); :class:`ControlMapper` the pose and depth maps. Images are numpy arrays, RGB colour order.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from realtime.geometry import CropWindow


class Framer(Protocol):
    """Per camera frame, the crop window that keeps the subject framed (smoothed over time)."""

    @property
    def enabled(self) -> bool:
        """Whether it follows the face. Settable while running: off eases to the centre window (and skips detection),
        on again may raise when the face model cannot be loaded."""
        ...

    @enabled.setter
    def enabled(self, on: bool) -> None: ...

    def update(self, rgb: np.ndarray, timestamp_s: float) -> CropWindow:
        """rgb: (H, W, 3) uint8 RGB camera frame, always of the size the framer was made for; timestamp_s: the
        frame's time in seconds (increasing). Returns the crop window (model aspect ratio) inside the frame."""
        ...

    def mirror(self) -> None:
        """The frames start (or stop) arriving mirrored: flip the framing state with them, so the window does not
        jump."""
        ...

    def close(self) -> None:
        """Free the detector (idempotent)."""
        ...


class EdgeMap(Protocol):
    """The control map of a model-size crop."""

    #: The settings it runs with (the processor builds a new detector when a style asks for others).
    cfg: Any

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """rgb: (H, W, 3) uint8 RGB -> (H, W) uint8 edge map, values {0, 255}."""
        ...

    def close(self) -> None: ...


class ControlMapper(Protocol):
    """The maps of the controls other than Canny (``pose``, ``depth``) of a model-size crop
    (:class:`~realtime.vision.controlmaps.ControlMaps`)."""

    def __call__(self, control: str, rgb: np.ndarray) -> np.ndarray:
        """control: ``pose`` or ``depth``; rgb: (H, W, 3) uint8 RGB -> the pose skeleton (H, W, 3) uint8 RGB, or the
        depth map (H, W) uint8 (near = bright)."""
        ...

    def close(self) -> None: ...
