"""Issue 19, messages: Python or library internals are never the message. A LoRA for another architecture is one line
naming the file and what does not fit (no library log, no state_dict listing), also on live's background loader
thread; a style file with values of the wrong type names the field and what is allowed; the first run without the hub
gets advice that the command it names accepts (``stylecam demo --no-face / --face-model``), a model that is not cached
is one line naming ``stylecam models pull`` and ``random:tiny``, and a network failure is reported once, as one."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from media_files import make_png
from realtime.config import LoraSpec
from realtime.diffusion.lora_switch import fuse_loras
from realtime.errors import LoraError
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]




def _attn_q(comps) -> str:
    return next(n for n, _ in comps.unet.named_modules() if n.endswith("attn1.to_q"))


def sdxl_lora(path: Path) -> Path:
    """Kohya keys of an SDXL LoRA: SGM block names and a second text encoder."""
    from safetensors.torch import save_file

    unet = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    save_file({f"{unet}.lora_down.weight": torch.ones(4, 640), f"{unet}.lora_up.weight": torch.ones(640, 4),
               f"{te2}.lora_down.weight": torch.ones(4, 1280), f"{te2}.lora_up.weight": torch.ones(1280, 4)}, str(path))
    return path


def wrong_shape_lora(path: Path, comps) -> Path:
    """Diffusers keys of layers the model has, with shapes of a bigger model."""
    from safetensors.torch import save_file

    name = _attn_q(comps)
    save_file({f"unet.{name}.lora_A.weight": torch.ones(4, 999), f"unet.{name}.lora_B.weight": torch.ones(999, 4)},
              str(path))
    return path


def unknown_layer_lora(path: Path) -> Path:
    from safetensors.torch import save_file

    key = "unet.down_blocks.9.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{key}.lora_A.weight": torch.ones(4, 8), f"{key}.lora_B.weight": torch.ones(8, 4)}, str(path))
    return path


def text_encoder_lora(path: Path, comps, kohya: bool) -> Path:
    """Text-encoder weights of an SD 1.x-sized model (768 wide) for this model's attention layers."""
    from safetensors.torch import save_file

    name = next(n for n, _ in comps.text_encoder.named_modules() if n.endswith("self_attn.q_proj"))
    if kohya:
        key = "lora_te_" + name.replace(".", "_")
        sd = {f"{key}.lora_down.weight": torch.ones(4, 768), f"{key}.lora_up.weight": torch.ones(768, 4),
              f"{key}.alpha": torch.tensor(4.0)}
    else:
        sd = {f"text_encoder.{name}.lora_A.weight": torch.ones(4, 768),
              f"text_encoder.{name}.lora_B.weight": torch.ones(768, 4)}
    save_file(sd, str(path))
    return path


LIBRARY_TEXT = ("state_dict", "size mismatch", "was unsuccessful", "Please check", "torch.Size", "Traceback",
                "ignore_mismatched_sizes", "Loading weights", "infer state dict")


@pytest.mark.parametrize("kind", ["sdxl", "shapes", "layers", "te-shapes", "te-kohya"])
def test_lora_for_another_architecture_is_one_line(tiny_components, tmp_path, capfd, kind):
    path = {"sdxl": lambda: sdxl_lora(tmp_path / "xl.safetensors"),
            "shapes": lambda: wrong_shape_lora(tmp_path / "big.safetensors", tiny_components),
            "layers": lambda: unknown_layer_lora(tmp_path / "other.safetensors"),
            "te-shapes": lambda: text_encoder_lora(tmp_path / "te.safetensors", tiny_components, kohya=False),
            "te-kohya": lambda: text_encoder_lora(tmp_path / "tek.safetensors", tiny_components, kohya=True)}[kind]()
    before = {k: v.clone() for k, v in tiny_components.unet.state_dict().items() if "to_q" in k}
    errors: list[BaseException] = []

    def load() -> None:  # as live's background loader does (a thread, no command-line logging set-up)
        try:
            fuse_loras(tiny_components, [LoraSpec(str(path))])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=load)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], LoraError), errors
    msg = str(errors[0])
    assert "\n" not in msg and str(path) in msg and "does not fit this model" in msg, msg
    assert not any(s in msg for s in LIBRARY_TEXT), msg
    assert len(msg) < 400, msg
    if kind == "sdxl":
        assert "SDXL" in msg
    if kind == "shapes":
        assert "[4, 999]" in msg and "shape" in msg
    out, err = capfd.readouterr()
    assert not any(s in out + err for s in LIBRARY_TEXT) and "stylecam_0" not in out + err, out + err
    after = {k: v for k, v in tiny_components.unet.state_dict().items() if "to_q" in k}
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)  # untouched


def test_lora_misfit_through_the_image_command(tmp_path, tiny_components):
    """The real command line (subprocess, its own logging): exit 2, the one error line, no library text."""
    png = make_png(tmp_path / "in.png")
    lora = wrong_shape_lora(tmp_path / "xl.safetensors", tiny_components)  # found when the LoRA is fused
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "image", str(png), "-o", str(tmp_path / "o.png"),
                        "--model", "random:tiny", "--size", "64x64", "--lora", str(lora), "-q"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("stylecam: error:")]
    assert len(errors) == 1 and "xl.safetensors" in errors[0] and "does not fit" in errors[0], r.stderr
    assert not any(s in r.stderr for s in LIBRARY_TEXT), r.stderr
    assert not (tmp_path / "o.png").exists()


STYLE_TYPES = {
    'strength = "high"': "strength",
    "strength = true": "strength",
    "guidance = [1]": "guidance",
    "control_scale = {a = 1}": "control_scale",
    "prompt = 3": "prompt",
    "canny_low = 1.5": "canny_low",
    '[temporal]\nblend = "a"': "blend",
    '[[lora]]\npath = "a.safetensors"\nscale = "x"': "scale",
}


@pytest.mark.parametrize("body", list(STYLE_TYPES))
def test_style_file_wrong_types_name_the_field(capsys, tmp_path, body):
    png = make_png(tmp_path / "in.png")
    style = tmp_path / "mine.toml"
    style.write_text(body + "\n")
    code, err = run_cli(capsys, ["image", str(png), "-o", str(tmp_path / "o.png"), "--style", str(style),
                                 "--model", "random:tiny", "--size", "64x64"])
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("stylecam: error: "), err
    assert STYLE_TYPES[body] in lines[0] and "mine.toml" in lines[0], lines[0]
    assert "not supported between" not in lines[0] and "Error" not in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------------ the first run
def _demo(tmp_path: Path, *args: str, offline: bool = True, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("STYLECAM_FACE_MODEL", "HF_HUB_OFFLINE")}
    environ.update(STYLECAM_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"), **env)
    if offline:
        environ["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "realtime.cli", "demo", "--out-dir", str(tmp_path / "demo"), *args],
                          capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300)


def test_demo_takes_the_face_advice_it_gives(tmp_path, face_model_path):
    r = _demo(tmp_path, "--model", "random:tiny")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "--face-model" in r.stderr and "--no-face" in r.stderr
    for advice in (["--no-face"], ["--face-model", str(face_model_path)]):  # both accepted by `stylecam demo`
        r = _demo(tmp_path, "--model", "random:doesnotexist", *advice)
        assert r.returncode == 2 and "unrecognized arguments" not in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1 and "random:doesnotexist" in r.stderr, r.stderr


def test_demo_runs_with_no_face(tmp_path):
    r = _demo(tmp_path, "--model", "random:tiny", "--size", "64x64", "--seconds", "0.5", "--no-face", "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "demo_anime.mp4").is_file()


def test_hub_model_not_cached_offline_is_one_line_with_the_fixes(tmp_path, face_model_path):
    r = _demo(tmp_path, "--face-model", str(face_model_path))
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "stylecam models pull" in lines[0] and "random:tiny" in lines[0] and "sd-turbo" in lines[0], lines[0]
    assert "config.json" not in lines[0]
    assert not (tmp_path / "demo" / "demo.mp4").exists()


def test_no_network_is_one_line_once_before_the_demo_clip(tmp_path, face_model_path):
    """Online but the hub unreachable (a closed local port): one line saying so, before anything is made; no retry
    warnings, no HTTP logs."""
    r = _demo(tmp_path, "--face-model", str(face_model_path), offline=False, HF_ENDPOINT="http://127.0.0.1:9")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "cannot reach" in lines[0] and "random:tiny" in lines[0] and "stylecam models pull" in lines[0], lines[0]
    assert "config.json" not in lines[0]
    assert not (tmp_path / "demo" / "demo.mp4").exists()


def test_sdxl_lora_is_refused_before_any_model_loads(capsys, tmp_path, monkeypatch):
    import realtime.diffusion.build
    import realtime.diffusion.models

    def boom(*a, **k):
        raise AssertionError("a model load was reached before the LoRA was refused")

    monkeypatch.setattr(realtime.diffusion.models, "load_components", boom)
    monkeypatch.setattr(realtime.diffusion.build, "build_stylizer", boom)
    png = make_png(tmp_path / "in.png")
    lora = sdxl_lora(tmp_path / "xl.safetensors")
    code, err = run_cli(capsys, ["image", str(png), "-o", str(tmp_path / "o.png"), "--model", "random:tiny",
                                 "--lora", f"{lora}:0.8"])
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and "xl.safetensors" in lines[0] and "SDXL" in lines[0], err


def test_live_lora_change_through_stdin_is_one_warning_line(tiny_components, tmp_path, capfd, caplog):
    """`lora FILE` typed into a live session: read on the session's background thread by the stylizer's LoRA
    switcher; a LoRA for another model is one warning naming the file, the running style stays."""
    import logging
    import time

    from realtime.pipeline.controls import Command
    from test_live_control import _session

    path = wrong_shape_lora(tmp_path / "other.safetensors", tiny_components)

    from realtime.diffusion.lora_switch import LoraSwitcher

    session, proc, old = _session()
    old.loras = LoraSwitcher.for_components(tiny_components)
    before = {k: v.clone() for k, v in tiny_components.unet.state_dict().items()}
    with caplog.at_level(logging.INFO):
        assert session.apply(Command("lora", (LoraSpec(str(path)),)))
        for _ in range(1000):
            session.tick()
            if "not applied" in caplog.text:
                break
            time.sleep(0.01)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "other.safetensors" in warnings[0] and "does not fit" in warnings[0], warnings
    assert not any(s in warnings[0] for s in LIBRARY_TEXT), warnings[0]
    out, err = capfd.readouterr()
    assert not any(s in out + err for s in LIBRARY_TEXT), out + err
    assert proc.stylizer is old and session.style.loras == ()
    assert all(torch.equal(v, before[k]) for k, v in tiny_components.unet.state_dict().items())  # nothing written
