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

from .config import ModelConfig, RunConfig, StyleConfig
from .edges import CannyConfig, EdgeDetector
from .geometry import CropWindow, Size, centre_window, cover_resize, crop_resize

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


class FrameProcessor:
    """Turns one input frame into one output frame. ``stylizer=None`` is pass-through (the ``none`` style).

    ``process(frame, timestamp_s)``: frame (H, W, 3) uint8 RGB of any size -> (output.height, output.width, 3) uint8 RGB.
    The window of the last frame is in ``last_window``; per-stage times accumulate in ``times``.
    """

    def __init__(
        self, model_size: Size, output_size: Size | None, *, stylizer: Any | None = None,
        edges: EdgeDetector | None = None, framer: Framer | None = None, mirror: bool = False,
    ) -> None:
        self.model_size, self.output_size = model_size, output_size
        self.stylizer, self.framer, self.mirror = stylizer, framer, mirror
        self.edges = edges or EdgeDetector()
        self.framing = framer is not None
        self.times = StageTimes()
        self.last_window: CropWindow | None = None

    def window(self, frame: np.ndarray, timestamp_s: float) -> CropWindow:
        h, w = frame.shape[:2]
        if self.framer is not None and self.framing:
            return self.framer.update(frame, timestamp_s)
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
        if self.stylizer is None:
            return crop
        t0 = time.perf_counter()
        control = self.edges(crop)
        t1 = time.perf_counter()
        out = self.stylizer(crop, control)
        t2 = time.perf_counter()
        self.times.add("canny", (t1 - t0) * 1e3)
        self.times.add("stylize", (t2 - t1) * 1e3)
        return out

    def finish(self, image: np.ndarray, like: np.ndarray) -> np.ndarray:
        """Model-size image -> the output size (cover + centre crop). ``like`` is the input frame (default size)."""
        out = self.output_size or Size(like.shape[1], like.shape[0])
        t0 = time.perf_counter()
        result = cover_resize(image, out)
        self.times.add("resize", (time.perf_counter() - t0) * 1e3)
        return result

    def process(self, frame: np.ndarray, timestamp_s: float = 0.0) -> np.ndarray:
        return self.finish(self.stylize(self.prepare(frame, timestamp_s)), frame)

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
    """Load the models for ``model`` + ``style`` (LoRAs fused) and return a :class:`~realtime.stylizer.Stylizer`;
    ``None`` for the pass-through style (no model loaded at all)."""
    if style.passthrough:
        return None
    from .lora import fuse_loras
    from .models import load_components, resolve_device, resolve_dtype
    from .stylizer import Stylizer

    device = resolve_device(run.device)
    dtype = resolve_dtype(run.dtype, device)
    if run.backend not in ("eager", "auto"):
        from engines import get_backend

        ok, why = get_backend(run.backend).is_available(device)
        if not ok:  # before any model loads: a missing extra is a one-line error, never a silent fallback
            from engines import BackendUnavailable

            raise BackendUnavailable(why)
    if device.type == "cpu":
        log.warning("running on the CPU: expect seconds per frame at real model sizes (a CUDA GPU gives real time)")
    comps = load_components(model, device, dtype, seed=run.seed)
    fuse_loras(comps, style.loras, allow_pickle=model.allow_pickle)
    runner_factory = None
    if run.backend != "eager":
        from .engine_glue import runner_factory as make_factory

        runner_factory = make_factory(model, style, run, comps, device, dtype)
    log.info("stylizer on %s (%s), model size %s, backend %s", device, str(dtype).replace("torch.", ""), run.size, run.backend)
    return Stylizer(comps, style, run.size, device=device, dtype=dtype, seed=run.seed, runner_factory=runner_factory)
