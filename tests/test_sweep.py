"""scripts/sweep.py and realtime.research.sweep / realtime.research.grid: outputs, labelled grid, settings files, LoRA scales fused into
pristine weights, one-line errors. Offline, CPU, random:tiny at 64x64."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realtime.geometry import Size
from realtime.research.grid import band_height, cell_size, make_grid, plan_layout

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sweep.py"
TINY = ["--model", "random:tiny", "--size", "64x64"]


def load_script():
    spec = importlib.util.spec_from_file_location("sweep_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = load_script().main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = int(e.code)
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut) -> Path:
    path = tmp_path_factory.mktemp("in") / "astro.png"
    Image.fromarray(astronaut[::4, ::4]).save(path)  # 128x128
    return path


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------------------------------------------ grid
def test_grid_layout_size_and_labels():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    labels = [["input", "x.png"], ["#01 anime", "ctrl 1", "a label far too long to fit in one cell at this width " * 3]] + [["#0%d" % i] for i in range(2, 5)]
    grid = make_grid(images, labels, columns=3, min_width=100)
    cell = cell_size(Size(64, 64), 100)
    band = band_height(3)
    assert cell == Size(128, 128) and band > 0
    assert grid.shape == (2 * (band + 128), 3 * 128, 3) and grid.dtype == np.uint8
    assert plan_layout(5, Size(64, 64), 3, columns=3, min_width=100).size == Size(3 * 128, 2 * (band + 128))
    # images enlarged by pixel repetition, below their bands, in row-major order
    assert np.array_equal(grid[band : band + 128, 0:128], np.repeat(np.repeat(images[0], 2, 0), 2, 1))
    assert np.array_equal(grid[2 * band + 128 : 2 * band + 256, 128:256], np.repeat(np.repeat(images[4], 2, 0), 2, 1))
    for x in (0, 128, 256):  # every label band of the first row holds dark text on white
        region = grid[:band, x : x + 128]
        assert region.min() < 100 and np.median(region) == 255
    assert (grid[band + 128 :, 256:] == 255).all()  # the unused sixth cell is white


# ----------------------------------------------------------------------------------------------- the sweep
def test_default_sweep_writes_five_presets_grid_and_settings(capsys, photo, tmp_path):
    out = tmp_path / "sweep"
    code, err = sweep(capsys, "--input", str(photo), "--out-dir", str(out), *TINY)
    assert code == 0, err
    files = sorted(p.name for p in (out / "astro").iterdir())
    assert files == ["01_anime.png", "02_anime-soft.png", "03_soft-render.png", "04_cel-shaded.png", "05_vibrant.png"]
    outputs = [read_png(out / "astro" / f) for f in files]
    assert all(o.shape == (128, 128, 3) for o in outputs)  # the input's size, like `stylecam image`
    assert len({o.tobytes() for o in outputs}) == 5  # five different settings, five different pictures

    grid = read_png(out / "astro_grid.png")
    band = band_height(3)  # input: 3 lines; each preset: number+style, ctrl, cfg+strength
    assert grid.shape == (band + 256, 6 * 256, 3)  # one row: input + 5 cells, 64x64 enlarged x4
    crop = np.repeat(np.repeat(np.asarray(Image.open(photo).resize((64, 64), Image.BOX)), 4, 0), 4, 1)
    assert np.abs(grid[band:, :256].astype(int) - crop).mean() < 3  # the input comes first
    for c in range(6):
        assert grid[:band, c * 256 : (c + 1) * 256].min() < 100  # each title is drawn

    doc = json.loads((out / "settings.json").read_text())
    rows = list(csv.DictReader((out / "settings.csv").open()))
    assert len(doc["outputs"]) == len(rows) == 5
    assert [r["output"] for r in rows] == [f"astro/{f}" for f in files] == [r["output"] for r in doc["outputs"]]
    assert [r["style"] for r in rows] == ["anime", "anime-soft", "soft-render", "cel-shaded", "vibrant"]
    assert [float(r["control_scale"]) for r in rows] == [1.0, 0.5, 0.8, 1.1, 0.9]
    assert [int(r["timestep"]) for r in rows] == [749, 749, 599, 799, 799]
    assert all(r["input"] == str(photo) and r["model"] == "random:tiny" and r["model_size"] == "64x64" for r in rows)
    assert doc["swept"] == ["style"] and doc["grids"] == {str(photo): "astro_grid.png"}
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_lora_scales_are_fused_into_pristine_weights(capsys, photo, tmp_path, _tiny_components_master):
    from lora_files import write_diffusers_lora

    lora = write_diffusers_lora(_tiny_components_master.unet, tmp_path / "style.safetensors")
    out = tmp_path / "grid"
    code, err = sweep(capsys, "--input", str(photo), "--out-dir", str(out), *TINY, "--styles", "anime",
                      "--lora", str(lora), "--lora-scales", "1,0", "--control-scales", "0,1", "--grid-columns", "3")
    assert code == 0, err
    rows = list(csv.DictReader((out / "settings.csv").open()))
    assert [(float(r["lora_scale"]), float(r["control_scale"])) for r in rows] == [(1, 0), (1, 1), (0, 0), (0, 1)]
    assert [r["output"] for r in rows] == ["astro/01_anime-lora1-cs0.png", "astro/02_anime-lora1-cs1.png",
                                          "astro/03_anime-lora0-cs0.png", "astro/04_anime-lora0-cs1.png"]
    assert rows[0]["loras"] == f"{lora}:1" and rows[3]["loras"] == f"{lora}:0"
    grid = read_png(out / "astro_grid.png")
    assert grid.shape == (2 * (band_height(3) + 256), 3 * 256, 3)  # 5 cells in rows of 3

    # Without LoRA, the same settings: scale 0 (fused after scale 1) must match exactly, scale 1 must not.
    base = tmp_path / "base"
    code, err = sweep(capsys, "--input", str(photo), "--out-dir", str(base), *TINY, "--styles", "anime",
                      "--control-scales", "0,1")
    assert code == 0, err
    plain = [read_png(base / "astro" / n) for n in ("01_anime-cs0.png", "02_anime-cs1.png")]
    swept = [read_png(out / r["output"]) for r in rows]
    assert np.array_equal(swept[2], plain[0]) and np.array_equal(swept[3], plain[1])
    assert not np.array_equal(swept[0], plain[0]) and not np.array_equal(swept[1], plain[1])


def test_several_inputs_and_models(capsys, photo, tmp_path, astronaut):
    second = tmp_path / "wide.jpg"
    Image.fromarray(astronaut[100:196, :256:2]).save(second)  # 128x96
    out = tmp_path / "multi"
    code, err = sweep(capsys, "--input", str(photo), str(second), "--out-dir", str(out), "--size", "64x64",
                      "--models", "random:tiny,random:tiny", "--strengths", "0.5,1")
    assert code == 0, err
    rows = json.loads((out / "settings.json").read_text())["outputs"]
    assert len(rows) == 8 and [r["input"] for r in rows] == [str(photo)] * 4 + [str(second)] * 4
    assert [r["strength"] for r in rows[:4]] == [0.5, 1.0, 0.5, 1.0]
    assert [r["timestep"] for r in rows[:4]] == [499, 999, 499, 999]
    assert rows[4]["output"] == "wide/01_anime-random_tiny-s0.5.png" and rows[4]["output_size"] == "128x96"
    assert read_png(out / rows[4]["output"]).shape == (96, 128, 3)
    # the same model and seed twice: the same pictures
    assert np.array_equal(read_png(out / rows[0]["output"]), read_png(out / rows[2]["output"]))
    grid = read_png(out / "wide_grid.png")
    assert grid.shape == (band_height(4) + 256, 5 * 256, 3)  # the model line makes the titles 4 lines high


def test_existing_outputs_need_overwrite(capsys, photo, tmp_path):
    out = tmp_path / "again"
    (out / "astro").mkdir(parents=True)
    marker = out / "astro" / "01_anime-cs0.5.png"
    marker.write_bytes(b"keep me")
    args = ["--input", str(photo), "--out-dir", str(out), *TINY, "--control-scales", "0.5"]
    code, err = sweep(capsys, *args)
    one_line_error(code, err, "--overwrite")
    assert marker.read_bytes() == b"keep me" and sorted(p.name for p in out.rglob("*")) == ["01_anime-cs0.5.png", "astro"]
    code, err = sweep(capsys, *args, "--overwrite")
    assert code == 0, err
    assert read_png(marker).shape == (128, 128, 3)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--strength", "0.5", "--strengths", "0.5,0.7"], "--strength and --strengths"),
        (["--lora-scales", "0,1"], "--lora-scales needs at least one --lora"),
        (["--control-scales", "0,x"], "every item must be a number"),
        (["--strengths", "0.5,1.5"], "strength"),
        (["--styles", "anime,nope"], "unknown style 'nope'"),
        (["--styles", "none"], "pass-through"),
        (["--backend", "onnxruntime"], "--backend onnxruntime"),
        (["--size", "100x64"], "multiple of 64"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, photo, tmp_path, extra, needle):
    code, err = sweep(capsys, "--input", str(photo), "--out-dir", str(tmp_path / "o"), "--model", "random:tiny", *extra)
    one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_bad_inputs_are_one_line_errors(capsys, photo, tmp_path):
    code, err = sweep(capsys, "--input", str(tmp_path / "missing.png"), "--out-dir", str(tmp_path / "o"), *TINY)
    one_line_error(code, err, "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    code, err = sweep(capsys, "--input", str(photo), str(text), "--out-dir", str(tmp_path / "o"), *TINY)
    one_line_error(code, err, "not a readable image")
    other = tmp_path / "b" / "astro.png"
    other.parent.mkdir()
    other.write_bytes(photo.read_bytes())
    code, err = sweep(capsys, "--input", str(photo), str(other), "--out-dir", str(tmp_path / "o"), *TINY)
    one_line_error(code, err, "several inputs are named 'astro'")
    assert not (tmp_path / "o").exists()


def test_help_explains_the_axes():
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    for option in ("--input", "--out-dir", "--lora-scales", "--control-scales", "--guidances", "--strengths",
                   "--styles", "--models", "--model", "--lora", "five seed experiments"):
        assert option in r.stdout


def test_plan_sweep_takes_plain_values_not_a_namespace():
    """research.sweep knows nothing of argparse: the shared options come as a frozen SweepBase."""
    import pytest as _pytest

    from realtime.config import LoraSpec
    from realtime.errors import UsageError
    from realtime.research.sweep import SweepAxes, SweepBase, plan_sweep

    base = SweepBase(model="random:tiny", lora=("a.safetensors:0.5",), overrides={"guidance": None, "prompt": "p"})
    cells = plan_sweep(base, SweepAxes(lora_scales=(0.0, 1.0), strengths=(0.6, 0.9)))
    assert [(c.lora_scale, c.style.strength) for c in cells] == [(0.0, 0.6), (0.0, 0.9), (1.0, 0.6), (1.0, 0.9)]
    assert all(c.style.prompt == "p" and c.model.model == "random:tiny" for c in cells)
    assert cells[-1].style.loras[-1] == LoraSpec("a.safetensors", 1.0)
    with _pytest.raises(UsageError, match="--strength and --strengths: give one"):
        plan_sweep(SweepBase(overrides={"strength": 0.5}), SweepAxes(strengths=(0.6,)))
