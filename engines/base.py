"""The backend interface: options, tensor specs, the Runner base class and the backend registry.

A :class:`Runner` replaces a fixed-shape torch module: it is called with the same tensors the module takes and returns
the same tuple of tensors (docs/design.md §6), so the application never branches on the backend. Inputs are converted to the
engine's input dtype and device on the way in (a no-op when they already match); outputs come back in the engine's
dtypes on the engine's device, i.e. what the module returns once cast to ``EngineOptions.dtype``.

torch is imported inside functions so that ``import engines`` stays cheap.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from engines.errors import EngineOptionError, RefitUnsupported

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_INDUCTOR_CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
#: ONNX ops computed in float32 inside float16 networks (EngineOptions.fp32_ops).
FP32_OPS = ("Softmax", "LayerNormalization", "InstanceNormalization", "GroupNormalization")


def _check(ok: bool, field: str, value: object, allowed: str) -> None:
    if not ok:
        raise EngineOptionError(f"EngineOptions.{field}={value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class EngineOptions:
    """How to build an engine. Every field is validated in ``__post_init__``.

    dtype: compute dtype. The module's floating weights and the floating example inputs are cast to it (in place,
        the weights are never copied). ONNX-based backends (onnxruntime, tensorrt) accept float32 and float16;
        TensorRT builds a strongly typed network, so a float16 ONNX gives a float16 engine.
    compile_mode, fullgraph: passed to ``torch.compile`` (compile backend). ``reduce-overhead`` and ``max-autotune`` use
        inductor's own CUDA graphs and so exclude ``cuda_graphs``.
    cuda_graphs: capture the compiled module / TensorRT engine in a CUDA graph after warm-up (CUDA only; no-op on CPU).
    clone_outputs: return clones of the static output buffers (safe). False returns the static buffers themselves, which
        the next call overwrites (saves one copy per output).
    channels_last: convert 4-D weights to channels-last memory format (compile backend). None: on CUDA when the module
        has a Conv2d.
    warmup_calls: calls before a CUDA graph is captured (and before ``auto`` times a backend).
    opset: ONNX opset for the export (17 has LayerNormalization).
    trt_optimization_level: ``IBuilderConfig.builder_optimization_level`` (0..5, TensorRT's default is 3).
    trt_refittable: build TensorRT engines with ``BuilderFlag.REFIT`` so LoRA changes are applied by refit. Off unless
        asked for: TensorRT 11.3 documents a REFIT issue that may drop a GEMM bias, and non-refittable engines may fold
        more.
    trt_workspace_gib: TensorRT workspace pool limit (GiB; default 2 to keep the build's peak memory down; which
        tactics that rules out for the real UNet is unmeasured); None leaves TensorRT's default (all device memory).
    fp32_ops: ONNX op types kept in float32 inside a float16 export (Cast in, Cast back out): normalisations and
        softmax by default, whose fp16 reductions overflow or lose precision. Only applied to float16 exports.
    release_module: after an ONNX-based engine (onnxruntime, tensorrt) is built on a GPU, move the torch module it
        replaces to the CPU (its weights stay available for refit and eager parts; the GPU keeps only the engine).
    ort_threads: onnxruntime intra-op threads; None lets onnxruntime decide.
    auto_trials: timed calls per candidate when ``auto`` measures on the CPU.
    keep_onnx: keep the exported ONNX beside the TensorRT engine in the cache (large: ~2.4 GB for the real model).
    """

    dtype: str = "float32"
    compile_mode: str = "default"
    fullgraph: bool = True
    cuda_graphs: bool = True
    clone_outputs: bool = True
    channels_last: bool | None = None
    warmup_calls: int = 2
    opset: int = 17
    trt_optimization_level: int = 3
    trt_refittable: bool = False
    trt_workspace_gib: float | None = 2.0
    fp32_ops: tuple[str, ...] = FP32_OPS
    release_module: bool = True
    ort_threads: int | None = None
    auto_trials: int = 3
    keep_onnx: bool = False

    def __post_init__(self) -> None:
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        _check(self.compile_mode in COMPILE_MODES, "compile_mode", self.compile_mode,
               f"one of {', '.join(COMPILE_MODES)}")
        for name in ("fullgraph", "cuda_graphs", "clone_outputs", "trt_refittable", "keep_onnx", "release_module"):
            _check(isinstance(getattr(self, name), bool), name, getattr(self, name), "True or False")
        _check(self.channels_last is None or isinstance(self.channels_last, bool), "channels_last",
               self.channels_last, "None, True or False")
        _check(not (self.cuda_graphs and self.compile_mode in _INDUCTOR_CUDAGRAPH_MODES), "compile_mode",
               self.compile_mode, "modes with inductor CUDA graphs need cuda_graphs=False (or use 'default' / "
               "'max-autotune-no-cudagraphs' with cuda_graphs=True)")
        _check(_is_int(self.warmup_calls) and 1 <= self.warmup_calls <= 100, "warmup_calls", self.warmup_calls,
               "an integer 1..100")
        _check(_is_int(self.opset) and 14 <= self.opset <= 23, "opset", self.opset, "an integer 14..23")
        _check(_is_int(self.trt_optimization_level) and 0 <= self.trt_optimization_level <= 5,
               "trt_optimization_level", self.trt_optimization_level, "an integer 0..5")
        _check(self.trt_workspace_gib is None or (isinstance(self.trt_workspace_gib, (int, float))
                                                  and not isinstance(self.trt_workspace_gib, bool)
                                                  and self.trt_workspace_gib > 0),
               "trt_workspace_gib", self.trt_workspace_gib, "None or a number > 0")
        _check(isinstance(self.fp32_ops, tuple) and all(isinstance(o, str) and o for o in self.fp32_ops), "fp32_ops",
               self.fp32_ops, "a tuple of ONNX op type names")
        _check(self.ort_threads is None or (_is_int(self.ort_threads) and self.ort_threads >= 1), "ort_threads",
               self.ort_threads, "None or an integer >= 1")
        _check(_is_int(self.auto_trials) and 1 <= self.auto_trials <= 100, "auto_trials", self.auto_trials,
               "an integer 1..100")

    def key_fields(self, backend: str) -> dict[str, Any]:
        """The options that change the artifact a backend caches (part of the cache key)."""
        fields: dict[str, Any] = {"dtype": self.dtype}
        if backend in ("onnxruntime", "tensorrt"):
            fields["opset"] = self.opset
            if self.dtype == "float16":
                fields["fp32_ops"] = list(self.fp32_ops)
        if backend == "tensorrt":
            fields.update(optimization_level=self.trt_optimization_level, refittable=self.trt_refittable,
                          workspace_gib=self.trt_workspace_gib)
        return fields

    def torch_dtype(self) -> "torch.dtype":
        import torch

        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.dtype]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one engine input or output (dtype as torch names it, e.g. ``"uint8"``, ``"float16"``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @staticmethod
    def of(name: str, t: "torch.Tensor") -> "TensorSpec":
        return TensorSpec(name, tuple(int(s) for s in t.shape), str(t.dtype).removeprefix("torch."))

    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "TensorSpec":
        return TensorSpec(str(d["name"]), tuple(int(s) for s in d["shape"]), str(d["dtype"]))


class Runner:
    """A built engine. Call it with the module's input tensors; it returns the module's output tuple.

    Subclasses implement :meth:`_run` (and :meth:`refit` / :meth:`close` where they hold something). The base class
    checks the number and shapes of the inputs (fixed shapes: a mismatch is an :class:`EngineOptionError`).
    """

    backend: ClassVar[str] = "?"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], device: "torch.device") -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.device = device
        self.reason = ""  # why this backend was chosen (set by build_runner for backend="auto")
        self.cache_key: str | None = None  # the cache entry this engine came from, if any
        self.closed = False
        self.module_released = False  # the torch module left the GPU after the build (EngineOptions.release_module)
        # CUDA graphs (compile / tensorrt on CUDA) are captured lazily, on the first call: the frame thread's.
        self.graph: Any = None
        self.capture_thread: str | None = None  # the name of the thread that captured the graph
        self._capture_holds = 0

    @property
    def input_buffers(self) -> dict[str, "torch.Tensor"]:
        """The static input buffers by input name (runners with CUDA graphs, once captured; else empty). A caller that
        writes an input into its buffer and passes the buffer itself saves that input's copy on every call."""
        return {}

    @contextlib.contextmanager
    def hold_capture(self) -> Any:
        """Calls inside the block run without capturing a CUDA graph (compiling and warming up only), e.g. a warm-up on
        a loader thread: the graph is then captured by the first call after the block, on the frame thread."""
        self._capture_holds += 1
        try:
            yield self
        finally:
            self._capture_holds -= 1

    @property
    def capture_held(self) -> bool:
        return self._capture_holds > 0

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def __call__(self, *inputs: "torch.Tensor") -> tuple["torch.Tensor", ...]:
        if self.closed:
            raise EngineOptionError(f"{self.backend} runner is closed")
        if len(inputs) != len(self.inputs):
            raise EngineOptionError(f"{self.backend} runner takes {len(self.inputs)} inputs "
                                    f"({', '.join(self.input_names)}), got {len(inputs)}")
        for x, spec in zip(inputs, self.inputs, strict=True):
            if tuple(x.shape) != spec.shape:
                raise EngineOptionError(f"input {spec.name!r} has shape {tuple(x.shape)}; this engine was built "
                                        f"for {spec.shape} (fixed shapes: build another engine)")
        return self._run(inputs)

    def _run(self, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:  # pragma: no cover
        raise NotImplementedError

    def refit(self, new_state: Mapping[str, "torch.Tensor"]) -> None:
        """Replace weights (torch state-dict names -> new full weights, not deltas). Raises RefitUnsupported when the
        change cannot be applied in place; the caller then rebuilds."""
        raise RefitUnsupported(f"the {self.backend} backend cannot refit weights: rebuild the engine")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} backend={self.backend} device={self.device} "
                f"inputs={len(self.inputs)} outputs={self.output_names}>")


@dataclass
class BuildContext:
    """Everything a backend needs to build a runner (assembled by :func:`engines.build_runner`).

    ``module`` is already in eval mode on ``device`` in the compute dtype; ``example_inputs`` are on ``device`` with
    floating tensors cast to the compute dtype. ``key`` is the cache key (None when there is no cache).
    """

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_specs: tuple[TensorSpec, ...]
    output_specs: tuple[TensorSpec, ...]
    options: EngineOptions
    device: Any
    cache: Any = None
    key: str | None = None
    key_fields: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    weights_tag: str | None = None
    description: str = ""


class Backend:
    """A registered backend: a name, the pip extra that provides it, availability and build."""

    name: ClassVar[str] = "?"
    extra: ClassVar[str | None] = None
    uses_cache: ClassVar[bool] = False
    #: the engine holds its own copy of the weights (the torch module can leave the GPU once it is built)
    replaces_module: ClassVar[bool] = False

    def is_available(self, device: "torch.device") -> tuple[bool, str]:  # pragma: no cover
        """(True, "") or (False, a one-line reason naming the fix)."""
        raise NotImplementedError

    def build(self, ctx: BuildContext) -> Runner:  # pragma: no cover
        raise NotImplementedError


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add a backend to the registry (by its ``name``)."""
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EngineOptionError(f"backend={name!r} is not known: choose auto or one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def available_backends(device: "torch.device | str") -> dict[str, tuple[bool, str]]:
    """Every registered backend with (available, reason) on ``device`` (for ``stylecam doctor``)."""
    import torch

    dev = torch.device(device)
    return {name: b.is_available(dev) for name, b in BACKENDS.items()}


# --- shared helpers ---------------------------------------------------------------------------------------------------

def installed(module: str) -> bool:
    """Whether ``module`` can be found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def prepare_module(module: Any, device: "torch.device", dtype: "torch.dtype") -> Any:
    """Put ``module`` in eval mode on ``device`` with its floating weights in ``dtype`` (in place, no copy)."""
    module.eval()
    module.to(device=device, dtype=dtype)
    return module


def release_module(module: Any) -> bool:
    """Move ``module``'s weights to the CPU (an engine that holds its own copy replaced it on the GPU) and return the
    freed cache to the driver. True when it was on a GPU."""
    import torch

    on_gpu = any(p.device.type != "cpu" for p in module.parameters())
    if on_gpu:
        module.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("engine built: the torch copy of the module left the GPU (kept on the CPU for refits)")
    return on_gpu


def cast_inputs(inputs: Sequence["torch.Tensor"], dtype: "torch.dtype",
                device: "torch.device") -> tuple["torch.Tensor", ...]:
    """Floating tensors to ``dtype``; every tensor to ``device`` and contiguous."""
    out = []
    for x in inputs:
        if x.is_floating_point() and x.dtype != dtype:
            x = x.to(dtype)
        out.append(x.to(device).contiguous())
    return tuple(out)


def convert_input(x: "torch.Tensor", spec: TensorSpec, device: "torch.device") -> "torch.Tensor":
    """``x`` in ``spec``'s dtype on ``device`` (no copy when it already is)."""
    dt = spec.torch_dtype()
    if x.dtype != dt or x.device != device:
        x = x.to(device=device, dtype=dt)
    return x


def run_module(module: Any, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
    """Call ``module`` without autograd and return its outputs as a tuple of tensors."""
    import torch

    with torch.no_grad():
        out = module(*inputs)
    if isinstance(out, torch.Tensor):
        return (out,)
    if not isinstance(out, (tuple, list)) or not all(isinstance(o, torch.Tensor) for o in out):
        raise EngineOptionError(f"the module must return a tensor or a tuple of tensors, got {type(out).__name__}")
    return tuple(out)


@contextlib.contextmanager
def progress(what: str, every_s: float = 15.0) -> Any:
    """Log ``what`` when a slow build starts, a line every ``every_s`` seconds while it runs, and its time at the end
    (engine builds take minutes: the user sees that something is happening)."""
    t0 = time.monotonic()
    stop = threading.Event()
    logger.info("%s ...", what)

    def beat() -> None:
        while not stop.wait(every_s):
            logger.info("%s: still working (%.0f s)", what, time.monotonic() - t0)

    thread = threading.Thread(target=beat, name="engines-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    logger.info("%s: done in %.1f s", what, time.monotonic() - t0)


def median_seconds(fn: Callable[[], Any], trials: int, device: "torch.device") -> float:
    """Median wall time of ``fn()`` over ``trials`` calls (synchronizing CUDA around each call)."""
    import time

    import torch

    times = []
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
