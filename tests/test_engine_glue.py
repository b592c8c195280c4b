"""The FrameStep through the engines: onnxruntime agrees with eager, cache keys follow what changes the engine."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from realtime.config import LoraSpec, ModelConfig, RunConfig, load_style
from realtime.diffusion.engine_select import engine_key_fields, runner_factory
from realtime.geometry import Size
from realtime.diffusion.stylizer import Stylizer

from lora_files import write_kohya_lora

CPU = torch.device("cpu")


@pytest.mark.parametrize("spec", ["random:tiny", "random:tiny-xl"])  # both families: SDXL's extra inputs exported too
def test_onnxruntime_frame_step_matches_eager(spec, tiny_components, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ort extra is part of the dev install")
    from realtime.diffusion.models import load_components

    style = load_style("anime")
    run = RunConfig(size=Size(64, 64), backend="onnxruntime", cache_dir=str(tmp_path / "cache"))
    model = ModelConfig(spec)
    if spec != "random:tiny":
        tiny_components = load_components(model, CPU, torch.float32, seed=0)
    rng = np.random.default_rng(1)
    frames = [(rng.random((64, 64, 3)) * 255).astype(np.uint8) for _ in range(3)]
    control = np.zeros((64, 64), np.uint8)
    control[10:50, 32] = 255
    eager = Stylizer(tiny_components, style, run.size, device=CPU, dtype=torch.float32, seed=3)
    expected = [eager(f, control) for f in frames]
    factory = runner_factory(model, style, run, tiny_components, CPU, torch.float32)
    ort = Stylizer(tiny_components, style, run.size, device=CPU, dtype=torch.float32, seed=3, runner_factory=factory)
    assert ort.runner.backend == "onnxruntime"
    got = [ort(f, control) for f in frames]  # three frames: the blended latents flow back through the engine
    for e, g in zip(expected, got, strict=True):
        assert np.abs(e.astype(int) - g.astype(int)).max() <= 2
    ort.close()
    assert any((tmp_path / "cache" / "engines").iterdir())  # the engine was cached


def test_engine_key_follows_what_changes_the_engine(tiny_components, tmp_path):
    lora = write_kohya_lora(tiny_components.unet, tmp_path / "k.safetensors")
    model = ModelConfig("random:tiny")
    style = load_style("anime")
    run = RunConfig(size=Size(64, 64))

    def key(style=style, run=run, dtype=torch.float32, include_loras=True, batch=1):
        return engine_key_fields(model, style, run, tiny_components, dtype, include_loras=include_loras, batch=batch)

    base = key()
    assert key(style=dataclasses.replace(style, strength=0.3, control_scale=0.1, prompt="other")) == base  # tensor inputs
    assert key(run=RunConfig(size=Size(128, 64))) != base
    assert key(dtype=torch.float16) != base
    assert key(batch=4) != base  # `stylecam bench --batch 4` builds its own engine
    assert key(style=dataclasses.replace(style, guidance=2.0)) != base  # CFG doubles the batch
    with_lora = key(style=dataclasses.replace(style, loras=(LoraSpec(str(lora), 0.5),)))
    assert with_lora != base
    assert key(style=dataclasses.replace(style, loras=(LoraSpec(str(lora), 0.8),))) != with_lora
    # Refittable TensorRT engines: the LoRA set is applied by refit, not part of the key.
    assert key(style=dataclasses.replace(style, loras=(LoraSpec(str(lora), 0.8),)), include_loras=False) == key(include_loras=False)
