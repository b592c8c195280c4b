"""The three ``stylecam bench`` modes, each timing a built stylizer and returning the measured part of a run record.

- :func:`run_step`: the stylizer's runner alone on fixed inputs (batch B when a batched runner is given).
- :func:`run_pipeline`: one camera frame at a time through what ``live`` runs: the camera's conversion (``capture``),
  then the frame processor (:class:`~realtime.pipeline.processor.FrameProcessor`: face, crop, Canny, the stylizer's
  upload, step (and, eager, its parts) and download, resize), then the sink, each stage on one frame clock.
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

from realtime.bench.stats import STEP_PARTS, MemoryProbe, StepHooks, stage_entry
from realtime.errors import BackendUnavailable
from realtime.geometry import CropWindow, Size, centre_window
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.timing import Clock, StageLog, make_clock, summarize
from realtime.vision.protocols import EdgeMap, Framer

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


def model_inputs(bgr: np.ndarray, model_size: Size, edges: EdgeMap) -> tuple[np.ndarray, np.ndarray]:
    """A camera frame (BGR) -> (model-size RGB uint8 crop of the centre window, as the frame processor cuts it; its
    Canny map HxW uint8 {0,255}). Without OpenCV: a nearest-neighbour crop and a synthetic edge grid (same shapes and
    dtypes)."""
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    if cv2_missing():
        win = centre_window(Size(rgb.shape[1], rgb.shape[0]), model_size.aspect)
        crop = _nearest_resize(rgb, win, model_size)
        control = np.zeros((model_size.height, model_size.width), np.uint8)
        control[::8, :] = 255
        control[:, ::8] = 255
        return crop, control
    crop = FrameProcessor(model_size, None, edges=edges).prepare(rgb)  # no framer: the centre window
    return crop, edges(crop)


class FixedEdges:
    """An :class:`~realtime.vision.protocols.EdgeMap` that returns one precomputed map (the synthetic grid of
    :func:`model_inputs` where OpenCV is missing)."""

    cfg = None

    def __init__(self, control: np.ndarray) -> None:
        self.control = control

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.control

    def close(self) -> None:
        pass


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
    switches: list[dict[str, Any]] | None = None  # the switch mode's per-switch records (realtime/bench/switch.py)


def _inference() -> Any:
    import torch

    return torch.inference_mode()


# ------------------------------------------------------------------------------------------------------------- step
def run_step(runner: Callable[..., Any], inputs: tuple[Any, ...], device: Any, *, frames: int, warmup: int,
             batch: int = 1) -> Measured:
    """Call ``runner(*inputs)`` ``warmup`` + ``frames`` times; time each call (CUDA events on CUDA, one sync per
    call). ``batch``: frames per call (the fps counts frames, not calls)."""
    clock = make_clock(device)
    times = StageLog()
    mem = MemoryProbe(device)
    mem.start()
    with _inference():
        for i in range(warmup + frames):
            clock.begin()
            with clock.stage("step", device=True):
                runner(*inputs)
            times.add(clock.end(), keep=i >= warmup)
            mem.sample()
    stages = [stage_entry("step", times.stages["step"], timer=clock.timer["step"])]
    return Measured(times.frame_ms, stages, times.fps(batch), mem.report())


# --------------------------------------------------------------------------------------------------------- pipeline
@dataclass
class PipelineParts:
    """The live stages' objects for :func:`run_pipeline` / :func:`run_live`.

    framer: a face framer, or None with ``face_skipped`` saying why. edges: the Canny stage. sink: ``send(frame, t)``;
    ``sink_impl`` names it."""

    framer: Framer | None
    face_skipped: str | None
    edges: EdgeMap
    sink: Any
    sink_impl: str
    control_maps: Any = None  # pose/depth maps (realtime.pipeline.stages.frame_stages)
    regions: Any = None  # --region compositing


def run_pipeline(stylizer: Any, parts: PipelineParts, camera_frames: list[np.ndarray], output_size: Size, *,
                 frames: int, warmup: int, fps: float, substages: bool) -> Measured:
    """Camera frames (cycled) one at a time through ``capture``, the frame processor and the sink, on one clock.

    The stylizer times its own upload, step and download on that clock. Eager steps are split into their parts with
    forward hooks unless ``substages`` is False; a compiled engine's step is one number (its parts are reported as
    skipped). Without OpenCV the processor's model part alone runs, on a synthetic crop and edge map."""
    device = stylizer.device
    no_cv2 = cv2_missing()
    clock = make_clock(device)
    times = StageLog()
    mem = MemoryProbe(device)
    runner = stylizer.runner
    eager = runner is stylizer.step or getattr(runner, "backend", None) == "eager"
    hooks = StepHooks(stylizer.step, clock) if (eager and substages) else None
    crop, control = model_inputs(camera_frames[0], stylizer.size, parts.edges)  # the stand-ins without OpenCV
    proc = FrameProcessor(stylizer.size, output_size, stylizer=stylizer, framer=parts.framer, clock=clock,
                          edges=FixedEdges(control) if no_cv2 else parts.edges, control_maps=parts.control_maps,
                          regions=parts.regions)  # not closed: the caller owns its parts
    black = np.zeros((output_size.height, output_size.width, 3), np.uint8)
    stylizer.clock = clock
    mem.start()
    try:
        for i in range(warmup + frames):
            clock.begin()
            if no_cv2:
                proc.stylize(crop)
                final = black
            else:
                final = proc.process(_capture(clock, camera_frames[i % len(camera_frames)]), i / fps)
            with clock.stage("sink"):
                parts.sink.send(final, i / fps)
            times.add(clock.end(), keep=i >= warmup)
            mem.sample()
    finally:
        stylizer.clock = None
        if hooks is not None:
            hooks.remove()
    notes = ["eager step split into parts with forward hooks (adds one event pair per part)"] if hooks else []
    stages = _pipeline_stages(times, clock, parts, str(getattr(runner, "backend", "eager")), eager, hooks, no_cv2)
    return Measured(times.frame_ms, stages, times.fps(), mem.report(), notes=notes)


def _capture(clock: Clock, bgr: np.ndarray) -> np.ndarray:
    """What the camera thread does per frame: BGR -> RGB (OpenCV)."""
    import cv2

    with clock.stage("capture"):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


#: Crop, resize and (on the device path) Canny run in torch (realtime/pipeline/framepath.py); Canny is OpenCV's on the
#: host-side path (similarity filter, controls other than Canny, regions).
CANNY_IMPL = "torch (opencv on the host-side path)"

def _pipeline_stages(times: StageLog, clock: Clock, parts: PipelineParts, backend: str, eager: bool,
                     hooks: StepHooks | None, no_cv2: str | None) -> list[dict[str, Any]]:
    """The pipeline mode's stage records, in frame order (``step_other`` = step minus its timed parts)."""
    st = times.stages
    if hooks is not None and hooks.parts:
        n = len(st["step"])
        parts_sum = [sum(st.get(p, [0.0] * n)[k] for p in hooks.parts) for k in range(n)]
        st["step_other"] = [max(0.0, s - p) for s, p in zip(st["step"], parts_sum, strict=True)]

    def entry(name: str, reason: str | None = None, parent: str | None = None, impl: str | None = None) -> dict[str, Any]:
        return stage_entry(name, st.get(name), timer=clock.timer.get(name, "perf_counter"), parent=parent,
                           reason=reason, impl=impl)

    stages = [entry("capture", no_cv2, impl="opencv"), entry("face", parts.face_skipped, impl="mediapipe"),
              entry("crop", no_cv2, impl="torch"), entry("canny", no_cv2 or _not_run("canny", st), impl=CANNY_IMPL),
              *_vision_entries(st, entry), entry("upload"), entry("step", impl=backend)]
    for part in STEP_PARTS:
        if hooks is None:
            why = (f"the {backend} engine runs the step as one graph" if not eager
                   else "sub-stage timing off (--no-substages)")
        elif part == "step_other" or part in hooks.parts:
            why = None
        else:
            why = "no ControlNet in this model (--controlnet none)" if part == "controlnet" else "not in this model"
        stages.append(entry(part, why, parent="step"))
    return stages + [entry("download"), entry("resize", no_cv2, impl="torch"), entry("sink", impl=parts.sink_impl)]


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
             target_fps: float, canny_edges: EdgeMap) -> Measured:
    """Read ``source`` (newest frame wins) through a :class:`~realtime.pipeline.processor.FrameProcessor` into the sink.

    Latency = sink done - frame arrival (capture time); ``wait`` = read - arrival; the other stages are the frame
    processor's own, timed on the frame's clock with the sink. The device step (``step``: CUDA events on CUDA, the
    model call's wall time on the CPU) is what the model costs; ``added_latency`` = latency - step (everything the loop
    adds: waiting, uploads, syncs, readback, host stages) and ``host_critical`` = the frame thread's wall time per frame
    (frame taken -> sink done) - step: host work on the critical path, outside the device work."""
    clock = make_clock(stylizer.device)
    mem = MemoryProbe(stylizer.device)
    proc = FrameProcessor(stylizer.size, output_size, stylizer=stylizer, edges=canny_edges, framer=parts.framer,
                          clock=clock, control_maps=parts.control_maps, regions=parts.regions)  # the caller owns its parts
    stylizer.clock = clock  # the stylizer times upload / step / download on the frame's clock
    try:
        return _live_loop(stylizer, proc, parts, source, frames=frames, warmup=warmup, target_fps=target_fps,
                          clock=clock, mem=mem)
    finally:
        stylizer.clock = None


def _live_loop(stylizer: Any, proc: FrameProcessor, parts: PipelineParts, source: Any, *, frames: int, warmup: int,
               target_fps: float, clock: Clock, mem: MemoryProbe) -> Measured:
    names = ("face", "crop", "canny", "pose", "depth", "segment", "stylize", "upload", "step", "download", "resize", "sink")
    per: dict[str, list[float]] = {k: [] for k in (*names, "wait")}
    latency: list[float] = []
    frame_ms: list[float] = []
    outs: list[float] = []
    timeout = max(10.0, 20.0 / target_fps)
    for i in range(warmup + frames):
        if i == warmup:
            mem.start()
            s0 = source.stats
        fr = source.read(timeout=timeout)
        if fr is None:
            break
        t_read = time.perf_counter()
        clock.begin()
        out = proc.process(fr.image, fr.timestamp)
        with clock.stage("sink"):
            parts.sink.send(out, fr.timestamp)
        ms = clock.end().stages
        t_out = time.perf_counter()
        if i < warmup:
            continue
        for k in names:
            per[k].append(ms.get(k, 0.0))
        per["wait"].append((t_read - fr.arrived) * 1e3)
        latency.append((t_out - fr.arrived) * 1e3)
        frame_ms.append((t_out - t_read) * 1e3)
        outs.append(t_out)
        mem.sample()
    if not latency:
        raise RuntimeError("the live source delivered no frame after the warm-up")
    s1 = source.stats
    notes = [f"the source ended after {len(latency)} of {frames} timed frames"] if len(latency) < frames else []
    stages = [stage_entry("wait", per["wait"]),
              stage_entry("face", per["face"], reason=parts.face_skipped, impl="mediapipe"),
              stage_entry("crop", per["crop"], impl="torch"),
              stage_entry("canny", per["canny"], impl=CANNY_IMPL, reason=_not_run("canny", {k: v for k, v in per.items() if any(v)})),
              *_vision_entries({k: v for k, v in per.items() if any(v)}, lambda n, impl=None: stage_entry(n, per[n], impl=impl)),
              stage_entry("stylize", per["stylize"], impl=getattr(stylizer.runner, "backend", "eager")),
              stage_entry("upload", per["upload"], timer=clock.timer.get("upload", "perf_counter"), parent="stylize"),
              stage_entry("step", per["step"], timer=clock.timer.get("step", "perf_counter"), parent="stylize",
                          impl=getattr(stylizer.runner, "backend", "eager")),
              stage_entry("download", per["download"], timer=clock.timer.get("download", "perf_counter"),
                          parent="stylize"),
              stage_entry("resize", per["resize"], impl="torch"), stage_entry("sink", per["sink"], impl=parts.sink_impl)]
    step = per["step"]
    added = [lat - st for lat, st in zip(latency, step, strict=True)]
    host = [fm - st for fm, st in zip(frame_ms, step, strict=True)]
    # Output rate: frames delivered to the sink per second, between the first and the last delivery.
    span = outs[-1] - outs[0]
    achieved = (len(outs) - 1) / span if len(outs) > 1 and span > 0 else 1000.0 / frame_ms[0]
    live = {
        "target_fps": float(target_fps), "achieved_fps": achieved, "frames_out": len(latency),
        "frames_captured": max(0, s1.frames - s0.frames), "dropped": max(0, s1.dropped - s0.dropped),
        "latency": summarize(latency), "added_latency": summarize([max(0.0, a) for a in added]),
        "host_critical": summarize([max(0.0, h) for h in host]), "device_step": summarize(step),
    }
    return Measured(frame_ms, stages, achieved, mem.report(), live=live, notes=notes)


#: The optional vision stages (a result lists them only when they ran) and what runs them.
_VISION_STAGES = (("pose", "mediapipe"), ("depth", "torch"), ("segment", "mediapipe+torch"))


def _not_run(name: str, measured: dict[str, Any]) -> str | None:
    """``canny`` not among the style's controls (``--control pose,depth``): skipped with that reason."""
    return None if measured.get(name) else f"{name} is not among the controls (--control)"


def _vision_entries(measured: dict[str, Any], entry: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """Stage records of the pose/depth/segment stages that ran (``--control pose,depth``, ``--region``)."""
    return [entry(name, impl=impl) for name, impl in _VISION_STAGES if measured.get(name)]


def open_framer(enabled: bool, camera: Size, aspect: float, model: str | None) -> tuple[Any | None, str | None]:
    """A MediaPipe face framer on its own thread, as ``live`` runs it (a ThreadedFramer: detection on a downscaled
    copy, one frame behind), or (None, why) when face framing is off or cannot run here (mediapipe or its model
    missing): the face stage is then reported as skipped with that reason."""
    if not enabled:
        return None, "face framing off (--no-face)"
    from realtime.errors import InputError

    try:
        from realtime.vision.face import FaceFramer, FramingConfig
        from realtime.vision.framer_thread import ThreadedFramer

        return ThreadedFramer(camera, aspect, lambda size: FaceFramer(FramingConfig(), size, aspect, model=model)), None
    except (InputError, BackendUnavailable, ImportError) as e:
        log.info("face stage skipped: %s", e)
        return None, str(e).splitlines()[0] if str(e) else type(e).__name__
