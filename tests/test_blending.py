"""Prompt and seed blending (realtime/diffusion/blending.py, Stylizer.conditioning / set_seed / prompt transitions), their
command-line syntax (`--prompt A --prompt B --prompt-weight 0.7 --prompt-weight 0.3`, `--prompt-blend`,
`--seed-blend SEED:T`), presets naming a prompt mix, and the live commands (prompt-mix, transition, seed-blend,
lora-scale) from stdin lines and the control file."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cli_run import run_cli
from realtime.cli import build_parser
from realtime.cli.options import run_from_args, style_from_args
from realtime.config import load_style, prompt_mix
from realtime.diffusion.blending import blend_noise, mix_embeddings, slerp
from realtime.diffusion.stylizer import Stylizer
from realtime.errors import UsageError
from realtime.geometry import Size
from realtime.pipeline.controls import Command, commands_from_mapping, parse_command

SIZE = Size(64, 64)
A, B = "anime portrait, cel shading", "watercolor painting, soft paper texture"


def make(comps, style=None, seed: int = 0) -> Stylizer:
    return Stylizer(comps, style or load_style("anime"), SIZE, device=torch.device("cpu"), dtype=torch.float32, seed=seed)


@pytest.fixture()
def frame():
    rng = np.random.default_rng(0)
    return (rng.random((64, 64, 3)) * 255).astype(np.uint8), np.zeros((64, 64), np.uint8)


# --- the maths ------------------------------------------------------------------------------------------------------

def test_slerp_endpoints_norm_and_parallel_inputs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 77, 16, generator=g), torch.randn(3, 77, 16, generator=g) * 2
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid.norm(dim=-1), 0.5 * a.norm(dim=-1) + 0.5 * b.norm(dim=-1), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(mid, 0.5 * (a + b), atol=1e-3)  # not the linear mix
    torch.testing.assert_close(slerp(a, 3 * a, 0.5), 2 * a, rtol=1e-5, atol=1e-5)  # parallel: the linear mix
    n0, n1 = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    half = blend_noise(n0, n1, 0.5)
    assert abs(float(half.std()) - 1.0) < 0.15  # a slerp of two Gaussian noises stays unit-variance-ish
    assert float((0.5 * (n0 + n1)).std()) < 0.85  # the linear mix would shrink it


def test_mix_embeddings_weights_and_cfg_rows():
    g = torch.Generator().manual_seed(1)
    e1, e2, e3 = (torch.randn(2, 77, 8, generator=g) for _ in range(3))
    e2[0] = e3[0] = e1[0]  # the negative row is the same for every prompt
    assert torch.equal(mix_embeddings([e1, e2], [1.0, 0.0]), e1)
    assert torch.equal(mix_embeddings([e1, e2], [0.0, 2.0]), e2)
    lin = mix_embeddings([e1, e2], [0.25, 0.75], "linear")
    torch.testing.assert_close(lin[1], 0.25 * e1[1] + 0.75 * e2[1])
    assert torch.equal(lin[0], e1[0])  # only the positive row is mixed
    three = mix_embeddings([e1, e2, e3], [1, 1, 1])
    assert not torch.equal(three, e1) and torch.equal(three[0], e1[0])
    with pytest.raises(UsageError, match="positive"):
        mix_embeddings([e1, e2], [0, 0])


# --- the stylizer ---------------------------------------------------------------------------------------------------

def test_prompt_mix_endpoints_equal_the_prompt_alone(tiny_components, frame):
    plain = dataclasses.replace(load_style("anime"), prompt=A)
    only_a = dataclasses.replace(plain, prompt_mix=((A, 1.0), (B, 0.0)))
    only_b = dataclasses.replace(plain, prompt_mix=((A, 0.0), (B, 3.0)))
    half = dataclasses.replace(plain, prompt_mix=((A, 0.5), (B, 0.5)))
    s = make(tiny_components, plain)
    emb_a, emb_b = s.encode_prompt(A), s.encode_prompt(B)
    assert torch.equal(s.conditioning(only_a)[0], emb_a) and torch.equal(s.conditioning(only_b)[0], emb_b)
    assert np.array_equal(make(tiny_components, only_a)(*frame), make(tiny_components, plain)(*frame))
    mixed = s.conditioning(half)[0]
    assert not torch.equal(mixed, emb_a) and not torch.equal(mixed, emb_b)
    assert not torch.equal(s.conditioning(dataclasses.replace(half, prompt_blend="linear"))[0], mixed)
    assert not np.array_equal(make(tiny_components, half)(*frame), make(tiny_components, plain)(*frame))


def test_seed_blend_endpoints_equal_each_seed(tiny_components):
    s = make(tiny_components)
    seed0, seed5 = s.noise.clone(), make(tiny_components, seed=5).noise
    s.set_seed(0, blend=(5, 0.0))
    assert torch.equal(s.noise, seed0)
    s.set_seed(0, blend=(5, 1.0))
    assert torch.equal(s.noise, seed5)
    s.set_seed(0, blend=(5, 0.3))
    assert not torch.equal(s.noise, seed0) and not torch.equal(s.noise, seed5)
    s.set_seed(0)
    assert torch.equal(s.noise, seed0) and s.seed_blend is None


def test_prompt_transition_reaches_the_new_prompt_after_n_frames(tiny_components, frame):
    style = dataclasses.replace(load_style("anime"), prompt=A, transition_frames=4)
    s = make(tiny_components, style)
    start, target = s.encode_prompt(A), s.encode_prompt(B)
    s.set_style(dataclasses.replace(style, prompt=B), wait=True)
    seen = []
    for _ in range(5):
        s(*frame)
        seen.append(s._prompt_embeds.clone())
    for k, emb in enumerate(seen[:3], start=1):  # in between: neither end, each a step further
        assert not torch.equal(emb, start) and not torch.equal(emb, target), k
    assert torch.equal(seen[3], target) and torch.equal(seen[4], target)
    d = [float((e - target).norm()) for e in seen[:4]]
    assert d[0] > d[1] > d[2] > d[3] == 0.0
    jump = make(tiny_components, dataclasses.replace(style, transition_frames=0))
    jump.set_style(dataclasses.replace(style, prompt=B, transition_frames=0), wait=True)
    jump(*frame)
    assert torch.equal(jump._prompt_embeds, target)


# --- command line and presets ---------------------------------------------------------------------------------------

def _args(*extra: str):
    return build_parser().parse_args(["image", "in.png", "-o", "out.png", "--model", "random:tiny", *extra])


def test_prompt_mix_and_seed_blend_options():
    style = style_from_args(_args("--prompt", A, "--prompt", B, "--prompt-weight", "0.7", "--prompt-weight", "0.3",
                                  "--prompt-blend", "linear"))
    assert style.prompt == A and style.prompt_mix == ((A, 0.7), (B, 0.3)) and style.prompt_blend == "linear"
    assert prompt_mix(style) == ((A, pytest.approx(0.7)), (B, pytest.approx(0.3)))
    equal = style_from_args(_args("--prompt", A, "--prompt", B))
    assert equal.prompt_mix == ((A, 1.0), (B, 1.0)) and equal.prompt_blend == "slerp"  # slerp is the default
    single = style_from_args(_args("--prompt", A))
    assert single.prompt == A and single.prompt_mix == ()
    assert run_from_args(_args("--seed", "3", "--seed-blend", "7:0.25"), Size(64, 64)).seed_blend == (7, 0.25)
    with pytest.raises(UsageError, match="one weight per prompt"):
        style_from_args(_args("--prompt", A, "--prompt", B, "--prompt-weight", "1"))
    for bad in ("7", "x:0.5", "7:1.5", "-1:0.5"):
        with pytest.raises(UsageError, match="seed-blend"):
            run_from_args(_args(f"--seed-blend={bad}"), Size(64, 64))


@pytest.mark.parametrize("extra, needle", [
    (["--seed-blend", "7:2"], "seed-blend"),
    (["--prompt", "a", "--prompt-weight", "1", "--prompt-weight", "2"], "prompt-weight"),
])
def test_bad_blend_options_are_exit_2_before_any_model_loads(capsys, tmp_path, no_model_load, extra, needle):
    from media_files import make_png

    png = make_png(tmp_path / "in.png")
    code, err = run_cli(capsys, ["image", str(png), "-o", str(tmp_path / "o.png"), "--model", "random:tiny", *extra])
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


def test_a_preset_may_name_a_prompt_mix(tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text(f'strength = 0.6\nprompt_blend = "linear"\ntransition_frames = 6\n'
                    f'[[prompt_mix]]\nprompt = "{A}"\nweight = 2\n[[prompt_mix]]\nprompt = "{B}"\n')
    style = load_style(str(path))
    assert style.prompt == A and style.prompt_mix == ((A, 2), (B, 1.0)) and style.transition_frames == 6
    path.write_text('[[prompt_mix]]\nprompt = "a"\nweight = 0\n')
    with pytest.raises(UsageError, match="sum to 0"):
        load_style(str(path))
    path.write_text('prompt = "a"\n[[prompt_mix]]\ntext = "a"\n')
    with pytest.raises(UsageError, match="prompt_mix"):
        load_style(str(path))


# --- live commands --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, name, value", [
    ("prompt-mix 0.7 anime portrait | 0.3 watercolor # kept", "prompt-mix",
     (("anime portrait", 0.7), ("watercolor # kept", 0.3))),
    ("mix 1 a", "prompt-mix", (("a", 1.0),)),
    ("prompt-blend LINEAR", "prompt-blend", "linear"), ("transition 8", "transition", 8),
    ("seed-blend 7 0.5", "seed-blend", (7, 0.5)), ("lora-scale 0.5", "lora-scale", (0.5,)),
    ("lora-scale 0.5 -0.2", "lora-scale", (0.5, -0.2)),
])
def test_parse_new_commands(line, name, value):
    cmd = parse_command(line)
    assert cmd is not None and (cmd.name, cmd.value) == (name, value)
    assert parse_command(str(cmd)) == Command(name, value, "stdin")  # printed, parsed again


@pytest.mark.parametrize("line, needle", [
    ("prompt-mix anime", "WEIGHT TEXT"), ("prompt-mix 0 a | 0 b", "sum to 0"), ("prompt-blend cubic", "slerp"),
    ("transition 1.5", "integer"), ("seed-blend 7", "SEED T"), ("lora-scale x", "number"),
])
def test_bad_new_commands(line, needle):
    with pytest.raises(UsageError, match=needle):
        parse_command(line)


def test_control_file_keys_for_mixes_transitions_and_seed_blends():
    cmds = commands_from_mapping({"prompt_mix": [["a", 0.7], {"prompt": "b", "weight": 0.3}], "transition_frames": 4,
                                  "seed_blend": [7, 0.5], "lora_scale": [0.5, 1], "prompt_blend": "linear"})
    assert [(c.name, c.value) for c in cmds] == [
        ("lora-scale", (0.5, 1.0)), ("transition", 4), ("prompt-blend", "linear"),
        ("prompt-mix", (("a", 0.7), ("b", 0.3))), ("seed-blend", (7, 0.5))]
    for bad in ({"prompt_mix": "a"}, {"seed_blend": 7}, {"transition_frames": True}, {"lora_scale": "x"}):
        with pytest.raises(UsageError):
            commands_from_mapping(bad)


def test_session_applies_prompt_mixes_transitions_and_seed_blends():
    from test_live_control import _session

    session, proc, s = _session()
    assert session.apply(Command("transition", 5)) and s.style.transition_frames == 5
    assert session.apply(Command("prompt-mix", ((A, 0.7), (B, 0.3))))
    assert s.style.prompt_mix == ((A, 0.7), (B, 0.3)) and s.style.prompt == A
    assert session.apply(Command("prompt", B)) and s.style.prompt_mix == () and s.style.prompt == B
    assert session.apply(Command("style", "cel-shaded")) and s.style.transition_frames == 5  # kept across presets
    assert session.apply(Command("seed-blend", (7, 0.5))) and s.seeds[-1] == (0, (7, 0.5))
    assert not session.apply(Command("seed-blend", (7, 1.5)))
    assert not session.apply(Command("lora-scale", (0.5,)))  # no LoRA running
