"""Weight changes without a rebuild, generically: "refit these named tensors" (torch state-dict names -> new values),
the ONNX weight map and refit planning. What the new values are (a LoRA set, a fine-tune) is the caller's business:
stylecam's LoRA maths lives in ``realtime/diffusion/lora_math.py``; the caller computes full new values of the
weights it changes (from kept base values, so A -> B -> A is exact) and hands them to :func:`refit`.

The ONNX weight map (:class:`WeightMap`, written as JSON beside each exported ONNX) says which torch state-dict name
each ONNX initializer came from and how (identity, reshape, transpose). It is built by matching values, because the
TorchScript exporter with constant folding renames and reshapes weights: checked with torch 2.13, a ``Linear`` applied
to a 3-D input becomes ``MatMul`` with the weight stored transposed as ``onnx::MatMul_<n>``; ``GroupNorm``'s affine
parameters become ``onnx::Mul_<n>`` / ``onnx::Add_<n>`` reshaped to ``(C, 1, 1)``; and in eval mode the exporter
merges parameters with equal values into one initializer. Constant-valued weights (all elements equal, e.g. fresh
norm scales) cannot be told apart from other constants, so they are marked ``degenerate`` and never refitted.
:func:`plan_refit` turns new torch weights into the ONNX/TensorRT weights to set, or raises :class:`RefitUnsupported`
so the caller rebuilds.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from engines.errors import RefitUnsupported

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

    from engines.base import Runner

WEIGHT_MAP_FORMAT = 1
TRANSFORMS = ("identity", "reshape", "transpose")


# --- refit: new weights by torch name ----------------------------------------------------------------------------

def refit(runner: "Runner", new_state: Mapping[str, "torch.Tensor"]) -> None:
    """Apply new full weights (torch state-dict names -> tensors) to a built runner in place.

    Raises :class:`RefitUnsupported` when the backend or this change cannot be refitted; the caller then rebuilds.
    """
    runner.refit(new_state)


# --- the ONNX weight map ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightSource:
    torch_name: str
    transform: str  # one of TRANSFORMS


@dataclass(frozen=True)
class InitializerInfo:
    """One ONNX initializer traced back to torch weights (shape and dtype as stored in the ONNX)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    sources: tuple[WeightSource, ...]
    degenerate: bool

    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class WeightMap:
    initializers: dict[str, InitializerInfo]
    unmapped_parameters: tuple[str, ...]
    unmapped_initializers: tuple[str, ...]

    def by_torch_name(self) -> dict[str, list[tuple[InitializerInfo, WeightSource]]]:
        out: dict[str, list[tuple[InitializerInfo, WeightSource]]] = defaultdict(list)
        for info in self.initializers.values():
            for src in info.sources:
                out[src.torch_name].append((info, src))
        return dict(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": WEIGHT_MAP_FORMAT,
            "initializers": {
                n: {"shape": list(i.shape), "dtype": i.dtype, "degenerate": i.degenerate,
                    "torch": [{"name": s.torch_name, "transform": s.transform} for s in i.sources]}
                for n, i in self.initializers.items()},
            "unmapped_parameters": list(self.unmapped_parameters),
            "unmapped_initializers": list(self.unmapped_initializers),
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "WeightMap":
        if d.get("format") != WEIGHT_MAP_FORMAT:
            raise ValueError(f"weight map format {d.get('format')!r} is not {WEIGHT_MAP_FORMAT}")
        inits = {}
        for n, i in d["initializers"].items():
            srcs = tuple(WeightSource(str(s["name"]), str(s["transform"])) for s in i["torch"])
            if any(s.transform not in TRANSFORMS for s in srcs):
                raise ValueError(f"weight map: unknown transform in {n!r}")
            inits[n] = InitializerInfo(n, tuple(int(x) for x in i["shape"]), str(i["dtype"]), srcs,
                                       bool(i["degenerate"]))
        return WeightMap(inits, tuple(d["unmapped_parameters"]), tuple(d["unmapped_initializers"]))

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))

    @staticmethod
    def load(path: str | os.PathLike[str]) -> "WeightMap":
        try:
            return WeightMap.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RefitUnsupported(f"weight map {path} is unreadable ({e}): rebuild") from e


_ONNX_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64"}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE


def _digest(arr: Any) -> str:
    return hashlib.sha1(arr.tobytes()).hexdigest()


def build_weight_map(model: "onnx.ModelProto", state: Mapping[str, "torch.Tensor"],
                     base_dir: str | None = None) -> WeightMap:
    """Trace every floating ONNX initializer back to the torch tensors with the same values (as-is, reshaped, or
    transposed for 2-D weights). ``model`` must have its external data loaded (or pass ``base_dir``)."""
    import numpy as np
    from onnx import numpy_helper

    index: dict[tuple[str, int, str], list[tuple[str, tuple[int, ...]]]] = defaultdict(list)
    init_dtype: dict[str, str] = {}
    init_shape: dict[str, tuple[int, ...]] = {}
    for init in model.graph.initializer:
        if init.data_type not in _ONNX_FLOAT_TYPES:
            continue
        arr = np.ascontiguousarray(numpy_helper.to_array(init, base_dir or ""))
        init_dtype[init.name] = _ONNX_FLOAT_TYPES[init.data_type]
        init_shape[init.name] = tuple(int(s) for s in arr.shape)
        index[(arr.dtype.str, arr.size, _digest(arr))].append((init.name, init_shape[init.name]))

    sources: dict[str, list[WeightSource]] = defaultdict(list)
    degenerate: set[str] = set()
    unmapped_params = []
    for tname, t in state.items():
        if not t.is_floating_point() or str(t.dtype) == "torch.bfloat16":
            continue
        arr = t.detach().cpu().contiguous().numpy()
        found = False
        for iname, ishape in index.get((arr.dtype.str, arr.size, _digest(arr)), []):
            sources[iname].append(WeightSource(tname, "identity" if ishape == arr.shape else "reshape"))
            found = True
            if arr.size <= 1 or bool((arr == arr.flat[0]).all()):
                degenerate.add(iname)
        if arr.ndim == 2 and arr.size > 1:
            tr = np.ascontiguousarray(arr.T)
            if not np.array_equal(tr.reshape(arr.shape), arr):
                for iname, ishape in index.get((tr.dtype.str, tr.size, _digest(tr)), []):
                    if ishape == tr.shape and not any(s.torch_name == tname for s in sources[iname]):
                        sources[iname].append(WeightSource(tname, "transpose"))
                        found = True
        if not found:
            unmapped_params.append(tname)
    inits = {n: InitializerInfo(n, init_shape[n], init_dtype[n], tuple(sorted(s, key=lambda x: x.torch_name)),
                                n in degenerate)
             for n, s in sources.items()}
    unmapped_inits = tuple(sorted(n for n in init_dtype if n not in inits))
    return WeightMap(dict(sorted(inits.items())), tuple(unmapped_params), unmapped_inits)


def _transformed(t: "torch.Tensor", src: WeightSource, info: InitializerInfo) -> "torch.Tensor":
    if t.numel() != math.prod(info.shape):
        raise RefitUnsupported(f"{src.torch_name}: {t.numel()} elements, but initializer {info.name!r} holds "
                               f"{math.prod(info.shape)}: rebuild")
    if src.transform == "transpose":
        if t.dim() != 2:
            raise RefitUnsupported(f"{src.torch_name}: a transposed weight must be 2-D, got {tuple(t.shape)}")
        t = t.t()
    return t.reshape(info.shape).to(dtype=info.torch_dtype()).contiguous()


def initializer_value(info: InitializerInfo, state: Mapping[str, "torch.Tensor"]) -> "torch.Tensor":
    """An initializer's value from torch weights (its first source found in ``state``), in the ONNX shape and dtype.
    RefitUnsupported when none of its sources is in ``state``."""
    for src in info.sources:
        if src.torch_name in state:
            return _transformed(state[src.torch_name].detach(), src, info)
    raise RefitUnsupported(f"initializer {info.name!r} ({', '.join(s.torch_name for s in info.sources)}) has no "
                           "value in the module's state: rebuild the engine")


def plan_refit(weight_map: WeightMap, new_state: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """ONNX initializer name -> new value (ONNX shape and dtype) for the torch weights in ``new_state``.

    Raises RefitUnsupported when a weight has no initializer of its own (folded with something else), when an
    initializer merged several torch weights that are not all given with equal new values, or when the initializer
    is degenerate (constant-valued at export, so its origin is ambiguous).
    """
    import torch

    by_torch = weight_map.by_torch_name()
    touched: dict[str, InitializerInfo] = {}
    for name in new_state:
        if name not in by_torch:
            raise RefitUnsupported(f"weight {name!r} has no ONNX initializer of its own (the export folded it into "
                                   "another constant): rebuild the engine")
        for info, _ in by_torch[name]:
            touched[info.name] = info
    updates: dict[str, torch.Tensor] = {}
    for iname, info in touched.items():
        names = ", ".join(s.torch_name for s in info.sources)
        if info.degenerate:
            raise RefitUnsupported(f"initializer {iname!r} ({names}) was constant-valued at export, so its origin is "
                                   "ambiguous: rebuild the engine")
        missing = [s.torch_name for s in info.sources if s.torch_name not in new_state]
        if missing:
            raise RefitUnsupported(f"initializer {iname!r} is shared by {names}; the new weights lack "
                                   f"{', '.join(missing)}: rebuild the engine")
        values = [_transformed(new_state[s.torch_name], s, info) for s in info.sources]
        if any(not torch.equal(values[0], v) for v in values[1:]):
            raise RefitUnsupported(f"initializer {iname!r} is shared by {names} (equal at export), but their new "
                                   "values differ: rebuild the engine")
        updates[iname] = values[0]
    return updates

