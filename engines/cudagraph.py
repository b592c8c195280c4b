"""CUDA-graph capture shared by the compile and TensorRT backends (fixed shapes, buffers allocated once; docs/design.md §6).

Unverified here: this machine has no GPU. The code follows PyTorch's documented whole-network capture recipe (warm-up on
a side stream, then ``torch.cuda.graph``); the ``gpu``-marked tests exercise it where CUDA exists.

Capture is *lazy*: a runner captures on its first call, i.e. on the thread that runs frames, never on the thread that
built it (a background build, e.g. the other guidance variant). It also uses ``capture_error_mode="thread_local"``: with PyTorch's
default (``"global"``) any other thread's blocking copy during the capture fails with "operation not permitted when
stream is capturing"; thread-local mode forbids unsafe calls only on the capturing thread.

:class:`StaticInputs` holds the static input buffers a graph reads and copies each call's inputs into them, except an
input that already *is* its buffer (a caller that writes into :attr:`StaticInputs.by_name` once and passes the buffer
back costs no copy).
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from engines.errors import EngineBuildError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

#: ``torch.cuda.graph(capture_error_mode=...)``: only the capturing thread is restricted (see the module docstring).
CAPTURE_ERROR_MODE = "thread_local"


def static_copies(tensors: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
    """Contiguous copies of ``tensors`` to serve as static input buffers (allocated once)."""
    import torch

    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format).copy_(t) for t in tensors)


def is_buffer(x: "torch.Tensor", buf: "torch.Tensor") -> bool:
    """Whether ``x`` is (a view covering exactly) ``buf``: same storage start, shape, dtype and device."""
    return (x.device == buf.device and x.dtype == buf.dtype and tuple(x.shape) == tuple(buf.shape)
            and x.data_ptr() == buf.data_ptr() and x.is_contiguous())


class StaticInputs:
    """The static input buffers of a captured graph, by position and by name.

    ``feed(inputs)`` copies each input into its buffer (asynchronously, on the current stream) unless the input is the
    buffer itself; ``copies`` counts the copies made by the last ``feed`` (what a test or a benchmark reads).
    """

    def __init__(self, names: Sequence[str], examples: Sequence["torch.Tensor"]) -> None:
        self.buffers = static_copies(examples)
        self.by_name = dict(zip(names, self.buffers, strict=True))
        self.copies = 0

    def feed(self, inputs: Sequence["torch.Tensor"]) -> None:
        n = 0
        for buf, x in zip(self.buffers, inputs, strict=True):
            if is_buffer(x, buf):
                continue
            buf.copy_(x, non_blocking=True)
            n += 1
        self.copies = n


def capture(fn: Callable[[], Any], warmup: int, device: "torch.device") -> tuple["torch.cuda.CUDAGraph", Any]:
    """Warm ``fn`` up ``warmup`` times on a side stream, then capture one call in a CUDA graph (thread-local capture
    mode, on the calling thread).

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
        with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
            outputs = fn()
    except Exception as e:  # capture failures come as RuntimeError from torch or the engine
        raise EngineBuildError(f"CUDA graph capture failed ({e}); build with EngineOptions(cuda_graphs=False)") from e
    torch.cuda.synchronize(device)
    logger.debug("captured a CUDA graph on %s after %d warm-up calls (thread %s)", device, warmup,
                 threading.current_thread().name)
    return graph, outputs
