"""ONNX export of a whole fixed-shape module: one graph, named inputs/outputs, external data, a weight map beside it.

``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter: the dynamo exporter needs onnxscript) with
``do_constant_folding=True``: folding leaves a cleaner graph for TensorRT and onnxruntime, and every weight stays
traceable to its torch name through the value-matched :class:`~engines.refit.WeightMap` written beside the ONNX
(``<name>.weights.json``; see :mod:`engines.refit` for what folding does to the names). The ONNX is always saved with
external data in one file (``<name>.onnx.data``, every initializer in it) because the real model in float16 (~2.4 GB)
is over protobuf's 2 GB limit. Files appear atomically: written in a temporary directory beside the target, moved
into place when complete (the ``.onnx`` last), removed on failure.
"""
from __future__ import annotations

import logging
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from engines.errors import EngineBuildError, EngineOptionError
from engines.refit import build_weight_map

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote. ``input_names`` are the graph's inputs: a module input that the computation
    does not use is dropped by the exporter and listed in ``dropped_inputs`` (runners then ignore it)."""

    path: Path
    data_path: Path
    map_path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dropped_inputs: tuple[str, ...]

    def files(self) -> tuple[Path, ...]:
        return (self.path, self.data_path, self.map_path)


def data_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def map_path_for(path: Path) -> Path:
    return path.with_name(path.stem + ".weights.json")


def check_names(names: Sequence[str], count: int, what: str) -> tuple[str, ...]:
    names = tuple(names)
    if len(names) != count:
        raise EngineOptionError(f"{what}_names has {len(names)} names for {count} {what}s: {', '.join(names)}")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise EngineOptionError(f"{what}_names must be distinct non-empty strings, got {list(names)}")
    return names


def keep_fp32(model: Any, op_types: Sequence[str]) -> int:
    """Compute the nodes of ``op_types`` in float32 inside a float16 graph: each of their inputs goes through a
    ``Cast(to=FLOAT)`` and each output comes back through a ``Cast(to=FLOAT16)`` under its original name (a strongly
    typed TensorRT network then runs them in float32). Modifies ``model`` in place; returns how many nodes it wrapped.
    Only for float16 graphs: the outputs are cast back to float16."""
    from onnx import TensorProto, helper

    kinds = set(op_types)
    nodes: list[Any] = []
    wrapped = 0
    for node in model.graph.node:
        if node.op_type not in kinds:
            nodes.append(node)
            continue
        tag = node.name or f"{node.op_type}_{wrapped}"
        for k, name in enumerate(list(node.input)):
            if name:
                nodes.append(helper.make_node("Cast", [name], [f"{tag}.in{k}.fp32"], to=TensorProto.FLOAT,
                                              name=f"{tag}.cast_in{k}"))
                node.input[k] = f"{tag}.in{k}.fp32"
        outputs = list(node.output)
        for k, name in enumerate(outputs):
            if name:
                node.output[k] = f"{tag}.out{k}.fp32"
        nodes.append(node)
        for k, name in enumerate(outputs):
            if name:
                nodes.append(helper.make_node("Cast", [f"{tag}.out{k}.fp32"], [name], to=TensorProto.FLOAT16,
                                              name=f"{tag}.cast_out{k}"))
        wrapped += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return wrapped


def export_onnx(module: Any, example_inputs: Sequence["torch.Tensor"], path: str | Path, *,
                input_names: Sequence[str], output_names: Sequence[str], opset: int = 17,
                dtype: "torch.dtype | None" = None, fp32_ops: Sequence[str] = ()) -> OnnxExport:
    """Export ``module`` called on ``example_inputs`` (fixed shapes) to ``path`` with external data and a weight map.

    dtype: when given (e.g. ``torch.float16`` for GPU builds), the module's floating weights are cast to it in place and
        floating example inputs are cast too, so the graph's float initializers and float inputs/outputs have that type.
    fp32_ops: ONNX op types to compute in float32 in a float16 graph (:func:`keep_fp32`); empty for float32 graphs.
    Returns the :class:`OnnxExport`; raises :class:`EngineBuildError` when the exporter fails or the graph's outputs do
    not match ``output_names``.
    """
    import onnx
    import torch

    from engines.base import run_module

    path = Path(path)
    inputs = tuple(example_inputs)
    input_names = check_names(input_names, len(inputs), "input")
    module.eval()
    if dtype is not None:
        module.to(dtype=dtype)
        inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    outputs = run_module(module, inputs)
    output_names = check_names(output_names, len(outputs), "output")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        raw = tmp / "raw.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about constant shapes are expected (fixed shapes)
                torch.onnx.export(module, inputs, str(raw), dynamo=False, export_params=True,
                                  keep_initializers_as_inputs=False, do_constant_folding=True, opset_version=opset,
                                  input_names=list(input_names), output_names=list(output_names))
        except Exception as e:
            raise EngineBuildError(f"ONNX export failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
                                   ) from e
        model = onnx.load(str(raw), load_external_data=True)
        if fp32_ops:
            wrapped = keep_fp32(model, fp32_ops)
            logger.info("ONNX export: %d %s nodes kept in float32 inside the float16 graph", wrapped,
                        "/".join(fp32_ops))
        graph_inputs = tuple(i.name for i in model.graph.input)
        graph_outputs = tuple(o.name for o in model.graph.output)
        if graph_outputs != output_names:
            raise EngineBuildError(f"the exported graph's outputs {list(graph_outputs)} are not {list(output_names)} "
                                   "(an output returned twice, or an input returned unchanged?)")
        dropped = tuple(n for n in input_names if n not in graph_inputs)
        if dropped:
            logger.info("ONNX export: inputs %s are unused by the computation and were dropped", ", ".join(dropped))
        weight_map = build_weight_map(model, module.state_dict())
        if weight_map.unmapped_parameters:
            logger.info("ONNX export: %d weights have no initializer of their own (folded): %s",
                        len(weight_map.unmapped_parameters), ", ".join(weight_map.unmapped_parameters[:8]))

        final, data, wmap = path, data_path_for(path), map_path_for(path)
        staged = tmp / final.name
        onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=0, convert_attribute=False)
        del model
        onnx.checker.check_model(str(staged))
        weight_map.save(tmp / wmap.name)
        for f in (final, data, wmap):
            f.unlink(missing_ok=True)
        (tmp / data.name).replace(data)
        (tmp / wmap.name).replace(wmap)
        staged.replace(final)
    except BaseException:
        for f in (path, data_path_for(path), map_path_for(path)):
            f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported ONNX %s (%d inputs, %d outputs, opset %d, weights %.1f MB)", final, len(input_names),
                len(output_names), opset, data.stat().st_size / 1e6)
    return OnnxExport(final, data, wmap, tuple(n for n in input_names if n not in dropped), output_names, dropped)


def load_export(path: str | Path, input_names: Sequence[str], output_names: Sequence[str]) -> OnnxExport:
    """Describe an ONNX written earlier by :func:`export_onnx` (checks the files exist; reads the graph's I/O names
    without loading the weights)."""
    import onnx

    path = Path(path)
    for f in (path, data_path_for(path), map_path_for(path)):
        if not f.is_file():
            raise EngineBuildError(f"{f} is missing: export the ONNX again")
    model = onnx.load(str(path), load_external_data=False)
    graph_inputs = {i.name for i in model.graph.input}
    outputs = tuple(o.name for o in model.graph.output)
    if outputs != tuple(output_names):
        raise EngineBuildError(f"{path}: outputs {list(outputs)} are not {list(output_names)}")
    dropped = tuple(n for n in input_names if n not in graph_inputs)
    return OnnxExport(path, data_path_for(path), map_path_for(path),
                      tuple(n for n in input_names if n in graph_inputs), outputs, dropped)
