"""``stylecam bench --mode switch``: a live session that switches LoRA sets, LoRA scales, prompts and guidance on a
schedule, and what each switch costs the stream.

The session is the app's own (:class:`~realtime.pipeline.session.LiveSession` over a
:class:`~realtime.pipeline.processor.FrameProcessor`): a command is applied between two frames exactly as a typed
``lora``/``lora-scale``/``prompt``/``guidance`` line would be (LoRA files read on the session's background worker,
then written in place between frames). One fixed camera frame is fed every frame with latent blending and the
similarity filter off, so the output is the same frame after frame until a change reaches it. Per switch:

- ``frames_to_visible``: frames delivered after the command until (and including) the first whose output differs from
  the last output before it (the stream runs on while the session prepares the change; null: still not visible
  ``max_frames`` frames after the change was applied).
- ``stall_ms``: the longest gap between two delivered frames from the last frame before the command to the visible one
  (the command's own work between frames included); ``frame_period_ms`` (the median gap before the switches) beside it.
- ``apply_ms``: for a LoRA change, how long writing the weights in place took (the switcher's own figure; null for
  other kinds).
- ``extra_memory_mb``: peak memory during the switch minus the peak of the ordinary frames just before it (so what a
  frame allocates anyway does not count): CUDA allocator peak on a GPU; on the CPU the process RSS sampled every ~2 ms
  on a thread (:class:`~realtime.bench.soak.ResourceSampler`), so a spike shorter than that can be missed.

Without ``--lora`` the bench writes two synthetic LoRA files (random factors, kohya layout, on the UNet's attention
projections and the text encoder's q/v) sized to the loaded model; ``lora_touched_mb`` reports the size of the
weights the LoRAs touch (the target: ``extra_memory_mb`` at most that).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import LoraSpec, StyleConfig
from realtime.pipeline.controls import Command

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Switch:
    kind: str
    command: Command


def default_schedule(loras: tuple[LoraSpec, ...], prompt: str) -> list[Switch]:
    """LoRA on, a scale change, a two-LoRA set, a prompt, guidance on and off, LoRAs off, the first LoRA again."""
    a = loras[0]
    b = loras[1] if len(loras) > 1 else dataclasses.replace(a, scale=-a.scale)
    return [
        Switch("lora_set", Command("lora", (a,), "bench")),
        Switch("lora_scale", Command("lora-scale", (0.5,), "bench")),
        Switch("lora_set_two", Command("lora", (dataclasses.replace(a, scale=0.8), b), "bench")),
        Switch("prompt", Command("prompt", f"{prompt}, watercolor painting", "bench")),
        Switch("guidance_on", Command("guidance", 2.0, "bench")),
        Switch("guidance_off", Command("guidance", 1.0, "bench")),
        Switch("lora_none", Command("lora", (), "bench")),
        Switch("lora_back", Command("lora", (a,), "bench")),
    ]


def synthetic_loras(comps: Any, directory: Path, n: int = 2, rank: int = 4, seed: int = 0,
                    text_encoder: bool = True) -> tuple[LoraSpec, ...]:
    """``n`` kohya-layout LoRA files with random factors for the loaded UNet's attention projections and the text
    encoder's q/v projections; each delta is about half the weight's own spread (a visible, not a wild, change)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    targets = [("lora_unet_", n_, m) for n_, m in comps.unet.named_modules()
               if isinstance(m, torch.nn.Linear) and n_.endswith(("to_q", "to_k", "to_v", "to_out.0"))]
    targets += [("lora_te_text_model_", n_, m) for n_, m in comps.text_encoder.named_modules()
                if text_encoder and isinstance(m, torch.nn.Linear) and n_.endswith(("q_proj", "v_proj"))]
    out = []
    for i in range(n):
        sd: dict[str, torch.Tensor] = {}
        for prefix, name, m in targets:
            key = prefix + name.removeprefix("text_model.").replace(".", "_")
            spread = float(m.weight.detach().float().std()) or 1e-2
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, m.in_features, generator=g) / m.in_features ** 0.5
            sd[f"{key}.lora_up.weight"] = torch.randn(m.out_features, rank, generator=g) * spread * 0.5
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
        path = directory / f"synthetic_{i}{'' if text_encoder else '_unet'}.safetensors"
        save_file(sd, str(path))
        out.append(LoraSpec(str(path), 1.0))
    return tuple(out)


class _PeakSampler:
    """Peak memory of a window: CUDA allocator peak, else the process RSS sampled on a thread every ~2 ms."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_mb = self.peak_mb = 0.0

    def _rss(self) -> float:
        from realtime.bench.soak import ResourceSampler

        return float(ResourceSampler().sample()["rss_mib"] or 0.0)

    def __enter__(self) -> "_PeakSampler":
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mb = self.peak_mb = self._rss()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="stylecam-bench-rss", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss())


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class _Stream:
    """The fixed frame through the processor, the session ticked before each frame; delivery times and digests."""

    def __init__(self, proc: Any, session: Any, frame: np.ndarray) -> None:
        self.proc, self.session, self.frame = proc, session, frame
        self.times: list[float] = []
        self.digests: list[str] = []
        self.frame_ms: list[float] = []

    def deliver(self) -> str:
        t0 = time.perf_counter()
        self.session.tick()
        out = self.proc.process(self.frame)
        t1 = time.perf_counter()
        self.times.append(t1)
        self.frame_ms.append((t1 - t0) * 1e3)
        self.digests.append(_digest(out))
        return self.digests[-1]


def measure_switch(stream: _Stream, switch: Switch, device: Any, max_frames: int, baseline_mb: float,
                   timeout_s: float = 600.0) -> dict[str, Any]:
    """Apply one switch between two frames and follow the stream until it shows (see the module docstring);
    ``baseline_mb``: the memory peak of as many ordinary frames just before (what the frames themselves use)."""
    before, i0 = stream.digests[-1], len(stream.times) - 1
    loras = getattr(stream.proc.stylizer, "loras", None)
    last = loras.last if loras is not None else None
    visible: int | None = None
    t0 = time.perf_counter()
    with _PeakSampler(device) as mem:
        applied = stream.session.apply(switch.command)
        k = 0
        while True:  # until it shows, at least while the session still prepares it (bounded by timeout_s)
            k += 1
            if stream.deliver() != before and visible is None:
                visible = k
            done = stream.session.pending_style is None
            if (done and (visible is not None or k >= max_frames)) or time.perf_counter() - t0 > timeout_s:
                break
    end = i0 + (visible if visible is not None else len(stream.times) - 1 - i0)
    gaps = [(stream.times[j + 1] - stream.times[j]) * 1e3 for j in range(i0, end)]
    return {"kind": switch.kind, "command": str(switch.command), "applied": bool(applied),
            "frames_to_visible": visible, "stall_ms": max(gaps) if gaps else 0.0,
            "extra_memory_mb": max(0.0, mem.peak_mb - max(baseline_mb, mem.start_mb)),
            "apply_ms": (loras.last.seconds * 1e3) if loras is not None and loras.last is not last else None}


def run_switch(stylizer: Any, style: StyleConfig, camera_frame: np.ndarray, output_size: Any, *, warmup: int,
               schedule: list[Switch], max_frames: int, settle: int = 2) -> tuple[list[dict[str, Any]], list[float],
                                                                                   float, list[str]]:
    """Run ``schedule`` through a live session on ``stylizer``; returns (per-switch records, frame times in ms,
    the frame period before the switches in ms, notes)."""
    from realtime.pipeline.processor import FrameProcessor
    from realtime.pipeline.session import LiveSession

    steady = dataclasses.replace(style, temporal=dataclasses.replace(style.temporal, blend=1.0, similarity_filter=False))
    stylizer.set_style(steady, wait=True)
    rgb = np.ascontiguousarray(camera_frame[..., ::-1])
    proc = FrameProcessor(stylizer.size, output_size, stylizer=stylizer, style=steady)
    session = LiveSession(proc, steady)
    stream = _Stream(proc, session, rgb)
    try:
        for _ in range(max(5, warmup)):
            stream.deliver()
        gaps = [(b - a) * 1e3 for a, b in zip(stream.times[1:], stream.times[2:], strict=False)]
        period = statistics.median(gaps) if gaps else stream.frame_ms[-1]
        records = []
        for sw in schedule:
            with _PeakSampler(stylizer.device) as base:  # ordinary frames: their own memory peak is the baseline
                for _ in range(settle):
                    stream.deliver()
            rec = measure_switch(stream, sw, stylizer.device, max_frames, base.peak_mb)
            rec["frame_period_ms"] = period
            records.append(rec)
            log.info("bench switch %s: visible after %s frame(s), stall %.1f ms (period %.1f), +%.1f MiB",
                     sw.kind, rec["frames_to_visible"], rec["stall_ms"], period, rec["extra_memory_mb"])
    finally:
        session.close()
    notes = [f"switch mode: {len(schedule)} switches on one fixed frame, latent blending and the similarity filter "
             "off; extra_memory_mb is the allocator peak on CUDA, sampled RSS (~2 ms) on the CPU"]
    if any(r["frames_to_visible"] is None for r in records):
        notes.append(f"a switch whose output never changed within {max_frames} frames has frames_to_visible null")
    return records, stream.frame_ms, period, notes


def switch_measured(stylizer: Any, style: StyleConfig, camera_frame: np.ndarray, output_size: Any, *, frames: int,
                    warmup: int, tmp: str) -> Any:
    """The switch mode's part of a run record (:class:`~realtime.bench.modes.Measured` with ``switches``)."""
    from realtime.bench.modes import Measured
    from realtime.bench.stats import MemoryProbe, stage_entry

    notes = []
    loras = style.loras
    if not loras:
        loras = synthetic_loras(stylizer.components, Path(tmp))
        notes.append("no --lora given: two synthetic LoRA files (random factors, kohya layout) were switched")
    mem = MemoryProbe(stylizer.device)
    mem.start()
    records, frame_ms, period, more = run_switch(stylizer, style, camera_frame, output_size, warmup=warmup,
                                                 schedule=default_schedule(loras, style.prompt),
                                                 max_frames=max(4, min(frames, 12)))
    touched = stylizer.loras.base_bytes / 2**20 if stylizer.loras is not None else 0.0
    for r in records:
        r["lora_touched_mb"] = touched
    fps = 1000.0 / period if period > 0 else 0.0
    return Measured(frame_ms, [stage_entry("stylize", frame_ms, impl=getattr(stylizer.runner, "backend", "eager"))],
                    fps, mem.report(), notes=notes + more, switches=records)
