"""benchmarks/gpu_suite.sh: --dry-run prints every part it would run (and runs and writes nothing); bad options are one
line and exit 2. The real run is exercised by hand on the CPU (`--device cpu --model random:tiny --quick`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def suite(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO))
    return subprocess.run(["bash", str(SUITE), *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=REPO)


def _results() -> list[str]:
    return sorted(p.name for p in (REPO / "benchmarks" / "results").iterdir())


def test_dry_run_prints_every_part_and_writes_nothing():
    before = _results()
    p = suite("--dry-run", "--device", "cpu", "--model", "random:tiny")
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("+ ")]
    tests = [ln for ln in lines if " -m pytest " in ln]
    assert len(tests) == 1 and "-m gpu" in tests[0] and "test_engine_fastpath.py" in tests[0]
    bench = [ln for ln in lines if " -m realtime.cli bench " in ln]
    assert bench and all("--sizes 64x64,128x64" in ln and "--mode step,pipeline,live" in ln for ln in bench)
    assert any("--backend eager" in ln for ln in bench) and all("--model random:tiny" in ln for ln in bench)
    assert all("--device cpu" in ln and "--json" in ln for ln in bench)
    sd = [ln for ln in lines if "streamdiffusion_compare.py" in ln]
    assert sd and all("--backend eager" in ln or "--backend compile" in ln for ln in sd)
    assert any("make_table.py" in ln and "--summary" in ln for ln in lines)
    assert "nothing was run or written" in p.stdout
    assert _results() == before


def test_quick_dry_run_is_the_best_backend_and_eager_at_512_step_and_live():
    p = suite("--dry-run", "--quick", "--device", "cpu", "--model", "random:tiny", "--backends", "compile,eager")
    assert p.returncode == 0, p.stderr
    bench = [ln for ln in p.stdout.splitlines() if ln.startswith("+ ") and " bench " in ln]
    assert bench and all("--sizes 64x64 " in ln and "--mode step,live" in ln for ln in bench)
    assert "streamdiffusion_compare.py" not in p.stdout


def test_cuda_dry_run_without_cuda_shows_a_gpu_host_and_a_real_run_refuses():
    p = suite("--dry-run")
    assert p.returncode == 0 and "--backend tensorrt" in p.stdout and "--dtype fp16" in p.stdout
    assert "--model random:sd-turbo" in p.stdout and "--sizes 512x512,704x384" in p.stdout


@pytest.mark.parametrize("args, needle", [(["--bogus"], "unknown option --bogus"),
                                           (["--device", "tpu"], "--device tpu"),
                                           (["--wheels", "/no/such/dir"], "not a folder")])
def test_bad_options_are_one_line_and_exit_2(args, needle):
    p = suite(*args)
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
