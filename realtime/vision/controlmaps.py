"""The pose and depth control maps of a model-size crop, their detectors created once, on first use or up front.

:class:`ControlMaps` is the :class:`~realtime.vision.protocols.ControlMapper` the frame processor calls for every
control but Canny: ``pose`` -> :class:`~realtime.vision.pose.PoseMap` (MediaPipe, CPU), ``depth`` ->
:class:`~realtime.vision.depth.DepthEstimator` (torch, on the stylizer's device). :meth:`ControlMaps.prepare` loads the
detectors of a set of controls now, so a missing model is reported at start-up, not on the first frame.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from realtime.config import DEFAULT_DEPTH_MODEL
from realtime.errors import UsageError

__all__ = ["ControlMaps"]


class ControlMaps:
    """``__call__(control, rgb)`` -> that control's map of ``rgb`` (see :class:`~realtime.vision.protocols.ControlMapper`).

    pose_model: the pose landmarker bundle (None: resolved as :func:`~realtime.vision.pose.resolve_pose_model`).
    depth_model: a depth spec (hub id, directory, ``random:<arch>``); device, dtype, seed: where and how the depth
    network runs (seed: its random weights for ``random:`` specs)."""

    def __init__(self, *, pose_model: Any = None, depth_model: str = DEFAULT_DEPTH_MODEL, device: Any = "cpu",
                 dtype: Any = None, seed: int = 0) -> None:
        self.pose_model, self.depth_model = pose_model, depth_model
        self.device, self.dtype, self.seed = device, dtype, seed
        self.stages: dict[str, Any] = {}

    def prepare(self, controls: tuple[str, ...]) -> "ControlMaps":
        for name in controls:
            if name != "canny":
                self._stage(name)
        return self

    def _stage(self, name: str) -> Any:
        stage = self.stages.get(name)
        if stage is not None:
            return stage
        if name == "pose":
            from realtime.vision.pose import PoseMap

            stage = PoseMap(model=self.pose_model)
        elif name == "depth":
            from realtime.vision.depth import DepthEstimator

            stage = DepthEstimator(self.depth_model, device=self.device, dtype=self.dtype, seed=self.seed)
        else:
            raise UsageError(f"control {name!r} has no map here (canny is the edge detector's)")
        self.stages[name] = stage
        return stage

    def __call__(self, control: str, rgb: np.ndarray) -> np.ndarray:
        return self._stage(control)(rgb)

    def reset(self) -> None:
        for stage in self.stages.values():
            reset = getattr(stage, "reset", None)
            if callable(reset):
                reset()

    def close(self) -> None:
        stages, self.stages = self.stages, {}
        for stage in stages.values():
            stage.close()
