"""TensorRT backend. The version logic runs everywhere; building, running and refitting an engine need TensorRT and a
CUDA GPU (marker ``tensorrt``), which the development and CI machines cannot have (docs/design.md §11: TensorRT cannot be
installed there). Those tests are skipped there, by name, and run on an NVIDIA machine with ``pip install
'stylecam[trt]'``."""
from __future__ import annotations

import pytest
import torch
from engine_toys import INPUT_NAMES, OUTPUT_NAMES, assert_outputs_close, lora_set, toy, toy_inputs

import engines
from engines.base import installed
from engines.tensorrt import check_version, parse_version, strongly_typed_by_flag
from realtime.diffusion.lora_math import base_weights, fused_weights


def test_version_parsing_and_support():
    assert parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert parse_version("11.0.0rc1") == (11, 0)
    with pytest.raises(ValueError):
        parse_version("x")
    assert check_version("10.0.1") == (True, "")
    assert check_version("11.4.0") == (True, "")
    ok, why = check_version("8.6.1")
    assert not ok and "10 or newer" in why and "pip install -U 'stylecam[trt]'" in why
    assert strongly_typed_by_flag("10.8.0") and not strongly_typed_by_flag("11.0.0")


def _trt_usable() -> tuple[bool, str]:
    if not installed("tensorrt"):
        return False, "TensorRT is not installed (it cannot be installed on the CPU dev/CI machines, docs/design.md §11)"
    if not torch.cuda.is_available():
        return False, "TensorRT needs a CUDA GPU"
    return True, ""


_OK, _WHY = _trt_usable()
requires_trt = pytest.mark.skipif(not _OK, reason=_WHY)


FP16 = dict(levels=2, rel=2e-2, floor=1e-3)  # fp16 engines against the fp16 module


def _cuda(xs):
    return tuple(t.cuda() for t in xs)


@pytest.mark.tensorrt
@pytest.mark.gpu
@requires_trt
@pytest.mark.parametrize("refittable", [False, True])
def test_tensorrt_fp16_engine_matches_eager_and_is_cached(tmp_path, refittable):
    cache = engines.EngineCache(tmp_path)
    opts = engines.EngineOptions(dtype="float16", trt_refittable=refittable, trt_optimization_level=1)
    m, x = toy().cuda(), _cuda(toy_inputs())
    with engines.build_runner(m, x, backend="tensorrt", options=opts, cache=cache, key_fields={"m": "toy"},
                              input_names=INPUT_NAMES, output_names=OUTPUT_NAMES) as r:
        want = m(x[0], x[1].half(), x[2].half())
        assert_outputs_close(r(*x), want, **FP16)
        key = r.cache_key
    (entry,) = cache.entries()
    assert entry.key == key and {"engine.plan", "model.weights.json"} <= {p.name for p in entry.path.iterdir()}
    with engines.build_runner(toy().cuda(), x, backend="tensorrt", options=opts, cache=cache,
                              key_fields={"m": "toy"}, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES) as r2:
        assert_outputs_close(r2(*x), want, **FP16)


@pytest.mark.tensorrt
@pytest.mark.gpu
@requires_trt
def test_tensorrt_refit_a_b_a():
    m, x = toy(), toy_inputs()
    base = base_weights(m)
    a = lora_set(m, ("proj_in.weight", "enc.weight"), seed=21)
    b = lora_set(m, ("dec.weight",), seed=22)
    opts = engines.EngineOptions(dtype="float16", trt_refittable=True, trt_optimization_level=1)
    with engines.build_runner(m.cuda(), _cuda(x), backend="tensorrt", options=opts, input_names=INPUT_NAMES,
                              output_names=OUTPUT_NAMES) as r:
        with_a = fused_weights(base, [(a, 1.0)])
        engines.refit(r, with_a)
        first = [t.clone() for t in r(*_cuda(x))]
        ref = toy()
        engines.eager.copy_weights(ref, with_a)
        ref = ref.cuda().half()
        assert_outputs_close(first, ref(x[0].cuda(), x[1].cuda().half(), x[2].cuda().half()), **FP16)
        engines.refit(r, fused_weights(base, [(b, 1.0)]))
        assert not torch.equal(r(*_cuda(x))[1], first[1])
        engines.refit(r, fused_weights(base, [(a, 1.0)]))
        for got, want in zip(r(*_cuda(x)), first, strict=True):
            assert torch.equal(got, want)
