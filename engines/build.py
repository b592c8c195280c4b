"""``build_runner``: one call that turns a fixed-shape module into a Runner, with ``auto`` backend selection."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engines.base import (BACKENDS, BuildContext, EngineOptions, Runner, TensorSpec, cast_inputs, get_backend,
                          median_seconds, prepare_module, release_module, run_module)
from engines.cache import EngineCache, cache_key, environment_fields, versions_of
from engines.errors import BackendUnavailable, EngineOptionError
from engines.onnx_export import check_names

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

CUDA_ORDER = ("tensorrt", "compile", "eager")


def build_runner(module: Any, example_inputs: Sequence["torch.Tensor"], *, backend: str = "auto",
                 input_names: Sequence[str], output_names: Sequence[str], options: EngineOptions | None = None,
                 cache: EngineCache | None = None, key_fields: Mapping[str, Any] | None = None,
                 weights_tag: str | None = None, description: str = "") -> Runner:
    """Build a :class:`Runner` for ``module`` at the fixed shapes of ``example_inputs``.

    module: a torch module returning a tensor or a tuple of tensors. It is put in eval mode on the inputs' device and
        its floating weights are cast to ``options.dtype`` in place (never copied: the real model must not exist twice).
        It is called once here, eagerly, to learn the output shapes and dtypes.
    example_inputs: one tensor per module input, all on the target device (their shapes become the engine's shapes).
    backend: ``auto``, ``eager``, ``compile``, ``onnxruntime`` or ``tensorrt``. ``auto`` on CUDA: tensorrt if usable,
        else compile, else eager; on the CPU: eager unless onnxruntime is installed and measured faster here (the
        measurement is remembered in the cache). The choice and why are logged and kept in ``runner.reason``.
        A named backend that cannot run here raises :class:`BackendUnavailable` (one line naming the pip extra).
    input_names, output_names: the engine's I/O names (ONNX graph names for onnxruntime / tensorrt).
    cache: where onnxruntime / tensorrt artifacts are kept; None builds in a temporary directory every time.
    key_fields: what identifies the weights and shapes (model ids/revisions or file hashes, ControlNet, VAE, LoRA
        hashes and scales -- omitted for refittable TensorRT engines --, resolution, batch...). The backend, options,
        I/O specs and :func:`engines.cache.environment_fields` are added here.
    weights_tag: names the weights the module holds now (e.g. a hash of the LoRA set) for refittable TensorRT engines
        whose key omits the LoRA set: a cached engine built with another tag (or with tag None) is refitted to the
        module's current weights when loaded.
    description: a human note stored in the cache manifest (``stylecam cache list``).
    """
    import torch

    options = options or EngineOptions()
    if not isinstance(options, EngineOptions):
        raise EngineOptionError(f"options must be EngineOptions, got {type(options).__name__}")
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise EngineOptionError("example_inputs must be a non-empty sequence of tensors")
    devices = {x.device for x in inputs}
    if len(devices) != 1:
        raise EngineOptionError(f"example_inputs are on several devices {sorted(map(str, devices))}: use one")
    device = inputs[0].device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    input_names = check_names(input_names, len(inputs), "input")
    if backend != "auto":
        chosen = get_backend(backend)
        ok, why = chosen.is_available(device)
        if not ok:
            raise BackendUnavailable(why)

    dtype = options.torch_dtype()
    prepare_module(module, device, dtype)
    inputs = cast_inputs(inputs, dtype, device)
    outputs = run_module(module, inputs)
    output_names = check_names(output_names, len(outputs), "output")
    in_specs = tuple(TensorSpec.of(n, x) for n, x in zip(input_names, inputs, strict=True))
    out_specs = tuple(TensorSpec.of(n, y) for n, y in zip(output_names, outputs, strict=True))
    del outputs

    def context(name: str) -> BuildContext:
        ctx = BuildContext(module, inputs, input_names, output_names, in_specs, out_specs, options, device,
                           weights_tag=weights_tag, description=description)
        if cache is not None and BACKENDS[name].uses_cache:
            env = environment_fields(device, name)
            ctx.cache = cache
            ctx.key_fields = _key_fields(key_fields, env, options.key_fields(name), in_specs, out_specs)
            ctx.key = cache_key(ctx.key_fields)
            ctx.versions = versions_of(env)
        return ctx

    if backend == "auto":
        return _released(_auto(context, device, inputs, options, cache, key_fields, in_specs, out_specs), module,
                         options)
    runner = get_backend(backend).build(context(backend))
    runner.reason = "requested"
    logger.info("engine backend %s on %s", backend, device)
    return _released(runner, module, options)


def _released(runner: Runner, module: Any, options: EngineOptions) -> Runner:
    """Memory diet: an engine with its own weights (onnxruntime, tensorrt) no longer needs the torch module on the GPU
    (``EngineOptions.release_module``): it moves to the CPU, where refits and eager parts still find it."""
    if options.release_module and BACKENDS[runner.backend].replaces_module:
        release_module(module)
        runner.module_released = True
    return runner


def _key_fields(user: Mapping[str, Any] | None, env: Mapping[str, Any], opts: Mapping[str, Any],
                ins: Sequence[TensorSpec], outs: Sequence[TensorSpec]) -> dict[str, Any]:
    return {"model": dict(user or {}), "environment": dict(env), "options": dict(opts),
            "io": {"inputs": [s.to_json() for s in ins], "outputs": [s.to_json() for s in outs]}}


def _auto(context: Any, device: "torch.device", inputs: tuple[Any, ...], options: EngineOptions,
          cache: EngineCache | None, key_fields: Mapping[str, Any] | None, ins: Sequence[TensorSpec],
          outs: Sequence[TensorSpec]) -> Runner:
    skipped: list[str] = []
    if device.type == "cuda":
        for name in CUDA_ORDER:
            ok, why = BACKENDS[name].is_available(device)
            if ok:
                reason = f"best available on {device}" + (f"; not usable: {'; '.join(skipped)}" if skipped else "")
                return _finish(BACKENDS[name].build(context(name)), reason)
            skipped.append(f"{name} ({why})")
    if device.type != "cpu":
        return _finish(BACKENDS["eager"].build(context("eager")), f"only eager runs on {device.type}")
    ok, why = BACKENDS["onnxruntime"].is_available(device)
    if not ok:
        return _finish(BACKENDS["eager"].build(context("eager")), f"onnxruntime not usable: {why}")

    note_key = None
    if cache is not None:
        note_key = cache_key({"auto": 1, **_key_fields(key_fields, environment_fields(device, "onnxruntime"),
                                                       options.key_fields("onnxruntime"), ins, outs)})
        note = cache.read_note(note_key)
        if note and note.get("choice") in ("eager", "onnxruntime"):
            reason = (f"measured earlier on this machine: eager {note.get('eager_ms', 0):.1f} ms, onnxruntime "
                      f"{note.get('onnxruntime_ms', 0):.1f} ms per call")
            return _finish(BACKENDS[note["choice"]].build(context(note["choice"])), reason)

    timings: dict[str, float] = {}
    runners: dict[str, Runner] = {}
    try:
        for name in ("eager", "onnxruntime"):
            runner = BACKENDS[name].build(context(name))
            runners[name] = runner
            for _ in range(options.warmup_calls):
                runner(*inputs)
            timings[name] = median_seconds(lambda r=runner: r(*inputs), options.auto_trials, device) * 1e3
    except BaseException:
        for r in runners.values():
            r.close()
        raise
    choice = "onnxruntime" if timings["onnxruntime"] < timings["eager"] else "eager"
    for name, r in runners.items():
        if name != choice:
            r.close()
    if cache is not None and note_key is not None:
        cache.write_note(note_key, {"choice": choice, "eager_ms": timings["eager"],
                                    "onnxruntime_ms": timings["onnxruntime"]})
    reason = (f"measured on the example inputs: eager {timings['eager']:.1f} ms, onnxruntime "
              f"{timings['onnxruntime']:.1f} ms per call (median of {options.auto_trials})")
    return _finish(runners[choice], reason)


def _finish(runner: Runner, reason: str) -> Runner:
    runner.reason = reason
    logger.info("engine backend auto -> %s (%s)", runner.backend, reason)
    return runner
