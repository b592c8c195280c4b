"""The math of one frame on tiny random components (CPU, fp32, fixed seeds)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from realtime.config import LoraSpec, StyleConfig, TemporalConfig, load_style
from realtime.errors import LoraError, UsageError
from realtime.geometry import Size
from realtime.diffusion.lora_switch import fuse_loras
from realtime.diffusion.stylizer import INPUT_NAMES, FrameStep, Stylizer, strength_timestep

from lora_files import write_diffusers_lora, write_kohya_lora

SIZE = Size(64, 64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    ctl = np.zeros((64, 64), np.uint8)
    ctl[16:48, 20] = ctl[30, 10:50] = 255
    return img, ctl


def make(comps, style: StyleConfig | None = None, seed: int = 0) -> Stylizer:
    return Stylizer(comps, style or load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=seed)


def test_same_seed_identical_other_seed_differs(tiny_components, frame):
    a = make(tiny_components)(*frame)
    b = make(tiny_components)(*frame)
    c = make(tiny_components, seed=1)(*frame)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_one_seed_check_for_config_stylizer_and_live_controls():
    """config.check_seed is the one seed check: RunConfig (--seed), Stylizer.set_seed and the live `seed` control."""
    from realtime.config import RunConfig, check_seed

    assert check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, True, 1.5, "3", None):
        with pytest.raises(UsageError, match=r"^seed .*: must be a non-negative integer$"):
            check_seed(bad)
    with pytest.raises(UsageError, match=r"^--seed -1: must be a non-negative integer$"):
        RunConfig(seed=-1)
    with pytest.raises(UsageError, match="--seed True"):
        RunConfig(seed=True)  # bools are not seeds (before: accepted as 1)


def test_control_scale_zero_equals_no_controlnet(tiny_components, frame):
    style = dataclasses.replace(load_style("anime"), control_scale=0.0)
    with_cn = make(tiny_components, style)(*frame)
    tiny_components.controlnet = None
    without = make(tiny_components, style)(*frame)
    assert np.array_equal(with_cn, without)


def test_control_scale_changes_output(tiny_components, frame):
    lo = make(tiny_components, dataclasses.replace(load_style("anime"), control_scale=0.0))(*frame)
    hi = make(tiny_components, dataclasses.replace(load_style("anime"), control_scale=2.0))(*frame)
    assert not np.array_equal(lo, hi)


@pytest.mark.parametrize("writer", [write_diffusers_lora, write_kohya_lora], ids=["diffusers", "kohya"])
def test_lora_scale_zero_is_identity_and_one_changes(tiny_components, frame, tmp_path, writer, _tiny_components_master):
    import copy

    path = writer(tiny_components.unet, tmp_path / "style.safetensors")
    base = make(tiny_components)(*frame)
    zero = copy.deepcopy(_tiny_components_master)
    fuse_loras(zero, [LoraSpec(str(path), 0.0)])
    assert np.array_equal(make(zero)(*frame), base)
    one = copy.deepcopy(_tiny_components_master)
    fuse_loras(one, [LoraSpec(str(path), 1.0)])
    assert not np.array_equal(make(one)(*frame), base)


def test_two_loras_with_text_encoder_part(tiny_components, frame, tmp_path, _tiny_components_master):
    import copy

    a = write_diffusers_lora(tiny_components.unet, tmp_path / "a.safetensors", text_encoder=tiny_components.text_encoder)
    b = write_kohya_lora(tiny_components.unet, tmp_path / "b.safetensors")
    te_before = [p.clone() for p in tiny_components.text_encoder.parameters()]
    fuse_loras(tiny_components, [LoraSpec(str(a), 0.7), LoraSpec(str(b), 0.3)])
    te_changed = any(not torch.equal(x, y) for x, y in zip(te_before, tiny_components.text_encoder.parameters(), strict=True))
    assert te_changed, "the text-encoder part of the LoRA was not fused"
    only_a = copy.deepcopy(_tiny_components_master)
    fuse_loras(only_a, [LoraSpec(str(a), 0.7)])
    assert not np.array_equal(make(tiny_components)(*frame), make(only_a)(*frame))
    # Fused means plain weights: no LoRA layers left behind.
    assert not any("lora" in n for n, _ in tiny_components.unet.named_parameters())


def test_lora_errors(tiny_components, tmp_path):
    with pytest.raises(LoraError, match="not found"):
        fuse_loras(tiny_components, [LoraSpec(str(tmp_path / "missing.safetensors"))])
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(LoraError, match="not a readable safetensors"):
        fuse_loras(tiny_components, [LoraSpec(str(bad))])
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong_shape.safetensors"
    name = next(n for n, m in tiny_components.unet.named_modules() if n.endswith("attn1.to_q"))
    key = "lora_unet_" + name.replace(".", "_")
    save_file({f"{key}.lora_down.weight": torch.ones(4, 999), f"{key}.lora_up.weight": torch.ones(999, 4), f"{key}.alpha": torch.tensor(4.0)}, str(wrong))
    with pytest.raises(LoraError, match="does not fit"):
        fuse_loras(tiny_components, [LoraSpec(str(wrong))])
    pickle = tmp_path / "x.ckpt"
    pickle.write_bytes(b"x")
    with pytest.raises(UsageError, match="allow-pickle"):
        fuse_loras(tiny_components, [LoraSpec(str(pickle))])


def test_prompt_embeddings_once_per_prompt(tiny_components, frame):
    s = make(tiny_components)
    assert s.prompt_encodes == 1
    for _ in range(3):
        s(*frame)
    assert s.prompt_encodes == 1
    new = dataclasses.replace(s.style, prompt="a watercolor painting")
    s.set_style(new, wait=True)
    for _ in range(2):
        s(*frame)
    assert s.prompt_encodes == 2
    s.set_style(dataclasses.replace(new, prompt=load_style("anime").prompt), wait=True)  # cached: no new encode
    assert s.prompt_encodes == 2


def test_prompt_change_is_swapped_in_off_the_frame_path(tiny_components, frame):
    s = make(tiny_components)
    first = s(*frame)
    s.set_style(dataclasses.replace(s.style, prompt="cel shaded comic"))
    s._pending.result(timeout=30)  # the background encode finishes; the next frame swaps it in
    s.reset()
    assert not np.array_equal(s(*frame), first)


def test_blend_weight_one_equals_no_blending(tiny_components, frame):
    img, ctl = frame
    other = np.roll(img, 7, axis=1)
    no_blend = dataclasses.replace(load_style("anime"), temporal=TemporalConfig(blend=1.0, motion_adaptive=False))
    s = make(tiny_components, no_blend)
    s(other, ctl)  # a previous frame exists, but with weight 1 it must not matter
    fresh = make(tiny_components, no_blend)
    assert np.array_equal(s(img, ctl), fresh(img, ctl))
    blended = make(tiny_components, dataclasses.replace(load_style("anime"), temporal=TemporalConfig(blend=0.3, motion_adaptive=False)))
    blended(other, ctl)
    assert not np.array_equal(blended(img, ctl), fresh(img, ctl))


def test_first_frame_is_never_blended(tiny_components, frame):
    """No brown/empty warm-up frame: the first output equals an unblended step."""
    blend = make(tiny_components, dataclasses.replace(load_style("anime"), temporal=TemporalConfig(blend=0.2)))
    plain = make(tiny_components, dataclasses.replace(load_style("anime"), temporal=TemporalConfig(blend=1.0)))
    assert np.array_equal(blend(*frame), plain(*frame))


class _ConstUNet(torch.nn.Module):
    """Predicts a constant: lets the one-step update be checked against its formula."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, sample, t, encoder_hidden_states=None, down_block_additional_residuals=None, mid_block_additional_residual=None, return_dict=False):
        return (torch.full_like(sample, self.value),)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_one_step_update_formula(tiny_components, prediction):
    step = FrameStep(_ConstUNet(0.5), None, tiny_components.vae, prediction)
    img = torch.full((1, 64, 64, 3), 128, dtype=torch.uint8)
    ctl = torch.zeros((1, 64, 64), dtype=torch.uint8)
    lat = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.zeros(1, 77, 32)
    sa, s1 = torch.tensor([0.6]), torch.tensor([0.8])
    one, zero = torch.tensor([1.0]), torch.tensor([0.0])
    out, z, z0 = step(img, ctl, lat, lat, noise, emb, torch.tensor([500.0]), sa, s1, one, zero, one, one)
    x_t = 0.6 * z + 0.8 * noise
    expected = {"epsilon": (x_t - 0.8 * 0.5) / 0.6, "v_prediction": 0.6 * x_t - 0.8 * 0.5, "sample": torch.full_like(z, 0.5)}[prediction]
    torch.testing.assert_close(z0, expected)
    assert out.shape == (1, 64, 64, 3) and out.dtype == torch.uint8


def test_cfg_at_scale_one_matches_single_pass(tiny_components, frame):
    single = make(tiny_components, dataclasses.replace(load_style("anime"), guidance=1.0))
    s = make(tiny_components, dataclasses.replace(load_style("anime"), guidance=1.0001))
    assert s.step.cfg and not single.step.cfg
    assert s._prompt_embeds.shape[0] == 2
    diff = np.abs(s(*frame).astype(int) - single(*frame).astype(int))
    assert diff.max() <= 2  # uncond + 1.0001 * (cond - uncond) is the conditional pass, up to rounding
    strong = make(tiny_components, dataclasses.replace(load_style("anime"), guidance=7.0))
    assert not np.array_equal(strong(*frame), single(*frame))


def test_frame_step_inputs_are_tensors_and_named(tiny_components):
    s = make(tiny_components)
    inputs = s.example_inputs()
    assert len(inputs) == len(INPUT_NAMES) == 13
    assert all(isinstance(t, torch.Tensor) for t in inputs)
    assert inputs[0].dtype == torch.uint8 and inputs[1].dtype == torch.uint8


def test_strength_timestep():
    assert strength_timestep(1.0) == 999
    assert strength_timestep(0.5) == 499
    assert strength_timestep(0.0005) == 0
    with pytest.raises(UsageError):
        strength_timestep(0.0)
    with pytest.raises(UsageError):
        strength_timestep(1.5)


def test_stylizer_rejects_wrong_input_shape(tiny_components, frame):
    s = make(tiny_components)
    with pytest.raises(UsageError, match="64x64x3 uint8"):
        s(np.zeros((32, 32, 3), np.uint8), frame[1])
