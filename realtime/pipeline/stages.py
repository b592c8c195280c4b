"""The frame processor's optional stages built from the configs, the same for ``image``, ``clip``, ``live`` and ``bench``:
the pose and depth control maps (:class:`~realtime.vision.controlmaps.ControlMaps`, their detectors loaded up front so
a bad model fails before the first frame) and the region compositor (:class:`~realtime.vision.regions.RegionCompositor`
with MediaPipe's selfie segmenter)."""
from __future__ import annotations

from typing import Any

import numpy as np

from realtime.config import ModelConfig, RegionConfig, StyleConfig

__all__ = ["control_stage", "controls_loader", "frame_stages", "region_stage"]


def control_stage(style: StyleConfig, model: ModelConfig | None, stylizer: Any = None, seed: int = 0) -> Any:
    """A :class:`~realtime.vision.controlmaps.ControlMaps` with the detectors of ``style``'s controls other than Canny
    loaded now (depth on the stylizer's device and dtype; others load when a live ``controls`` change asks for them),
    or None when there is no model."""
    if model is None or style.passthrough:
        return None
    from realtime.vision.controlmaps import ControlMaps

    maps = ControlMaps(pose_model=model.pose_model, depth_model=model.depth_model_spec,
                       device=getattr(stylizer, "device", "cpu"), dtype=getattr(stylizer, "dtype", None), seed=seed)
    try:
        return maps.prepare(style.controls)
    except BaseException:
        maps.close()
        raise


def region_stage(region: RegionConfig, segment_model: str | None, background: np.ndarray | None = None,
                 device: Any = "cpu") -> Any:
    """A :class:`~realtime.vision.regions.RegionCompositor` for ``region``: its segmenter loaded now when a region is
    set; with ``--region all`` it composites nothing and loads its segmenter when a live ``region`` command needs it."""
    from realtime.vision.regions import RegionCompositor

    return RegionCompositor(region, segment_model=segment_model, background=background, device=device)


def frame_stages(style: StyleConfig, model: ModelConfig | None, region: RegionConfig, *, stylizer: Any = None,
                 background: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """``control_maps`` and ``regions`` keyword arguments for :class:`~realtime.pipeline.processor.FrameProcessor`."""
    maps = control_stage(style, model, stylizer, seed)
    try:
        regions = None if model is None or style.passthrough else region_stage(region, model.segment_model, background)
    except BaseException:
        if maps is not None:
            maps.close()
        raise
    return {"control_maps": maps, "regions": regions}


def controls_loader(model: ModelConfig | None, stylizer: Any, control_maps: Any, seed: int = 0) -> Any:
    """What the live session calls (on its background worker) for a ``controls`` change: the new controls' ControlNets
    loaded into ``stylizer``'s components (:func:`realtime.diffusion.models.add_controlnets`) and their detectors into
    ``control_maps``; the frame step is then rebuilt by ``set_style`` between two frames. None without a model."""
    if model is None or stylizer is None or getattr(stylizer, "components", None) is None:
        return None

    def load(style: StyleConfig) -> None:
        from realtime.diffusion.models import add_controlnets

        add_controlnets(stylizer.components, model, style.controls, seed)
        if control_maps is not None:
            control_maps.prepare(style.controls)

    return load
