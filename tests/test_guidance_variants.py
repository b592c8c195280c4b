"""Guidance on/off keeps both frame-step variants: a switch never rebuilds or recompiles, and the other variant is
built off the frame thread (Stylizer.prepare_style). CPU with tiny random components; the compile case is gpu-marked."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from realtime.config import RunConfig, load_style
from realtime.diffusion.stylizer import INPUT_NAMES, OUTPUT_NAMES, Stylizer
from realtime.geometry import Size

SIZE = Size(64, 64)
OFF = dataclasses.replace(load_style("anime"), guidance=1.0)
ON = dataclasses.replace(OFF, guidance=4.0)


def _frame() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    ctl = np.zeros((64, 64), np.uint8)
    ctl[10:50, 30] = 255
    return (rng.random((64, 64, 3)) * 255).astype(np.uint8), ctl


def _factory(calls: list[str]):
    from engines import build_runner

    def build(module, inputs):
        calls.append(threading.current_thread().name)
        return build_runner(module, inputs, backend="eager", input_names=getattr(module, "input_names", INPUT_NAMES),
                            output_names=OUTPUT_NAMES)

    return build


def _in_thread(fn, name: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    t = threading.Thread(target=run, name=name)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def test_guidance_switch_builds_each_variant_once_off_the_frame_thread(tiny_components):
    calls: list[str] = []
    cpu = torch.device("cpu")
    s = Stylizer(tiny_components, OFF, SIZE, device=cpu, dtype=torch.float32, runner_factory=_factory(calls))
    frame = _frame()
    off_runner = s.runner
    assert calls == [threading.current_thread().name] and not s.step.cfg
    _in_thread(lambda: s.prepare_style(ON), "prepare")
    assert calls[1:] == ["prepare"]  # the CFG variant was built on the preparing thread
    s.set_style(ON)  # on the "frame thread": a swap, nothing built
    assert s.step.cfg and len(calls) == 2
    s.reset()
    on_out = s(*frame)
    s.set_style(OFF)
    assert s.runner is off_runner and len(calls) == 2
    s.set_style(ON)
    s.reset()
    assert len(calls) == 2 and s.variants.builds == 2
    assert np.array_equal(s(*frame), on_out)
    fresh = Stylizer(tiny_components, ON, SIZE, device=cpu, dtype=torch.float32)
    assert np.array_equal(fresh(*frame), on_out)  # the swapped-in variant is what a stylizer built with it gives
    s.close()
    fresh.close()


def test_unprepared_switch_still_works_and_is_then_cached(tiny_components):
    calls: list[str] = []
    s = Stylizer(tiny_components, OFF, SIZE, device=torch.device("cpu"), dtype=torch.float32,
                 runner_factory=_factory(calls))
    s.set_style(ON)
    assert s.step.cfg and len(calls) == 2
    s.set_style(OFF)
    s.set_style(ON)
    assert len(calls) == 2
    s.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU)")
def test_guidance_switch_with_compile_on_cuda_does_not_recompile(monkeypatch, tmp_path):
    import engines
    from realtime.config import ModelConfig
    from realtime.diffusion.engine_select import runner_factory
    from realtime.diffusion.models import load_components

    builds: list[str] = []
    real = engines.build_runner

    def spy(*a, **k):
        builds.append(k.get("backend", "?"))
        return real(*a, **k)

    monkeypatch.setattr(engines, "build_runner", spy)
    cuda = torch.device("cuda")
    model = ModelConfig("random:tiny")
    run = RunConfig(size=SIZE, device="cuda", dtype="fp16", backend="compile", cache_dir=str(tmp_path))
    comps = load_components(model, cuda, torch.float16)
    s = Stylizer(comps, OFF, SIZE, device=cuda, dtype=torch.float16,
                 runner_factory=runner_factory(model, OFF, run, comps, cuda, torch.float16))
    frame = _frame()
    s(*frame)
    _in_thread(lambda: s.prepare_style(ON), "prepare")
    assert s.variants.kept(True)[1].graph is None  # not captured on the preparing thread
    for style in (ON, OFF, ON, OFF):
        s.set_style(style)
        s(*frame)
    assert builds == ["compile", "compile"] and s.variants.builds == 2
    assert s.variants.kept(True)[1].graph is not None  # captured by a frame call
    s.close()


def test_sdxl_variants_carry_their_own_conditioning():
    """SDXL's extra inputs (pooled text embeddings, time ids) have the CFG batch: the swapped-in variant gets its own."""
    from realtime.config import ModelConfig
    from realtime.diffusion.models import load_components

    cpu = torch.device("cpu")
    comps = load_components(ModelConfig("random:tiny-xl"), cpu, torch.float32)
    calls: list[str] = []
    s = Stylizer(comps, OFF, SIZE, device=cpu, dtype=torch.float32, runner_factory=_factory(calls))
    frame = _frame()
    s(*frame)
    _in_thread(lambda: s.prepare_style(ON), "prepare")
    s.set_style(ON)
    s.reset()
    got = s(*frame)
    assert len(calls) == 2
    fresh = Stylizer(comps, ON, SIZE, device=cpu, dtype=torch.float32)
    assert np.array_equal(got, fresh(*frame))
    s.close()
    fresh.close()
