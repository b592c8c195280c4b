"""Measuring for ``stylecam bench``: the stage names, the eager step's parts, memory probes, stage records (docs/design.md §9).

- Frame clocks and percentile summaries are the project's one timing helper, :mod:`realtime.pipeline.timing` (the
  frame processor times every stage on the clock it is given).
- :class:`StepHooks` time the eager step's parts (encode, ControlNet, UNet, decode) on that clock.
- :class:`MemoryProbe` reports peak GPU memory as the allocator sees it (``torch.cuda.max_memory_allocated``) and as
  the device sees it (``torch.cuda.mem_get_info``: used = total - free, sampled once per frame), plus the process's
  peak resident set size.

Every time is in milliseconds, every memory figure in MiB (2**20 bytes).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from realtime.pipeline.timing import Clock, summarize

log = logging.getLogger(__name__)

MIB = float(1 << 20)

#: Every stage name a result may contain, with what it measures. The unit of every stage is milliseconds per frame.
STAGES: dict[str, str] = {
    "capture": "camera conversion: BGR -> RGB of one camera-size frame (what the camera thread does per frame)",
    "face": "MediaPipe face detection on the camera frame + the framing filter -> crop window",
    "crop": "cut the crop window out of the camera frame and resize it to the model size",
    "canny": "Canny edges of the model-size crop (OpenCV, CPU)",
    "pose": "--control pose: MediaPipe pose landmarker on the model-size crop + the OpenPose skeleton drawing (CPU)",
    "depth": "--control depth: Depth Anything on the crop -> normalised depth map (torch, the stylizer's device)",
    "segment": "--region: selfie segmentation of the crop + mask smoothing, feathering and compositing",
    "upload": "host -> device: the model-size image and Canny map become the frame step's input tensors",
    "step": "the frame step through the engine: encode + ControlNet + UNet + decode, uint8 image in and out",
    "encode": "part of step (eager only): TAESD encoder",
    "controlnet": "part of step (eager only): the ControlNets (all enabled controls together)",
    "unet": "part of step (eager only): UNet",
    "decode": "part of step (eager only): TAESD decoder",
    "step_other": "part of step (eager only): step minus its timed parts (uint8 <-> float, blending, noising, scheduler)",
    "download": "device -> host: the stylized image back as a numpy array",
    "resize": "scale the model-size image to cover the output size (centre crop)",
    "sink": "hand the output frame to the sink (NullSink: nothing; file: encode with PyAV)",
    "wait": "live: how long the newest frame waited before the loop took it",
    "stylize": "live: the whole stylizer call (upload + step + download), host clock",
}
#: The parts of ``step`` timed with forward hooks in eager mode (they add up to ``step`` with ``step_other``).
STEP_PARTS = ("encode", "controlnet", "unet", "decode", "step_other")


class StepHooks:
    """Forward hooks on a FrameStep's parts (VAE encoder, ControlNet, UNet, VAE decoder) that time them on a
    :class:`~realtime.pipeline.timing.Clock`. Only for an eager step: a compiled engine runs the step as one graph. ``remove()`` (or
    leaving the ``with`` block) takes the hooks off."""

    def __init__(self, step: Any, clock: Clock) -> None:
        self.clock = clock
        self.handles: list[Any] = []
        self.parts: dict[str, Any] = {}
        vae = getattr(step, "vae", None)
        nets = list(getattr(step, "controlnets", {}).values())
        for name, module in (("encode", getattr(vae, "encoder", None)), *(("controlnet", net) for net in nets),
                             ("unet", getattr(step, "unet", None)), ("decode", getattr(vae, "decoder", None))):
            if module is None:
                continue
            self.parts.setdefault(name, module)
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            self.clock.start(name, device=True)

        return hook

    def _post(self, name: str) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            self.clock.stop(name)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __enter__(self) -> "StepHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


# ----------------------------------------------------------------------------------------------------------- memory
def peak_rss_mb() -> float | None:
    """The process's peak resident set size so far (MiB), or None where ``resource`` does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / MIB if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


class MemoryProbe:
    """Peak memory over a run. ``start()`` before warm-up, ``sample()`` once per frame (outside timed regions),
    ``report()`` at the end: allocator view, device view and peak RSS, all in MiB (GPU fields None on the CPU)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.device_used_start: float | None = None
        self.device_used_peak: float | None = None
        self.allocated_start: float | None = None

    def _device_used(self) -> float:
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        return (total - free) / MIB

    def start(self) -> None:
        if not self.cuda:
            return
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.allocated_start = torch.cuda.memory_allocated(self.device) / MIB
        self.device_used_start = self.device_used_peak = self._device_used()

    def sample(self) -> None:
        if self.cuda:
            used = self._device_used()
            self.device_used_peak = used if self.device_used_peak is None else max(self.device_used_peak, used)

    def report(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "gpu_allocated_start_mb": None, "gpu_allocated_peak_mb": None, "gpu_reserved_peak_mb": None,
            "gpu_device_used_start_mb": None, "gpu_device_used_peak_mb": None, "gpu_device_total_mb": None,
            "rss_peak_mb": peak_rss_mb(),
        }
        if self.cuda:
            import torch

            self.sample()
            out.update(
                gpu_allocated_start_mb=self.allocated_start,
                gpu_allocated_peak_mb=torch.cuda.max_memory_allocated(self.device) / MIB,
                gpu_reserved_peak_mb=torch.cuda.max_memory_reserved(self.device) / MIB,
                gpu_device_used_start_mb=self.device_used_start,
                gpu_device_used_peak_mb=self.device_used_peak,
                gpu_device_total_mb=torch.cuda.mem_get_info(self.device)[1] / MIB,
            )
        return out


class BuildMemory:
    """Peak memory and time while a stylizer (models + engine) is built: ``with BuildMemory(device) as b: ...``, then
    ``b.report`` = ``{seconds, gpu_allocated_peak_mb, gpu_device_used_peak_mb, rss_peak_mb}`` (MiB; GPU fields None
    on the CPU). The device view is sampled every ``interval_s`` on a helper thread, so memory an engine builder
    takes outside torch's allocator (TensorRT) is seen too."""

    def __init__(self, device: Any, interval_s: float = 0.05) -> None:
        self.probe = MemoryProbe(device)
        self.interval_s = interval_s
        self.report: dict[str, float | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.probe.sample()

    def __enter__(self) -> "BuildMemory":
        self.probe.start()
        self._t0 = time.perf_counter()
        if self.probe.cuda:
            self._thread = threading.Thread(target=self._sample, name="stylecam-build-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        mem = self.probe.report()
        self.report = {"seconds": time.perf_counter() - self._t0, "gpu_allocated_peak_mb": mem["gpu_allocated_peak_mb"],
                       "gpu_device_used_peak_mb": mem["gpu_device_used_peak_mb"], "rss_peak_mb": mem["rss_peak_mb"]}


def with_build(memory: dict[str, Any], build: dict[str, Any] | None) -> dict[str, Any]:
    """A run's memory record with the build's peaks beside it and ``gpu_peak_mb``: the allocator's peak over the build
    and the run together (the figure the 4 GiB goal is about; None on the CPU)."""
    out = dict(memory, build=build)
    peaks = [v for v in (memory.get("gpu_allocated_peak_mb"), (build or {}).get("gpu_allocated_peak_mb")) if v is not None]
    out["gpu_peak_mb"] = max(peaks) if peaks else None
    return out


def stage_entry(name: str, values: Sequence[float] | None, *, timer: str = "perf_counter", parent: str | None = None,
                reason: str | None = None, impl: str | None = None) -> dict[str, Any]:
    """One ``stages`` record of a result: ``status`` ``ok`` with a summary, or ``skipped`` with the reason."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}: add it to realtime.bench.stats.STAGES")
    entry: dict[str, Any] = {"name": name, "unit": "ms", "parent": parent}
    if reason is not None or not values:
        entry.update(status="skipped", reason=reason or "not measured")
        return entry
    entry.update(status="ok", timer=timer, **summarize(values))
    if impl:
        entry["impl"] = impl
    return entry
