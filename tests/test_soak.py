"""The soak (``scripts/soak.py``, :mod:`realtime.bench.soak`): a 60-second live session from a looped clip with
scheduled commands; slopes asserted loosely, the recording checked exactly, no timing assertions. Also the pieces:
the looping source keeps one timeline, the recording check catches lost and duplicated frames."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime.bench.soak import LoopingSource, ScheduledCommands, check_recording, slope_per_minute
from realtime.cli.soak import main as soak_main
from realtime.io.videofile import FileSource
from realtime.io.videowriter import VideoFileSink


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from realtime.cli.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("soak") / "c.mp4", seconds=0.5, size=(160, 96))


def test_looping_source_continues_the_timeline_across_passes(short_clip: Path) -> None:
    src = LoopingSource(lambda: FileSource(short_clip, paced=False))
    frames = []
    while len(frames) < 40:
        f = src.read(5)
        assert f is not None
        frames.append(f)
    src.close()
    ts = [round(f.timestamp * 30) for f in frames]
    assert ts == list(range(40)) and [f.index for f in frames] == list(range(40))  # 15 frames a pass, no gap
    assert src.passes == 3 and src.read(1) is None


def test_recording_check_finds_lost_and_duplicated_frames(tmp_path: Path) -> None:
    out = tmp_path / "r.mp4"
    sink = VideoFileSink(out, 64, 48, 30, variable_rate=True)
    sent = [i / 30 for i in range(12)]
    for t in sent:
        sink.send(np.full((48, 64, 3), 100, np.uint8), t)
    sink.close()
    assert check_recording(out, sent, 30)["ok"]
    lost = check_recording(out, [*sent, 12 / 30], 30)  # one more was sent than the file holds
    assert not lost["ok"] and lost["lost"] == 1
    shifted = check_recording(out, sent[:6] + [t + 1 / 30 for t in sent[6:]], 30)
    assert not shifted["ok"] and shifted["unexpected"] == 1


def test_scheduled_commands_take_the_stdin_path() -> None:
    cmds = ScheduledCommands(["mirror on", "bogus line", "strength 0.5"], every_s=0.01)
    got = []
    for _ in range(500):  # bounded
        got += cmds.poll()
        if len(got) >= 4:
            break
        import time

        time.sleep(0.01)
    cmds.close()
    assert [c.name for c in got[:4]] == ["mirror", "strength", "mirror", "strength"]  # the bad line skipped
    assert got[0].source == "stdin"


def test_slope_per_minute() -> None:
    assert slope_per_minute([0, 60, 120], [10, 11, 12]) == pytest.approx(1.0)
    assert slope_per_minute([0, 60], [1, 2]) is None


def test_one_minute_soak_stays_flat_and_records_every_frame(tmp_path: Path, face_model_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    code = soak_main(["--minutes", "1", "--json", str(report_path), "--window", "20", "--warmup", "30",
                      "--command-every", "1.5", "-q", "--", "--face-model", str(face_model_path)])
    assert code == 0
    r = json.loads(report_path.read_text())
    assert r["delivered"] > 30 and r["ended"] == "interrupted"
    assert r["source_passes"] >= 2  # the clip was looped
    assert r["commands_sent"] >= 10 and r["commands_applied"] >= r["commands_sent"] // 2
    rec = r["recording"]
    assert rec["ok"] and rec["frames"] == r["delivered"] and rec["lost"] == rec["duplicated"] == 0
    spans = r["spans_after_warmup"]
    assert spans["fds"]["max"] - spans["fds"]["min"] <= 4  # flat
    assert spans["py_threads"]["max"] - spans["py_threads"]["min"] <= 4
    # OS threads swing by dozens between samples (the decoder's FFmpeg threads): bounded, loosely; no slope here
    assert spans["threads"]["max"] < 400
    assert all("threads_median" in w for w in r["latency_windows"])
    # RSS still climbs in the first minute (LoRA reloads raise the allocator's high-water mark; the 10-minute run in
    # benchmarks/results/ measures the real slope): only a gross leak fails here.
    assert r["slopes"]["rss_mib_per_min"] is not None and r["slopes"]["rss_mib_per_min"] < 400
    assert len(r["latency_windows"]) == 3 and r["p99_last_over_first"] is not None
    assert set(r["goals"]) >= {"rss_slope_le_1_mib_per_min", "fds_flat", "threads_flat", "p99_ratio_le_1_2",
                               "recording_ok"}
