"""The one LoRA mechanism (realtime/diffusion/lora_math.py, lora_keys.py, lora_switch.py): the delta formulas (LoRA,
LyCORIS LoHa/LoKr, checked against the published formulas on random tensors in files these tests build), the
key conversion against peft's own fusing, in-place switching (A -> B -> A byte for byte on eager, compile and
onnxruntime; no second model), prompt mixes, prompt transitions and seed blending."""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_toys import lora_set, toy
from lora_files import write_diffusers_lora, write_kohya_lora

from realtime.config import LoraSpec, ModelConfig, RunConfig, load_style
from realtime.diffusion.lora_math import LoraWeight, base_weights, fused_weights
from realtime.diffusion.lora_switch import LoraSwitcher
from realtime.errors import LoraError
from realtime.geometry import Size


def test_fused_weights_math_and_purity():
    m = toy()
    base = base_weights(m)
    assert set(base) == {"enc.weight", "proj_in.weight", "attn_out.weight", "dec.weight", "head.weight"}
    a = lora_set(m, ("proj_in.weight", "enc.weight"), seed=3)
    fa = fused_weights(base, [(a, 0.5)])
    assert set(fa) == set(base)
    lw = a["proj_in.weight"]
    expect = base["proj_in.weight"] + 0.5 * (lw.alpha / 2) * (lw.up @ lw.down)
    torch.testing.assert_close(fa["proj_in.weight"], expect, rtol=0, atol=1e-6)
    cw = a["enc.weight"]
    conv_delta = (cw.up.flatten(1) @ cw.down.flatten(1)).reshape(base["enc.weight"].shape) * 0.5 * 0.5
    torch.testing.assert_close(fa["enc.weight"], base["enc.weight"] + conv_delta, rtol=0, atol=1e-6)
    assert torch.equal(fa["dec.weight"], base["dec.weight"])  # untouched weights come back as the base
    # two sets add up; base is never modified; the result depends only on (base, sets)
    b = lora_set(m, ("proj_in.weight", "head.weight"), seed=4)
    fab = fused_weights(base, [(a, 0.5), (b, -1.0)])
    assert not torch.equal(fab["proj_in.weight"], fa["proj_in.weight"])
    assert torch.equal(base["proj_in.weight"], m.proj_in.weight)
    again = fused_weights(base, [(a, 0.5)])
    assert all(torch.equal(again[k], fa[k]) for k in base)
    assert all(torch.equal(v, base[k]) for k, v in fused_weights(base, []).items())


def test_fused_weights_rejects_what_does_not_fit():
    m = toy()
    base = base_weights(m)
    bad = {"proj_in.weight": LoraWeight(down=torch.zeros(2, 5), up=torch.zeros(8, 2))}
    with pytest.raises(LoraError, match="does not fit"):
        fused_weights(base, [(bad, 1.0)])
    with pytest.raises(LoraError, match="not among the base weights"):
        fused_weights(base, [({"nope.weight": bad["proj_in.weight"]}, 1.0)])
    with pytest.raises(LoraError, match="finite"):
        fused_weights(base, [(lora_set(m, ("head.weight",), 1), float("nan"))])
    with pytest.raises(LoraError, match="rank"):
        fused_weights(base, [({"head.weight": LoraWeight(down=torch.zeros(2, 4), up=torch.zeros(2, 3))}, 1.0)])


# --- LyCORIS: LoHa and LoKr files in the kohya layout ----------------------------------------------------------------

def _kohya(name: str, prefix: str = "lora_unet_") -> str:
    return prefix + name.replace(".", "_")


def _module(unet, suffix: str):
    return next((n, m) for n, m in unet.named_modules() if n.endswith(suffix))


def write_lycoris(unet, path: Path, seed: int = 5) -> dict[str, dict[str, torch.Tensor]]:
    """LoHa on a Linear and a 3x3 Conv2d, LoKr (full w1, decomposed w2) on a Linear and LoKr (both full) on another;
    returns the factors per parameter name (what the formulas below are computed from)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    sd, layers = {}, {}
    q_name, q = _module(unet, "attn1.to_q")
    conv_name, conv = _module(unet, "resnets.0.conv1")
    k_name, k = _module(unet, "attn1.to_k")
    v_name, v = _module(unet, "attn1.to_v")
    r = 4
    for name, out_f, in_f in ((q_name, q.out_features, q.in_features),
                              (conv_name, conv.out_channels, conv.in_channels * 9)):
        f = {"hada_w1_a": rnd(out_f, r), "hada_w1_b": rnd(r, in_f), "hada_w2_a": rnd(out_f, r),
             "hada_w2_b": rnd(r, in_f), "alpha": torch.tensor(2.0)}
        sd.update({f"{_kohya(name)}.{key}": t for key, t in f.items()})
        layers[f"unet.{name}.weight"] = f
    a, c = 4, k.out_features // 4  # kron((4, 4), (c, d)) = (out, in)
    d = k.in_features // 4
    f = {"lokr_w1": rnd(a, 4), "lokr_w2_a": rnd(c, 2), "lokr_w2_b": rnd(2, d), "alpha": torch.tensor(1.0)}
    sd.update({f"{_kohya(k_name)}.{key}": t for key, t in f.items()})
    layers[f"unet.{k_name}.weight"] = f
    f = {"lokr_w1": rnd(2, 2), "lokr_w2": rnd(v.out_features // 2, v.in_features // 2), "alpha": torch.tensor(7.0)}
    sd.update({f"{_kohya(v_name)}.{key}": t for key, t in f.items()})
    layers[f"unet.{v_name}.weight"] = f
    save_file(sd, str(path))
    return layers


def published_delta(f: dict[str, torch.Tensor], shape) -> torch.Tensor:
    """LyCORIS: LoHa (w1a@w1b)*(w2a@w2b)*alpha/rank; LoKr kron(w1, w2 or w2a@w2b)*alpha/rank (1 when both full)."""
    alpha = float(f["alpha"])
    if "hada_w1_a" in f:
        rank = f["hada_w1_b"].shape[0]
        return ((f["hada_w1_a"] @ f["hada_w1_b"]) * (f["hada_w2_a"] @ f["hada_w2_b"]) * alpha / rank).reshape(shape)
    if "lokr_w2" in f:
        return torch.kron(f["lokr_w1"], f["lokr_w2"]).reshape(shape)
    rank = f["lokr_w2_b"].shape[0]
    return (torch.kron(f["lokr_w1"], f["lokr_w2_a"] @ f["lokr_w2_b"]) * alpha / rank).reshape(shape)


def test_loha_and_lokr_follow_the_published_formulas(tiny_components, tmp_path):
    path = tmp_path / "lycoris.safetensors"
    layers = write_lycoris(tiny_components.unet, path)
    params = dict(tiny_components.unet.named_parameters())
    before = {n: params[n.removeprefix("unet.")].detach().clone() for n in layers}
    switcher = LoraSwitcher.for_components(tiny_components)
    changed = switcher.apply([LoraSpec(str(path), 0.6)])
    assert set(changed) == set(layers)
    for n, f in layers.items():
        want = before[n] + 0.6 * published_delta(f, before[n].shape)
        torch.testing.assert_close(params[n.removeprefix("unet.")].detach(), want, rtol=1e-5, atol=1e-6)
    switcher.apply([])
    assert all(torch.equal(params[n.removeprefix("unet.")], before[n]) for n in layers)


def test_tucker_and_dora_files_are_refused_by_name(tiny_components, tmp_path):
    from safetensors.torch import save_file

    name, _ = _module(tiny_components.unet, "attn1.to_q")
    path = tmp_path / "tucker.safetensors"
    save_file({f"{_kohya(name)}.hada_t1": torch.ones(2, 2, 3, 3), f"{_kohya(name)}.hada_w1_a": torch.ones(2, 2)},
              str(path))
    with pytest.raises(LoraError, match="Tucker"):
        LoraSwitcher.for_components(tiny_components).apply([LoraSpec(str(path))])


# --- the key conversion equals peft's own fusing ---------------------------------------------------------------------

def peft_fused(comps, specs) -> None:
    """The reference: diffusers' load_lora_weights + set_adapters + fuse_lora (peft), as stylecam once did."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=None, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                   unet=comps.unet, scheduler=None, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    names = []
    for i, spec in enumerate(specs):
        pipe.load_lora_weights(spec.path, adapter_name=f"a{i}")
        names.append(f"a{i}")
    pipe.set_adapters(names, adapter_weights=[s.scale for s in specs])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()


def test_two_loras_with_scales_equal_peft_fusing_them(tiny_components, tmp_path):
    from safetensors.torch import load_file, save_file

    a = write_diffusers_lora(tiny_components.unet, tmp_path / "a.safetensors", text_encoder=tiny_components.text_encoder)
    b = write_kohya_lora(tiny_components.unet, tmp_path / "b.safetensors")
    sd = load_file(str(b))  # alpha != rank, so the alpha/rank factor is checked too
    save_file({k: (torch.tensor(1.0) if k.endswith(".alpha") else v) for k, v in sd.items()}, str(b))
    specs = [LoraSpec(str(a), 0.7), LoraSpec(str(b), -0.4)]
    reference = copy.deepcopy(tiny_components)
    peft_fused(reference, specs)
    LoraSwitcher.for_components(tiny_components).apply(specs)
    for part in ("unet", "text_encoder"):
        got = dict(getattr(tiny_components, part).named_parameters())
        want = dict(getattr(reference, part).named_parameters())
        assert got.keys() == want.keys()
        for n in got:
            torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-5, msg=f"{part}.{n}")


# --- in place: A -> B -> A, scales, no second model ------------------------------------------------------------------

@pytest.fixture()
def two_loras(tiny_components, tmp_path):
    a = write_diffusers_lora(tiny_components.unet, tmp_path / "a.safetensors", text_encoder=tiny_components.text_encoder)
    b = write_kohya_lora(tiny_components.unet, tmp_path / "b.safetensors")
    return (LoraSpec(str(a), 0.8),), (LoraSpec(str(b), 1.0), LoraSpec(str(a), -0.3))


def test_switches_write_in_place_and_keep_base_values_once(tiny_components, two_loras):
    a, b = two_loras
    comps = tiny_components
    storage = {n: p.data_ptr() for part in (comps.unet, comps.text_encoder) for n, p in part.named_parameters()}
    count = sum(p.numel() for part in (comps.unet, comps.text_encoder) for p in part.parameters())
    switcher = LoraSwitcher.for_components(comps)
    switcher.apply(a)
    state_a = {n: t.clone() for n, t in comps.unet.state_dict().items()}
    switcher.apply(b)
    assert any(not torch.equal(state_a[n], t) for n, t in comps.unet.state_dict().items())
    switcher.apply(a)
    assert all(torch.equal(state_a[n], t) for n, t in comps.unet.state_dict().items())  # byte for byte
    # A scale change is the same operation: A at 0.5 then 0.8 equals A at 0.8 directly.
    switcher.apply((dataclasses.replace(a[0], scale=0.5),))
    switcher.apply(a)
    assert all(torch.equal(state_a[n], t) for n, t in comps.unet.state_dict().items())
    # No second model: same parameters at the same addresses; the kept base values are exactly the touched weights.
    after = {n: p.data_ptr() for part in (comps.unet, comps.text_encoder) for n, p in part.named_parameters()}
    assert after == storage
    assert sum(p.numel() for part in (comps.unet, comps.text_encoder) for p in part.parameters()) == count
    params = {**{f"unet.{n}": p for n, p in comps.unet.named_parameters()},
              **{f"text_encoder.{n}": p for n, p in comps.text_encoder.named_parameters()}}
    touched = {n for layers, _ in switcher.prepare(a + b) for n in layers}
    assert switcher.base_bytes == sum(params[n].numel() * params[n].element_size() for n in touched)
    assert switcher.base_bytes < 0.5 * count * 4  # a part of the model, never a copy of it


def _stylizer(backend: str, style, tmp_path):
    from realtime.diffusion.build import build_stylizer

    run = RunConfig(size=Size(64, 64), device="cpu", dtype="fp32", backend=backend, cache_dir=str(tmp_path / "cache"))
    return build_stylizer(ModelConfig("random:tiny"), style, run)


COMPILE_FULL = pytest.param("compile", marks=[pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("STYLECAM_COMPILE_TESTS") != "1",
    reason="torch.compile of the whole tiny frame step takes ~5 min on 2 cores: STYLECAM_COMPILE_TESTS=1 runs it "
           "(passed 2026-12-01); test_a_b_a_through_torch_compile covers compile in the default suite")])


@pytest.mark.parametrize("backend", ["eager", "onnxruntime", COMPILE_FULL])
def test_a_b_a_is_byte_identical_on_every_cpu_backend(backend, tiny_components, two_loras, tmp_path, frame64):
    a, b = two_loras
    style_a = dataclasses.replace(load_style("anime"), loras=a)
    s = _stylizer(backend, style_a, tmp_path)
    try:
        runner = s.runner
        first = s(*frame64)
        s.reset()
        s.set_style(dataclasses.replace(style_a, loras=b), wait=True)
        with_b = s(*frame64)
        s.reset()
        s.set_style(style_a, wait=True)
        again = s(*frame64)
        assert s.runner is runner  # refitted, never rebuilt
        assert not np.array_equal(with_b, first)
        assert np.array_equal(again, first)
    finally:
        s.close()


@pytest.fixture()
def frame64():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    ctl = np.zeros((64, 64), np.uint8)
    ctl[16:48, 20] = 255
    return img, ctl


def _toy_lora(module, path: Path, names: tuple[str, ...], seed: int) -> LoraSpec:
    """A peft-format LoRA file for the toy module (its modules play the UNet's)."""
    from safetensors.torch import save_file

    sd = {}
    for n, w in lora_set(module, names, seed).items():
        sd[f"unet.{n.removesuffix('.weight')}.lora_A.weight"] = w.down
        sd[f"unet.{n.removesuffix('.weight')}.lora_B.weight"] = w.up
    save_file(sd, str(path))
    return LoraSpec(str(path), 0.9)


def test_a_b_a_through_torch_compile(tmp_path):
    """Compiled code reads the weights the switcher writes in place: no recompile, A -> B -> A exact."""
    from engine_toys import INPUT_NAMES, OUTPUT_NAMES, toy_inputs

    from engines import build_runner
    m, x = toy(), toy_inputs()

    def unet_part(changed):  # the toy plays the UNet: its own names have no "unet." prefix
        return {n.removeprefix("unet."): t for n, t in changed.items()}

    a = (_toy_lora(m, tmp_path / "a.safetensors", ("proj_in.weight", "enc.weight"), 1),)
    b = (_toy_lora(m, tmp_path / "b.safetensors", ("proj_in.weight", "dec.weight"), 2),)
    switcher = LoraSwitcher({"unet": m})
    switcher.apply(a)
    with build_runner(m, x, backend="compile", input_names=INPUT_NAMES, output_names=OUTPUT_NAMES) as r:
        first = [t.clone() for t in r(*x)]
        r.refit(unet_part(switcher.apply(b)))
        with_b = [t.clone() for t in r(*x)]
        r.refit(unet_part(switcher.apply(a)))
        again = r(*x)
    assert not all(torch.equal(p, q) for p, q in zip(with_b, first, strict=True))
    assert all(torch.equal(p, q) for p, q in zip(again, first, strict=True))


def test_kohya_text_encoder_q_v_only_with_alpha(tiny_components, tmp_path):
    """A kohya text-encoder LoRA on q/v only (no to_out key: diffusers' own layout inference misses it) applies with
    (alpha / rank) * up @ down."""
    from safetensors.torch import save_file

    te = tiny_components.text_encoder
    g = torch.Generator().manual_seed(3)
    sd, want = {}, {}
    for name, m in te.named_modules():
        if name.endswith(("q_proj", "v_proj")):
            key = "lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_")
            down, up = torch.randn(2, m.in_features, generator=g), torch.randn(m.out_features, 2, generator=g)
            sd.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(1.0)})
            want[name] = m.weight.detach().clone() + 0.5 * (1.0 / 2) * up @ down
    save_file(sd, str(tmp_path / "te.safetensors"))
    changed = LoraSwitcher.for_components(tiny_components).apply([LoraSpec(str(tmp_path / "te.safetensors"), 0.5)])
    assert len(changed) == len(want) and all(n.startswith("text_encoder.") for n in changed)
    for name, w in want.items():
        torch.testing.assert_close(te.get_submodule(name).weight.detach(), w, rtol=1e-5, atol=1e-6)
