"""The TensorRT backend: build an engine from the float16 ONNX, cache it, run it with torch tensors, refit LoRA changes.

UNVERIFIED HERE. TensorRT cannot be installed on the development/CI machines (docs/design.md §11: the PyPI packages are stubs that
download from NVIDIA's index, unreachable; tensorrt-rtx does not support Hopper), so nothing in this file that imports
``tensorrt`` has been executed. It is written to the TensorRT 10 and 11 Python APIs as documented by NVIDIA:

* build: ``trt.Builder`` -> ``create_network`` with ``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (required in
  10 so the float16 ONNX dictates precision; deprecated and ignored in 11, where every network is strongly typed and
  the precision flags such as ``BuilderFlag.FP16`` are removed; this code never sets a precision flag) ->
  ``OnnxParser.parse_from_file`` (reads the external data beside the ONNX) -> ``IBuilderConfig`` with
  ``builder_optimization_level``, ``BuilderFlag.REFIT`` for refittable engines, an optional workspace pool limit and a
  timing cache loaded from / saved to disk (``create_timing_cache`` / ``set_timing_cache`` / ``get_timing_cache``) ->
  ``build_serialized_network``.
* run: ``Runtime.deserialize_cuda_engine`` -> ``create_execution_context``; name-based I/O (``num_io_tensors``,
  ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_shape``); one torch buffer per I/O
  tensor allocated once, bound with ``set_input_shape`` / ``set_tensor_address``; ``execute_async_v3`` on torch's
  current stream (a dedicated side stream, so TensorRT does not run on the legacy default stream); warmed up and
  captured in a CUDA graph on the first call (the frame thread's, thread-local capture mode: engines/cudagraph.py). An
  input that already is its bound buffer (``input_buffers``) is not copied.
* precision: the ONNX is exported in float16 with the ops of ``EngineOptions.fp32_ops`` (normalisations, softmax)
  wrapped in Casts to float32 and back, so the strongly typed network computes them in float32; the workspace pool is
  limited (``trt_workspace_gib``, 2 GiB by default). REFIT is set only when asked for (``trt_refittable``).
* refit: ``trt.Refitter`` -> ``set_named_weights(name, Weights, TensorLocation.DEVICE)`` for the initializers that
  :func:`engines.refit.plan_refit` maps from torch names (the ONNX parser names refittable weights after the ONNX
  initializers) -> ``get_missing_weights``: weights TensorRT wants with them (e.g. a bias fused with a changed
  weight) are supplied from the module's current state dict through the weight map (:func:`missing_weights`; one it
  cannot trace: RefitUnsupported) -> ``refit_cuda_engine``; the CUDA graph is captured again on the next call. Note
  from the TensorRT 11.3 docs: ``REFIT`` may drop a GEMM bias (known issue; ``REFIT_IDENTICAL`` does not, but only
  allows refitting identical weights) -- the ``tensorrt``-marked test compares a refittable engine with eager to
  catch it.
* memory: after the export the torch module moves to the CPU (``release_module``) before TensorRT builds, so the
  build's peak holds one copy of the weights on the GPU, not two.

Tests that need TensorRT carry the ``tensorrt`` marker and are skipped where ``import tensorrt`` fails.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engines import cudagraph
from engines.base import (Backend, BuildContext, Runner, TensorSpec, installed, progress, register_backend,
                          release_module)
from engines.errors import (BackendUnavailable, EngineBuildError, EngineCorrupt, EngineOptionError, EngineRunError,
                            RefitUnsupported, missing_extra)
from engines.onnx_export import export_onnx, map_path_for
from engines.refit import WeightMap, plan_refit

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

PLAN_NAME = "engine.plan"
MAP_NAME = "model.weights.json"
MIN_MAJOR = 10


# --- version handling (pure, tested) ----------------------------------------------------------------------------------

def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; stops at the first non-numeric part (``"11.0.0rc1"`` -> ``(11, 0)``)."""
    out = []
    for part in str(text).strip().split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    if not out:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return tuple(out)


def check_version(text: str) -> tuple[bool, str]:
    """(supported, reason) for a TensorRT version string: 10 and newer are supported."""
    try:
        major = parse_version(text)[0]
    except ValueError as e:
        return False, str(e)
    if major < MIN_MAJOR:
        return False, f"TensorRT {text} is too old (10 or newer needed): pip install -U 'stylecam[trt]'"
    return True, ""


def strongly_typed_by_flag(text: str) -> bool:
    """True where the STRONGLY_TYPED creation flag is what makes a network strongly typed (TensorRT 10); from 11 on
    every network is strongly typed and the flag is ignored (setting it anyway is harmless)."""
    return parse_version(text)[0] < 11


# --- import -----------------------------------------------------------------------------------------------------------

def import_tensorrt() -> Any:
    """``import tensorrt``, or BackendUnavailable naming the ``trt`` extra."""
    try:
        import tensorrt
    except ImportError as e:
        raise missing_extra("TensorRT", "trt") from e
    except OSError as e:  # shared libraries missing or mismatched
        raise BackendUnavailable(f"TensorRT failed to load ({e}): reinstall with pip install 'stylecam[trt]'") from e
    ok, why = check_version(tensorrt.__version__)
    if not ok:
        raise BackendUnavailable(why)
    return tensorrt


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None when ``import tensorrt`` fails."""
    if not installed("tensorrt"):
        return None
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailable:
        return None


_LOGGER: Any = None


def _trt_logger(trt: Any) -> Any:
    """One ILogger for the process (TensorRT objects keep a reference), forwarding to Python logging."""
    global _LOGGER
    if _LOGGER is None:
        import logging as _logging

        sev = trt.ILogger.Severity
        levels = {sev.INTERNAL_ERROR: _logging.ERROR, sev.ERROR: _logging.ERROR, sev.WARNING: _logging.WARNING,
                  sev.INFO: _logging.DEBUG}

        class _Forward(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                level = levels.get(severity)
                if level is not None:
                    logger.log(level, "TensorRT: %s", msg)

        _LOGGER = _Forward()
    return _LOGGER


def _torch_dtype(trt: Any, dt: Any) -> "torch.dtype":
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int8: torch.int8, trt.int32: torch.int32,
             trt.bool: torch.bool, trt.uint8: torch.uint8}
    for name, tdt in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = tdt
    if dt not in table:
        raise EngineBuildError(f"TensorRT tensor type {dt} has no torch equivalent")
    return table[dt]


# --- build ------------------------------------------------------------------------------------------------------------

def build_engine(onnx_path: Path, *, optimization_level: int = 3, refittable: bool = False,
                 workspace_gib: float | None = None, timing_cache: Path | None = None) -> bytes:
    """Build a serialized engine (plan) from ``onnx_path`` (external data beside it). Unverified here (no TensorRT)."""
    trt = import_tensorrt()
    log = _trt_logger(trt)
    builder = trt.Builder(log)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required in 10, ignored in 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(err.desc() if hasattr(err, "desc") else str(err))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: {'; '.join(errors)[:500]}")
    config = builder.create_builder_config()
    config.builder_optimization_level = int(optimization_level)
    if refittable:
        config.set_flag(trt.BuilderFlag.REFIT)
    if workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache_obj = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache_obj = config.create_timing_cache(data)
        if cache_obj is None and data:
            logger.warning("TensorRT timing cache %s is unreadable: starting a new one", timing_cache)
            cache_obj = config.create_timing_cache(b"")
        if cache_obj is not None:
            config.set_timing_cache(cache_obj, ignore_mismatch=False)
    logger.info("TensorRT %s: building %s (optimization level %d, refittable %s); this takes minutes",
                trt.__version__, onnx_path.name, optimization_level, refittable)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
    if timing_cache is not None and cache_obj is not None:
        tmp = timing_cache.with_name(f".{timing_cache.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        tmp.replace(timing_cache)
    return bytes(memoryview(plan))


def load_engine(plan: bytes) -> tuple[Any, Any]:
    """(runtime, engine) from a plan; EngineCorrupt when TensorRT cannot deserialize it (corrupt, other version)."""
    trt = import_tensorrt()
    runtime = trt.Runtime(_trt_logger(trt))
    try:
        engine = runtime.deserialize_cuda_engine(plan)
    except Exception as e:  # TensorRT raises or returns None depending on the failure
        raise EngineCorrupt(f"TensorRT could not deserialize the engine ({e})") from e
    if engine is None:
        raise EngineCorrupt("TensorRT could not deserialize the engine (corrupt, or built by another version)")
    return runtime, engine


# --- refit helpers (pure, tested) ------------------------------------------------------------------------------------

def missing_weights(weight_map: WeightMap | None, names: Sequence[str],
                    state: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """The values of the initializers ``names`` (what ``Refitter.get_missing_weights`` lists) from the module's current
    torch ``state`` through the weight map, in the ONNX shape and dtype. RefitUnsupported for a name the map does not
    trace to a torch weight of ``state`` (a constant TensorRT made itself): the caller rebuilds."""
    from engines.refit import initializer_value

    out = {}
    for name in names:
        info = weight_map.initializers.get(name) if weight_map is not None else None
        if info is None or info.degenerate:
            raise RefitUnsupported(f"TensorRT needs weights {name!r}, which no torch weight maps to: rebuild the engine")
        out[name] = initializer_value(info, state)
    return out


# --- run --------------------------------------------------------------------------------------------------------------

class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, runtime: Any, engine: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 device: "torch.device", *, weight_map: WeightMap | None, refittable: bool, cuda_graphs: bool,
                 clone_outputs: bool, warmup: int) -> None:
        import torch

        super().__init__(inputs, outputs, device)
        self._trt = import_tensorrt()
        self.runtime, self.engine = runtime, engine
        self.weight_map, self.refittable = weight_map, refittable
        self.use_graph, self.clone_outputs, self.warmup = cuda_graphs, clone_outputs, warmup
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        engine_inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        engine_outputs = [n for n in names if n not in engine_inputs]
        if sorted(engine_outputs) != sorted(self.output_names):
            raise EngineCorrupt(f"engine outputs {engine_outputs} are not {list(self.output_names)}")
        unknown = [n for n in engine_inputs if n not in self.input_names]
        if unknown:
            raise EngineCorrupt(f"engine inputs {unknown} are not among {list(self.input_names)}")
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream(device)
        self.buffers: dict[str, torch.Tensor] = {}
        for n in names:
            shape = tuple(int(s) for s in engine.get_tensor_shape(n))
            self.buffers[n] = torch.empty(shape, dtype=_torch_dtype(trt, engine.get_tensor_dtype(n)), device=device)
            if n in engine_inputs:
                self.context.set_input_shape(n, shape)
            self.context.set_tensor_address(n, self.buffers[n].data_ptr())
        self._feed = [(i, self.buffers[s.name]) for i, s in enumerate(self.inputs) if s.name in engine_inputs]
        self._outs = tuple(self.buffers[n] for n in self.output_names)
        self.state_source: Any = None  # () -> torch state dict: supplies weights a refit needs but was not given
        self.copies = 0  # input copies made by the last call
        self._ready = False  # warmed up (and captured) on the first call: the frame thread's

    @property
    def input_buffers(self) -> dict[str, "torch.Tensor"]:
        return {self.inputs[i].name: buf for i, buf in self._feed}

    def _enqueue(self) -> tuple["torch.Tensor", ...]:
        import torch

        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise EngineRunError("TensorRT execute_async_v3 failed (see the log above)")
        return self._outs

    def _prepare(self) -> None:
        """Warm up, then capture the engine in a CUDA graph (on the first call, and again after each refit)."""
        import threading

        import torch

        self.graph = None
        if self.use_graph and not self.capture_held:
            with torch.cuda.stream(self.stream):
                self.graph, _ = cudagraph.capture(self._enqueue, self.warmup, self.device)
            self.capture_thread = threading.current_thread().name
        else:
            with torch.cuda.stream(self.stream):
                for _ in range(self.warmup):
                    self._enqueue()
            self.stream.synchronize()
        self._ready = self.graph is not None or not self.use_graph

    def _run(self, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
        import torch

        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            copies = 0
            for i, buf in self._feed:
                if not cudagraph.is_buffer(inputs[i], buf):  # an input written into its buffer costs no copy
                    buf.copy_(inputs[i], non_blocking=True)
                    copies += 1
            self.copies = copies
            if not self._ready:
                self._prepare()  # warm-up (and capture) read the buffers just fed
            if self.graph is not None:
                self.graph.replay()
            else:
                self._enqueue()
        caller.wait_stream(self.stream)
        if self.clone_outputs:
            return tuple(o.clone() for o in self._outs)
        return self._outs

    def refit(self, new_state: Mapping[str, "torch.Tensor"]) -> None:
        """Set the changed weights by name and refit the engine in place. RefitUnsupported when the engine is not
        refittable, a weight cannot be mapped, or TensorRT reports missing weights: the caller rebuilds."""
        import torch

        if not self.refittable or self.weight_map is None:
            raise RefitUnsupported("this TensorRT engine was built without REFIT: rebuild it, or build it refittable "
                                   "(EngineOptions(trt_refittable=True); stylecam: --trt-refit)")
        updates = plan_refit(self.weight_map, new_state)
        trt = self._trt
        refitter = trt.Refitter(self.engine, _trt_logger(trt))
        refittable = set(refitter.get_all_weights())
        folded = [n for n in updates if n not in refittable]
        if folded:
            raise RefitUnsupported(f"TensorRT folded {', '.join(folded[:4])} into the engine: rebuild it")
        keep: list[torch.Tensor] = []  # the device copies must outlive refit_cuda_engine()

        def set_weights(named: Mapping[str, "torch.Tensor"]) -> None:
            for name, value in named.items():
                dt = refitter.get_weights_prototype(name).dtype
                t = value.to(device=self.device, dtype=_torch_dtype(trt, dt)).contiguous()
                keep.append(t)
                if not refitter.set_named_weights(name, trt.Weights(dt, t.data_ptr(), t.numel()),
                                                  trt.TensorLocation.DEVICE):
                    raise RefitUnsupported(f"TensorRT rejected the weights for {name}: rebuild the engine")

        set_weights(updates)
        missing = list(refitter.get_missing_weights())
        if missing:  # weights TensorRT combined with the changed ones at build time: their current values
            state = self.state_source() if self.state_source is not None else {}
            set_weights(missing_weights(self.weight_map, missing, state))
            still = list(refitter.get_missing_weights())
            if still:
                raise RefitUnsupported(f"TensorRT still needs weights {', '.join(still[:4])}: rebuild the engine")
        torch.cuda.synchronize(self.device)
        if not refitter.refit_cuda_engine():
            raise RefitUnsupported("TensorRT refit_cuda_engine failed: rebuild the engine")
        keep.clear()
        self.graph, self._ready = None, False  # captured again on the next call (the frame thread's)
        logger.info("TensorRT: refitted %d weights", len(updates))

    def close(self) -> None:
        self.graph = None
        self.buffers = {}
        self._feed, self._outs = [], ()
        self.context = self.engine = self.runtime = None
        super().close()


# --- backend ----------------------------------------------------------------------------------------------------------

class TensorRTBackend(Backend):
    name = "tensorrt"
    extra = "trt"
    uses_cache = True
    replaces_module = True

    def is_available(self, device: "torch.device") -> tuple[bool, str]:
        import torch

        if not installed("tensorrt"):
            return False, "TensorRT is not installed: pip install 'stylecam[trt]'"
        if device.type != "cuda":
            return False, f"TensorRT needs a CUDA device (got {device.type}): use --device cuda"
        if not torch.cuda.is_available():
            return False, "TensorRT needs CUDA, which torch cannot use here: install a CUDA build of torch"
        try:
            import_tensorrt()
        except BackendUnavailable as e:
            return False, str(e)
        return True, ""

    def build(self, ctx: BuildContext) -> Runner:
        ok, why = self.is_available(ctx.device)
        if not ok:
            raise BackendUnavailable(why)
        if ctx.options.dtype not in ("float32", "float16"):
            raise EngineOptionError(f"EngineOptions.dtype={ctx.options.dtype!r} is not allowed for tensorrt: "
                                    "float16 (or float32)")
        for attempt in (0, 1):
            plan, weight_map, from_cache, built_tag = self._plan(ctx)
            try:
                runtime, engine = load_engine(plan)
                runner = TensorRTRunner(runtime, engine, ctx.input_specs, ctx.output_specs, ctx.device,
                                        weight_map=weight_map, refittable=ctx.options.trt_refittable,
                                        cuda_graphs=ctx.options.cuda_graphs, clone_outputs=ctx.options.clone_outputs,
                                        warmup=ctx.options.warmup_calls)
            except EngineCorrupt as e:
                if from_cache and attempt == 0 and ctx.cache is not None and ctx.key is not None:
                    ctx.cache.remove(ctx.key, str(e))
                    continue
                raise EngineBuildError(str(e)) from e
            runner.cache_key = ctx.key if ctx.cache is not None else None
            runner.state_source = ctx.module.state_dict
            if (from_cache and ctx.options.trt_refittable
                    and (ctx.weights_tag is None or built_tag != ctx.weights_tag)):
                # the cached engine holds the weights it was built with: bring it to the module's current weights
                by_torch = weight_map.by_torch_name()
                runner.refit({n: t for n, t in ctx.module.state_dict().items()
                              if n in by_torch and not any(info.degenerate for info, _ in by_torch[n])})
            return runner
        raise AssertionError("unreachable")  # pragma: no cover

    def _plan(self, ctx: BuildContext) -> tuple[bytes, WeightMap, bool, str | None]:
        """(plan bytes, weight map, from cache, weights tag it was built with)."""
        cache, key = ctx.cache, ctx.key
        if cache is not None and key is not None:
            entry = cache.lookup(key, ctx.versions)
            if entry is not None:
                try:
                    return (entry.file(PLAN_NAME).read_bytes(), WeightMap.load(entry.file(MAP_NAME)), True,
                            entry.extra.get("weights_tag"))
                except (OSError, RefitUnsupported) as e:
                    cache.remove(key, str(e))
        opts = ctx.options
        timing = None
        if cache is not None:
            import torch

            props = torch.cuda.get_device_properties(ctx.device)
            timing = cache.timing_cache_path(f"tensorrt-{tensorrt_version()}-{props.name}-{props.major}.{props.minor}")
        work = Path(tempfile.mkdtemp(prefix="stylecam-trt-", dir=str(cache.root) if cache is not None else None))
        try:
            fp32 = opts.fp32_ops if opts.dtype == "float16" else ()
            with progress(f"ONNX export of {ctx.description or 'the module'} for TensorRT"):
                export = export_onnx(ctx.module, ctx.example_inputs, work / "model.onnx", input_names=ctx.input_names,
                                     output_names=ctx.output_names, opset=opts.opset, fp32_ops=fp32)
            if opts.release_module:  # the ONNX is on disk: the torch copy leaves the GPU before TensorRT needs room
                release_module(ctx.module)
            with progress(f"TensorRT engine build for {ctx.description or export.path.name}"):
                plan = build_engine(export.path, optimization_level=opts.trt_optimization_level,
                                    refittable=opts.trt_refittable, workspace_gib=opts.trt_workspace_gib,
                                    timing_cache=timing)
            weight_map = WeightMap.load(map_path_for(export.path))
            if cache is not None and key is not None:
                extra = {"inputs": [s.to_json() for s in ctx.input_specs],
                         "outputs": [s.to_json() for s in ctx.output_specs],
                         "refittable": opts.trt_refittable, "weights_tag": ctx.weights_tag}
                with cache.writer(key, fields=ctx.key_fields or {}, backend=self.name, description=ctx.description,
                                  versions=ctx.versions, extra=extra) as w:
                    (w.dir / PLAN_NAME).write_bytes(plan)
                    shutil.copyfile(export.map_path, w.dir / MAP_NAME)
                    if opts.keep_onnx:
                        for f in (export.path, export.data_path):
                            shutil.move(str(f), w.dir / f.name)
            return plan, weight_map, False, ctx.weights_tag
        finally:
            shutil.rmtree(work, ignore_errors=True)


register_backend(TensorRTBackend())
