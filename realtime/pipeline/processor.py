"""One frame through every stage: crop window -> crop + resize to the model size -> Canny -> stylizer -> cover the output.

Shared by ``stylecam image``, ``live`` and ``clip`` (so a clip looks exactly like the live camera would). Images are
HxWx3 uint8 RGB numpy arrays. Framing, when on, comes from a face framer (``update(rgb, t) -> CropWindow``); without it
the crop window is the largest centred window of the model's aspect ratio (GUIDE 2).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from realtime.config import ModelConfig, RunConfig, StyleConfig, TemporalConfig
from realtime.vision.edges import CannyConfig, EdgeDetector
from realtime.errors import UsageError
from realtime.geometry import CropWindow, Size, centre_window, cover_resize, crop_resize

log = logging.getLogger(__name__)


class Framer(Protocol):
    def update(self, rgb: np.ndarray, timestamp_s: float) -> CropWindow: ...

    def close(self) -> None: ...


@dataclass
class StageTimes:
    """Milliseconds spent per stage over the frames seen (for logs, summaries and benchmarks)."""

    totals: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + ms
        self.counts[stage] = self.counts.get(stage, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.totals[k] / max(1, self.counts[k]) for k in self.totals}

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} ms" for k, v in self.means().items())


def canny_config(style: StyleConfig) -> CannyConfig:
    if style.canny_low is None:
        return CannyConfig()
    return CannyConfig(low=style.canny_low, high=style.canny_high)


#: What :meth:`FrameProcessor.process` does with a frame: stylize it, pass the framed crop through, or send black.
MODES = ("stylize", "bypass", "blank")


class FrameProcessor:
    """Turns one input frame into one output frame. ``stylizer=None`` is pass-through (the ``none`` style).

    ``process(frame, timestamp_s)``: frame (H, W, 3) uint8 RGB of any size -> (output.height, output.width, 3) uint8
    RGB.
    The window of the last frame is in ``last_window``; per-stage times accumulate in ``times``.

    Live controls (all optional; ``image`` and ``clip`` use none of them):

    - ``similarity``: a :class:`~realtime.pipeline.temporal.SimilarityFilter`; a skipped frame reuses the previous stylized image
      (counted in ``skipped``). :meth:`set_temporal` creates, retunes or removes it.
    - ``mode`` (:data:`MODES`, :meth:`set_mode`): ``bypass`` passes the framed crop through at once, ``blank`` sends a
      black frame (privacy); back to ``stylize``, the stylizer starts afresh (no blending with stale latents).
    - :meth:`set_framing`, :meth:`set_mirror`: face framing and mirroring on or off while running.
    - :meth:`set_style`: another style on the running stylizer (the ``none`` style passes through, keeping the model).
    - A stylizer with a ``last_ok`` attribute (:class:`~realtime.pipeline.watchdog.GuardedStylizer`) may pass a frame through
      unstylized; those are counted in ``passed_through`` and never reused by the similarity filter.
    """

    def __init__(
        self, model_size: Size, output_size: Size | None, *, stylizer: Any | None = None,
        edges: EdgeDetector | None = None, framer: Framer | None = None, mirror: bool = False,
        similarity: Any | None = None, style: StyleConfig | None = None,
    ) -> None:
        self.model_size, self.output_size = model_size, output_size
        self.stylizer, self.framer, self.mirror = stylizer, framer, mirror
        self.edges = edges or EdgeDetector()
        self.framing = framer is not None and bool(getattr(framer, "enabled", True))
        self.times = StageTimes()
        self.last_window: CropWindow | None = None
        self.similarity = similarity
        self.style: StyleConfig | None = style if style is not None else getattr(stylizer, "style", None)
        self.passthrough = stylizer is None or bool(self.style is not None and self.style.passthrough)
        self.mode = "stylize"
        self.stylized = self.skipped = self.passed_through = 0
        self._last_out: np.ndarray | None = None
        self._blank: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------------ controls
    def set_mode(self, mode: str) -> None:
        """``stylize``, ``bypass`` or ``blank`` (see the class docstring)."""
        if mode not in MODES:
            raise UsageError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        if mode == "stylize" and self.mode != "stylize":
            self._restart()
        self.mode = mode

    def set_framing(self, on: bool) -> None:
        """Face framing on or off. A framer with an ``enabled`` switch (FaceFramer) eases to the centre window and
        back; it may raise when framing is switched on and the face model cannot be loaded."""
        if self.framer is None:
            if on:
                raise UsageError("framing is not available: started with --no-face")
            return
        if hasattr(self.framer, "enabled"):
            self.framer.enabled = bool(on)  # type: ignore[attr-defined]
        self.framing = bool(on)

    def set_mirror(self, on: bool) -> None:
        """Mirror the input (a selfie view). A framer with ``mirror()`` (FaceFramer) flips its state with the picture,
        so the window does not jump; another framer's tracker (if any) starts afresh."""
        if bool(on) == self.mirror:
            return
        self.mirror = bool(on)
        if callable(getattr(self.framer, "mirror", None)):
            self.framer.mirror()  # type: ignore[union-attr]
        elif hasattr(getattr(self.framer, "tracker", None), "reset"):
            self.framer.tracker.reset()  # type: ignore[union-attr]

    def set_temporal(self, cfg: TemporalConfig) -> None:
        """Apply the similarity-filter part of ``cfg`` (blending itself is the stylizer's, through its style)."""
        from realtime.pipeline.temporal import SimilarityFilter

        if not cfg.similarity_filter:
            self.similarity = None
        elif self.similarity is None:
            self.similarity = SimilarityFilter(cfg.similarity_threshold, cfg.max_skips)
        else:
            self.similarity.configure(cfg.similarity_threshold, cfg.max_skips)

    def set_style(self, style: StyleConfig) -> None:
        """Switch the running style: Canny thresholds, similarity filter, and the stylizer's prompt and numbers (the
        prompt is encoded off the frame path by the stylizer). Raises :class:`UsageError` when it cannot be done
        without reloading models: a diffusion style when no model is loaded, or different LoRAs."""
        if not style.passthrough:
            if self.stylizer is None:
                raise UsageError(f"style {style.name!r} needs a model, and none is loaded (started with --style none): "
                                 f"restart with --style {style.name}")
            running = getattr(self.stylizer, "style", None)  # not self.style: that may be the pass-through one
            current = running.loras if running is not None else style.loras
            if style.loras != current:
                raise UsageError(f"style {style.name!r} uses other LoRAs than the running one: restart with "
                                 f"--style {style.name} to load them")
            if canny_config(style) != self.edges.cfg:
                self.edges = EdgeDetector(canny_config(style))
            self.set_temporal(style.temporal)
            self.stylizer.set_style(style)
            if self.passthrough:
                self._restart()
        self.passthrough = style.passthrough or self.stylizer is None
        self.style = style
        if self.similarity is not None:
            self.similarity.reset()  # the new look shows on the next frame
        self._last_out = None

    def swap_stylizer(self, stylizer: Any, style: StyleConfig) -> None:
        """Put ``stylizer`` (built for ``style``, e.g. with other LoRAs) in place of the running one; the next frame
        uses it and starts afresh. The old one is closed once no frame runs on it (a
        :class:`~realtime.pipeline.watchdog.GuardedStylizer` swaps and closes on its own thread). While the ``none`` style
        passes frames through, it keeps doing so: the new stylizer runs when a diffusion style is chosen."""
        old = self.stylizer
        if old is not None and hasattr(old, "replace"):
            old.replace(stylizer)
        else:
            self.stylizer = stylizer
            if old is not None:
                old.close()
        if not self.passthrough:
            if canny_config(style) != self.edges.cfg:
                self.edges = EdgeDetector(canny_config(style))
            self.set_temporal(style.temporal)
            self.style = style
        self._restart()

    def _restart(self) -> None:
        """Forget the previous frame (stale latents after a pause) and the similarity reference."""
        if self.stylizer is not None and hasattr(self.stylizer, "reset"):
            self.stylizer.reset()
        if self.similarity is not None:
            self.similarity.reset()
        self._last_out = None

    # -------------------------------------------------------------------------------------------------- stages
    def window(self, frame: np.ndarray, timestamp_s: float) -> CropWindow:
        h, w = frame.shape[:2]
        if self.framer is not None and (self.framing or hasattr(self.framer, "enabled")):
            return self.framer.update(frame, timestamp_s)  # a switchable framer eases out by itself
        return centre_window(Size(w, h), self.model_size.aspect)

    def prepare(self, frame: np.ndarray, timestamp_s: float = 0.0) -> np.ndarray:
        """Frame -> the model-size crop (mirrored if asked). Face framing happens here."""
        t0 = time.perf_counter()
        if self.mirror:
            frame = frame[:, ::-1]
        win = self.window(frame, timestamp_s)
        self.last_window = win
        t1 = time.perf_counter()
        crop = crop_resize(frame, win, self.model_size)
        t2 = time.perf_counter()
        self.times.add("face", (t1 - t0) * 1e3)
        self.times.add("crop", (t2 - t1) * 1e3)
        return crop

    def stylize(self, crop: np.ndarray) -> np.ndarray:
        """Model-size crop -> model-size stylized image (the crop itself when pass-through)."""
        if self.stylizer is None or self.passthrough:
            return crop
        t0 = time.perf_counter()
        sim = self.similarity
        if sim is not None:
            if self._last_out is None:
                sim.reset()
            skip = sim.skip(crop)
            self.times.add("similarity", (time.perf_counter() - t0) * 1e3)
            if skip:
                self.skipped += 1
                return self._last_out  # type: ignore[return-value]  # skip() is False while nothing is cached
            t0 = time.perf_counter()
        control = self.edges(crop)
        t1 = time.perf_counter()
        out = self.stylizer(crop, control)
        t2 = time.perf_counter()
        self.times.add("canny", (t1 - t0) * 1e3)
        self.times.add("stylize", (t2 - t1) * 1e3)
        if getattr(self.stylizer, "last_ok", True):
            self.stylized += 1
            self._last_out = out
        else:
            self.passed_through += 1
            self._last_out = None
        return out

    def finish(self, image: np.ndarray, like: np.ndarray) -> np.ndarray:
        """Model-size image -> the output size (cover + centre crop). ``like`` is the input frame (default size)."""
        out = self.output_size or Size(like.shape[1], like.shape[0])
        t0 = time.perf_counter()
        result = cover_resize(image, out)
        self.times.add("resize", (time.perf_counter() - t0) * 1e3)
        return result

    def blank(self, like: np.ndarray) -> np.ndarray:
        """A black frame of the output size (``like``: the input frame, for the default size)."""
        out = self.output_size or Size(like.shape[1], like.shape[0])
        if self._blank is None or self._blank.shape[:2] != (out.height, out.width):
            self._blank = np.zeros((out.height, out.width, 3), np.uint8)
        return self._blank

    def process(self, frame: np.ndarray, timestamp_s: float = 0.0) -> np.ndarray:
        if self.mode == "blank":
            return self.blank(frame)
        crop = self.prepare(frame, timestamp_s)
        return self.finish(crop if self.mode == "bypass" else self.stylize(crop), frame)

    def close(self) -> None:
        if self.framer is not None:
            self.framer.close()
        if self.stylizer is not None:
            self.stylizer.close()
        self.edges.close()

    def __enter__(self) -> "FrameProcessor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_stylizer(model: ModelConfig, style: StyleConfig, run: RunConfig) -> Any | None:
    """Load the models for ``model`` + ``style`` (LoRAs fused) and return a :class:`~realtime.diffusion.stylizer.Stylizer`;
    ``None`` for the pass-through style (no model loaded at all)."""
    if style.passthrough:
        return None
    from realtime.diffusion.lora import fuse_loras
    from realtime.diffusion.models import load_components, resolve_device, resolve_dtype
    from realtime.diffusion.stylizer import Stylizer

    from realtime.pipeline.preflight import check_backend

    device = resolve_device(run.device)
    dtype = resolve_dtype(run.dtype, device)
    check_backend(run.backend, device)  # before any model loads: a missing extra is a one-line error, no fallback
    comps = load_components(model, device, dtype, seed=run.seed)
    if device.type == "cpu":  # after loading: a bad input's one-line error is never preceded by this warning
        log.warning("running on the CPU: expect seconds per frame at real model sizes (a CUDA GPU gives real time)")
    fuse_loras(comps, style.loras, allow_pickle=model.allow_pickle)
    runner_factory = None
    if run.backend != "eager":
        from realtime.diffusion.engine_select import runner_factory as make_factory

        runner_factory = make_factory(model, style, run, comps, device, dtype)
    log.info("stylizer on %s (%s), model size %s, backend %s", device, str(dtype).replace("torch.", ""), run.size, run.backend)
    return Stylizer(comps, style, run.size, device=device, dtype=dtype, seed=run.seed, runner_factory=runner_factory)
