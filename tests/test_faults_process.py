"""Faults that need a process of their own: an engine build killed halfway (engines/cache.py never shows a half-written
entry and the next build clears what it left), SIGINT and SIGTERM at each phase of `stylecam live` and `stylecam clip`
(started with subprocess.Popen: a bash `&` job has SIGINT ignored), and a LoRA that is corrupt or gone when a live
session loads it. The signal is sent when the phase's log line appears; whichever phase it lands in, the exit code and
the files must be right (that is what is asserted, not timing)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clip_files import leftovers, video_frames
from engines import EngineCache, cache_key
from live_clips import make_face_clip
from realtime.cli import main

FIELDS = {"model": "m", "resolution": [64, 64], "backend": "onnxruntime", "dtype": "float32"}
N = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    return make_face_clip(tmp_path_factory.mktemp("faults-proc") / "clip.mp4", astronaut, n=N)


def start(cmd: list[str], marker: str | None = None) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """Start ``cmd`` with Popen (SIGINT not ignored); ``seen`` is set when a line of its stderr (or stdout, merged)
    contains ``marker``."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    seen = threading.Event()

    def reader() -> None:
        for line in proc.stdout:
            lines.append(line)
            if marker is not None and marker in line:
                seen.set()

    threading.Thread(target=reader, daemon=True).start()
    return proc, lines, seen


def finish(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------------------------- engine cache
BUILDER = textwrap.dedent("""
    import sys, time
    from engines import EngineCache, cache_key
    fields = {fields!r}
    cache = EngineCache(sys.argv[1])
    with cache.writer(cache_key(fields), fields=fields, backend="onnxruntime") as w:
        with open(w.dir / "model.onnx", "wb") as f:
            f.write(b"x" * 200_000)
            f.flush()
            print("HALFWAY", flush=True)
            time.sleep(120)
""").format(fields=FIELDS)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_engine_build_killed_halfway_leaves_no_entry_and_the_next_build_cleans_up(tmp_path: Path, sig: int) -> None:
    proc, lines, halfway = start([sys.executable, "-c", BUILDER, str(tmp_path)], "HALFWAY")
    try:
        assert halfway.wait(60), "".join(lines)
        proc.send_signal(sig)
        code = finish(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0
    cache = EngineCache(tmp_path)
    key = cache_key(FIELDS)
    assert cache.lookup(key) is None and cache.entries() == []  # never a half-written entry
    engines = tmp_path / "engines"
    left = sorted(p.name for p in engines.iterdir())
    assert left == ([] if sig == signal.SIGINT else [n for n in left if n.startswith(f".tmp-{key}-{proc.pid}-")])
    assert len(left) == (0 if sig == signal.SIGINT else 1)
    with cache.writer(key, fields=FIELDS, backend="onnxruntime") as w:  # the next build
        (w.dir / "model.onnx").write_bytes(b"complete")
    assert cache.lookup(key) is not None
    assert sorted(p.name for p in engines.iterdir()) == [key]  # the dead build's directory is gone


def test_a_running_build_is_not_swept(tmp_path: Path) -> None:
    proc, lines, halfway = start([sys.executable, "-c", BUILDER, str(tmp_path)], "HALFWAY")
    try:
        assert halfway.wait(60), "".join(lines)
        other = dict(FIELDS, model="other")
        cache = EngineCache(tmp_path)
        with cache.writer(cache_key(other), fields=other, backend="onnxruntime") as w:
            (w.dir / "model.onnx").write_bytes(b"complete")
        names = [p.name for p in (tmp_path / "engines").iterdir()]
        assert any(n.startswith(f".tmp-{cache_key(FIELDS)}-{proc.pid}-") for n in names), names
    finally:
        proc.kill()
        proc.wait(30)


# ------------------------------------------------------------------------------------------------- signals
TINY = ["--model", "random:tiny", "--size", "64x64", "--output-size", "128x96"]

#: log lines that mark the start of a phase (the signal lands in it, or in the next one on a fast machine)
LIVE_PHASES = {
    "model load": "realtime.cli.live_setup: source",
    "warm-up": "stylizer on cpu",
    "first frame": "realtime.cli.live_setup: live:",
    "mid-run": "first frame delivered",
}


@pytest.mark.parametrize(("phase", "sig"), [(p, signal.SIGINT) for p in LIVE_PHASES]
                         + [("model load", signal.SIGTERM), ("mid-run", signal.SIGTERM)],
                         ids=[f"{p}-SIGINT" for p in LIVE_PHASES] + ["model load-SIGTERM", "mid-run-SIGTERM"])
def test_live_signal_at_each_phase_exits_0_and_leaves_nothing_half_written(clip: Path, tmp_path: Path,
                                                                           phase: str, sig: int) -> None:
    out = tmp_path / "rec.mp4"
    cmd = [sys.executable, "-m", "realtime.cli", "live", "--source", str(clip), "--output", str(out), *TINY,
           "--no-face", "--no-stdin"]
    proc, lines, seen = start(cmd, LIVE_PHASES[phase])
    assert seen.wait(120), "".join(lines)
    proc.send_signal(sig)
    code = finish(proc)
    text = "".join(lines)
    assert code == 0, text  # the README's table: a live session stopped by Ctrl-C (or SIGTERM) is a normal stop
    assert "Traceback" not in text
    assert leftovers(tmp_path) == []  # no temporary file
    if out.exists():  # stopped after the first frame: finalized and playable
        assert 1 <= len(video_frames(out)) <= N
    else:
        assert phase != "mid-run", text


CLIP_PHASES = {"model load": "realtime.diffusion.models: loaded", "frames": "stylizer on cpu"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(CLIP_PHASES))
def test_clip_signal_at_each_phase_exits_130_and_leaves_nothing(clip: Path, tmp_path: Path, phase: str,
                                                                sig: int) -> None:
    out = tmp_path / "styled.mp4"
    cmd = [sys.executable, "-m", "realtime.cli", "clip", str(clip), "-o", str(out), *TINY[:4], "--no-face"]
    proc, lines, seen = start(cmd, CLIP_PHASES[phase])
    assert seen.wait(120), "".join(lines)
    proc.send_signal(sig)
    code = finish(proc)
    text = "".join(lines)
    if code == 0:  # finished before the signal arrived (a fast machine): then the output is complete
        assert len(video_frames(out)) == N, text
    else:
        assert code == 130 and "stylecam: interrupted" in text and "Traceback" not in text, text
        assert not out.exists()
    assert leftovers(tmp_path) == []


def test_signal_during_argument_checks_exits_130(tmp_path: Path) -> None:
    """SIGTERM as the process starts (before or during its checks): never a traceback, never a file."""
    out = tmp_path / "o.png"
    proc, lines, _ = start([sys.executable, "-m", "realtime.cli", "image", "--input", str(tmp_path / "missing.png"),
                            "--output", str(out), "--model", "random:tiny"])
    time.sleep(0.3)  # inside the interpreter start-up or the checks
    proc.send_signal(signal.SIGTERM)
    code = finish(proc)
    text = "".join(lines)
    assert code in (130, 2, -signal.SIGTERM), text  # interrupted, or the check already failed; killed before main()
    assert "Traceback" not in text and not out.exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------- LoRA files
@pytest.mark.parametrize("damage", ["corrupt", "deleted"])
def test_lora_corrupt_or_gone_when_a_live_session_loads_it_keeps_the_running_style(
        capsys, caplog, clip: Path, tmp_path: Path, damage: str) -> None:
    lora = tmp_path / "style.safetensors"
    if damage == "corrupt":
        lora.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": trunc")  # a header that does not parse
    control = tmp_path / "control.toml"
    control.write_text(f'lora = "{lora}:0.8"\n')
    out = tmp_path / "rec.mp4"
    caplog.set_level(logging.INFO)
    code = main(["live", "--source", str(clip), "--output", str(out), *TINY, "--no-face", "--no-stdin", "--no-pace",
                 "--control-file", str(control), "--fps", "30"])
    err = capsys.readouterr().err
    assert code == 0, err
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "not applied" in r.getMessage()]
    assert len(failed) == 1 and "style.safetensors" in failed[0], failed
    assert "\n" not in failed[0] and "state_dict" not in failed[0] and "Traceback" not in err
    assert len(video_frames(out)) == N  # the previous style kept flowing
    assert leftovers(tmp_path) == []
