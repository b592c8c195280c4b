"""The compile backend: ``torch.compile`` of the whole module, plus on CUDA a manual CUDA-graph replay.

On CUDA the compiled module is captured once in a CUDA graph with static input and output buffers (allocated once), on
its first call (the frame thread; see :mod:`engines.cudagraph`): each call copies the inputs that are not already the
static buffers into them, replays the graph and returns the static outputs (or clones of them,
``EngineOptions.clone_outputs``). On the CPU there are no graphs: the compiled module is called directly.
Attention uses whatever the module calls; torch's ``scaled_dot_product_attention`` picks its fused kernels itself.

The CUDA path is unverified on this machine (no GPU); the CPU path is tested (one slow test: inductor's first call
costs ~25-70 s here even for a tiny module).
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engines import cudagraph
from engines.base import (Backend, BuildContext, Runner, TensorSpec, convert_input, progress, register_backend,
                          run_module)
from engines.eager import copy_weights
from engines.errors import EngineBuildError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)


def _has_conv(module: Any) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


class CompiledRunner(Runner):
    """A ``torch.compile``-d module; on CUDA with ``cuda_graphs`` also captured in a CUDA graph on its first call
    (the calling thread's: the frame thread), then replayed. Per call with a graph: each input is copied into its
    static buffer unless it already is that buffer (:attr:`input_buffers`), and the outputs are the static output
    buffers, or clones of them with ``clone_outputs``."""

    backend = "compile"

    def __init__(self, module: Any, compiled: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 device: "torch.device", *, clone_outputs: bool, cuda_graphs: bool = False, warmup: int = 2) -> None:
        super().__init__(inputs, outputs, device)
        self.module = module
        self.compiled = compiled
        self.clone_outputs = clone_outputs
        self.use_graph = cuda_graphs
        self.warmup = warmup
        self.static: cudagraph.StaticInputs | None = None
        self.static_outputs: tuple[Any, ...] = ()

    @property
    def static_inputs(self) -> tuple[Any, ...]:
        return self.static.buffers if self.static is not None else ()

    @property
    def input_buffers(self) -> dict[str, Any]:
        return dict(self.static.by_name) if self.static is not None else {}

    def capture(self, example_inputs: Sequence["torch.Tensor"], warmup: int) -> None:
        """Capture the compiled module in a CUDA graph reading the static buffers (CUDA only; on this thread)."""
        import threading

        self.static = cudagraph.StaticInputs(self.input_names, example_inputs)
        self.graph, self.static_outputs = cudagraph.capture(
            lambda: run_module(self.compiled, self.static.buffers), warmup, self.device)
        self.capture_thread = threading.current_thread().name

    def _run(self, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
        if self.graph is None:
            xs = [convert_input(x, s, self.device) for x, s in zip(inputs, self.inputs, strict=True)]
            if not self.use_graph or self.capture_held:
                return run_module(self.compiled, xs)
            self.capture(xs, self.warmup)  # the first call: capture here, on the frame thread
        else:
            self.static.feed(inputs)
        self.graph.replay()
        if self.clone_outputs:
            return tuple(o.clone() for o in self.static_outputs)
        return self.static_outputs

    def refit(self, new_state: Mapping[str, "torch.Tensor"]) -> None:
        """In-place weight copy: compiled code and the captured graph read the parameters at the same addresses."""
        copy_weights(self.module, new_state)

    def close(self) -> None:
        self.graph = None
        self.static, self.static_outputs = None, ()
        self.compiled = self.module = None
        super().close()


class CompileBackend(Backend):
    name = "compile"

    def is_available(self, device: "torch.device") -> tuple[bool, str]:
        import torch

        if not hasattr(torch, "compile"):
            return False, f"torch {torch.__version__} has no torch.compile: install torch>=2.4"
        if device.type == "cuda":
            try:
                from torch.utils._triton import has_triton
            except ImportError:  # pragma: no cover - very old torch
                return False, "torch.compile on CUDA needs Triton: pip install triton"
            if not has_triton():
                return False, "torch.compile on CUDA needs Triton: pip install triton"
            return True, ""
        if device.type == "cpu":
            cxx = os.environ.get("CXX") or "g++"
            if not any(shutil.which(c) for c in (cxx, "g++", "c++", "clang++", "cl")):
                return False, "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"
            return True, ""
        return False, f"the compile backend supports cpu and cuda devices, not {device.type}"

    def build(self, ctx: BuildContext) -> Runner:
        import torch

        opts = ctx.options
        module = ctx.module
        cuda = ctx.device.type == "cuda"
        channels_last = opts.channels_last if opts.channels_last is not None else (cuda and _has_conv(module))
        if channels_last:
            module.to(memory_format=torch.channels_last)
        compiled = torch.compile(module, mode=opts.compile_mode, fullgraph=opts.fullgraph, dynamic=False)
        graphs = bool(cuda and opts.cuda_graphs)
        runner = CompiledRunner(module, compiled, ctx.input_specs, ctx.output_specs, ctx.device,
                                clone_outputs=opts.clone_outputs, cuda_graphs=graphs, warmup=opts.warmup_calls)
        hint = "" if not opts.fullgraph else " (a graph break? try EngineOptions(fullgraph=False))"
        try:
            with progress(f"torch.compile of {ctx.description or 'the module'} on {ctx.device}"):
                for _ in range(opts.warmup_calls):  # the first call compiles; the CUDA graph waits for the first call
                    run_module(compiled, ctx.example_inputs)
        except EngineBuildError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineBuildError(f"torch.compile failed: {first}{hint}") from e
        logger.info("compile backend ready: mode=%s fullgraph=%s cuda_graphs=%s channels_last=%s",
                    opts.compile_mode, opts.fullgraph, graphs, channels_last)
        return runner


register_backend(CompileBackend())
