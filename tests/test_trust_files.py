"""Issue 19, data loss: an output is never one of the inputs, whatever the flags, in every command. The same file by
another spelling (a trailing space, ``./``, ``..``), a symlink, a hard link, another input of a batch, or any other file
the command reads (face model, style file, LoRA): exit 2 with one line, the input untouched, before any model loads."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from media_files import make_clip, make_png
from realtime.errors import OutputError
from realtime.files import check_output_path
from cli_run import run_cli

TINY = ["--model", "random:tiny", "--size", "64x64"]


pytestmark = pytest.mark.usefixtures("no_model_load")  # conftest: loading a model fails the test


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def refused(code: int, err: str) -> None:
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("stylecam: error: ") and "input" in lines[0], err


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_clip(tmp_path / "clip.mp4", n=4, size=(96, 64))


def spellings(path: Path, kind: str) -> Path | str:
    """Another name for ``path``: the same file reached another way."""
    if kind == "hardlink":
        other = path.with_name("hard" + path.suffix)
        os.link(path, other)
        return other
    if kind == "symlink":
        other = path.with_name("sym" + path.suffix)
        other.symlink_to(path.name)
        return other
    if kind == "dotdot":
        (path.parent / "sub").mkdir(exist_ok=True)
        return path.parent / "sub" / ".." / path.name
    return path


KINDS = ["same", "hardlink", "symlink", "dotdot"]


@pytest.mark.parametrize("kind", KINDS)
def test_check_output_path_knows_the_same_file(tmp_path, kind):
    from realtime.files import same_file

    src = tmp_path / "in.bin"
    src.write_bytes(b"keep me")
    other = Path(spellings(src, kind))
    assert same_file(other, src)
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(other, overwrite=True, inputs=(src,))
    assert not same_file(tmp_path / "other.bin", src)
    check_output_path(tmp_path / "other.bin", overwrite=True, inputs=(src, None))


@pytest.mark.parametrize("kind", [*KINDS, "trailing-space"])
def test_live_never_replaces_its_file_source(capsys, clip, kind):
    before = digest(clip)
    source = f"{clip} " if kind == "trailing-space" else str(clip)
    out = clip if kind == "trailing-space" else spellings(clip, kind)
    code, err = run_cli(capsys, ["live", "--source", source, "--output", str(out), "--overwrite", "--style", "none",
                                 "--no-stdin", "--no-face", "--frames", "2", "--no-pace"])
    refused(code, err)
    assert digest(clip) == before


@pytest.mark.parametrize("kind", ["hardlink", "symlink", "dotdot"])
def test_clip_never_replaces_its_input(capsys, clip, kind):
    before = digest(clip)
    out = spellings(clip, kind)
    code, err = run_cli(capsys, ["clip", str(clip), "-o", str(out), "--overwrite", "--no-face", *TINY])
    refused(code, err)
    assert digest(clip) == before


def test_clip_batch_never_writes_over_another_input(capsys, tmp_path):
    """a/x.mp4's output out/x.mp4 is a hard link of the other input c/y.mp4: refused, though no name repeats."""
    for d in ("a", "c", "out"):
        (tmp_path / d).mkdir()
    a = make_clip(tmp_path / "a" / "x.mp4", n=3, size=(96, 64))
    c = make_clip(tmp_path / "c" / "y.mp4", n=5, size=(96, 64))
    os.link(c, tmp_path / "out" / "x.mp4")
    before = digest(c)
    code, err = run_cli(capsys, ["clip", str(a), str(c), "-o", str(tmp_path / "out"), "--overwrite", "--no-face",
                                 *TINY])
    refused(code, err)
    assert digest(c) == before


def test_outputs_never_replace_other_files_the_command_reads(capsys, tmp_path, clip, face_model_path):
    """A face model, a style file or a LoRA named as the output (same file, another name): refused."""
    png = make_png(tmp_path / "in.png")
    style = tmp_path / "look.png"  # a style file with an image's name: read as TOML, and the image output's target
    style.write_text('prompt = "x"\n')
    face = tmp_path / "face.mp4"
    face.write_bytes(Path(face_model_path).read_bytes())
    cases = [
        ["image", str(png), "-o", str(style), "--overwrite", "--style", str(style), *TINY],
        ["clip", str(clip), "-o", str(face), "--overwrite", "--face-model", str(face), *TINY],
        ["live", "--source", str(clip), "--output", str(face), "--overwrite", "--face-model", str(face),
         "--style", "none", "--no-stdin", "--frames", "1"],
    ]
    for argv in cases:
        keep = {p: digest(p) for p in (style, face, clip, png)}
        code, err = run_cli(capsys, argv)
        refused(code, err)
        assert {p: digest(p) for p in keep} == keep, argv


def test_bench_json_is_never_its_source(capsys, clip, monkeypatch):
    import realtime.bench.runner

    monkeypatch.setattr(realtime.bench.runner, "run_benchmark", lambda *a, **k: pytest.fail("measuring started"))
    before = digest(clip)
    code, err = run_cli(capsys, ["bench", "--source", str(clip), "--json", str(spellings(clip, "hardlink")),
                                 "--overwrite", "--frames", "1", "--warmup", "0", "--no-face", *TINY])
    refused(code, err)
    assert digest(clip) == before


def _entry(module: str, argv: list[str], capsys) -> tuple[int, str]:
    import importlib

    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as e:
        code = int(e.code)
    return code, capsys.readouterr().err


def one_line_refusal(code: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "input" in lines[0], err


def test_sweep_never_writes_over_an_input_image(capsys, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    grid_named = make_png(out / "x_grid.png")  # the grid of input x.png is written to exactly this name
    x = make_png(out / "x.png")
    keep = digest(grid_named)
    code, err = _entry("realtime.cli.sweep", ["--input", str(grid_named), str(x), "--out-dir", str(out), "--overwrite",
                                              "--styles", "anime", *TINY], capsys)
    one_line_refusal(code, err)
    assert digest(grid_named) == keep


def test_evaluate_report_is_never_one_of_the_compared_files(capsys, tmp_path):
    a, b = make_png(tmp_path / "a.png"), make_png(tmp_path / "b.png")
    keep = digest(b)
    code, err = _entry("realtime.cli.evaluate", ["images", str(a), str(b), "--json", str(spellings(b, "hardlink")),
                                                 "--no-clip", "--no-face"], capsys)
    one_line_refusal(code, err)
    assert digest(b) == keep


def test_train_lora_out_is_never_a_training_image(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    img = make_png(data / "a.png")
    (data / "a.txt").write_text("a picture\n")
    out = tmp_path / "lora.safetensors"
    os.link(img, out)
    keep = digest(img)
    code, err = _entry("realtime.cli.train_lora", ["--data", str(data), "--out", str(out), "--overwrite",
                                                   "--model", "random:tiny", "--steps", "1", "--resolution", "64"],
                       capsys)
    one_line_refusal(code, err)
    assert digest(img) == keep


def test_bench_compare_plot_is_never_a_result_it_reads(capsys, tmp_path):
    a = tmp_path / "a.json"
    a.write_text("{}\n")
    keep = digest(a)
    code, err = run_cli(capsys, ["bench", "compare", str(a), "--plot", str(spellings(a, "symlink")), "--overwrite"])
    refused(code, err)
    assert digest(a) == keep
