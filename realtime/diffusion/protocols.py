"""The stylizer's contracts with the frame processor (documented in the style of pyvirtualcam's ``Backend``).

:class:`StylizerRunner` is what :class:`~realtime.pipeline.processor.FrameProcessor` calls once per frame: the
:class:`~realtime.diffusion.stylizer.Stylizer` itself, or the live loop's
:class:`~realtime.pipeline.watchdog.GuardedStylizer` around one. :class:`StageClock` is the part of a frame clock
(:class:`realtime.pipeline.timing.Clock`) a stylizer times its own stages on.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from realtime.config import StyleConfig


class StageClock(Protocol):
    """Times named stages of the current frame."""

    def stage(self, name: str, *, device: bool = False) -> Any:
        """A context manager timing the block as stage ``name``; ``device=True``: the work runs on the accelerator
        (timed with device events where the clock has them)."""
        ...


class StylizerRunner(Protocol):
    """Turns one model-size crop into one stylized image, keeping the stream's state (previous latents) between calls.

    Thread use: every method is called from the frame thread, between frames (a runner that works on another thread,
    like the watchdog, schedules the calls there itself).
    """

    @property
    def style(self) -> StyleConfig:
        """The style it runs now (after :meth:`set_style` took effect)."""
        ...

    def __call__(self, image: np.ndarray, control: np.ndarray) -> np.ndarray:
        """image: (H, W, 3) uint8 RGB at the model size; control: (H, W) uint8 Canny map, values {0, 255} (the one map
        of a one-control style), or {control: map} for several (``--control canny,pose,depth``: the pose skeleton is
        (H, W, 3) uint8 RGB, the depth map (H, W) uint8).
        Returns (H, W, 3) uint8 RGB: a new array when stylized, or ``image`` itself (the same object) when the frame
        was passed through unstylized (a watchdog's deadline or a failure); a pass-through is never reused as a
        stylized frame. Raises :class:`~realtime.errors.UsageError` on a wrong shape or dtype."""
        ...

    def set_style(self, style: StyleConfig) -> Any:
        """Run ``style`` from now on (prompt, strength, scales, temporal numbers; same LoRAs). The prompt may be encoded
        in the background: the new look may show a frame or two later. Raises UsageError for a pass-through style or
        other LoRAs (those need another stylizer)."""
        ...

    def reset(self) -> Any:
        """Forget the previous frame: the next one is not blended with stale latents (after a pause or a cut)."""
        ...

    def close(self) -> None:
        """Free the models and engines (idempotent)."""
        ...
