"""One frame through every stage: crop window -> crop + resize to the model size -> Canny -> stylizer -> cover the output.

The one frame path: ``stylecam image``, ``live``, ``clip`` and every ``bench`` mode call :class:`FrameProcessor` (so a
clip looks exactly like the live camera would, and the benchmark times what ``live`` runs). Images are HxWx3 uint8 RGB
numpy arrays. Framing, when on, comes from a :class:`~realtime.vision.protocols.Framer`; without one the crop window
is the largest centred window of the model's aspect ratio (docs/design.md §3). Stages are timed on a
:class:`~realtime.pipeline.timing.Clock` (``perf_counter`` unless one is given).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from realtime.config import RegionConfig, StyleConfig, TemporalConfig
from realtime.diffusion.protocols import StylizerRunner
from realtime.errors import UsageError
from realtime.geometry import CropWindow, Size, centre_window, cover_resize, crop_resize
from realtime.pipeline.framepath import DevicePath
from realtime.pipeline.temporal import SimilarityFilter
from realtime.pipeline.timing import Clock, PerfCounterClock, StageTimes
from realtime.pipeline.watchdog import GuardedStylizer
from realtime.vision.edges import CannyConfig, EdgeDetector
from realtime.vision.protocols import ControlMapper, EdgeMap, Framer
from realtime.vision.regions import RegionCompositor

log = logging.getLogger(__name__)

__all__ = ["MODES", "FrameProcessor", "canny_config"]


def canny_config(style: StyleConfig) -> CannyConfig:
    if style.canny_low is None:
        return CannyConfig()
    return CannyConfig(low=style.canny_low, high=style.canny_high)


#: What :meth:`FrameProcessor.process` does with a frame: stylize it, pass the framed crop through, or send black.
MODES = ("stylize", "bypass", "blank")


class FrameProcessor:
    """Turns one input frame into one output frame. ``stylizer=None`` is pass-through (the ``none`` style).

    ``process(frame, timestamp_s)``: frame (H, W, 3) uint8 RGB of any size -> (output.height, output.width, 3) uint8
    RGB (``output_size`` None: the input's size). The window of the last frame is in ``last_window``.

    Timing: every stage (``face`` = mirror + crop window, ``crop``, ``similarity``, ``canny``, ``stylize``, ``resize``)
    is timed on ``clock`` (a :class:`~realtime.pipeline.timing.Clock`; default ``perf_counter``). A call opens and
    closes its own frame on the clock, adds it to ``times`` (running means) and keeps it in ``last_times``; a caller
    that already holds a frame open on the same clock (the benchmark, to time capture and sink around it) gets the
    stages on its frame instead. ``prepare``, ``stylize`` and ``finish`` alone are timed the same way.

    Live controls (all optional; ``image`` and ``clip`` use none of them):

    - ``similarity``: a :class:`~realtime.pipeline.temporal.SimilarityFilter`; a skipped frame reuses the previous
      stylized image (counted in ``skipped``). :meth:`set_temporal` creates, retunes or removes it.
    - ``mode`` (:data:`MODES`, :meth:`set_mode`): ``bypass`` passes the framed crop through at once, ``blank`` sends a
      black frame (privacy); back to ``stylize``, the stylizer starts afresh (no blending with stale latents).
    - :meth:`set_framing`, :meth:`set_mirror`: face framing and mirroring on or off while running.
    - :meth:`set_style`: another style on the running stylizer (the ``none`` style passes through, keeping the model).
    - A stylizer that returns the crop itself passed the frame through unstylized (the watchdog's
      :class:`~realtime.pipeline.watchdog.GuardedStylizer` does, on a stall or a failure); those frames are counted in
      ``passed_through`` and never reused by the similarity filter.
    """

    def __init__(
        self, model_size: Size, output_size: Size | None, *, stylizer: StylizerRunner | None = None,
        edges: EdgeMap | None = None, framer: Framer | None = None, mirror: bool = False,
        similarity: SimilarityFilter | None = None, style: StyleConfig | None = None, clock: Clock | None = None,
        control_maps: ControlMapper | None = None, regions: RegionCompositor | None = None,
    ) -> None:
        self.model_size, self.output_size = model_size, output_size
        self.stylizer, self.framer, self.mirror = stylizer, framer, mirror
        self.edges: EdgeMap = edges if edges is not None else EdgeDetector()
        self.control_maps, self.regions = control_maps, regions
        self.framing = framer is not None and framer.enabled
        self.clock: Clock = clock if clock is not None else PerfCounterClock()
        self.times = StageTimes()
        self.last_times: dict[str, float] = {}
        self.last_window: CropWindow | None = None
        self.similarity = similarity
        if style is None and stylizer is not None:
            style = stylizer.style
        self.style: StyleConfig | None = style
        self.passthrough = stylizer is None or bool(self.style is not None and self.style.passthrough)
        self.mode = "stylize"
        self._timestamp = 0.0
        self.stylized = self.skipped = self.passed_through = 0
        self._last_out: np.ndarray | None = None
        self._blank: np.ndarray | None = None
        self._path: DevicePath | None = None

    # ------------------------------------------------------------------------------------------------ controls
    def set_mode(self, mode: str) -> None:
        """``stylize``, ``bypass`` or ``blank`` (see the class docstring)."""
        if mode not in MODES:
            raise UsageError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        if mode == "stylize" and self.mode != "stylize":
            self._restart()
        self.mode = mode

    def set_framing(self, on: bool) -> None:
        """Face framing on or off: the framer eases to the centre window and back; it may raise when framing is
        switched on and the face model cannot be loaded."""
        if self.framer is None:
            if on:
                raise UsageError("framing is not available: started with --no-face")
            return
        self.framer.enabled = bool(on)
        self.framing = bool(on)

    def set_mirror(self, on: bool) -> None:
        """Mirror the input (a selfie view). The framer flips its state with the picture, so the window does not
        jump."""
        if bool(on) == self.mirror:
            return
        self.mirror = bool(on)
        if self.framer is not None:
            self.framer.mirror()

    @property
    def region(self) -> RegionConfig:
        """What gets stylized now (``region all`` without a compositor)."""
        return self.regions.cfg if self.regions is not None else RegionConfig()

    def set_region(self, cfg: RegionConfig, background: np.ndarray | None = None) -> None:
        """Another ``--region``/``--background`` while running (``background``: the decoded image of a FILE); the
        segmenter is loaded on the first region that needs it."""
        if self.regions is None:
            raise UsageError("regions need a model (started with --style none): restart with a diffusion style")
        self.regions.configure(cfg, background)

    def set_temporal(self, cfg: TemporalConfig) -> None:
        """Apply the similarity-filter part of ``cfg`` (blending itself is the stylizer's, through its style)."""
        if not cfg.similarity_filter:
            self.similarity = None
        elif self.similarity is None:
            self.similarity = SimilarityFilter(cfg.similarity_threshold, cfg.max_skips)
        else:
            self.similarity.configure(cfg.similarity_threshold, cfg.max_skips)

    def _restyle_stages(self, style: StyleConfig) -> None:
        if canny_config(style) != self.edges.cfg:
            self.edges = EdgeDetector(canny_config(style))
        self.set_temporal(style.temporal)

    def set_style(self, style: StyleConfig) -> None:
        """Switch the running style: Canny thresholds, similarity filter, and the stylizer's prompt and numbers (the
        prompt is encoded off the frame path by the stylizer; other LoRAs are switched in place by it). Raises
        :class:`UsageError` for a diffusion style when no model is loaded."""
        if not style.passthrough:
            if self.stylizer is None:
                raise UsageError(f"style {style.name!r} needs a model, and none is loaded (started with --style none): "
                                 f"restart with --style {style.name}")
            self._restyle_stages(style)
            self.stylizer.set_style(style)
            if self.passthrough:
                self._restart()
        self.passthrough = style.passthrough or self.stylizer is None
        self.style = style
        if self.similarity is not None:
            self.similarity.reset()  # the new look shows on the next frame
        self._last_out = None

    def _restart(self) -> None:
        """Forget the previous frame (stale latents after a pause) and the similarity reference."""
        if self.stylizer is not None:
            self.stylizer.reset()
        if self.similarity is not None:
            self.similarity.reset()
        if self.regions is not None:
            self.regions.reset()
        self._last_out = None

    # -------------------------------------------------------------------------------------------------- stages
    @contextmanager
    def _frame(self) -> Iterator[None]:
        """Time the block as one frame on the clock, unless the caller holds one open (then its stages go there)."""
        if self.clock.in_frame:
            yield
            return
        self.clock.begin()
        try:
            yield
        except BaseException:
            self.clock.cancel()
            raise
        self.last_times = self.clock.end().stages
        self.times.add_frame(self.last_times)

    def window(self, frame: np.ndarray, timestamp_s: float) -> CropWindow:
        h, w = frame.shape[:2]
        if self.framer is not None:
            return self.framer.update(frame, timestamp_s)  # switched off, it eases out to the centre by itself
        return centre_window(Size(w, h), self.model_size.aspect)

    def _device_stylizer(self) -> Any:
        """The stylizer whose step the device path runs (a Stylizer, or the one inside the watchdog), or None for a
        stand-in that has only the numpy contract (:class:`~realtime.diffusion.protocols.StylizerRunner`) and for a
        step with controls other than Canny."""
        inner = self.stylizer.stylizer if isinstance(self.stylizer, GuardedStylizer) else self.stylizer
        if not callable(getattr(inner, "frame_state", None)):
            return None
        # the path makes the Canny map; other controls' maps are made on the host (the host-side stages)
        return inner if set(getattr(inner, "controls", ())) <= {"canny"} else None

    def device_path(self, frame: np.ndarray) -> DevicePath:
        """The :class:`~realtime.pipeline.framepath.DevicePath` for this frame's size (built on first use and again
        when the frame size or the stylizer's device changes)."""
        h, w = frame.shape[:2]
        out = self.output_size or Size(w, h)
        inner = self._device_stylizer()
        device = getattr(inner, "device", None) or torch.device("cpu")
        p = self._path
        if p is None or (p.camera.width, p.camera.height) != (w, h) or p.output != out or p.device != device:
            p = self._path = DevicePath(Size(w, h), self.model_size, out, device)
        return p

    def _mirrored(self, frame: np.ndarray) -> np.ndarray:
        return frame[:, ::-1] if self.mirror else frame

    def prepare(self, frame: np.ndarray, timestamp_s: float = 0.0) -> np.ndarray:
        """Frame -> the model-size crop (mirrored if asked), read back to the host. Face framing happens here."""
        clock = self.clock
        with self._frame():
            with clock.stage("face"):
                self.last_window = self.window(self._mirrored(frame), timestamp_s)
                self._timestamp = timestamp_s
            with clock.stage("crop"):
                return self.device_path(frame).crop(frame, self.last_window, self.mirror)

    def stylize(self, crop: np.ndarray) -> np.ndarray:
        """Model-size crop -> model-size stylized image (the crop itself when pass-through). The host-side path: a
        stand-in stylizer, or the similarity filter (it compares crops on the host)."""
        if self.stylizer is None or self.passthrough:
            return crop
        clock = self.clock
        with self._frame():
            sim = self.similarity
            if sim is not None:
                with clock.stage("similarity"):
                    if self._last_out is None:
                        sim.reset()
                    skip = sim.skip(crop)
                if skip and self._last_out is not None:
                    self.skipped += 1
                    return self._composite(self._last_out, crop)
            control = self._control(crop)
            with clock.stage("stylize"):
                out = self.stylizer(crop, control)
        if out is crop:  # passed through unstylized (see StylizerRunner.__call__)
            self.passed_through += 1
            self._last_out = None
        else:
            self.stylized += 1
            self._last_out = out
        return self._composite(out, crop)

    def _control(self, crop: np.ndarray) -> "np.ndarray | dict[str, np.ndarray]":
        """The style's control maps of ``crop``, each timed as its own stage (``canny``, ``pose``, ``depth``): the
        one map of a one-control style, else {control: map}."""
        controls = self.style.controls if self.style is not None else ("canny",)
        maps: dict[str, np.ndarray] = {}
        for name in controls:
            with self.clock.stage(name):
                if name == "canny":
                    maps[name] = self.edges(crop)
                elif self.control_maps is None:
                    raise UsageError(f"control {name} needs its detector, and none was set up")
                else:
                    maps[name] = self.control_maps(name, crop)
        return maps[controls[0]] if len(controls) == 1 else maps

    def _composite(self, out: np.ndarray, crop: np.ndarray) -> np.ndarray:
        """``--region``: mix the stylized image with the crop's own pixels (stage ``segment``: mask + compositing)."""
        if self.regions is None or not self.regions.cfg.active:
            return out
        with self._frame(), self.clock.stage("segment"):
            return self.regions(out, crop, self._timestamp)

    def finish(self, image: np.ndarray, like: np.ndarray) -> np.ndarray:
        """Model-size image -> the output size (cover + centre crop). ``like`` is the input frame (default size)."""
        with self._frame(), self.clock.stage("resize"):
            return self.device_path(like).cover(image)

    def blank(self, like: np.ndarray) -> np.ndarray:
        """A black frame of the output size (``like``: the input frame, for the default size)."""
        out = self.output_size or Size(like.shape[1], like.shape[0])
        if self._blank is None or self._blank.shape[:2] != (out.height, out.width):
            self._blank = np.zeros((out.height, out.width, 3), np.uint8)
        return self._blank

    def _fused(self, frame: np.ndarray, inner: Any) -> np.ndarray:
        """The whole frame on the device path: one upload, one module, one readback. Under the watchdog the path
        runs on its thread; a stall or a failure passes the framed crop through, cut on the host with OpenCV (a
        stalled device must not be waited on)."""
        path, win, canny = self.device_path(frame), self.last_window, self.edges.cfg
        assert win is not None
        guard = self.stylizer if isinstance(self.stylizer, GuardedStylizer) else None
        with self.clock.stage("stylize"):
            if guard is None:
                out = path.run(frame, win, self.mirror, canny, inner, stages=self.clock)
            else:
                # no sub-stage timing on the watchdog's thread: a stalled frame would still be writing to the clock
                out = guard.guarded(lambda: path.run(frame, win, self.mirror, canny, inner),
                                    lambda: cover_resize(crop_resize(self._mirrored(frame), win, self.model_size),
                                                         path.output))
        if guard is not None and not guard.last_ok:
            self.passed_through += 1
        else:
            self.stylized += 1
        return out

    def process(self, frame: np.ndarray, timestamp_s: float = 0.0) -> np.ndarray:
        """One camera frame (H, W, 3) uint8 RGB -> the output frame. A Stylizer with no similarity filter runs the
        fused device path (:meth:`_fused`); bypass and the ``none`` style run the same path without the step; a
        stand-in stylizer or the similarity filter runs the host-side stages (:meth:`prepare`, :meth:`stylize`,
        :meth:`finish`) on the same crop and cover."""
        if self.mode == "blank":
            return self.blank(frame)
        inner = self._device_stylizer()
        # regions composite on the host side for now (vision/regions.py is torch: the device path can take it over)
        host_side = self.similarity is not None or inner is None or (self.regions is not None and self.regions.cfg.active)
        if self.mode == "stylize" and not self.passthrough and self.stylizer is not None and host_side:
            with self._frame():
                crop = self.prepare(frame, timestamp_s)
                return self.finish(self.stylize(crop), frame)
        with self._frame():
            with self.clock.stage("face"):
                self.last_window = self.window(self._mirrored(frame), timestamp_s)
            if self.mode == "stylize" and not self.passthrough and self.stylizer is not None:
                return self._fused(frame, inner)
            # bypass / the none style: crop + cover on the same path
            return self.device_path(frame).run(frame, self.last_window, self.mirror, self.edges.cfg, stages=self.clock)

    def close(self) -> None:
        if self.framer is not None:
            self.framer.close()
        if self.stylizer is not None:
            self.stylizer.close()
        self.edges.close()
        for stage in (self.control_maps, self.regions):
            if stage is not None:
                stage.close()

    def __enter__(self) -> "FrameProcessor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
