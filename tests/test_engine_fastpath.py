"""engines/ fast-path details provable on the CPU: float32 islands in float16 ONNX graphs, static-buffer feeding,
refit weights supplied from the state dict, the torch module released after an ONNX-engine build, lazy CUDA-graph
capture on the calling thread (gpu-marked)."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
import torch
from engine_toys import INPUT_NAMES, OUTPUT_NAMES, assert_outputs_close, toy, toy_inputs
from onnx import TensorProto

from engines import EngineOptions, RefitUnsupported, WeightMap, build_runner, export_onnx
from engines.base import FP32_OPS
from engines.cudagraph import StaticInputs, is_buffer
from engines.tensorrt import missing_weights

NAMES = dict(input_names=INPUT_NAMES, output_names=OUTPUT_NAMES)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU)")


def _half(m, x):
    return m.half(), tuple(t.half() if t.is_floating_point() else t for t in x)


def test_fp16_export_keeps_norms_and_softmax_in_fp32(tmp_path):
    m, x = _half(toy(), toy_inputs())
    exp = export_onnx(m, x, tmp_path / "step.onnx", fp32_ops=FP32_OPS, **NAMES)
    g = onnx.load(str(exp.path), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    kept = [n for n in g.node if n.op_type in FP32_OPS]
    assert {n.op_type for n in kept} >= {"Softmax", "InstanceNormalization"}  # SDPA's softmax, GroupNorm's core
    for n in kept:
        for i in n.input:
            if i:
                src = producer[i]
                assert src.op_type == "Cast" and src.attribute[0].i == TensorProto.FLOAT, (n.name, i)
        for o in n.output:
            assert [c.op_type for c in consumers[o]] == ["Cast"], (n.name, o)
            assert consumers[o][0].attribute[0].i == TensorProto.FLOAT16
    # the graph still runs and matches the float32 module (onnxruntime on the CPU)
    import onnxruntime as ort

    ref_m, ref_x = toy(), toy_inputs()
    want = ref_m(*ref_x)
    sess = ort.InferenceSession(str(exp.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, x, strict=True)})
    assert np.abs(got[0].astype(int) - want[0].numpy().astype(int)).max() <= 2
    np.testing.assert_allclose(got[1].astype(np.float32), want[1].detach().numpy(), atol=2e-2, rtol=2e-2)


def test_fp32_export_is_left_alone(tmp_path):
    m, x = toy(), toy_inputs()
    exp = export_onnx(m, x, tmp_path / "step.onnx", **NAMES)
    ops = [n.op_type for n in onnx.load(str(exp.path), load_external_data=False).graph.node]
    assert "Softmax" in ops and not any(
        n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT16
        for n in onnx.load(str(exp.path), load_external_data=False).graph.node)


def test_static_inputs_copy_only_what_is_not_already_the_buffer():
    examples = [torch.zeros(2, 3), torch.zeros(4), torch.zeros(1)]
    st = StaticInputs(("a", "b", "c"), examples)
    a, b, c = torch.ones(2, 3), torch.full((4,), 2.0), torch.full((1,), 3.0)
    st.feed([a, b, c])
    assert st.copies == 3 and torch.equal(st.buffers[0], a) and torch.equal(st.buffers[2], c)
    st.by_name["b"].fill_(7.0)  # a caller writing straight into the buffer and passing it back
    st.feed([a * 2, st.by_name["b"], st.by_name["c"]])
    assert st.copies == 1
    assert torch.equal(st.buffers[0], a * 2) and torch.equal(st.buffers[1], torch.full((4,), 7.0))
    assert is_buffer(st.buffers[1], st.by_name["b"]) and not is_buffer(st.buffers[1][:2], st.by_name["b"])
    assert not is_buffer(st.buffers[1].clone(), st.by_name["b"])


def test_missing_refit_weights_come_from_the_state_dict(tmp_path):
    m, x = toy(), toy_inputs()
    exp = export_onnx(m, x, tmp_path / "step.onnx", **NAMES)
    wmap = WeightMap.load(exp.map_path)
    by_torch = wmap.by_torch_name()
    info, src = by_torch["head.bias"][0]
    state = m.state_dict()
    got = missing_weights(wmap, [info.name], state)
    np.testing.assert_array_equal(got[info.name].numpy(), state["head.bias"].reshape(info.shape).numpy())
    t_info, t_src = by_torch["proj_in.weight"][0]
    assert t_src.transform == "transpose"
    got = missing_weights(wmap, [t_info.name], state)[t_info.name]
    assert torch.equal(got, state["proj_in.weight"].t().contiguous())
    with pytest.raises(RefitUnsupported, match="no torch weight maps"):
        missing_weights(wmap, ["a_constant_tensorrt_made"], state)
    with pytest.raises(RefitUnsupported, match="no value"):
        missing_weights(wmap, [info.name], {})


def test_an_onnx_engine_releases_the_torch_module_and_eager_keeps_it():
    m, x = toy(), toy_inputs()
    want = [t.clone() for t in m(*x)]
    with build_runner(m, x, backend="onnxruntime", **NAMES) as r:
        assert r.module_released
        assert_outputs_close(r(*x), want)
    with build_runner(toy(), x, backend="onnxruntime", options=EngineOptions(release_module=False), **NAMES) as r:
        assert not r.module_released
    with build_runner(toy(), x, backend="eager", **NAMES) as r:
        assert not r.module_released


def test_engine_defaults_refit_only_when_asked_and_a_workspace_limit():
    opts = EngineOptions()
    assert opts.trt_refittable is False and opts.trt_workspace_gib is not None
    assert EngineOptions(dtype="float16").key_fields("tensorrt")["fp32_ops"] == list(FP32_OPS)
    assert "fp32_ops" not in EngineOptions().key_fields("tensorrt")  # float32: nothing to keep


@pytest.mark.gpu
@CUDA
def test_compile_captures_on_the_calling_thread_not_the_building_one():
    m, x = toy().cuda(), tuple(t.cuda() for t in toy_inputs())
    built: dict = {}

    def build() -> None:
        built["r"] = build_runner(m, x, backend="compile", options=EngineOptions(clone_outputs=False), **NAMES)

    t = threading.Thread(target=build, name="loader")
    t.start()
    t.join()
    r = built["r"]
    assert r.graph is None  # nothing captured on the loader thread
    with r.hold_capture():
        r(*x)
    assert r.graph is None
    want = [t_.clone() for t_ in m(*x)]
    seen: dict = {}

    def frames() -> None:
        seen["first"] = [o.clone() for o in r(*x)]
        bufs = r.input_buffers
        bufs["latent"].copy_(x[1])
        r(x[0], bufs["latent"], x[2])
        seen["copies"] = r.static.copies

    t = threading.Thread(target=frames, name="frames")
    t.start()
    t.join()
    assert r.graph is not None and r.capture_thread == "frames"
    assert_outputs_close(seen["first"], want, levels=1, rel=1e-3)
    assert seen["copies"] == 2  # the latent already was its buffer
    r.close()


@pytest.mark.gpu
@CUDA
def test_onnx_engine_build_frees_gpu_memory():
    m, x = toy().cuda(), tuple(t.cuda() for t in toy_inputs())
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with build_runner(m, x, backend="onnxruntime", **NAMES) as r:
        assert r.module_released and all(p.device.type == "cpu" for p in m.parameters())


class _BufferedRunner:
    """The frame step behind static input buffers, as a captured runner exposes them (CPU stand-in: the buffers are
    copied into before each call unless the input already is the buffer, like cudagraph.StaticInputs)."""

    def __init__(self, step, examples):
        self.step = step
        self.static = StaticInputs(step.input_names, examples)

    @property
    def input_buffers(self):
        return dict(self.static.by_name)

    def __call__(self, *inputs):
        self.static.feed(inputs)
        with torch.no_grad():
            return self.step(*self.static.buffers)


def test_stylizer_binds_the_noise_to_the_runner_buffer(tiny_components):
    from realtime.config import load_style
    from realtime.diffusion.stylizer import Stylizer
    from realtime.geometry import Size

    made = {}

    def factory(step, examples):
        made["r"] = _BufferedRunner(step, examples)
        return made["r"]

    s = Stylizer(tiny_components, load_style("anime"), Size(64, 64), device=torch.device("cpu"), dtype=torch.float32,
                 runner_factory=factory)
    plain = Stylizer(tiny_components, load_style("anime"), Size(64, 64), device=torch.device("cpu"),
                     dtype=torch.float32)
    img, ctl = np.full((64, 64, 3), 90, np.uint8), np.zeros((64, 64), np.uint8)
    r = made["r"]
    first = s(img, ctl)
    assert s.noise is r.input_buffers["noise"]
    second = s(img, ctl)
    assert r.static.copies == len(r.static.buffers) - 1  # the noise: no copy any more
    assert np.array_equal(first, plain(img, ctl)) and np.array_equal(second, plain(img, ctl))
    s.set_seed(5)
    plain.set_seed(5)
    assert s.noise is not r.input_buffers["noise"]  # a new draw: copied once, then bound again
    assert np.array_equal(s(img, ctl), plain(img, ctl)) and s.noise is r.input_buffers["noise"]
    s.close()
    plain.close()
