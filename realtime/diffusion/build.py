"""Build the stylizer a command runs: models loaded, LoRAs applied (in place, switchable), the frame step on the requested engine backend.

:func:`build_stylizer` is the one way ``image``, ``clip``, ``live``, ``build`` and ``bench`` get a
:class:`~realtime.diffusion.stylizer.Stylizer` from their configs. On CUDA it turns on ``cudnn.benchmark`` (fixed
shapes: the fastest convolution algorithms are found once). :func:`settle_heap` is what a command calls once the
stylizer is loaded and warmed up.
"""
from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

from realtime.config import ModelConfig, RunConfig, StyleConfig

if TYPE_CHECKING:
    from realtime.diffusion.stylizer import Stylizer

log = logging.getLogger(__name__)


def build_stylizer(model: ModelConfig, style: StyleConfig, run: RunConfig) -> "Stylizer | None":
    """Load the models for ``model`` + ``style`` (LoRAs fused) and return a :class:`~realtime.diffusion.stylizer.Stylizer`;
    ``None`` for the pass-through style (no model loaded at all)."""
    if style.passthrough:
        return None
    from realtime.diffusion.engine_select import check_backend
    from realtime.diffusion.family import check_vae_precision
    from realtime.diffusion.lora_switch import fuse_loras
    from realtime.diffusion.models import load_components, resolve_device, resolve_dtype
    from realtime.diffusion.stylizer import Stylizer

    device = resolve_device(run.device)
    dtype = resolve_dtype(run.dtype, device)
    check_backend(run.backend, device)  # before any model loads: a missing extra is a one-line error, no fallback
    comps = load_components(model, device, dtype, seed=run.seed, controls=style.controls)
    check_vae_precision(comps, dtype)  # SDXL's own VAE in fp16: one line, before any frame
    if device.type == "cpu":  # after loading: a bad input's one-line error is never preceded by this warning
        log.warning("running on the CPU: expect seconds per frame at real model sizes (a CUDA GPU gives real time)")
    loras = fuse_loras(comps, style.loras, allow_pickle=model.allow_pickle)  # in place; later sets switch in place
    if device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once, at the first frame
    from realtime.diffusion.engine_select import resolve_backend

    backend, reason = resolve_backend(run.backend, device)
    runner_factory = None
    if backend != "eager":
        from realtime.diffusion.engine_select import runner_factory as make_factory

        runner_factory = make_factory(model, style, run, comps, device, dtype)
    else:
        log.info("frame step runs on the eager backend (%s)", reason)
    log.info("stylizer on %s (%s), model size %s, backend %s", device, str(dtype).replace("torch.", ""), run.size, run.backend)
    stylizer = Stylizer(comps, style, run.size, device=device, dtype=dtype, seed=run.seed,
                        runner_factory=runner_factory, loras=loras)
    if run.seed_blend is not None:
        stylizer.set_seed(run.seed, blend=run.seed_blend)
    if backend == "eager":
        stylizer.backend_reason = reason
    return stylizer


def settle_heap() -> int:
    """After loading and warm-up: collect once, then ``gc.freeze()`` everything alive (the loaded stack is ~473k
    objects, a full collection over them ~250 ms: a dropped frame), so later collections scan only new objects.
    Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("gc.freeze(): %d objects frozen after loading and warm-up", frozen)
    return frozen
