"""The onnxruntime backend: runs the exported ONNX graph with torch tensors in and out.

It proves the export on any machine (CPU execution provider; CUDA provider with IO binding where onnxruntime-gpu and a
GPU exist) and is a CPU option in its own right. onnxruntime is imported only inside :func:`import_onnxruntime`, which
raises :class:`BackendUnavailable` naming the ``ort`` extra. With a cache the exported ONNX (+ data + weight map) is
the cache entry, so the export (minutes for the real model) happens once.

Refit: a LoRA change is applied by re-creating the session with the changed initializers overridden
(``SessionOptions.add_initializer``); the ONNX on disk keeps the base weights. Found here (onnxruntime 1.31, CPU): at
``ORT_ENABLE_ALL`` the NCHWc layout transformer reads Conv weights from the original graph and silently ignores such
overrides, so sessions are created at ``ORT_ENABLE_EXTENDED`` (no NCHWc layout; slower convolutions) -- every session,
the first one too: a first session at ``ENABLE_ALL`` computes differently (1 in 255 on a uint8 pixel, checked) from a
refitted one with the same weights, and A -> B -> A must give A byte for byte.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engines.base import (Backend, BuildContext, Runner, TensorSpec, convert_input, installed, progress,
                          register_backend)
from engines.errors import BackendUnavailable, EngineBuildError, EngineOptionError, EngineRunError, missing_extra
from engines.onnx_export import OnnxExport, export_onnx, load_export
from engines.refit import WeightMap, plan_refit

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"


def import_onnxruntime() -> Any:
    """``import onnxruntime``, or BackendUnavailable naming the ``ort`` extra."""
    try:
        import onnxruntime
    except ImportError as e:
        raise missing_extra("onnxruntime", "ort") from e
    return onnxruntime


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, export: OnnxExport, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 device: "torch.device", *, threads: int | None = None, clone_outputs: bool = True,
                 owned_dir: Path | None = None) -> None:
        super().__init__(inputs, outputs, device)
        self._ort = import_onnxruntime()
        self.export = export
        self.threads = threads
        self.clone_outputs = clone_outputs
        self._owned_dir = owned_dir  # a temporary export directory to delete on close
        self._overrides: dict[str, Any] = {}
        self._keep_alive: list[Any] = []
        self._weight_map: WeightMap | None = None
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in self._ort.get_available_providers():
                raise BackendUnavailable("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu "
                                         "(or run the onnxruntime backend on the CPU)")
            self.providers = [("CUDAExecutionProvider", {"device_id": device.index or 0})]
        else:
            self.providers = ["CPUExecutionProvider"]
        self._feed = [i for i, s in enumerate(self.inputs) if s.name in export.input_names]
        self._out_bufs: tuple[Any, ...] = ()
        self.session = self._make_session()

    def _make_session(self) -> Any:
        ort = self._ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # Always (see the module docstring): ENABLE_ALL would ignore overridden Conv weights, and the first session
        # must compute exactly as a refitted one does.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if self.threads:
            so.intra_op_num_threads = self.threads
        keep = []
        for name, arr in self._overrides.items():
            value = ort.OrtValue.ortvalue_from_numpy(arr)
            so.add_initializer(name, value)
            keep.append((arr, value))
        try:
            session = ort.InferenceSession(str(self.export.path), sess_options=so, providers=self.providers)
        except Exception as e:
            raise EngineBuildError(f"onnxruntime could not load {self.export.path}: {str(e).strip()[:300]}") from e
        self._keep_alive = keep  # add_initializer does not copy: the arrays must outlive the session
        return session

    def _run(self, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
        import torch

        if self.device.type != "cuda":
            feed = {self.inputs[i].name: convert_input(inputs[i], self.inputs[i], self.device).contiguous().numpy()
                    for i in self._feed}
            try:
                outs = self.session.run(list(self.output_names), feed)
            except Exception as e:
                raise EngineRunError(f"onnxruntime run failed: {str(e).strip()[:300]}") from e
            return tuple(torch.from_numpy(o) for o in outs)
        return self._run_cuda(inputs)

    def _run_cuda(self, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
        """IO binding: onnxruntime reads and writes torch's CUDA buffers directly. Unverified here (no GPU)."""
        import numpy as np
        import torch

        index = self.device.index or 0
        binding = self.session.io_binding()
        xs = []
        for i in self._feed:
            spec = self.inputs[i]
            x = convert_input(inputs[i], spec, self.device).contiguous()
            xs.append(x)
            binding.bind_input(spec.name, "cuda", index, np.dtype(spec.dtype), list(spec.shape), x.data_ptr())
        if not self._out_bufs:
            self._out_bufs = tuple(torch.empty(s.shape, dtype=s.torch_dtype(), device=self.device)
                                   for s in self.outputs)
        for spec, buf in zip(self.outputs, self._out_bufs, strict=True):
            binding.bind_output(spec.name, "cuda", index, np.dtype(spec.dtype), list(spec.shape), buf.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch must be ready
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:
            raise EngineRunError(f"onnxruntime run failed: {str(e).strip()[:300]}") from e
        return tuple(b.clone() for b in self._out_bufs) if self.clone_outputs else self._out_bufs

    def refit(self, new_state: Mapping[str, "torch.Tensor"]) -> None:
        """Re-create the session with the changed initializers overridden (from :func:`engines.refit.plan_refit`)."""
        if self._weight_map is None:
            self._weight_map = WeightMap.load(self.export.map_path)
        updates = plan_refit(self._weight_map, new_state)
        for name, value in updates.items():
            self._overrides[name] = value.detach().cpu().numpy().copy()
        self.session = self._make_session()
        logger.info("onnxruntime: refitted %d initializers", len(updates))

    def close(self) -> None:
        self.session = None
        self._keep_alive = []
        self._out_bufs = ()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
        super().close()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    extra = "ort"
    uses_cache = True
    replaces_module = True

    def is_available(self, device: "torch.device") -> tuple[bool, str]:
        if not installed("onnxruntime"):
            return False, "onnxruntime is not installed: pip install 'stylecam[ort]'"
        if device.type == "cuda":
            try:
                ort = import_onnxruntime()
            except BackendUnavailable as e:
                return False, str(e)
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return False, "onnxruntime has no CUDA provider here: pip install onnxruntime-gpu"
            return True, ""
        if device.type != "cpu":
            return False, f"the onnxruntime backend supports cpu and cuda devices, not {device.type}"
        return True, ""

    def build(self, ctx: BuildContext) -> Runner:
        if ctx.options.dtype not in ("float32", "float16"):
            raise EngineOptionError(f"EngineOptions.dtype={ctx.options.dtype!r} is not allowed for onnxruntime: "
                                    "float32 or float16")
        import_onnxruntime()
        for attempt in (0, 1):
            export, owned, from_cache = self._export(ctx)
            try:
                runner = OrtRunner(export, ctx.input_specs, ctx.output_specs, ctx.device,
                                   threads=ctx.options.ort_threads, clone_outputs=ctx.options.clone_outputs,
                                   owned_dir=owned)
            except EngineBuildError as e:
                if owned is not None:
                    shutil.rmtree(owned, ignore_errors=True)
                if from_cache and attempt == 0:
                    ctx.cache.remove(ctx.key, str(e))
                    continue
                raise
            runner.cache_key = ctx.key if ctx.cache is not None else None
            return runner
        raise AssertionError("unreachable")  # pragma: no cover

    def _export(self, ctx: BuildContext) -> tuple[OnnxExport, Path | None, bool]:
        """(the export, a temporary directory the runner owns or None, whether it came from the cache)."""
        fp32 = ctx.options.fp32_ops if ctx.options.dtype == "float16" else ()
        if ctx.cache is None or ctx.key is None:
            tmp = Path(tempfile.mkdtemp(prefix="stylecam-onnx-"))
            try:
                with progress(f"ONNX export of {ctx.description or 'the module'}"):
                    export = export_onnx(ctx.module, ctx.example_inputs, tmp / ONNX_NAME, input_names=ctx.input_names,
                                         output_names=ctx.output_names, opset=ctx.options.opset, fp32_ops=fp32)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return export, tmp, False
        entry = ctx.cache.lookup(ctx.key, ctx.versions)
        if entry is not None:
            try:
                return load_export(entry.file(ONNX_NAME), ctx.input_names, ctx.output_names), None, True
            except EngineBuildError as e:
                ctx.cache.remove(ctx.key, str(e))
        with ctx.cache.writer(ctx.key, fields=ctx.key_fields or {}, backend=self.name,
                              description=ctx.description, versions=ctx.versions,
                              extra={"inputs": [s.to_json() for s in ctx.input_specs],
                                     "outputs": [s.to_json() for s in ctx.output_specs]}) as w:
            with progress(f"ONNX export of {ctx.description or 'the module'} (cached once)"):
                export_onnx(ctx.module, ctx.example_inputs, w.dir / ONNX_NAME, input_names=ctx.input_names,
                            output_names=ctx.output_names, opset=ctx.options.opset, fp32_ops=fp32)
        assert w.entry is not None
        return load_export(w.entry.file(ONNX_NAME), ctx.input_names, ctx.output_names), None, False


register_backend(OnnxRuntimeBackend())
