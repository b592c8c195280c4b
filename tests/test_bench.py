"""`stylecam bench`: the harness end to end on random:tiny (step, pipeline, live), the result schema, compare and plot,
the stage names documented in benchmarks/README.md, batched steps, and stages skipped when a library is missing."""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from realtime import cli
from realtime.bench.schema import SCHEMA, BenchSchemaError, load_result, validate
from realtime.bench.stats import STAGES, STEP_PARTS
from realtime.pipeline.timing import StageLog, make_clock, percentile, summarize

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "random:tiny", "--size", "64x64", "--frames", "3", "--warmup", "1"]
PIPELINE_STAGES = ["capture", "face", "crop", "canny", "upload", "step", *STEP_PARTS, "download", "resize", "sink"]
LIVE_STAGES = ["wait", "face", "crop", "canny", "stylize", "upload", "step", "download", "resize", "sink"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse usage errors
        code = int(e.code)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> tuple[Path, dict]:
    """One bench run of all three modes on random:tiny at 64x64, written as JSON (shared by the tests below)."""
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    code = cli.main(["bench", *TINY, "--mode", "step,pipeline,live", "--fps", "60", "--json", str(path),
                     "--label", "tiny", "--note", "test run"])
    assert code == 0
    return path, json.loads(path.read_text())


def test_all_modes_run_and_the_json_validates(result):
    path, doc = result
    assert load_result(path)["runs"] == doc["runs"]  # reads back through the validator
    validate(doc, use_jsonschema=False)
    assert doc["schema_version"] == 2 and doc["kind"] == "stylecam-bench" and doc["label"] == "tiny"
    assert "test run" in doc["notes"]
    assert [r["mode"] for r in doc["runs"]] == ["step", "pipeline", "live"]
    env = doc["environment"]
    assert env["device"] == "cpu" and env["gpu"] is None and env["versions"]["torch"] == torch.__version__
    assert env["git"]["commit"] and env["python"] and env["date"]
    assert doc["settings"]["model"]["model"] == "random:tiny" and doc["settings"]["sizes"] == [{"width": 64, "height": 64}]
    for r in doc["runs"]:
        assert r["frames"] == 3 and r["warmup"] == 1 and r["batch"] == 1 and r["backend_used"] == "eager"
        f = r["frame"]
        assert f["n"] == 3 and 0 < f["min_ms"] <= f["p50_ms"] <= f["p95_ms"] <= f["p99_ms"] <= f["max_ms"]
        assert r["fps"] > 0 and r["memory"]["rss_peak_mb"] > 0 and r["memory"]["gpu_allocated_peak_mb"] is None
        build = r["memory"]["build"]  # the build's peaks ride along with every run (GPU fields None on the CPU)
        assert build["seconds"] > 0 and build["rss_peak_mb"] > 0 and r["memory"]["gpu_peak_mb"] is None
        assert r["backend"] == "auto" and "eager" in r["backend_reason"]  # auto on the CPU says why it is eager


def test_version_1_results_stay_readable(result):
    _, doc = result
    old = copy.deepcopy(doc)
    old["schema_version"] = 1
    for r in old["runs"]:
        r["memory"].pop("build")
        r["memory"].pop("gpu_peak_mb")
        if r["live"]:
            r["live"].pop("host_critical")
            r["live"].pop("device_step")
    validate(old, use_jsonschema=False)
    validate(old)
    old["schema_version"] = 3
    with pytest.raises(BenchSchemaError, match="newer"):
        validate(old)


def test_stage_names_units_and_sub_stages(result):
    _, doc = result
    step, pipeline, live = doc["runs"]
    assert [s["name"] for s in step["stages"]] == ["step"]
    assert [s["name"] for s in pipeline["stages"]] == PIPELINE_STAGES
    assert [s["name"] for s in live["stages"]] == LIVE_STAGES
    for r in doc["runs"]:
        for s in r["stages"]:
            assert s["unit"] == "ms" and s["name"] in STAGES
            assert s["status"] == "ok", s  # face model, OpenCV and every part of the tiny model are here
            assert s["timer"] == "perf_counter"  # CPU
    parts = {s["name"]: s for s in pipeline["stages"] if s["parent"] == "step"}
    assert set(parts) == set(STEP_PARTS)
    step_mean = next(s for s in pipeline["stages"] if s["name"] == "step")["mean_ms"]
    # The parts (with step_other = the rest) add up to the step, frame by frame.
    assert sum(p["mean_ms"] for p in parts.values()) == pytest.approx(step_mean, rel=1e-6, abs=1e-6)
    lv = live["live"]
    assert lv["target_fps"] == 60 and lv["frames_out"] == 3 and lv["dropped"] >= 0
    assert lv["latency"]["p50_ms"] >= lv["added_latency"]["p50_ms"] >= 0
    # the device step (here: the model call) is subtracted, not the whole stylizer call
    live_step = next(s for s in live["stages"] if s["name"] == "step")
    stylize = next(s for s in live["stages"] if s["name"] == "stylize")
    assert live_step["parent"] == "stylize" and lv["device_step"]["p50_ms"] == live_step["p50_ms"]
    assert live_step["max_ms"] <= stylize["max_ms"]
    assert lv["added_latency"]["min_ms"] >= lv["latency"]["min_ms"] - live_step["max_ms"] - 1e-6
    hc = lv["host_critical"]
    assert hc["n"] == 3 and 0 <= hc["p50_ms"] <= live["frame"]["max_ms"]
    assert hc["min_ms"] >= live["frame"]["min_ms"] - live_step["max_ms"] - 1e-6


def test_stage_names_are_documented():
    readme = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for name in STAGES:
        assert f"| `{name}` |" in readme, name
    assert "milliseconds per frame" in readme and "`*_ms`" in readme
    for field in ("gpu_allocated_peak_mb", "gpu_device_used_peak_mb", "rss_peak_mb", "added_latency", "p99_ms"):
        assert field in readme


def _slower(doc: dict, factor: float, label: str) -> dict:
    other = copy.deepcopy(doc)
    other["label"] = label
    for r in other["runs"]:
        for key in ("mean_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            r["frame"][key] *= factor
            for s in r["stages"]:
                if s["status"] == "ok":
                    s[key] *= factor
        r["fps"] /= factor
    return other


def test_compare_two_files_with_ratios_and_plot(result, tmp_path, capsys):
    path, doc = result
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(_slower(doc, 2.0, "slow")))
    plot = tmp_path / "stages.png"
    code, out, err = run(capsys, "bench", "compare", str(path), str(slow), "--plot", str(plot))
    assert code == 0, err
    for mode in ("step", "pipeline", "live"):
        assert f"== {mode} 64x64" in out
    frame_line = next(ln for ln in out.splitlines() if ln.startswith("frame p50 ms"))
    assert "(x2.00)" in frame_line
    fps_line = next(ln for ln in out.splitlines() if ln.startswith("fps"))
    assert "(x0.50)" in fps_line
    assert "tiny [eager b1]" in out and "slow [eager b1]" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slow.json", "stages.png"]  # no temporary files left
    code, _, err = run(capsys, "bench", "compare", str(path), "--plot", str(plot))
    assert code == 2 and "--overwrite" in err


def test_compare_rejects_a_broken_file(result, tmp_path, capsys):
    _, doc = result
    bad = copy.deepcopy(doc)
    del bad["runs"][1]["stages"][2]["p50_ms"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    code, _, err = run(capsys, "bench", "compare", str(path))
    assert code == 2 and "runs[1].stages[2]" in err and "p50_ms" in err and "Traceback" not in err


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["runs"][0]["frame"].update(p50_ms="fast"), "runs[0].frame.p50_ms: expected number"),
    (lambda d: d["runs"][0]["stages"][0].update(name="warp"), "runs[0].stages[0]"),
    (lambda d: d["environment"].pop("git"), "environment: missing required field 'git'"),
    (lambda d: d.update(runs=[]), "runs: needs at least 1"),
    (lambda d: d["runs"][0].update(mode="turbo"), "runs[0].mode: 'turbo' is not one of"),
    (lambda d: d.update(schema_version=3), "newer than this stylecam reads"),
])
def test_builtin_validator_names_the_wrong_field(result, mutate, needle):
    doc = copy.deepcopy(result[1])
    mutate(doc)
    with pytest.raises(BenchSchemaError) as e:
        validate(doc, use_jsonschema=False)
    assert needle in str(e.value)


def test_schema_command_prints_the_schema(capsys):
    code, out, _ = run(capsys, "bench", "schema")
    assert code == 0 and json.loads(out) == json.loads(json.dumps(SCHEMA))


def test_existing_json_is_refused_before_measuring(tmp_path, capsys):
    target = tmp_path / "out.json"
    target.write_text("keep")
    code, _, err = run(capsys, "bench", *TINY, "--json", str(target))
    assert code == 2 and "--overwrite" in err and target.read_text() == "keep"


@pytest.mark.parametrize("argv, needle", [
    (["--model", "random:tiny", "--mode", "turbo"], "--mode"),
    (["--model", "random:tiny", "--sizes", "64x64", "--size", "128x128"], "--sizes"),
    (["--model", "random:tiny", "--sizes", "64x60"], "multiple of 64"),
    (["--model", "random:tiny", "--backends", "eager,warp"], "--backends"),
    (["--model", "random:tiny", "--frames", "0"], "--frames"),
    (["--model", "random:tiny", "--batch", "2", "--guidance", "2"], "--guidance 1"),
    (["--style", "none"], "nothing to benchmark"),
])
def test_bad_options_are_one_line_errors(capsys, argv, needle):
    code, _, err = run(capsys, "bench", *argv)
    assert code == 2, err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_frame_clock_and_percentiles():
    s = summarize(list(range(100, 0, -1)))
    assert (s["n"], s["min_ms"], s["max_ms"], s["mean_ms"]) == (100, 1, 100, 50.5)
    assert s["p50_ms"] == pytest.approx(50.5) and s["p95_ms"] == pytest.approx(95.05) and s["p99_ms"] == pytest.approx(99.01)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([5.0], 99) == 5.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    clock, log = make_clock("cpu"), StageLog()
    for keep in (False, True, True):
        clock.begin()
        for _ in range(2):  # a stage run twice in one frame adds up
            with clock.stage("crop"):
                pass
        with clock.stage("step", device=True):  # a device stage: perf_counter on the CPU
            pass
        log.add(clock.end(), keep=keep)
    assert len(log.frame_ms) == 2 and len(log.stages["crop"]) == 2  # the warm-up frame is not recorded
    assert clock.timer == {"crop": "perf_counter", "step": "perf_counter"} and log.fps() > 0
    clock.begin()
    clock.start("step", device=True)
    with pytest.raises(RuntimeError, match="still open"):
        clock.end()
    clock.cancel()
    assert not clock.in_frame
    with pytest.raises(RuntimeError, match="without begin"):
        clock.end()


def test_batched_step_equals_single_frames(tiny_components):
    from realtime.bench.runner import batch_inputs
    from realtime.config import load_style
    from realtime.geometry import Size
    from realtime.diffusion.stylizer import Stylizer

    st = Stylizer(tiny_components, load_style("anime"), Size(64, 64), device=torch.device("cpu"), dtype=torch.float32)
    rng = np.random.default_rng(0)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    control = np.zeros((64, 64), np.uint8)
    control[20:40, 30] = 255
    single = st.step_inputs(image, control)
    big = batch_inputs(single, 3)
    assert big[0].shape == (3, 64, 64, 3) and big[5].shape[0] == 3 and big[6].shape == (1,)
    with torch.inference_mode():
        one = st.step(*single)
        three = st.step(*big)
    for a, b in zip(one, three, strict=True):
        assert b.shape[0] == 3
        for k in range(3):
            assert torch.allclose(a[0].float(), b[k].float(), atol=1e-4)
    st.close()


def test_gpu_host_without_mediapipe_opencv_or_pyav(tiny_components, monkeypatch):
    """A host without mediapipe, OpenCV and PyAV: the pipeline still runs; those stages are skipped with the reason."""
    import realtime.diffusion.build as build
    from realtime.bench.runner import BenchSettings, run_benchmark
    from realtime.config import ModelConfig, RunConfig, load_style
    from realtime.errors import InputError
    from realtime.geometry import Size
    from realtime.diffusion.stylizer import Stylizer

    for name in ("mediapipe", "cv2", "av"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    monkeypatch.setattr(build, "build_stylizer", lambda model, style, run: Stylizer(
        tiny_components, style, run.size, device=torch.device("cpu"), dtype=torch.float32))
    settings = BenchSettings(modes=("pipeline",), sizes=(Size(64, 64),), frames=2, warmup=1, camera_size=Size(320, 240),
                             output_size=Size(160, 120))
    doc = run_benchmark(settings, ModelConfig("random:tiny"), load_style("anime"), RunConfig(size=Size(64, 64)))
    stages = {s["name"]: s for s in doc["runs"][0]["stages"]}
    assert list(stages) == PIPELINE_STAGES
    assert stages["face"]["status"] == "skipped" and "mediapipe" in stages["face"]["reason"]
    for name in ("capture", "crop", "canny", "resize"):
        assert stages[name]["status"] == "skipped" and "OpenCV" in stages[name]["reason"], name
    for name in ("upload", "step", "unet", "download", "sink"):
        assert stages[name]["status"] == "ok", name
    with pytest.raises(InputError, match="pip install av"):
        run_benchmark(BenchSettings(modes=("pipeline",), sizes=(Size(64, 64),), frames=1, warmup=0, sink="file"),
                      ModelConfig("random:tiny"), load_style("anime"), RunConfig(size=Size(64, 64)))
    with pytest.raises(InputError, match="OpenCV"):
        run_benchmark(BenchSettings(modes=("live",), sizes=(Size(64, 64),), frames=1, warmup=0),
                      ModelConfig("random:tiny"), load_style("anime"), RunConfig(size=Size(64, 64)))


def test_engine_backend_step_is_one_number(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the ort extra is part of the dev install")
    out = tmp_path / "ort.json"
    code, text, err = run(capsys, "bench", *TINY, "--backends", "onnxruntime", "--mode", "step,pipeline", "--no-face",
                          "--batch", "2", "--cache-dir", str(tmp_path / "cache"), "--json", str(out))
    assert code == 0, err
    doc = load_result(out)
    step, pipe = doc["runs"]
    assert step["backend_used"] == pipe["backend_used"] == "onnxruntime" and step["batch"] == 2
    parts = [s for s in pipe["stages"] if s["parent"] == "step"]
    assert parts and all(s["status"] == "skipped" and "onnxruntime" in s["reason"] for s in parts)
    assert next(s for s in pipe["stages"] if s["name"] == "step")["status"] == "ok"
    assert "onnxruntime" in text


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_is_generated_from_the_json_files(result, tmp_path):
    path, doc = result
    (tmp_path / "a.json").write_text(path.read_text())
    (tmp_path / "b.json").write_text(json.dumps(_slower(doc, 2.0, "b")))
    text = _load_script("make_table").render(tmp_path)
    assert "| `a.json` |" in text and "| `b.json` |" in text
    rows = [ln.split(" | ") for ln in text.splitlines() if ln.startswith(("| a [", "| b [")) and " | step | 64x64 | " in ln]
    assert [r[0] for r in rows] == ["| a [eager b1]", "| b [eager b1]"]  # the runs table: one row per result's step run
    assert float(rows[1][8]) == pytest.approx(2 * float(rows[0][8]), abs=0.15)  # frame p50 ms, b is 2x slower
    live_rows = [ln for ln in text.splitlines() if ln.startswith("| a [eager b1] | 64x64 | 60 |")]
    assert len(live_rows) == 1  # the live table: target fps 60
    for name in STAGES:
        assert f"- `{name}`:" in text
    assert "`a`: test run" in text


def test_committed_results_validate_and_readme_is_up_to_date():
    results = REPO / "benchmarks" / "results"
    make_table = _load_script("make_table")
    files, _ = make_table.bench_files(results)
    assert files, "benchmarks/results has no committed result in the stylecam bench format"
    for f in files:
        load_result(f)
    assert (results / "README.md").read_text(encoding="utf-8") == make_table.render(results)
