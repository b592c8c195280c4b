"""CUDA-graph capture shared by the compile and TensorRT backends (fixed shapes, buffers allocated once; docs/design.md §6).

Unverified here: this machine has no GPU. The code follows PyTorch's documented whole-network capture recipe (warm-up on
a side stream, then ``torch.cuda.graph``); the ``gpu``-marked tests exercise it where CUDA exists.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engines.errors import EngineBuildError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)


def static_copies(tensors: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
    """Contiguous copies of ``tensors`` to serve as static input buffers (allocated once)."""
    import torch

    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format).copy_(t) for t in tensors)


def capture(fn: Callable[[], Any], warmup: int, device: "torch.device") -> tuple["torch.cuda.CUDAGraph", Any]:
    """Warm ``fn`` up ``warmup`` times on a side stream, then capture one call in a CUDA graph.

    ``fn`` must read only static buffers and return its (static) outputs. Returns ``(graph, outputs)``: replaying the
    graph rewrites ``outputs`` in place.
    """
    import torch

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            outputs = fn()
    except Exception as e:  # capture failures come as RuntimeError from torch or the engine
        raise EngineBuildError(f"CUDA graph capture failed ({e}); build with EngineOptions(cuda_graphs=False)") from e
    torch.cuda.synchronize(device)
    logger.debug("captured a CUDA graph on %s after %d warm-up calls", device, warmup)
    return graph, outputs
