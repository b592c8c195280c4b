"""engines: make any fixed-shape torch module fast. Knows nothing about diffusion and imports nothing from realtime/.

Public API::

    runner = build_runner(module, example_inputs, backend="auto", input_names=[...], output_names=[...],
                          options=EngineOptions(dtype="float16"), cache=EngineCache(), key_fields={...})
    outputs = runner(*inputs)            # same tensors in and out as module(*inputs)
    refit(runner, {"layer.weight": new_value})   # new weights by torch name, without a rebuild
    runner.close()

Backends (registry ``BACKENDS``): ``eager``, ``compile`` (torch.compile + CUDA graphs), ``onnxruntime`` (extra
``ort``), ``tensorrt`` (extra ``trt``; written to the TensorRT 10/11 APIs, unverified where TensorRT is absent).
Importing this package does not import torch, onnx, onnxruntime or tensorrt.
"""
from __future__ import annotations

from engines import compile as _compile  # noqa: F401  (registers the backend)
from engines import eager as _eager  # noqa: F401
from engines import ort as _ort  # noqa: F401
from engines import tensorrt as _tensorrt  # noqa: F401
from engines.base import BACKENDS, EngineOptions, Runner, TensorSpec, available_backends, get_backend
from engines.build import build_runner
from engines.cache import CacheEntry, EngineCache, cache_key, default_cache_root, environment_fields
from engines.errors import (BackendUnavailable, CacheDirError, EngineBuildError, EngineCorrupt, EngineOptionError,
                            EngineRunError, RefitUnsupported)
from engines.onnx_export import OnnxExport, export_onnx
from engines.refit import WeightMap, build_weight_map, plan_refit, refit

__all__ = [
    "BACKENDS", "BackendUnavailable", "CacheDirError", "CacheEntry", "EngineBuildError", "EngineCache",
    "EngineCorrupt", "EngineOptionError", "EngineOptions", "EngineRunError",
    "OnnxExport", "RefitUnsupported", "Runner", "TensorSpec", "WeightMap", "available_backends",
    "build_runner", "build_weight_map", "cache_key", "default_cache_root", "environment_fields",
    "export_onnx", "get_backend", "plan_refit", "refit",
]
