"""The benchmark runner behind ``stylecam bench`` (docs/design.md §9): settings and the sweep.

For every size x backend a stylizer is built (:func:`realtime.diffusion.build.build_stylizer`), then each mode runs warm-up
frames and ``--frames`` timed frames (:mod:`realtime.bench.modes`). The result document (:mod:`realtime.bench.schema`)
holds the settings, every figure and the environment; it is written atomically.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from realtime.config import RegionConfig
from realtime.errors import DeviceUnavailable, UsageError
from realtime.geometry import Size

log = logging.getLogger(__name__)

MODES = ("step", "pipeline", "live", "switch")
SINKS = ("null", "file")
#: FrameStep inputs that carry a batch dimension (the per-frame numbers broadcast).
BATCHED_INPUTS = ("image", "control", "prev_in_latent", "prev_out_latent", "noise", "prompt_embeds", "text_embeds", "time_ids")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure. ``source`` None = synthetic frames (no camera or disk in the timing)."""

    modes: tuple[str, ...] = ("step",)
    sizes: tuple[Size, ...] = (Size(512, 512),)
    backends: tuple[str, ...] = ("eager",)
    batch: int = 1
    frames: int = 300
    warmup: int = 5
    fps: float = 30.0
    source: str | None = None
    camera_size: Size = Size(1280, 720)
    output_size: Size = Size(1280, 720)
    face: bool = True
    face_model: str | None = None
    sink: str = "null"
    substages: bool = True
    label: str | None = None
    notes: tuple[str, ...] = ()
    region: RegionConfig = RegionConfig()  # --region/--background: the segment stage of pipeline and live

    def __post_init__(self) -> None:
        from realtime.geometry import check_model_size
        from realtime.config import BACKEND_CHOICES

        if not self.modes or any(m not in MODES for m in self.modes) or len(set(self.modes)) != len(self.modes):
            raise UsageError(f"--mode {','.join(self.modes)}: give one or more of {', '.join(MODES)}, comma-separated")
        if not self.sizes:
            raise UsageError("--sizes: give at least one WxH")
        for s in self.sizes:
            check_model_size(s, what="--sizes")
        if not self.backends or any(b not in BACKEND_CHOICES for b in self.backends):
            raise UsageError(f"--backends {','.join(self.backends)}: each must be one of {', '.join(BACKEND_CHOICES)}")
        for name, lo, hi in (("batch", 1, 256), ("frames", 1, 1_000_000), ("warmup", 0, 100_000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UsageError(f"--{name} {v!r}: must be an integer in {lo}..{hi}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not (0 < self.fps <= 1000 and math.isfinite(self.fps)):
            raise UsageError(f"--fps {self.fps!r}: must be a number in (0, 1000]")
        if self.sink not in SINKS:
            raise UsageError(f"--sink {self.sink!r}: expected one of {', '.join(SINKS)}")


# ---------------------------------------------------------------------------------------------------------- helpers
def _size_dict(s: Size) -> dict[str, int]:
    return {"width": s.width, "height": s.height}


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _free_device_memory(device: Any) -> None:
    gc.collect()
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()


def batch_inputs(inputs: tuple[Any, ...], batch: int) -> tuple[Any, ...]:
    """FrameStep inputs for ``batch`` frames per call: the per-frame tensors repeated along dim 0 (prompt embeddings
    too), the per-frame numbers (shape (1,)) left to broadcast."""
    from realtime.diffusion.family import SDXL_INPUT_NAMES
    from realtime.diffusion.stylizer import INPUT_NAMES

    if batch == 1:
        return inputs
    names = (INPUT_NAMES + SDXL_INPUT_NAMES)[: len(inputs)]  # the SDXL family's two extra inputs come last
    return tuple(x.repeat(batch, *([1] * (x.dim() - 1))) if name in BATCHED_INPUTS else x
                 for name, x in zip(names, inputs, strict=True))


def batched_runner(stylizer: Any, model: Any, style: Any, run: Any, inputs: tuple[Any, ...]) -> tuple[Callable[..., Any], bool]:
    """(runner for ``inputs``' batch, whether it must be closed). Batch 1: the stylizer's own runner. Batch > 1: the
    eager FrameStep itself, or an engine built for the batched shapes through the same runner factory as
    :func:`~realtime.diffusion.build.build_stylizer`. CFG (guidance > 1) takes one frame per call."""
    if inputs[0].shape[0] == 1:
        return stylizer.runner, False
    if style.uses_cfg:
        raise UsageError("--batch > 1 needs --guidance 1: the frame step's guidance path takes one frame per call")
    if stylizer.runner is stylizer.step:
        return stylizer.step, False
    from realtime.diffusion.engine_select import runner_factory

    factory = runner_factory(model, style, run, stylizer.components, stylizer.device, stylizer.dtype)
    return factory(stylizer.step, inputs), True


def _camera_frames(settings: BenchSettings) -> tuple[list[Any], str]:
    """Camera-size BGR frames for step/pipeline modes: synthetic, or up to 32 frames read from ``--source``."""
    from realtime.bench.modes import synthetic_frames

    if settings.source is None:
        return synthetic_frames(settings.camera_size), "synthetic"
    import numpy as np

    from realtime.io.sources import open_source

    frames = []
    with open_source(settings.source, width=settings.camera_size.width, height=settings.camera_size.height,
                     fps=settings.fps, paced=False) as src:
        while len(frames) < min(32, settings.warmup + settings.frames):
            fr = src.read(timeout=10.0)
            if fr is None:
                break
            frames.append(np.ascontiguousarray(fr.image[..., ::-1]))  # back to the camera's BGR
    if not frames:
        raise UsageError(f"--source {settings.source}: no frame could be read")
    return frames, settings.source


def _open_sink(kind: str, size: Size, fps: float, tmpdir: str) -> tuple[Any, str]:
    from realtime.io.sinks import NullSink

    if kind == "null":
        return NullSink(), "null"
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise DeviceUnavailable(f"--sink file needs PyAV ({e}): pip install av, or use --sink null") from e
    from realtime.io.sinks import VideoFileSink

    return VideoFileSink(Path(tmpdir) / "bench.mp4", size.width, size.height, fps), "pyav-libx264"


def _close_sink(sink: Any) -> None:
    abort = getattr(sink, "abort", None)
    (abort if callable(abort) else sink.close)()  # a file sink's output is discarded: nothing is left behind


# ------------------------------------------------------------------------------------------------------------- core
def run_benchmark(settings: BenchSettings, model: Any, style: Any, run: Any, *, command: str = "") -> dict[str, Any]:
    """Measure every size x backend x mode of ``settings`` and return the result document (validated)."""
    import tempfile

    from realtime import __version__
    from realtime.bench.environment import environment
    from realtime.bench.modes import cv2_missing, model_inputs
    from realtime.bench.schema import KINDS, SCHEMA_VERSION, validate
    from realtime.vision.edges import EdgeDetector
    from realtime.diffusion.models import resolve_device, resolve_dtype
    from realtime.bench.stats import BuildMemory, with_build
    from realtime.diffusion.build import build_stylizer, settle_heap
    from realtime.pipeline.processor import canny_config

    if style.passthrough:
        raise UsageError("--style none loads no model: there is nothing to benchmark; choose a diffusion style")
    if settings.batch > 1 and style.uses_cfg and "step" in settings.modes:
        raise UsageError("--batch > 1 needs --guidance 1: the frame step's guidance path takes one frame per call")
    device = resolve_device(run.device)
    if ("live" in settings.modes) and cv2_missing():
        raise DeviceUnavailable(f"--mode live needs OpenCV for the camera thread: {cv2_missing()}")
    env = environment(device)
    camera_frames, source_name = _camera_frames(settings)
    edges = EdgeDetector(canny_config(style))
    runs: list[dict[str, Any]] = []
    doc_notes: list[str] = list(settings.notes)
    if device.type == "cpu":
        doc_notes.append("measured on the CPU: no GPU figures (GPU memory fields are null)")
    for size in settings.sizes:
        for backend in settings.backends:
            rc = dataclasses.replace(run, size=size, backend=backend)
            log.info("bench: %s, backend %s: building the stylizer", size, backend)
            with BuildMemory(device) as built:  # memory peaks include the build (an engine build peaks higher)
                stylizer = build_stylizer(model, style, rc)
            settle_heap()  # as live does after loading and warm-up: no full collection over the model stack
            try:
                for mode in settings.modes:
                    log.info("bench: %s %s %s: %d warm-up + %d frames", mode, size, backend, settings.warmup, settings.frames)
                    with tempfile.TemporaryDirectory(prefix="stylecam-bench-") as tmp:
                        record = _run_mode(mode, stylizer, settings, model, style, rc, camera_frames, edges, tmp,
                                           model_inputs)
                    record["memory"] = with_build(record["memory"], built.report)
                    runs.append(record)
            finally:
                stylizer.close()
                del stylizer
                _free_device_memory(device)
    edges.close()
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": KINDS[0],
        "label": settings.label,
        "tool": {"name": "stylecam bench", "version": __version__},
        "command": command,
        "settings": _settings_dict(settings, model, style, run, source_name, _dtype_name(resolve_dtype(run.dtype, device))),
        "environment": env,
        "runs": runs,
        "notes": doc_notes,
    }
    validate(doc)
    return doc


def _run_mode(mode: str, stylizer: Any, settings: BenchSettings, model: Any, style: Any, rc: Any,
              camera_frames: list[Any], edges: Any, tmp: str, model_inputs: Callable[..., Any]) -> dict[str, Any]:
    from realtime.bench.modes import PacedCapture, PipelineParts, open_framer, run_live, run_pipeline, run_step
    from realtime.pipeline.timing import summarize

    batch = settings.batch if mode == "step" else 1
    notes: list[str] = []
    if mode != "step" and settings.batch > 1:
        notes.append(f"--batch {settings.batch} applies to the step mode; a live stream is one frame at a time")
    runner_used = stylizer.runner
    if mode == "step":
        image, control = model_inputs(camera_frames[0], stylizer.size, edges)
        maps = stylizer.blank_controls()  # the step's time does not depend on what the pose/depth maps show
        maps.update({"canny": control} if "canny" in maps else {})
        inputs = batch_inputs(stylizer.step_inputs(image, maps), batch)
        runner, owned = batched_runner(stylizer, model, style, rc, inputs)
        runner_used = runner
        try:
            m = run_step(runner, inputs, stylizer.device, frames=settings.frames, warmup=settings.warmup, batch=batch)
        finally:
            if owned:
                runner.close()
        if batch > 1:
            notes.append(f"batch {batch}: one call of the frame step on {batch} frames; fps counts frames")
    elif mode == "switch":
        from realtime.bench.switch import switch_measured

        m = switch_measured(stylizer, style, camera_frames[0], settings.output_size, frames=settings.frames,
                            warmup=settings.warmup, tmp=tmp)
    else:
        cam = Size(camera_frames[0].shape[1], camera_frames[0].shape[0])
        framer, face_skip = open_framer(settings.face, cam, stylizer.size.aspect, settings.face_model)
        sink, sink_impl = _open_sink(settings.sink, settings.output_size, settings.fps, tmp)
        stages = _vision_stages(settings, model, style, stylizer, rc)
        parts = PipelineParts(framer, face_skip, edges, sink, sink_impl, **stages)
        try:
            if mode == "pipeline":
                m = run_pipeline(stylizer, parts, camera_frames, settings.output_size, frames=settings.frames,
                                 warmup=settings.warmup, fps=settings.fps, substages=settings.substages)
            else:
                source = _live_source(settings, camera_frames, PacedCapture)
                try:
                    m = run_live(stylizer, parts, source, settings.output_size, frames=settings.frames,
                                 warmup=settings.warmup, target_fps=settings.fps, canny_edges=edges)
                finally:
                    source.close()
        finally:
            _close_sink(sink)
            if framer is not None:
                framer.close()
            for stage in stages.values():
                if stage is not None:
                    stage.close()
    frame = summarize(m.frame_ms)
    return {
        "mode": mode,
        "system": "stylecam",
        "label": f"stylecam {mode}",
        "size": _size_dict(stylizer.size),
        "backend": rc.backend,
        "backend_used": str(getattr(runner_used, "backend", "eager")),
        "backend_reason": getattr(stylizer.runner, "reason", None) or getattr(stylizer, "backend_reason", None) or None,
        "device": str(stylizer.device),
        "dtype": _dtype_name(stylizer.dtype),
        "batch": batch,
        "warmup": settings.warmup,
        "frames": len(m.frame_ms),
        "frame": frame,
        "fps": m.fps,
        "fps_p50": (batch * 1000.0 / frame["p50_ms"]) if frame["p50_ms"] > 0 else 0.0,
        "stages": m.stages,
        "memory": m.memory,
        "live": m.live,
        "notes": notes + m.notes,
        **({"switches": m.switches} if m.switches is not None else {}),
    }


def _vision_stages(settings: BenchSettings, model: Any, style: Any, stylizer: Any, rc: Any) -> dict[str, Any]:
    """The pose/depth maps and the region compositor of the run (timed as the ``pose``, ``depth``, ``segment`` stages)."""
    from realtime.pipeline.preflight import check_region
    from realtime.pipeline.stages import frame_stages

    background = check_region(settings.region, model.segment_model)
    return frame_stages(style, model, settings.region, stylizer=stylizer, background=background, seed=rc.seed)


def _live_source(settings: BenchSettings, camera_frames: list[Any], paced: Any) -> Any:
    from realtime.io.camera import CameraSource
    from realtime.io.sources import open_source

    if settings.source is not None:
        return open_source(settings.source, width=settings.camera_size.width, height=settings.camera_size.height,
                           fps=settings.fps, paced=True)
    return CameraSource("synthetic", width=settings.camera_size.width, height=settings.camera_size.height,
                        fps=settings.fps, mjpg=False, reconnect_attempts=0,
                        opener=lambda _device: paced(camera_frames, settings.fps))


def _settings_dict(s: BenchSettings, model: Any, style: Any, run: Any, source: str, dtype: str) -> dict[str, Any]:
    return {
        "modes": list(s.modes), "sizes": [_size_dict(x) for x in s.sizes], "backends": list(s.backends),
        "batch": s.batch, "frames": s.frames, "warmup": s.warmup, "fps": s.fps, "source": source,
        "camera_size": _size_dict(s.camera_size), "output_size": _size_dict(s.output_size), "face": s.face,
        "sink": s.sink, "substages": s.substages,
        "model": {"model": model.model, "controlnet": model.controlnet_spec or "none", "vae": model.vae_spec},
        "style": {"name": style.name, "strength": style.strength, "control_scale": style.control_scale,
                  "guidance": style.guidance, "blend": style.temporal.blend,
                  "motion_gain": style.temporal.motion_gain, "loras": [str(x) for x in style.loras]},
        "device": run.device, "dtype": dtype, "seed": run.seed,
    }
