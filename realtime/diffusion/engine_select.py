"""Between the stylizer and ``engines/``: the cache key of a FrameStep engine, its options, and the runner factory.

``engines`` knows nothing about diffusion; this module tells it what identifies a FrameStep engine (docs/design.md §6): the
models that were loaded (hub snapshot or file hashes), ControlNet, VAE, the LoRA files' hashes and scales (left out for
refittable TensorRT engines, which get the LoRA set by refit), model resolution, batch, dtype and CFG on/off. The
backend, its version, torch, the GPU name and compute capability are added by ``engines.build_runner``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from realtime.config import ModelConfig, RunConfig, StyleConfig
from realtime.diffusion.stylizer import INPUT_NAMES, OUTPUT_NAMES

if TYPE_CHECKING:
    import torch

    from realtime.diffusion.models import Components

log = logging.getLogger(__name__)

_DTYPE_NAMES = {"torch.float32": "float32", "torch.float16": "float16", "torch.bfloat16": "bfloat16"}


def engine_key_fields(model: ModelConfig, style: StyleConfig, run: RunConfig, comps: "Components", dtype: "torch.dtype",
                      *, include_loras: bool, batch: int = 1) -> dict[str, Any]:
    """Everything about the weights and shapes that changes a FrameStep engine (JSON values only)."""
    from realtime.diffusion.lora import lora_fingerprint

    fields: dict[str, Any] = {
        "graph": "stylecam.FrameStep/1",
        "sources": dict(comps.sources),
        "prediction_type": comps.prediction_type,
        "cfg": style.uses_cfg,
        "controls": [c for c in style.controls if c in comps.controlnets],  # adding or removing one rebuilds
        "size": [run.size.width, run.size.height],
        "batch": batch,
        "dtype": _DTYPE_NAMES[str(dtype)],
    }
    if include_loras:
        fields["loras"] = lora_fingerprint(style.loras, model.allow_pickle)
    return fields


def engine_options(run: RunConfig, dtype: "torch.dtype") -> Any:
    """The FrameStep's engine options. ``clone_outputs=False``: the stylizer reads the image out before the next call
    and feeds the two latents back as inputs, which the runner copies into its input buffers before the next replay
    overwrites them, so the three per-frame output clones are not needed. REFIT only with ``--trt-refit``."""
    from engines import EngineOptions

    return EngineOptions(dtype=_DTYPE_NAMES[str(dtype)], trt_refittable=run.trt_refit, clone_outputs=False)


#: why ``--backend auto`` runs eagerly off CUDA (logged and kept in the stylizer's ``backend_reason``)
CPU_AUTO_REASON = ("auto on {device}: eager (an onnxruntime trial costs a full ONNX export of the model, minutes at "
                   "real size, and torch.compile a long inductor compile; ask for --backend onnxruntime or compile)")


def resolve_backend(name: str, device: "torch.device") -> tuple[str, str]:
    """(the backend to build with, why). ``auto`` on CUDA stays ``auto``: :func:`engines.build_runner` picks TensorRT
    when it is installed and usable, else torch.compile with CUDA graphs, and says why. Elsewhere ``auto`` is eager
    (:data:`CPU_AUTO_REASON`). A named backend is taken as asked."""
    if name != "auto":
        return name, "requested"
    if device.type == "cuda":
        return "auto", "best available on CUDA: tensorrt, else compile + CUDA graphs"
    return "eager", CPU_AUTO_REASON.format(device=device.type)


def runner_factory(model: ModelConfig, style: StyleConfig, run: RunConfig, comps: "Components", device: "torch.device",
                   dtype: "torch.dtype") -> Callable[[Any, tuple[Any, ...]], Any]:
    """A ``(module, example_inputs) -> Runner`` for :class:`~realtime.diffusion.stylizer.Stylizer` using ``run.backend``."""
    from engines import EngineCache, build_runner

    from realtime.diffusion.lora import lora_fingerprint

    options = engine_options(run, dtype)
    cache = EngineCache(run.cache_dir)
    loras = lora_fingerprint(style.loras, model.allow_pickle)
    description = f"{model.model} {run.size} {options.dtype} style={style.name}" + (f" loras={len(loras)}" if loras else "")

    def build(module: Any, example_inputs: tuple[Any, ...]) -> Any:
        # Refittable TensorRT engines leave the LoRA set out of the key: a cached engine is refitted to the fused weights
        # the module holds now (weights_tag names them). Every other backend, and `auto` (which may pick onnxruntime),
        # keys on the LoRA set, so a LoRA change can never reuse a stale engine.
        include_loras = not (run.backend == "tensorrt" and options.trt_refittable)  # auto may pick any: keyed
        fields = engine_key_fields(model, style, run, comps, dtype, include_loras=include_loras,
                                   batch=int(example_inputs[0].shape[0]))
        # the step being built says its own controls and guidance (a live rebuild changes them after this closure)
        fields["controls"] = list(getattr(module, "controls", fields["controls"]))
        fields["cfg"] = bool(getattr(module, "cfg", fields["cfg"]))
        runner = build_runner(
            module, example_inputs, backend=resolve_backend(run.backend, device)[0],
            input_names=getattr(module, "input_names", INPUT_NAMES), output_names=OUTPUT_NAMES,
            options=options, cache=cache, key_fields=fields, weights_tag=",".join(loras) or "base",
            description=description,
        )
        if runner.backend == "tensorrt" and not options.trt_refittable:
            log.info("TensorRT engine built without REFIT: a LoRA change rebuilds it (--trt-refit to refit instead)")
        log.info("frame step runs on the %s backend%s", runner.backend, f" ({runner.reason})" if runner.reason else "")
        return runner

    return build


def check_backend(name: str, device: Any) -> None:
    """A requested engine backend that can run on ``device`` (``eager``/``auto`` always can): else
    :class:`~engines.BackendUnavailable`, never a silent fallback (docs/design.md §6)."""
    if name in ("eager", "auto"):
        return
    from engines import BackendUnavailable as EngineBackendUnavailable
    from engines import get_backend

    ok, why = get_backend(name).is_available(device)
    if not ok:
        raise EngineBackendUnavailable(why)
