"""The per-frame numbers of the frame step (docs/design.md §4): the plain floats behind FrameStep's number inputs, the
strength -> timestep rule, and the no-op clock a stylizer uses when nothing times it."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from realtime.errors import UsageError


@dataclass(frozen=True)
class FrameNumbers:
    """The per-frame numbers, as plain floats (turned into (1,) tensors for :class:`FrameStep`)."""

    timestep: float
    sqrt_alpha_bar: float
    sqrt_one_minus_alpha_bar: float
    blend: float
    motion_gain: float
    control_scale: float  # the step's first control's scale
    guidance_scale: float
    more_scales: tuple[float, ...] = ()  # the scales of the step's further controls, in order


def strength_timestep(strength: float, num_train_timesteps: int = 1000) -> int:
    """The one-step timestep for an img2img ``strength`` in (0, 1]: 1 -> T-1 (pure noise), 0.5 -> T/2 - 1."""
    if not 0 < strength <= 1:
        raise UsageError(f"--strength {strength}: must be in (0, 1]")
    return max(0, min(num_train_timesteps - 1, round(strength * num_train_timesteps) - 1))


class _NoClock:
    @staticmethod
    def stage(name: str, *, device: bool = False) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


_NO_CLOCK = _NoClock()
