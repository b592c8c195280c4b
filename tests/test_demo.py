"""`stylecam demo`: the README's first command, on random weights (the real model downloads on a user's machine)."""
from __future__ import annotations

import av

from realtime.cli import main


def test_demo_makes_and_stylizes_a_clip_with_sound(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "random:tiny", "--size", "64x64", "--seconds", "1", "--out-dir", str(out), "-q"]) == 0
    src, dst = out / "demo.mp4", out / "demo_anime.mp4"
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert [s.type for s in b.streams] == ["video", "audio"]
        assert b.streams.video[0].width == 1280 and b.streams.video[0].height == 720
        assert sum(1 for _ in b.decode(video=0)) == sum(1 for _ in a.decode(video=0)) == 30


def test_demo_rejects_bad_length(tmp_path, capsys):
    assert main(["demo", "--seconds", "0", "--out-dir", str(tmp_path)]) == 2
    assert "--seconds" in capsys.readouterr().err
