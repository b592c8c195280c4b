"""`stylecam image`, `styles`, `doctor`, `--version`: behaviour and one-line errors with exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from realtime.cli import main

TINY = ["--model", "random:tiny", "--size", "64x64"]


@pytest.fixture()
def photo(tmp_path, astronaut):
    path = tmp_path / "photo.png"
    Image.fromarray(astronaut[::4, ::4]).save(path)  # 128x128
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = int(e.code)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("stylecam") or "error" in ln.lower()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_image_smoke_keeps_input_size(capsys, photo, tmp_path):
    out = tmp_path / "out.png"
    code, _, err = run(capsys, "image", str(photo), "-o", str(out), *TINY)
    assert code == 0, err
    result = np.asarray(Image.open(out))
    assert result.shape == (128, 128, 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    out2 = tmp_path / "wide.jpg"
    assert run(capsys, "image", str(photo), "-o", str(out2), *TINY, "--output-size", "160x90")[0] == 0
    assert Image.open(out2).size == (160, 90)


def test_image_passthrough_style_loads_no_model(capsys, photo, tmp_path):
    out = tmp_path / "same.png"
    code, _, err = run(capsys, "image", str(photo), "-o", str(out), "--style", "none", "--size", "128x128")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(photo)))
    code, _, err = run(capsys, "image", str(photo), "-o", str(tmp_path / "x.png"), "--style", "none", "--strength", "0.5")
    assert_one_line_error(code, err, "--strength")


def test_existing_output_needs_overwrite(capsys, photo, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "image", str(photo), "-o", str(out), *TINY)
    assert_one_line_error(code, err, "--overwrite")
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "case, extra, needle",
    [
        ("missing input", [], "not found"),
        ("not an image", [], "not a readable image"),
        ("size not multiple of 64", ["--size", "100x64"], "multiple of 64"),
        ("size out of range", ["--size", "4096x64"], "between 64 and 2048"),
        ("strength zero", ["--strength", "0"], "strength"),
        ("strength above one", ["--strength", "1.5"], "strength"),
        ("unknown style", ["--style", "nope"], "unknown style"),
        ("unknown random arch", ["--model", "random:huge"], "random:huge"),
        ("missing lora", ["--lora", "missing.safetensors:0.5"], "LoRA"),
        ("offline hub model", ["--model", "someone/some-model"], "HF_HUB_OFFLINE"),
        ("missing output dir", [], "does not exist"),
        ("cuda without cuda", ["--device", "cuda"], "--device cuda"),
        ("bad dtype", ["--dtype", "fp8"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, photo, tmp_path, case, extra, needle):
    src, dst = photo, tmp_path / "o.png"
    if case == "missing input":
        src = tmp_path / "nope.png"
    elif case == "not an image":
        src = tmp_path / "text.png"
        src.write_text("hello, I am text")
    elif case == "missing output dir":
        dst = tmp_path / "no" / "such" / "o.png"
    elif case == "cuda without cuda":
        import torch

        if torch.cuda.is_available():  # pragma: no cover
            pytest.skip("CUDA is available here")
    argv = ["image", str(src), "-o", str(dst), "--model", "random:tiny", "--size", "64x64", *extra]
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, needle)
    assert not dst.exists()


def test_corrupt_and_mismatched_lora(capsys, photo, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(64))
    code, _, err = run(capsys, "image", str(photo), "-o", str(tmp_path / "o.png"), *TINY, "--lora", str(bad))
    assert_one_line_error(code, err, "LoRA")
    import torch
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{key}.lora_down.weight": torch.ones(4, 77), f"{key}.lora_up.weight": torch.ones(77, 4)}, str(wrong))
    code, _, err = run(capsys, "image", str(photo), "-o", str(tmp_path / "o.png"), *TINY, "--lora", f"{wrong}:0.5")
    assert_one_line_error(code, err, "does not fit")
    assert not (tmp_path / "o.png").exists()


def test_output_dir_that_is_a_file(capsys, photo, tmp_path):
    """Runs as root too (unlike the permission test below)."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    code, _, err = run(capsys, "image", str(photo), "-o", str(not_a_dir / "o.png"), *TINY)
    assert_one_line_error(code, err, "is a file, not a directory")
    assert not_a_dir.read_text() == ""


def test_unwritable_output_dir(capsys, photo, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere: the permission check cannot fail here")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = run(capsys, "image", str(photo), "-o", str(ro / "o.png"), *TINY)
    assert_one_line_error(code, err, "not writable")


def test_styles_version_doctor(capsys):
    code, out, _ = run(capsys, "styles")
    assert code == 0 and "anime-soft" in out and "watercolor" in out and "none" in out
    code, out, _ = run(capsys, "styles", "--json")
    import json

    assert {s["name"] for s in json.loads(out)} >= {"anime", "cel-shaded"}
    code, out, _ = run(capsys, "doctor")
    assert code == 0
    for what in ("torch", "tensorrt", "virtual camera", "face model", "HF_HUB_OFFLINE"):
        assert what in out


def test_version_and_help_are_fast_and_clean():
    r = subprocess.run([sys.executable, "-m", "realtime.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("stylecam ")
    r = subprocess.run([sys.executable, "-c", "import sys, realtime.cli; print('torch' in sys.modules, 'diffusers' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"]  # --help never imports the heavy libraries


def test_every_command_registers_with_the_one_add_parser_shape():
    """cli/main registers each command module by a plain import; every one has add_parser(subparsers, add_global)."""
    import inspect

    from realtime.cli import bench, build, clip, demo, devices, doctor, generate, image, live, models, panel, styles
    from realtime.cli.main import build_parser

    for module in (bench, build, clip, demo, devices, doctor, generate, image, live, models, panel, styles):
        assert list(inspect.signature(module.add_parser).parameters) == ["subparsers", "add_global"], module.__name__
    commands = build_parser()._subparsers._group_actions[0].choices
    assert list(commands) == ["image", "generate", "styles", "doctor", "clip", "build", "cache", "live", "panel",
                              "devices", "demo", "bench", "models"]


def test_temporal_options_are_one_mapping_for_the_style_and_the_live_session():
    import argparse

    from realtime.cli.options import style_overrides, temporal_options
    from realtime.errors import UsageError

    base = dict(prompt=None, negative_prompt=None, strength=None, control_scale=None, guidance=None, lora=[],
                canny_low=None, canny_high=None)
    args = argparse.Namespace(**base, blend=None, no_blend=True, motion_threshold=0.3, no_motion_adaptive=True,
                              similarity_filter=None, similarity_threshold=0.9, max_skips=None)
    assert temporal_options(args) == {"blend": 1.0, "motion_adaptive": False, "motion_threshold": 0.3,
                                      "similarity_threshold": 0.9}
    overrides = style_overrides(args)
    assert {k[len("temporal_"):]: v for k, v in overrides.items() if k.startswith("temporal_")} == temporal_options(args)
    assert "loras" not in style_overrides(args, loras=False)
    assert temporal_options(argparse.Namespace(**base)) == {}  # commands without the temporal options
    with pytest.raises(UsageError, match="--blend and --no-blend"):
        temporal_options(argparse.Namespace(blend=0.5, no_blend=True))


def test_input_and_output_checks_live_in_files(tmp_path):
    from realtime.errors import InputNotFound, OutputError
    from realtime.files import check_input_file, check_output_path

    src = tmp_path / "in.png"
    src.write_bytes(b"x")
    assert check_input_file(src) == src
    with pytest.raises(InputNotFound, match="--thing not found"):
        check_input_file(tmp_path / "gone.png", "--thing")
    with pytest.raises(InputNotFound, match="is not a file"):
        check_input_file(tmp_path)
    check_output_path(tmp_path / "new.png", overwrite=False)
    for path, kw, needle in ((src, {}, "exists: pass --overwrite"), (src, {"inputs": (src,)}, "is the input"),
                             (tmp_path, {}, "is a directory"), (tmp_path / "no" / "x.png", {}, "does not exist"),
                             (src / "x.png", {}, "is a file, not a directory")):
        with pytest.raises(OutputError, match=needle):
            check_output_path(path, overwrite=False, **kw)
    check_output_path(src, overwrite=True)
