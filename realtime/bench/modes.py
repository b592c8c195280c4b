"""The three ``stylecam bench`` modes, each timing a built stylizer and returning the measured part of a run record.

- :func:`run_step`: the stylizer's runner alone on fixed inputs (batch B when a batched runner is given).
- :func:`run_pipeline`: every live stage in order on a synthetic (or pre-read) camera frame: capture conversion, face,
  crop, Canny, upload, step (and, eager, its parts), download, resize, sink.
- :func:`run_live`: a source paced at a frame rate through the camera thread (newest frame wins), the frame processor
  and a sink: end-to-end latency from capture to sink, dropped frames, achieved fps.

Camera frames here are HxWx3 uint8 **BGR** (what OpenCV's capture delivers); everything after ``capture`` is RGB.
OpenCV, MediaPipe and PyAV are imported lazily; a stage whose library is missing is reported as skipped with the
reason and the stages after it get synthetic data of the right shape.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from realtime.bench.stats import STEP_PARTS, FrameClock, MemoryProbe, StepHooks, stage_entry
from realtime.errors import BackendUnavailable
from realtime.geometry import CropWindow, Size, centre_window

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ synthetic input
def synthetic_frames(size: Size, count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``count`` camera frames of ``size``: HxWx3 uint8 BGR, deterministic. Colour gradients, a moving ellipse (a
    head-sized blob), bars and sensor noise; the pattern moves a few pixels per frame (no two frames are equal)."""
    rng = np.random.default_rng(seed)
    h, w = size.height, size.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(count):
        dx = 6.0 * i
        base = np.stack([(xx + dx) / w * 200 + 30, yy / h * 180 + 40, (w - xx + 3.0 * i) / w * 120 + 60], axis=-1)
        ellipse = ((xx - w * 0.5 - dx) / (w * 0.12)) ** 2 + ((yy - h * 0.45) / (h * 0.25)) ** 2 < 1.0
        base[ellipse] = (120, 150, 210)
        bars = ((xx.astype(np.int32) + int(dx)) // max(w // 16, 1)) % 2 == 0
        base[(yy > h * 0.8) & bars] = (20, 20, 20)
        noise = rng.normal(0.0, 4.0, size=(h, w, 3))
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return frames


def cv2_missing() -> str | None:
    """None when OpenCV imports, else the reason (a stage that needs it is skipped with it)."""
    try:
        import cv2  # noqa: F401
    except ImportError as e:
        return f"OpenCV is not importable ({e}): pip install opencv-python-headless"
    return None


def _nearest_resize(rgb: np.ndarray, win: CropWindow, size: Size) -> np.ndarray:
    ys = np.clip((win.y + (np.arange(size.height) + 0.5) * win.h / size.height).astype(np.int64), 0, rgb.shape[0] - 1)
    xs = np.clip((win.x + (np.arange(size.width) + 0.5) * win.w / size.width).astype(np.int64), 0, rgb.shape[1] - 1)
    return np.ascontiguousarray(rgb[ys[:, None], xs[None, :]])


def model_inputs(bgr: np.ndarray, model_size: Size, edges: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A camera frame (BGR) -> (model-size RGB uint8 crop of the centre window, its Canny map HxW uint8 {0,255}).
    Without OpenCV: a nearest-neighbour crop and a synthetic edge grid (same shapes and dtypes)."""
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    win = centre_window(Size(rgb.shape[1], rgb.shape[0]), model_size.aspect)
    if cv2_missing():
        crop = _nearest_resize(rgb, win, model_size)
        control = np.zeros((model_size.height, model_size.width), np.uint8)
        control[::8, :] = 255
        control[:, ::8] = 255
        return crop, control
    from realtime.geometry import crop_resize

    crop = crop_resize(rgb, win, model_size)
    return crop, edges(crop)


# ---------------------------------------------------------------------------------------------------------- results
@dataclass
class Measured:
    """What a mode measured: per-frame wall times, stage records, fps, memory, live figures, notes."""

    frame_ms: list[float]
    stages: list[dict[str, Any]]
    fps: float
    memory: dict[str, Any]
    live: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _inference() -> Any:
    import torch

    return torch.inference_mode()


# ------------------------------------------------------------------------------------------------------------- step
def run_step(runner: Callable[..., Any], inputs: tuple[Any, ...], device: Any, *, frames: int, warmup: int,
             batch: int = 1) -> Measured:
    """Call ``runner(*inputs)`` ``warmup`` + ``frames`` times; time each call (CUDA events on CUDA, one sync per
    call). ``batch``: frames per call (the fps counts frames, not calls)."""
    clock = FrameClock(device)
    mem = MemoryProbe(device)
    mem.start()
    with _inference():
        for i in range(warmup + frames):
            clock.begin()
            with clock.device("step"):
                runner(*inputs)
            clock.end(keep=i >= warmup)
            mem.sample()
    ms = clock.stages["step"]
    stages = [stage_entry("step", ms, timer=clock.timer["step"])]
    fps = batch * 1000.0 * len(ms) / sum(ms) if sum(ms) > 0 else 0.0
    return Measured(ms, stages, fps, mem.report())


# --------------------------------------------------------------------------------------------------------- pipeline
@dataclass
class PipelineParts:
    """The live stages' objects for :func:`run_pipeline` / :func:`run_live`.

    framer: a face framer (``update(rgb, t) -> CropWindow``) or None with ``face_skipped`` saying why. edges: the Canny
    stage (RGB HxWx3 uint8 -> HxW uint8). sink: ``send(frame, t)``; ``sink_impl`` names it."""

    framer: Any | None
    face_skipped: str | None
    edges: Callable[[np.ndarray], np.ndarray]
    sink: Any
    sink_impl: str


def run_pipeline(stylizer: Any, parts: PipelineParts, camera_frames: list[np.ndarray], output_size: Size, *,
                 frames: int, warmup: int, fps: float, substages: bool) -> Measured:
    """Every live stage on camera frames (cycled), in order, one frame at a time.

    The stylizer's state is not advanced (its cost does not depend on it): the frame step runs on this frame's
    inputs with the first-frame numbers. Eager steps are split into their parts with forward hooks unless
    ``substages`` is False; a compiled engine's step is one number (its parts are reported as skipped)."""
    device = stylizer.device
    model_size: Size = stylizer.size
    no_cv2 = cv2_missing()
    clock = FrameClock(device)
    mem = MemoryProbe(device)
    notes: list[str] = []
    runner = stylizer.runner
    eager = runner is stylizer.step or getattr(runner, "backend", None) == "eager"
    hooks = StepHooks(stylizer.step, clock) if (eager and substages) else None
    cam = Size(camera_frames[0].shape[1], camera_frames[0].shape[0])
    centre = centre_window(cam, model_size.aspect)
    fallback_crop, fallback_control = model_inputs(camera_frames[0], model_size, parts.edges)
    if not no_cv2:
        import cv2

        from realtime.geometry import cover_resize, crop_resize
    mem.start()
    try:
        with _inference():
            for i in range(warmup + frames):
                bgr = camera_frames[i % len(camera_frames)]
                t = i / fps
                clock.begin()
                if no_cv2:
                    rgb = np.ascontiguousarray(bgr[..., ::-1])
                else:
                    with clock.host("capture"):
                        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if parts.framer is not None:
                    with clock.host("face"):
                        win = parts.framer.update(rgb, t)
                else:
                    win = centre
                if no_cv2:
                    crop, control = fallback_crop, fallback_control
                else:
                    with clock.host("crop"):
                        crop = crop_resize(rgb, win, model_size)
                    with clock.host("canny"):
                        control = parts.edges(crop)
                with clock.device("upload"):
                    inputs = stylizer.step_inputs(crop, control)
                with clock.device("step"):
                    out = runner(*inputs)
                with clock.device("download"):
                    image = out[0][0].cpu().numpy()
                if no_cv2:
                    final = np.zeros((output_size.height, output_size.width, 3), np.uint8)
                else:
                    with clock.host("resize"):
                        final = cover_resize(image, output_size)
                with clock.host("sink"):
                    parts.sink.send(final, t)
                clock.end(keep=i >= warmup)
                mem.sample()
    finally:
        if hooks is not None:
            hooks.remove()
    st = clock.stages
    if hooks is not None and hooks.parts:
        parts_sum = [sum(st.get(p, [0.0] * len(st["step"]))[k] for p in hooks.parts) for k in range(len(st["step"]))]
        st["step_other"] = [max(0.0, s - p) for s, p in zip(st["step"], parts_sum)]

    def entry(name: str, reason: str | None = None, parent: str | None = None, impl: str | None = None) -> dict[str, Any]:
        return stage_entry(name, st.get(name), timer=clock.timer.get(name, "perf_counter"), parent=parent,
                           reason=reason, impl=impl)

    stages = [entry("capture", no_cv2, impl="opencv"), entry("face", parts.face_skipped, impl="mediapipe"),
              entry("crop", no_cv2, impl="opencv"), entry("canny", no_cv2, impl="opencv"), entry("upload"),
              entry("step", impl=getattr(runner, "backend", "eager"))]
    for part in STEP_PARTS:
        if hooks is None:
            why = (f"the {getattr(runner, 'backend', '?')} engine runs the step as one graph" if not eager
                   else "sub-stage timing off (--no-substages)")
        elif part == "step_other" or part in hooks.parts:
            why = None
        else:
            why = "no ControlNet in this model (--controlnet none)" if part == "controlnet" else "not in this model"
        stages.append(entry(part, why, parent="step"))
    stages += [entry("download"), entry("resize", no_cv2, impl="opencv"), entry("sink", impl=parts.sink_impl)]
    if hooks is not None:
        notes.append("eager step split into parts with forward hooks (adds one event pair per part)")
    fps_v = 1000.0 * len(clock.frame_ms) / sum(clock.frame_ms) if sum(clock.frame_ms) > 0 else 0.0
    return Measured(clock.frame_ms, stages, fps_v, mem.report(), notes=notes)


# ------------------------------------------------------------------------------------------------------------- live
class PacedCapture:
    """A stand-in for ``cv2.VideoCapture`` that delivers ``frames`` (BGR, cycled) at ``fps`` on a fixed schedule
    (``read`` sleeps until the next frame is due; a late reader gets the frame that is due now, as a camera)."""

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.frames, self.fps = frames, float(fps)
        self._t0: float | None = None
        self._k = 0
        self._open = True

    def isOpened(self) -> bool:  # noqa: N802 - the cv2.VideoCapture interface
        return self._open

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self._open:
            return False, None
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._k / self.fps
        if due > now:
            time.sleep(due - now)
        else:  # behind schedule: skip to the frame that is due now (a camera does not queue)
            self._k = int((now - self._t0) * self.fps)
        frame = self.frames[self._k % len(self.frames)]
        self._k += 1
        return True, frame

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        import cv2

        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self._open = False


def run_live(stylizer: Any, parts: PipelineParts, source: Any, output_size: Size, *, frames: int, warmup: int,
             target_fps: float, canny_edges: Any) -> Measured:
    """Read ``source`` (newest frame wins) through a :class:`~realtime.pipeline.processor.FrameProcessor` into the sink.

    Latency = sink done - frame arrival (capture time); ``wait`` = read - arrival; the other stages are the frame
    processor's own timings per frame. ``added_latency`` = latency - the stylizer call."""
    from realtime.pipeline.processor import FrameProcessor

    device = stylizer.device
    mem = MemoryProbe(device)
    proc = FrameProcessor(stylizer.size, output_size, stylizer=stylizer, edges=canny_edges, framer=parts.framer)
    names = ("face", "crop", "canny", "stylize", "resize")
    per: dict[str, list[float]] = {k: [] for k in (*names, "wait", "sink")}
    latency: list[float] = []
    frame_ms: list[float] = []
    outs: list[float] = []
    timeout = max(10.0, 20.0 / target_fps)
    for _ in range(warmup):
        fr = source.read(timeout=timeout)
        if fr is None:
            break
        parts.sink.send(proc.process(fr.image, fr.timestamp), fr.timestamp)
    mem.start()
    s0 = source.stats
    for _ in range(frames):
        fr = source.read(timeout=timeout)
        if fr is None:
            break
        t_read = time.perf_counter()
        before = dict(proc.times.totals)
        out = proc.process(fr.image, fr.timestamp)
        t_proc = time.perf_counter()
        parts.sink.send(out, fr.timestamp)
        t_out = time.perf_counter()
        for k in names:
            per[k].append(proc.times.totals.get(k, 0.0) - before.get(k, 0.0))
        per["wait"].append((t_read - fr.arrived) * 1e3)
        per["sink"].append((t_out - t_proc) * 1e3)
        latency.append((t_out - fr.arrived) * 1e3)
        frame_ms.append((t_out - t_read) * 1e3)
        outs.append(t_out)
        mem.sample()
    s1 = source.stats
    if not latency:
        raise RuntimeError("the live source delivered no frame after the warm-up")
    notes = []
    if len(latency) < frames:
        notes.append(f"the source ended after {len(latency)} of {frames} timed frames")
    stages = [stage_entry("wait", per["wait"]),
              stage_entry("face", per["face"], reason=parts.face_skipped, impl="mediapipe"),
              stage_entry("crop", per["crop"], impl="opencv"), stage_entry("canny", per["canny"], impl="opencv"),
              stage_entry("stylize", per["stylize"], impl=getattr(stylizer.runner, "backend", "eager")),
              stage_entry("resize", per["resize"], impl="opencv"), stage_entry("sink", per["sink"], impl=parts.sink_impl)]
    from realtime.bench.stats import summarize

    added = [lat - sty for lat, sty in zip(latency, per["stylize"])]
    # Output rate: frames delivered to the sink per second, between the first and the last delivery.
    span = outs[-1] - outs[0]
    achieved = (len(outs) - 1) / span if len(outs) > 1 and span > 0 else 1000.0 / frame_ms[0]
    live = {
        "target_fps": float(target_fps), "achieved_fps": achieved, "frames_out": len(latency),
        "frames_captured": max(0, s1.frames - s0.frames), "dropped": max(0, s1.dropped - s0.dropped),
        "latency": summarize(latency), "added_latency": summarize([max(0.0, a) for a in added]),
    }
    return Measured(frame_ms, stages, achieved, mem.report(), live=live, notes=notes)


def open_framer(enabled: bool, camera: Size, aspect: float, model: str | None) -> tuple[Any | None, str | None]:
    """A MediaPipe face framer, or (None, why) when face framing is off or cannot run here (mediapipe or its model
    missing): the face stage is then reported as skipped with that reason."""
    if not enabled:
        return None, "face framing off (--no-face)"
    from realtime.errors import InputError

    try:
        from realtime.vision.face import FaceFramer, FramingConfig

        return FaceFramer(FramingConfig(), camera, aspect, model=model), None
    except (InputError, BackendUnavailable, ImportError) as e:
        log.info("face stage skipped: %s", e)
        return None, str(e).splitlines()[0] if str(e) else type(e).__name__
