"""engines/: one runner interface over eager / compile / onnxruntime, the ONNX export and its weight map, LoRA fusion
and refit, auto selection. Toy modules only (tests/engine_toys.py). TensorRT: tests/test_engines_tensorrt.py.
"""
from __future__ import annotations

import logging
import sys

import numpy as np
import onnx
import pytest
import torch
from engine_toys import (INPUT_NAMES, OUTPUT_NAMES, ToyWithUnused, Twins, assert_outputs_close, lora_set, randomized, toy,
                         toy_inputs)
from onnx import TensorProto, numpy_helper

import engines
from engines import (BackendUnavailable, EngineCache, EngineOptionError, EngineOptions, RefitUnsupported, build_runner,
                     export_onnx, plan_refit)
from engines.base import BACKENDS
from realtime.diffusion.lora_math import base_weights, fused_weights

NAMES = dict(input_names=INPUT_NAMES, output_names=OUTPUT_NAMES)


def test_eager_runner_is_the_module():
    m, x = toy(), toy_inputs()
    want = m(*x)
    with build_runner(m, x, backend="eager", **NAMES) as r:
        got = r(*x)
        assert r.backend == "eager" and r.input_names == INPUT_NAMES and r.output_names == OUTPUT_NAMES
        assert [s.dtype for s in r.outputs] == ["uint8", "float32", "float32"]
        assert r.outputs[0].shape == (1, 16, 16, 3)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w)
        with pytest.raises(EngineOptionError, match="shape"):
            r(x[0][:, :8], x[1], x[2])
        with pytest.raises(EngineOptionError, match="takes 3 inputs"):
            r(x[0], x[1])
    assert r.closed
    with pytest.raises(EngineOptionError, match="closed"):
        r(*x)


def test_onnxruntime_matches_eager_fp32():
    m, x = toy(), toy_inputs()
    with build_runner(m, x, backend="onnxruntime", **NAMES) as r:
        assert r.backend == "onnxruntime"
        assert_outputs_close(r(*x), m(*x))
        # other inputs than the example: nothing about the inputs was baked into the graph
        x2 = toy_inputs(seed=5, scale=1.7)
        want2 = m(*x2)
        assert_outputs_close(r(*x2), want2)
        assert not torch.equal(want2[1], m(*x)[1])
        # inputs of another float dtype are converted, not rejected
        assert_outputs_close(r(x2[0], x2[1].double(), x2[2].double()), want2)


@pytest.mark.slow
def test_compile_matches_eager_on_cpu():
    """The one torch.compile test (inductor's first call costs ~25-70 s on these CPUs)."""
    m, x = toy(), toy_inputs()
    want = [t.clone() for t in m(*x)]
    with build_runner(m, x, backend="compile", **NAMES) as r:
        assert r.backend == "compile" and r.graph is None  # no CUDA graphs on the CPU
        assert_outputs_close(r(*x), want, levels=1, rel=1e-4)
        x2 = toy_inputs(seed=7, scale=1.3)
        assert_outputs_close(r(*x2), m(*x2), levels=1, rel=1e-4)
        # refit copies weights in place; the compiled code sees them without recompiling
        new = {"head.weight": torch.full_like(m.head.weight, 0.25)}
        r.refit(new)
        assert torch.equal(m.head.weight, new["head.weight"])
        assert_outputs_close(r(*x2), m(*x2), levels=1, rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU)")
def test_compile_cuda_graph_matches_eager_on_gpu():
    m, x = toy().cuda(), tuple(t.cuda() for t in toy_inputs())
    want = [t.clone() for t in m(*x)]
    opts = EngineOptions(clone_outputs=False)
    with build_runner(m, x, backend="compile", options=opts, **NAMES) as r:
        assert r.graph is None  # captured lazily, by the first call
        first = r(*x)
        assert r.graph is not None
        assert_outputs_close(first, want, levels=1, rel=1e-3)
        x2 = tuple(t.cuda() for t in toy_inputs(seed=9, scale=1.5))
        second = r(*x2)
        assert all(a is b for a, b in zip(first, second, strict=True))  # static output buffers, no clones
        assert_outputs_close(second, m(*x2), levels=1, rel=1e-3)


def test_onnx_export_names_external_data_and_weight_map(tmp_path):
    m, x = toy(), toy_inputs()
    exp = export_onnx(m, x, tmp_path / "step.onnx", input_names=INPUT_NAMES, output_names=OUTPUT_NAMES)
    assert exp.path == tmp_path / "step.onnx" and exp.data_path == tmp_path / "step.onnx.data"
    assert exp.data_path.stat().st_size > 0 and exp.map_path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.onnx", "step.onnx.data", "step.weights.json"]

    skeleton = onnx.load(str(exp.path), load_external_data=False)
    assert [i.name for i in skeleton.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in skeleton.graph.output] == list(OUTPUT_NAMES)
    assert skeleton.graph.initializer and all(
        i.data_location == TensorProto.EXTERNAL for i in skeleton.graph.initializer)
    model = onnx.load(str(exp.path), load_external_data=True)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    # every parameter is traceable to an initializer, and the recorded transform reproduces the initializer exactly
    wmap = engines.WeightMap.load(exp.map_path)
    by_torch = wmap.by_torch_name()
    params = dict(m.named_parameters())
    assert set(params) <= set(by_torch), set(params) - set(by_torch)
    assert not wmap.unmapped_parameters
    transforms = {}
    for name, p in params.items():
        for info, src in by_torch[name]:
            t = p.detach()
            t = t.t() if src.transform == "transpose" else t
            np.testing.assert_array_equal(t.reshape(info.shape).numpy(), arrays[info.name])
            transforms[name] = src.transform
    assert transforms["proj_in.weight"] == "transpose"  # Linear on tokens -> MatMul, weight stored transposed
    assert transforms["norm.weight"] == "reshape"  # GroupNorm affine -> Mul by a (C,1,1) constant
    assert transforms["head.weight"] == "identity"  # Gemm keeps the torch layout
    assert transforms["enc.weight"] == "identity"


def test_fp16_export_has_fp16_weights_and_io(tmp_path):
    m, x = toy(), toy_inputs()
    exp = export_onnx(m, x, tmp_path / "h.onnx", input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                      dtype=torch.float16)
    assert m.enc.weight.dtype == torch.float16  # cast in place, documented
    model = onnx.load(str(exp.path), load_external_data=False)
    io = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert io == {"image": TensorProto.UINT8, "latent": TensorProto.FLOAT16, "scale": TensorProto.FLOAT16,
                  "image_out": TensorProto.UINT8, "latent_out": TensorProto.FLOAT16, "vec": TensorProto.FLOAT16}
    kinds = {i.data_type for i in model.graph.initializer}
    assert kinds == {TensorProto.FLOAT16}
    wmap = engines.WeightMap.load(exp.map_path)
    assert {i.dtype for i in wmap.initializers.values()} == {"float16"}
    assert set(dict(m.named_parameters())) <= set(wmap.by_torch_name())


def test_unused_input_is_dropped_from_the_graph_and_ignored():
    m = randomized(ToyWithUnused())
    x = (*toy_inputs(), torch.tensor([3.0]))
    names = dict(input_names=(*INPUT_NAMES, "unused"), output_names=OUTPUT_NAMES)
    with build_runner(m, x, backend="onnxruntime", **names) as r:
        assert r.export.dropped_inputs == ("unused",)
        assert r.input_names == (*INPUT_NAMES, "unused")
        assert_outputs_close(r(*x), m(*x))


def test_export_rejects_wrong_name_counts(tmp_path):
    m, x = toy(), toy_inputs()
    with pytest.raises(EngineOptionError, match="output_names has 2 names for 3 outputs"):
        export_onnx(m, x, tmp_path / "a.onnx", input_names=INPUT_NAMES, output_names=OUTPUT_NAMES[:2])
    with pytest.raises(EngineOptionError, match="distinct"):
        build_runner(m, x, backend="eager", input_names=("a", "a", "b"), output_names=OUTPUT_NAMES)
    assert not list(tmp_path.iterdir())  # nothing half-written


# --- refit (new values from realtime's LoRA maths) ----------------------------------------------------------------------------------------

def test_lora_scale_change_maps_to_the_right_initializers(tmp_path):
    m, x = toy(), toy_inputs()
    base = base_weights(m)
    exp = export_onnx(m, x, tmp_path / "m.onnx", input_names=INPUT_NAMES, output_names=OUTPUT_NAMES)
    wmap = engines.WeightMap.load(exp.map_path)
    by_torch = wmap.by_torch_name()
    a = lora_set(m, ("proj_in.weight", "enc.weight"), seed=3)
    half, full = (plan_refit(wmap, fused_weights(base, [(a, s)])) for s in (0.5, 1.0))
    init_of = {n: by_torch[n][0][0].name for n in base}
    assert set(half) == set(full) == set(init_of.values())
    changed = {k for k in half if not torch.equal(half[k], full[k])}
    assert changed == {init_of["proj_in.weight"], init_of["enc.weight"]}
    assert init_of["proj_in.weight"].startswith("onnx::MatMul")
    fused = fused_weights(base, [(a, 1.0)])
    assert torch.equal(full[init_of["proj_in.weight"]], fused["proj_in.weight"].t().contiguous())
    assert torch.equal(full[init_of["enc.weight"]], fused["enc.weight"])
    with pytest.raises(RefitUnsupported, match="no ONNX initializer"):
        plan_refit(wmap, {"missing.weight": torch.zeros(3)})
    with pytest.raises(RefitUnsupported, match="elements"):
        plan_refit(wmap, {"head.weight": torch.zeros(3, 3)})


def test_refit_a_b_a_is_exact_on_onnxruntime_and_eager():
    m, x = toy(), toy_inputs()
    base = base_weights(m)
    a = lora_set(m, ("proj_in.weight", "attn_out.weight", "enc.weight"), seed=11)
    b = lora_set(m, ("proj_in.weight", "dec.weight"), seed=12)
    wa, wb = fused_weights(base, [(a, 0.8)]), fused_weights(base, [(b, 1.2)])

    reference = toy()  # the same toy with A fused the plain way
    engines.eager.copy_weights(reference, wa)
    want_a = [t.clone() for t in reference(*x)]

    with build_runner(m, x, backend="onnxruntime", **NAMES) as ort_runner, \
            build_runner(toy(), x, backend="eager", **NAMES) as eager_runner:
        engines.refit(ort_runner, wa)
        out_a = [t.clone() for t in ort_runner(*x)]
        assert_outputs_close(out_a, want_a)
        engines.refit(ort_runner, wb)
        out_b = ort_runner(*x)
        assert not torch.equal(out_b[1], out_a[1])
        engines.refit(ort_runner, fused_weights(base, [(a, 0.8)]))
        for got, first in zip(ort_runner(*x), out_a, strict=True):
            assert torch.equal(got, first)  # A -> B -> A: exactly A

        for state in (wa, wb, fused_weights(base, [(a, 0.8)])):
            engines.refit(eager_runner, state)
        for name, w in wa.items():
            assert torch.equal(eager_runner.module.get_parameter(name), w)


def test_merged_and_constant_weights_are_not_refitted(tmp_path):
    m = randomized(Twins())
    with torch.no_grad():
        m.b.weight.copy_(m.a.weight)
        m.a.bias.zero_()
    x = (torch.randn(2, 6),)
    exp = export_onnx(m, x, tmp_path / "t.onnx", input_names=("x",), output_names=("y",))
    wmap = engines.WeightMap.load(exp.map_path)
    shared = [i for i in wmap.initializers.values() if {s.torch_name for s in i.sources} >= {"a.weight", "b.weight"}]
    assert shared, "the exporter merged the equal weights into one initializer"
    w = torch.randn(6, 6)
    with pytest.raises(RefitUnsupported, match="shared"):
        plan_refit(wmap, {"a.weight": w})
    with pytest.raises(RefitUnsupported, match="differ"):
        plan_refit(wmap, {"a.weight": w, "b.weight": w + 1})
    assert plan_refit(wmap, {"a.weight": w, "b.weight": w.clone()})
    with pytest.raises(RefitUnsupported, match="constant-valued"):
        plan_refit(wmap, {"a.bias": torch.ones(6)})


def test_backends_without_refit_say_so():
    class NoRefit(engines.Runner):
        backend = "x"

    r = NoRefit((), (), torch.device("cpu"))
    with pytest.raises(RefitUnsupported, match="rebuild"):
        engines.refit(r, {})


# --- backend selection and errors -----------------------------------------------------------------------------------

def test_tensorrt_without_tensorrt_is_a_one_line_error():
    from engines.base import installed

    m, x = toy(), toy_inputs()
    with pytest.raises(BackendUnavailable) as info:
        build_runner(m, x, backend="tensorrt", **NAMES)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, ImportError)
    if installed("tensorrt"):  # pragma: no cover - machines with TensorRT: the CPU device is what is missing
        assert "CUDA" in msg
    else:
        assert msg == "TensorRT is not installed: pip install 'stylecam[trt]'"
    assert m.enc.weight.dtype == torch.float32  # rejected before touching the module


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'stylecam\[ort\]'"):
        engines.ort.import_onnxruntime()
    with pytest.raises(BackendUnavailable, match=r"^onnxruntime is not installed: pip install 'stylecam\[ort\]'$"):
        build_runner(toy(), toy_inputs(), backend="onnxruntime", **NAMES)


def test_unknown_backend_and_bad_options():
    with pytest.raises(EngineOptionError, match="backend='fast' is not known"):
        build_runner(toy(), toy_inputs(), backend="fast", **NAMES)
    with pytest.raises(EngineOptionError, match=r"EngineOptions.dtype='fp8'.*float32, float16, bfloat16"):
        EngineOptions(dtype="fp8")
    with pytest.raises(EngineOptionError, match="trt_optimization_level=7"):
        EngineOptions(trt_optimization_level=7)
    with pytest.raises(EngineOptionError, match="cuda_graphs=False"):
        EngineOptions(compile_mode="reduce-overhead")
    EngineOptions(compile_mode="reduce-overhead", cuda_graphs=False)
    with pytest.raises(EngineOptionError, match="bfloat16' is not allowed for onnxruntime"):
        build_runner(toy(), toy_inputs(), backend="onnxruntime", options=EngineOptions(dtype="bfloat16"), **NAMES)
    assert set(BACKENDS) == {"eager", "compile", "onnxruntime", "tensorrt"}
    avail = engines.available_backends("cpu")
    assert avail["eager"] == (True, "") and avail["tensorrt"][0] is False


def test_auto_on_cpu_measures_logs_and_remembers(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    caplog.set_level(logging.INFO, logger="engines")
    m, x = toy(), toy_inputs()
    want = [t.clone() for t in m(*x)]
    with build_runner(m, x, backend="auto", cache=cache, key_fields={"model": "toy"}, **NAMES) as r:
        assert r.backend in ("eager", "onnxruntime")
        assert "measured on the example inputs: eager" in r.reason
        assert_outputs_close(r(*x), want)
    assert any(f"engine backend auto -> {r.backend}" in rec.getMessage() for rec in caplog.records)
    # the measurement is remembered: a second start does not time again and picks the same backend
    with build_runner(toy(), x, backend="auto", cache=cache, key_fields={"model": "toy"}, **NAMES) as r2:
        assert r2.backend == r.backend and r2.reason.startswith("measured earlier on this machine")


def test_auto_on_cpu_without_onnxruntime_is_eager(monkeypatch, caplog):
    monkeypatch.setattr(BACKENDS["onnxruntime"], "is_available",
                        lambda device: (False, "onnxruntime is not installed: pip install 'stylecam[ort]'"))
    caplog.set_level(logging.INFO, logger="engines")
    with build_runner(toy(), toy_inputs(), backend="auto", **NAMES) as r:
        assert r.backend == "eager" and "onnxruntime not usable" in r.reason
    assert any("engine backend auto -> eager" in rec.getMessage() for rec in caplog.records)


def test_onnxruntime_engine_cached_and_rebuilt_when_corrupt(tmp_path, monkeypatch, caplog):
    cache = EngineCache(tmp_path)
    m, x = toy(), toy_inputs()
    want = [t.clone() for t in m(*x)]
    with build_runner(m, x, backend="onnxruntime", cache=cache, key_fields={"model": "toy"}, **NAMES) as r:
        key = r.cache_key
        assert_outputs_close(r(*x), want)
    (entry,) = cache.entries()
    assert entry.key == key and entry.backend == "onnxruntime" and entry.problem is None
    assert sorted(p.name for p in entry.path.iterdir()) == [
        "manifest.json", "model.onnx", "model.onnx.data", "model.weights.json"]

    def no_export(*a, **k):
        raise AssertionError("a cache hit must not export again")

    monkeypatch.setattr(engines.ort, "export_onnx", no_export)
    with build_runner(toy(), x, backend="onnxruntime", cache=cache, key_fields={"model": "toy"}, **NAMES) as r:
        assert r.cache_key == key
        assert_outputs_close(r(*x), want)
    monkeypatch.undo()

    data = entry.path / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, one flipped byte
    data.write_bytes(bytes(raw))
    caplog.set_level(logging.WARNING, logger="engines")
    with build_runner(toy(), x, backend="onnxruntime", cache=cache, key_fields={"model": "toy"}, **NAMES) as r:
        assert_outputs_close(r(*x), want)  # rebuilt, not crashed on
    assert any("does not match its sha256" in rec.getMessage() for rec in caplog.records)
    assert cache.lookup(key) is not None
