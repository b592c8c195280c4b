"""Every input checked before any model loads (realtime.pipeline.preflight): for each command and each bad input, exit 2, one
stderr line, the model loader never reached, nothing left in the output directory. A few cases run in a subprocess
with the real logging set-up, so "nothing before the line" (no CPU warning, no INFO preamble) is checked for real."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media_files import make_audio_only, make_clip, make_truncated
from realtime.config import LoraSpec, load_style
from realtime.errors import LoraError, UsageError
from realtime.pipeline import preflight
from cli_run import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "random:tiny", "--size", "64x64"]


pytestmark = pytest.mark.usefixtures("no_model_load")  # conftest: loading a model fails the test


def _safetensors(path: Path, header: dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut) -> dict[str, Path]:
    """The bad (and a few good) inputs of the issue, built once."""
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    good = make_clip(d / "good.mp4", n=6, size=(96, 64))
    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    files = {
        "png": d / "astro.png", "good": good, "text": d / "notavideo.mp4", "truncated": make_truncated(good, d / "cut.mp4", 0.3),
        "audio": make_audio_only(d / "tone.m4a"), "notimage": d / "photo.png",
        "corrupt_lora": d / "corrupt.safetensors",
        "cut_lora": _safetensors(d / "cut.safetensors", {"unet.a.lora_A.weight": entry}, b"\0" * 8),
        "nolora": _safetensors(d / "plain.safetensors", {"unet.a.weight": entry}, b"\0" * 16),
        "lora": _safetensors(d / "ok.safetensors", {"__metadata__": {"format": "pt"}, "unet.a.lora_A.weight": entry}, b"\0" * 16),
        "pickle_lora": d / "old.ckpt", "bad_style": d / "bad.toml",
    }
    Image.fromarray(astronaut[::4, ::4]).save(files["png"])
    files["text"].write_text("hello, not a video\n" * 20)
    files["notimage"].write_text("not an image either\n")
    files["corrupt_lora"].write_bytes(os.urandom(100))
    files["pickle_lora"].write_bytes(b"\x80\x04 not loaded")
    files["bad_style"].write_text('prompt = "p"\nstrength = "high"\n')
    return files




def assert_one_line(code: int, err: str, needle: str, caplog=None) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylecam: error: "), err
    assert needle in lines[0], lines[0]
    if caplog is not None:  # nothing logged before the error (in-process, the records show what would be printed)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


def _image_case(kind: str, f: dict[str, Path], out: Path) -> tuple[list[str], str]:
    dst = str(out / "x.png")
    cases = {
        "missing-input": ([str(out.parent / "nope.png"), "-o", dst], "not found"),
        "not-an-image": ([str(f["notimage"]), "-o", dst], "not a readable image"),
        "missing-lora": ([str(f["png"]), "-o", dst, "--lora", "missing.safetensors"], "LoRA file not found"),
        "corrupt-lora": ([str(f["png"]), "-o", dst, "--lora", str(f["corrupt_lora"])], "not a readable safetensors"),
        "truncated-lora": ([str(f["png"]), "-o", dst, "--lora", str(f["cut_lora"])], "truncated"),
        "no-lora-keys": ([str(f["png"]), "-o", dst, "--lora", str(f["nolora"])], "no LoRA weights"),
        "pickle-lora": ([str(f["png"]), "-o", dst, "--lora", str(f["pickle_lora"])], "--allow-pickle"),
        "bad-style": ([str(f["png"]), "-o", dst, "--style", str(f["bad_style"])], "strength='high': must be a number in (0.0, 1.0]"),
        "missing-model": ([str(f["png"]), "-o", dst, "--model", str(out.parent / "no-model")], "not found"),
        "unknown-random": ([str(f["png"]), "-o", dst, "--model", "random:huge"], "random:tiny"),
        "missing-controlnet": ([str(f["png"]), "-o", dst, "--controlnet", "./no-cnet"], "--controlnet"),
        "hub-not-cached": ([str(f["png"]), "-o", dst, "--model", "stylecam-tests/not-cached", "--controlnet", "none"],
                           "not in the Hugging Face cache"),
        "output-suffix": ([str(f["png"]), "-o", str(out / "x.xyz")], "unknown image type"),
        "output-is-input": ([str(f["png"]), "-o", str(f["png"]), "--overwrite"], "is the input"),
    }
    args, needle = cases[kind]
    return args + (TINY if "--model" not in args else ["--size", "64x64"]), needle


IMAGE_CASES = ["missing-input", "not-an-image", "missing-lora", "corrupt-lora", "truncated-lora", "no-lora-keys",
               "pickle-lora", "bad-style", "missing-model", "unknown-random", "missing-controlnet", "hub-not-cached",
               "output-suffix", "output-is-input"]


@pytest.mark.parametrize("kind", IMAGE_CASES)
def test_image_bad_input(capsys, caplog, inputs, tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    args, needle = _image_case(kind, inputs, out)
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, ["image", *args])
    assert_one_line(code, err, needle, caplog)
    assert list(out.iterdir()) == []


def test_image_existing_output_is_kept(capsys, inputs, tmp_path):
    out = tmp_path / "x.png"
    out.write_bytes(b"keep me")
    code, err = run_cli(capsys, ["image", str(inputs["png"]), "-o", str(out), *TINY, "--lora", "missing.safetensors"])
    assert_one_line(code, err, "--overwrite")
    assert out.read_bytes() == b"keep me"


CLIP_CASES = {  # every one with an explicit --size: before, a clip's errors then came only after the model load
    "text": (lambda f: [str(f["text"])], "not a readable video"),
    "truncated": (lambda f: [str(f["truncated"])], "not a readable video"),
    "audio-only": (lambda f: [str(f["audio"])], "no video stream"),
    "missing-lora": (lambda f: [str(f["good"]), "--lora", "missing.safetensors"], "LoRA file not found"),
    "corrupt-lora": (lambda f: [str(f["good"]), "--lora", str(f["corrupt_lora"])], "not a readable safetensors"),
    "bad-style": (lambda f: [str(f["good"]), "--style", str(f["bad_style"])], "strength"),
    "container": (lambda f: [str(f["good"]), "--output-name", "out.webm", "--codec", "libx264"], "cannot hold libx264"),
    "no-container": (lambda f: [str(f["good"]), "--output-name", "out.what"], "container format"),
}


@pytest.mark.parametrize("kind", list(CLIP_CASES))
def test_clip_bad_input(capsys, caplog, inputs, tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    make_args, needle = CLIP_CASES[kind]
    args = make_args(inputs)
    name = "out.mp4"
    if "--output-name" in args:
        name = args.pop(args.index("--output-name") + 1)
        args.remove("--output-name")
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, ["clip", *args, "-o", str(out / name), *TINY])
    assert_one_line(code, err, needle, caplog)
    assert list(out.iterdir()) == []


def test_clip_missing_face_model_before_the_models(capsys, inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAM_FACE_MODEL", str(tmp_path / "gone.tflite"))
    code, err = run_cli(capsys, ["clip", str(inputs["good"]), "-o", str(tmp_path / "o.mp4"), *TINY])
    assert_one_line(code, err, "gone.tflite")
    assert not (tmp_path / "o.mp4").exists()


def test_clip_batch_reports_each_bad_file_before_any_model(capsys, caplog, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, ["clip", str(inputs["text"]), str(inputs["audio"]), "-o", str(out), *TINY])
    assert code == 1, err  # a batch: each failure on its own line, exit 1 (docs/design.md §7); no model was loaded
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "notavideo.mp4" in errors[0] and "no video stream" in errors[1]
    assert list(out.iterdir()) == []


LIVE_CASES = {
    "source-text": (lambda f, o: ["--source", str(f["text"]), "--output", str(o / "l.mp4")], "not a readable video"),
    "source-audio": (lambda f, o: ["--source", str(f["audio"]), "--output", str(o / "l.mp4")], "no video stream"),
    "missing-lora": (lambda f, o: ["--source", str(f["good"]), "--output", str(o / "l.mp4"), "--lora", "gone.safetensors"], "LoRA file not found"),
    "output-container": (lambda f, o: ["--source", str(f["good"]), "--output", str(o / "l.gif")], "image format"),
    "output-is-source": (lambda f, o: ["--source", str(f["good"]), "--output", str(f["good"]), "--overwrite"], "is the input"),
}


@pytest.mark.parametrize("kind", list(LIVE_CASES))
def test_live_bad_input(capsys, caplog, inputs, tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    make_args, needle = LIVE_CASES[kind]
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, ["live", *make_args(inputs, out), "--no-stdin", "--frames", "1", *TINY])
    assert_one_line(code, err, needle, caplog)
    assert list(out.iterdir()) == []


def _trt_available() -> bool:
    import torch
    from engines import get_backend

    return get_backend("tensorrt").is_available(torch.device("cpu"))[0]


BENCH_CASES = {
    "missing-lora": (["--lora", "gone.safetensors"], "LoRA file not found"),
    "source-text": (["--source", "{text}"], "not a readable video"),
    "face-model": (["--face-model", "{out}/gone.tflite"], "gone.tflite"),
    "json-exists": (["--json", "{out}/keep.json"], "--overwrite"),
    "second-backend": (["--backends", "eager,tensorrt"], "TensorRT"),
    "third-backend": (["--backends", "eager,compile,tensorrt"], "TensorRT"),  # issue 19: nothing measured first
}


@pytest.mark.parametrize("kind", list(BENCH_CASES))
def test_bench_bad_input_before_anything_is_measured(capsys, inputs, tmp_path, kind, monkeypatch):
    import realtime.bench.runner

    if kind in ("second-backend", "third-backend") and _trt_available():  # pragma: no cover - a machine with TensorRT
        pytest.skip("TensorRT is available here")
    monkeypatch.setattr(realtime.bench.runner, "run_benchmark", lambda *a, **k: pytest.fail("measuring started"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.json").write_text("{}")
    args, needle = BENCH_CASES[kind]
    args = [a.format(text=inputs["text"], out=out) for a in args]
    code, err = run_cli(capsys, ["bench", *args, "--frames", "1", "--warmup", "0", *TINY])
    assert_one_line(code, err, needle)
    assert [p.name for p in out.iterdir()] == ["keep.json"] and (out / "keep.json").read_text() == "{}"


def test_build_checks_loras_style_and_backend_first(capsys, caplog, inputs):
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, ["build", *TINY, "--backend", "onnxruntime", "--lora", "gone.safetensors"])
        assert_one_line(code, err, "LoRA file not found", caplog)
        code, err = run_cli(capsys, ["build", *TINY, "--style", str(inputs["bad_style"])])
        assert_one_line(code, err, "strength", caplog)
        if not _trt_available():
            code, err = run_cli(capsys, ["build", *TINY, "--backend", "tensorrt"])
            assert_one_line(code, err, "TensorRT", caplog)  # no "building the engine" line before it


@pytest.mark.parametrize("kind", ["bad-style", "missing-model", "bad-size", "out-dir-under-a-file"])
def test_demo_checks_before_making_the_clip(capsys, caplog, inputs, tmp_path, kind):
    out = tmp_path / "demo"
    args = {"bad-style": ["--style", str(inputs["bad_style"])], "missing-model": ["--model", str(tmp_path / "nomodel")],
            "bad-size": ["--model", "random:tiny", "--size", "65x64"], "out-dir-under-a-file": ["--model", "random:tiny"]}[kind]
    needle = {"bad-style": "strength", "missing-model": "not found", "bad-size": "65", "out-dir-under-a-file": "is a file"}[kind]
    if kind == "out-dir-under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "demo"
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, ["demo", "--out-dir", str(out), "--seconds", "1", *args])
    assert_one_line(code, err, needle, caplog)
    assert not out.exists()  # not even the demo clip was made


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_preflight", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("kind", ["missing-lora", "corrupt-lora", "bad-image", "missing-model"])
def test_sweep_bad_input(capsys, caplog, inputs, tmp_path, kind):
    out = tmp_path / "sweep"
    args = {"missing-lora": ["--lora", "gone.safetensors", "--lora-scales", "0,1"],
            "corrupt-lora": ["--lora", str(inputs["corrupt_lora"])],
            "bad-image": ["--input", str(inputs["notimage"])],
            "missing-model": ["--models", f"random:tiny,{tmp_path / 'nomodel'}"]}[kind]
    needle = {"missing-lora": "LoRA file not found", "corrupt-lora": "not a readable safetensors",
              "bad-image": "not a readable image", "missing-model": "nomodel"}[kind]
    image = [] if "--input" in args else ["--input", str(inputs["png"])]
    model = [] if "--models" in args else ["--model", "random:tiny"]
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, [*image, *args, "--out-dir", str(out), *model, "--size", "64x64"], _script("sweep"))
    assert_one_line(code, err, needle, caplog)  # the "sweep: N settings" line comes only after the checks
    assert not out.exists()


@pytest.mark.parametrize("kind", ["bad-data-image", "missing-validation-image", "missing-model"])
def test_train_lora_bad_input(capsys, caplog, inputs, tmp_path, kind):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(inputs["png"].read_bytes())
    args = ["--model", "random:tiny", "--data", str(data), "--default-caption", "x", "--steps", "1",
            "--resolution", "64", "--out", str(tmp_path / "out" / "l.safetensors")]
    (tmp_path / "out").mkdir()
    if kind == "bad-data-image":
        (data / "b.png").write_text("truncated nonsense")
        needle = "b.png is not a readable image"
    elif kind == "missing-validation-image":
        args += ["--validation-image", str(tmp_path / "me.jpg"), "--validate-every", "1"]
        needle = "--validation-image not found"
    else:
        args[1] = str(tmp_path / "nomodel")
        needle = "nomodel"
    with caplog.at_level(logging.INFO):
        code, err = run_cli(capsys, args, _script("train_lora"))
    assert_one_line(code, err, needle, caplog)
    assert list((tmp_path / "out").iterdir()) == []


def test_evaluate_clip_probes_both_files_before_the_models(capsys, inputs, tmp_path, monkeypatch):
    import realtime.research.evaluation

    monkeypatch.setattr(realtime.research.evaluation, "open_clip_scorer", lambda *a: pytest.fail("CLIP reached"))
    monkeypatch.setattr(realtime.research.evaluation, "open_face_scorer", lambda *a: pytest.fail("face model reached"))
    evaluate = _script("evaluate")
    js = tmp_path / "r.json"
    code, err = run_cli(capsys, ["clip", str(inputs["good"]), str(inputs["truncated"]), "--json", str(js)], evaluate)
    assert_one_line(code, err, "cut.mp4")
    code, err = run_cli(capsys, ["clip", str(inputs["audio"]), str(inputs["good"]), "--json", str(js)], evaluate)
    assert_one_line(code, err, "no video stream")
    assert not js.exists()


# ------------------------------------------------------------------------------------------------ the helpers
def test_safetensors_header_is_read_without_loading_tensors(inputs):
    header = preflight.read_safetensors_header(inputs["lora"])
    assert header["unet.a.lora_A.weight"]["shape"] == [2, 2] and "__metadata__" in header
    assert preflight.check_lora(LoraSpec(str(inputs["lora"]))) == inputs["lora"]
    assert "torch" not in json.dumps(header)
    with pytest.raises(LoraError, match="not JSON"):
        preflight.read_safetensors_header(_safetensors_raw(inputs["lora"].parent / "nj.safetensors", b"{nope"))
    with pytest.raises(LoraError, match="too short"):
        preflight.read_safetensors_header(_safetensors_raw(inputs["lora"].parent / "short.safetensors", None))


def _safetensors_raw(path: Path, raw: bytes | None) -> Path:
    path.write_bytes(b"\1\2" if raw is None else struct.pack("<Q", len(raw)) + raw)
    return path


def test_real_safetensors_file_passes(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "real.safetensors"
    save_file({"unet.x.lora_B.weight": np.ones((4, 2), np.float32), "unet.x.lora_A.weight": np.zeros((2, 4), np.float16)},
              str(path))
    assert set(preflight.read_safetensors_header(path)) >= {"unet.x.lora_A.weight", "unet.x.lora_B.weight"}
    assert preflight.check_lora(LoraSpec(str(path))) == path
    path.write_bytes(path.read_bytes()[:-8])  # cut the last tensor short
    with pytest.raises(LoraError, match="truncated"):
        preflight.check_lora(LoraSpec(str(path)))


def test_hub_and_url_loras_checked_only_when_cached(monkeypatch, tmp_path, inputs):
    import huggingface_hub

    import realtime.diffusion.lora as lora

    hub = LoraSpec("someone/styles/anime.safetensors")
    with pytest.raises(LoraError, match="HF_HUB_OFFLINE"):  # offline and not cached
        preflight.check_lora(hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, filename: None)
    assert preflight.check_lora(hub) is None  # online, not cached: downloaded when the models load, as before
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, filename: str(inputs["corrupt_lora"]))
    with pytest.raises(LoraError, match="not a readable safetensors"):  # cached: its header is read
        preflight.check_lora(hub)
    url = LoraSpec("https://example.invalid/x/style.safetensors")
    assert preflight.check_lora(url) is None
    target = lora._url_target(url.path)
    target.parent.mkdir(parents=True)
    target.write_bytes(inputs["corrupt_lora"].read_bytes())
    with pytest.raises(LoraError, match="not a readable safetensors"):
        preflight.check_lora(url)


@pytest.mark.parametrize("text, needle", [
    ('strength = "high"', "strength='high': must be a number in (0.0, 1.0]"),
    ("prompt = 5", "prompt=5: must be a string"),
    ('canny_low = "a"\ncanny_high = 9', "canny_low='a': must be an integer in [0, 255]"),
    ('[temporal]\nblend = "x"', "temporal.blend='x': must be a number in (0.0, 1.0]"),
    ('[temporal]\nmotion_adaptive = "yes"', "temporal.motion_adaptive='yes': must be true or false"),
    ('[[lora]]\npath = "a.safetensors"\nscale = "strong"', "scale='strong': must be a number in [-10, 10]"),
])
def test_style_file_errors_name_field_value_and_what_is_allowed(tmp_path, text, needle):
    path = tmp_path / "mine.toml"
    path.write_text(('prompt = "p"\n' if not text.startswith("prompt") else "") + text + "\n")
    with pytest.raises(UsageError) as e:
        load_style(str(path))
    assert needle in str(e.value) and str(path) in str(e.value) and "not supported" not in str(e.value)


# ------------------------------------------------------------------- the real logging set-up, in a subprocess
_WRAPPER = ("import os, sys, realtime.diffusion.models as m, realtime.diffusion.build as p\n"
            "def boom(*a, **k): os._exit(99)\n"
            "m.load_components = boom; p.build_stylizer = boom\n"
            "from realtime.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("case", ["image-lora", "clip-truncated", "live-lora", "bench-lora"])
def test_nothing_before_the_error_line_with_the_real_logging(inputs, tmp_path, case):
    out = tmp_path / "out"
    out.mkdir()
    argv = {
        "image-lora": ["image", str(inputs["png"]), "-o", str(out / "x.png"), "--model", "random:sd-turbo",
                       "--lora", "missing.safetensors"],
        "clip-truncated": ["clip", str(inputs["truncated"]), "-o", str(out / "x.mp4"), *TINY],
        "live-lora": ["live", "--source", str(inputs["good"]), "--output", str(out / "x.mp4"), "--lora",
                      str(inputs["corrupt_lora"]), "--no-stdin", *TINY],
        "bench-lora": ["bench", "--lora", "missing.safetensors", *TINY],
    }[case]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 2, r.stderr  # 99: the model loader was reached
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("stylecam: error: "), r.stderr
    assert r.stdout == "" and list(out.iterdir()) == []
