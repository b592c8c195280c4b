"""Building a live session from ``stylecam live``'s arguments (kept apart from the loop in :mod:`realtime.pipeline.live`).

Order: validate the options, check the inputs (:func:`realtime.cli.preflight.live_inputs`: a file source decodes, file
outputs, the face model, model specs and LoRAs), open the source (no camera -> exit 2), open the sinks (no virtual
camera device, no display, unwritable file -> exit 2), the face framer, load the stylizer (slow), then warm it up on a grey frame
before the loop starts, so the first frame delivered is a real stylized frame. Everything opened is registered on the
caller's :class:`contextlib.ExitStack`, so a failure half-way closes what was opened (file sinks leave nothing).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from realtime.errors import UsageError
from realtime.geometry import Size, parse_size

log = logging.getLogger(__name__)

@dataclass
class LiveParts:
    source: Any
    sinks: list[Any]
    processor: Any
    session: Any
    command_sources: list[Any]
    warmup_s: float | None = None


def output_specs(args: argparse.Namespace) -> list[str]:
    specs = list(args.output) if args.output else ["vcam"]
    return [s.strip() for s in specs]


def warm_up(stylizer: Any, size: Size) -> float:
    """Run two frames (a grey image, no edges) through ``stylizer`` and forget them; returns the second frame's time
    in seconds (the first pays for lazy initialisation)."""
    image = np.full((size.height, size.width, 3), 127, np.uint8)
    blank = getattr(stylizer, "blank_controls", None)
    control = blank() if callable(blank) else np.zeros((size.height, size.width), np.uint8)
    stylizer(image, control)
    t0 = time.perf_counter()
    stylizer(image, control)
    seconds = time.perf_counter() - t0
    stylizer.reset()
    return seconds


def _load_stylizer(model: Any, style: Any, run_cfg: Any, stack: contextlib.ExitStack) -> tuple[Any, float]:
    """Load the stylizer behind its watchdog and warm it up; returns it and the warm-up seconds per frame."""
    from realtime.diffusion.build import build_stylizer
    from realtime.pipeline.watchdog import GuardedStylizer

    raw = build_stylizer(model, style, run_cfg)
    stylizer = GuardedStylizer(raw)
    stack.callback(stylizer.close)
    # On the stylizer's own thread, like every later frame (CUDA graph/compile state can be per thread).
    warmup_s = stylizer.schedule(lambda: warm_up(raw, run_cfg.size)).result()
    device = getattr(raw, "device", None)
    if getattr(device, "type", "") == "cpu":
        log.warning("running on the CPU: %.2f s per frame at %s, expect about %.2g fps (a CUDA GPU gives real "
                    "time)", warmup_s, run_cfg.size, 1.0 / max(warmup_s, 1e-6))
    else:
        log.info("warm-up: %.1f ms per frame at %s", warmup_s * 1e3, run_cfg.size)
    stylizer.observe(warmup_s)
    from realtime.diffusion.build import settle_heap

    settle_heap()  # loaded and warmed up: later collections never walk the model stack (no ~250 ms pauses)
    return stylizer, warmup_s


def build_live(args: argparse.Namespace, stack: contextlib.ExitStack) -> LiveParts:
    from realtime.io.sources import open_source
    from realtime.pipeline.controls import ControlFile, StdinCommands, stdin_usable
    from realtime.vision.edges import EdgeDetector
    from realtime.vision.face import FaceFramer, FramingConfig
    from realtime.vision.framer_thread import ThreadedFramer
    from realtime.cli.options import model_from_args, run_from_args, style_from_args, temporal_options
    from realtime.pipeline.processor import FrameProcessor, canny_config
    from realtime.cli.preflight import live_inputs, region_inputs
    from realtime.pipeline.stages import controls_loader, frame_stages
    from realtime.pipeline.session import LiveSession
    from realtime.io.sinks import open_sinks
    from realtime.io.videofile import FileSource
    from realtime.io.videowriter import VideoFileSink
    from realtime.pipeline.temporal import SimilarityFilter

    # --- options (cheap checks first: nothing is opened before the command line is known to be good)
    style = style_from_args(args)
    model = None if style.passthrough else model_from_args(args)
    out_size = parse_size(args.output_size, what="--output-size")
    if out_size.width % 2 or out_size.height % 2:
        raise UsageError(f"--output-size {out_size}: width and height must be even (encoders and cameras need it)")
    cam = parse_size(args.camera_size, what="--camera-size")
    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames {args.frames}: must be at least 1")
    if args.fps is not None and not 0 < args.fps <= 240:
        raise UsageError(f"--fps {args.fps}: must be in (0, 240]")
    run_cfg = run_from_args(args, out_size)
    # Framing only: crop straight to the output size (no model size to round to); a model: the model size.
    work_size = out_size if style.passthrough and args.size == "auto" else run_cfg.size
    specs = output_specs(args)
    control = ControlFile(args.control_file) if args.control_file else None
    live_inputs(args, style, model, specs)  # files, encoders, face model, models and LoRAs: before anything opens
    region, background = region_inputs(args, model)

    # --- devices (no log line before they are all open: a missing device is the only line the user sees)
    source = open_source(args.source, width=cam.width, height=cam.height, fps=args.fps or 30, mjpg=args.mjpg,
                         paced=not args.no_pace)
    stack.callback(source.close)
    fps = float(args.fps or source.fps or 30.0)
    sinks = open_sinks(specs, out_size.width, out_size.height, fps, overwrite=args.overwrite,
                       vcam_backend=args.vcam_backend, vcam_device=args.vcam_device)
    for sink in reversed(sinks):  # on a failure below: file sinks are aborted (nothing left behind)
        stack.callback(sink.abort if isinstance(sink, VideoFileSink) else sink.close)

    framing = FramingConfig(enabled=not args.no_face)
    framer = ThreadedFramer(source.size, work_size.aspect,  # detection on its own thread, on a downscaled copy
                            lambda size: FaceFramer(framing, size, work_size.aspect, model=args.face_model))
    stack.callback(framer.close)
    log.info("source %s: %s at %.3g fps%s", args.source, source.size, source.fps,
             "" if not isinstance(source, FileSource) else (" (paced)" if source.paced else " (as fast as possible)"))

    # --- the stylizer (slow), then its warm-up
    stylizer, warmup_s = _load_stylizer(model, style, run_cfg, stack) if model is not None else (None, None)
    raw = getattr(stylizer, "stylizer", stylizer)  # inside the watchdog
    stages = frame_stages(style, model, region, stylizer=raw, background=background, seed=run_cfg.seed)
    processor = FrameProcessor(
        work_size, out_size, stylizer=stylizer, edges=EdgeDetector(canny_config(style)), framer=framer,
        mirror=args.mirror, similarity=None if style.passthrough else SimilarityFilter.from_config(style.temporal),
        style=style, **stages,
    )
    stack.callback(processor.close)
    loader = controls_loader(model, raw, stages["control_maps"], run_cfg.seed) if raw is not None else None
    session = LiveSession(processor, style, temporal_overrides=temporal_options(args), controls_loader=loader)
    sources: list[Any] = []
    if not args.no_stdin and stdin_usable():
        sources.append(StdinCommands())
    if control is not None:
        sources.append(control)
    log.info("live: %s -> %s, style %s, %s %s -> %s%s", args.source, ", ".join(specs), describe_style(style),
             "framing" if not args.no_face else "no framing,", work_size, out_size,
             "" if not sources else " (commands: " + ", ".join(
                 "stdin" if isinstance(s, StdinCommands) else f"control file {s.path}" for s in sources) + ")")
    return LiveParts(source, sinks, processor, session, sources, warmup_s)


def describe_style(style: Any) -> str:
    if style.passthrough:
        return f"{style.name} (pass-through)"
    t = style.temporal
    return (f"{style.name}: strength {style.strength:g}, control {style.control_scale:g}, guidance {style.guidance:g}, "
            f"blend {t.blend:g}{' motion-adaptive' if t.motion_adaptive else ''}"
            f"{f', similarity {t.similarity_threshold:g} x{t.max_skips}' if t.similarity_filter else ''}")

