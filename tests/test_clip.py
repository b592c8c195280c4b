"""`stylecam clip`: frames, timing, audio and rotation kept; face framing like live; corrupt frames repeated; safety
(Ctrl-C, failures, overwrite, input != output); every bad input a one-line exit 2; batch mode; flat memory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clip_files import audio_packets, audio_seconds, has_display_matrix, leftovers, video_end, video_frames, video_pts
from live_clips import make_face_clip
from media_files import (VFR_PTS, make_audio_only, make_clip, make_corrupt_middle, make_png, make_truncated,
                         make_vfr_clip, make_zero_frame_video)
from realtime.cli import main
from realtime.cli.clip import parse_seconds
from realtime.pipeline.clip import ClipJob, ClipOptions, check_encoder, plan_outputs
from realtime.errors import DeviceUnavailable, OutputError, UsageError
from realtime.geometry import Size

TINY = ["--model", "random:tiny", "--size", "64x64", "--quiet"]
FAST = ["--style", "none", "--size", "64x64", "--quiet"]  # pass-through: no model, for tests about files and timing
REPO = Path(__file__).resolve().parents[1]


def clip(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(["clip", *argv])
    except SystemExit as e:  # argparse usage errors
        code = int(e.code)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("stylecam")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def toned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps, 128x96, with a 440 Hz AAC tone."""
    return make_clip(tmp_path_factory.mktemp("in") / "toned.mp4", n=50, size=(128, 96), audio=True)


@pytest.fixture(scope="module")
def silent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("in") / "silent.mp4", n=12, size=(96, 64))


# ------------------------------------------------------------------------------------------------ what is kept
def test_stylized_clip_keeps_frames_duration_and_copies_audio(capsys, toned, tmp_path):
    out = tmp_path / "styled.mp4"
    code, err = clip(capsys, str(toned), "-o", str(out), *TINY)
    assert code == 0, err
    assert video_pts(out) == pytest.approx(video_pts(toned), abs=1e-3)  # 50 frames at the same times
    assert video_frames(out)[0].shape == (96, 128, 3)  # the input's size
    assert video_end(out) == pytest.approx(video_end(toned), abs=1e-3)
    name_in, packets_in = audio_packets(toned)
    name_out, packets_out = audio_packets(out)
    assert name_out == name_in == "aac"
    assert [b for _, b in packets_out] == [b for _, b in packets_in]  # copied: every sample unchanged
    assert [t for t, _ in packets_out] == pytest.approx([t for t, _ in packets_in], abs=1e-3)
    assert audio_seconds(out) == pytest.approx(audio_seconds(toned), abs=1e-3)
    assert leftovers(tmp_path) == []


def test_stylizer_is_really_applied(capsys, silent, tmp_path):
    plain, styled = tmp_path / "plain.mp4", tmp_path / "styled.mp4"
    assert clip(capsys, str(silent), "-o", str(plain), "--style", "none", "--size", "64x64", "--quiet", "--no-face")[0] == 0
    assert clip(capsys, str(silent), "-o", str(styled), *TINY, "--no-face")[0] == 0
    a, b = video_frames(plain), video_frames(styled)
    assert len(a) == len(b) == 12
    assert np.abs(a[5].astype(int) - b[5].astype(int)).mean() > 10  # random weights: nothing like the input


def test_passthrough_at_auto_size_keeps_the_picture(capsys, silent, tmp_path):
    out = tmp_path / "same.mp4"
    assert clip(capsys, str(silent), "-o", str(out), "--style", "none", "--no-face", "--quiet")[0] == 0
    for a, b in zip(video_frames(out), video_frames(silent), strict=True):  # as live: cropped straight to the output size
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 2


class _CountingStylizer:
    """Stands in for the Stylizer: the inverted crop, and how often it ran."""

    def __init__(self) -> None:
        self.calls = self.resets = 0
        self.closed = False

    def __call__(self, crop: np.ndarray, control: np.ndarray) -> np.ndarray:
        assert control.shape == crop.shape[:2] and control.dtype == np.uint8
        self.calls += 1
        return 255 - crop

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def test_similarity_filter_reuses_the_stylized_frame_like_live(silent, tmp_path):
    from realtime.config import load_style, override_style

    src = silent  # 12 frames that differ only a little: the filter may skip any of them
    style = override_style(load_style("anime"), temporal_similarity_filter=True, temporal_similarity_threshold=0.0,
                           temporal_max_skips=3)
    fake = _CountingStylizer()
    with ClipJob(ClipOptions(progress=False, face=False), Size(64, 64), stylizer=fake, style=style) as runner:
        result = runner.process(src, tmp_path / "a.mp4")
        assert (fake.calls, result.skipped, result.frames) == (3, 9, 12)  # (1 stylized + 3 skipped) x 3
        with ClipJob(ClipOptions(progress=False, face=False), Size(64, 64), stylizer=_CountingStylizer(),
                          style=load_style("anime")) as plain:
            assert plain.process(src, tmp_path / "b.mp4").skipped == 0 and plain.stylizer.calls == 12
    assert fake.resets == 1 and fake.closed  # reset per file (no blending across clips), closed with the runner
    frames = video_frames(tmp_path / "a.mp4")
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(frames[3], frames[0]) < 1.5 < diff(frames[4], frames[3])  # skipped frames repeat the stylized one


def test_vfr_timestamps_survive(capsys, tmp_path):
    src = make_vfr_clip(tmp_path / "vfr.mp4", audio=True)
    out = tmp_path / "out.mp4"
    assert clip(capsys, str(src), "-o", str(out), *FAST)[0] == 0
    assert video_pts(out) == pytest.approx([p / 1000 for p in VFR_PTS], abs=1e-3)
    assert audio_seconds(out) == pytest.approx(audio_seconds(src), abs=1e-3)


def test_start_end_cut_frames_and_audio(capsys, toned, tmp_path):
    out = tmp_path / "cut.mp4"
    code, err = clip(capsys, str(toned), "-o", str(out), *FAST, "--start", "0.4", "--end", "1.2")
    assert code == 0, err
    pts = video_pts(out)
    assert len(pts) == 20  # 0.8 s at 25 fps
    assert pts[0] == pytest.approx(0.0, abs=1e-3) and video_end(out) == pytest.approx(0.8, abs=1e-3)
    assert audio_seconds(out) == pytest.approx(0.8, abs=0.03)  # copied audio is cut at packet boundaries (21 ms)
    # MM:SS works too and gives the same range
    out2 = tmp_path / "cut2.mp4"
    assert clip(capsys, str(toned), "-o", str(out2), *FAST, "--start", "0:00.4", "--end", "0:01.2")[0] == 0
    assert video_pts(out2) == pytest.approx(pts)


def test_rotation_is_applied_and_output_is_upright(capsys, tmp_path):
    from realtime.io.videofile import FileSource

    src = make_clip(tmp_path / "rot.mp4", n=6, size=(128, 96), rotation=90)
    out = tmp_path / "out.mp4"
    assert clip(capsys, str(src), "-o", str(out), *FAST, "--size", "192x256", "--no-face")[0] == 0
    frames = video_frames(out)
    assert frames[0].shape == (128, 96, 3)  # the display size (portrait), not the coded 128x96
    assert not has_display_matrix(out)  # upright pixels: no rotation left for the player to do
    with FileSource(src) as source:
        upright = source.read().image
    assert np.abs(frames[0].astype(int) - upright.astype(int)).mean() < 6


def test_audio_reencoded_when_the_container_cannot_hold_it(capsys, tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=10, size=(64, 64), audio=True)
    out = tmp_path / "out.webm"
    code, err = clip(capsys, str(src), "-o", str(out), *FAST, "--codec", "libvpx-vp9", "--crf", "40")
    assert code == 0, err
    name, _ = audio_packets(out)
    assert name == "opus"  # WebM takes no AAC: re-encoded to the container's codec
    assert audio_seconds(out) == pytest.approx(audio_seconds(src), abs=0.03)
    assert len(video_pts(out)) == 10


def test_odd_input_size_rounds_to_even_for_yuv420(capsys, tmp_path):
    src = make_clip(tmp_path / "odd.mkv", n=4, size=(101, 75), codec="ffv1", pix_fmt="yuv444p")
    out = tmp_path / "odd.mp4"
    code, err = clip(capsys, str(src), "-o", str(out), *FAST)
    assert code == 0, err
    assert video_frames(out)[0].shape == (74, 100, 3)
    out2 = tmp_path / "odd.mkv.mkv"
    code, err = clip(capsys, str(src), "-o", str(out2), *FAST, "--pix-fmt", "yuv444p")
    assert code == 0, err
    assert video_frames(out2)[0].shape == (75, 101, 3)  # a full-chroma format keeps the exact size


# ------------------------------------------------------------------------------------------------ framing, bad frames
def test_face_framing_follows_a_face_and_leaves_faceless_clips_centred(tmp_path, astronaut, face_model_path):
    faceless = make_clip(tmp_path / "faceless.mp4", n=8, size=(192, 128))
    face = make_face_clip(tmp_path / "face.mp4", astronaut, n=8)
    opts = ClipOptions(progress=False)
    with ClipJob(opts, Size(64, 64)) as framed, ClipJob(ClipOptions(progress=False, face=False), Size(64, 64)) as plain:
        r_faceless = framed.process(faceless, tmp_path / "a_framed.mp4")
        plain.process(faceless, tmp_path / "a_plain.mp4")
        r_face = framed.process(face, tmp_path / "b_framed.mp4")
        plain.process(face, tmp_path / "b_plain.mp4")
    assert r_faceless.face_frames == 0 and r_faceless.frames == 8
    for a, b in zip(video_frames(tmp_path / "a_framed.mp4"), video_frames(tmp_path / "a_plain.mp4"), strict=True):
        assert np.array_equal(a, b)  # no face: the centre window, exactly as without framing
    assert r_face.face_frames >= 6
    last_framed, last_plain = video_frames(tmp_path / "b_framed.mp4")[-1], video_frames(tmp_path / "b_plain.mp4")[-1]
    assert np.abs(last_framed.astype(int) - last_plain.astype(int)).mean() > 10  # the window moved to the face


def test_corrupt_frame_is_repeated_and_counted(tmp_path, caplog):
    src, _ = make_corrupt_middle(tmp_path / "corrupt.mkv", n=20, bad=10)
    with caplog.at_level("WARNING"), ClipJob(ClipOptions(progress=False, face=False), Size(64, 64)) as runner:
        result = runner.process(src, tmp_path / "out.mp4")
    assert result.frames == 20 and result.bad_frames == 1
    assert any("could not be decoded" in r.getMessage() and "1 video frame" in r.getMessage() for r in caplog.records)
    frames = video_frames(tmp_path / "out.mp4")
    assert len(frames) == 20
    assert video_pts(tmp_path / "out.mp4") == pytest.approx([i / 25 for i in range(20)], abs=1e-3)  # timing kept
    diff = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    assert diff(frames[10], frames[9]) < 1.0 < diff(frames[11], frames[10])  # the previous output, repeated


def test_models_load_once_for_a_batch(capsys, silent, tmp_path, monkeypatch):
    import realtime.diffusion.build as build

    calls = []
    real = build.build_stylizer
    monkeypatch.setattr(build, "build_stylizer", lambda *a, **k: calls.append(1) or real(*a, **k))
    other = make_clip(tmp_path / "other.mp4", n=6, size=(96, 64))
    outdir = tmp_path / "out"
    outdir.mkdir()
    code, err = clip(capsys, str(silent), str(other), "-o", str(outdir), *TINY)
    assert code == 0, err
    assert len(calls) == 1
    assert sorted(p.name for p in outdir.iterdir()) == ["other.mp4", "silent.mp4"]
    assert len(video_pts(outdir / "other.mp4")) == 6 and len(video_pts(outdir / "silent.mp4")) == 12


# ------------------------------------------------------------------------------------------------ safety and errors
def test_batch_continues_past_a_bad_file(capsys, caplog, silent, toned, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n")
    outdir = tmp_path / "out"
    outdir.mkdir()
    with caplog.at_level("WARNING"):
        code, err = clip(capsys, str(silent), str(bad), str(toned), "-o", f"{outdir}/", *FAST)
    assert code == 1, err
    assert sorted(p.name for p in outdir.iterdir()) == ["silent.mp4", "toned.mp4"]  # no bad.mp4, no temporaries
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and "bad.mp4" in failures[0] and "not a readable video" in failures[0]
    assert "\n" not in failures[0] and "Traceback" not in err
    assert len(video_pts(outdir / "toned.mp4")) == 50


def test_batch_usage_errors_before_any_file(capsys, silent, toned, tmp_path):
    code, err = clip(capsys, str(silent), str(toned), "-o", str(tmp_path / "missing"), *FAST)
    assert_one_line_error(code, err, "does not exist")
    other = tmp_path / "x"
    other.mkdir()
    twin = make_clip(other / "silent.mp4", n=2, size=(64, 64))
    outdir = tmp_path / "out"
    outdir.mkdir()
    code, err = clip(capsys, str(silent), str(twin), "-o", str(outdir), *FAST)
    assert_one_line_error(code, err, "both be written")
    code, err = clip(capsys, str(twin), str(silent), "-o", str(other), *FAST)
    assert_one_line_error(code, err, "its input")
    assert list(outdir.iterdir()) == [] and sorted(p.name for p in other.iterdir()) == ["silent.mp4"]


def _bad_input(kind: str, tmp: Path, good: Path) -> tuple[list[str], str]:
    """(arguments, text expected in the error) for each bad input of the issue."""
    out = str(tmp / "out.mp4")
    if kind == "missing":
        return [str(tmp / "nope.mp4"), "-o", out], "not found"
    if kind == "text":
        p = tmp / "notes.mp4"
        p.write_text("hello, not a video\n" * 20)
        return [str(p), "-o", out], "not a readable video"
    if kind == "image":
        return [str(make_png(tmp / "still.png")), "-o", out], "still image"
    if kind == "truncated":
        return [str(make_truncated(good, tmp / "cut.mp4")), "-o", out], "not a readable video"
    if kind == "audio-only":
        return [str(make_audio_only(tmp / "tone.m4a")), "-o", out], "no video stream"
    if kind == "zero-frames":
        return [str(make_zero_frame_video(tmp / "empty.avi")), "-o", out], "no video frames"
    if kind == "outdir-missing":
        return [str(good), "-o", str(tmp / "nodir" / "out.mp4")], "does not exist"
    if kind == "same-as-input":
        return [str(good), "-o", str(good), "--overwrite"], "is the input"
    if kind == "unknown-codec":
        return [str(good), "-o", out, "--codec", "h264_nope"], "unknown video codec"
    if kind == "bad-pix-fmt":
        return [str(good), "-o", out, "--pix-fmt", "rgb48be"], "--pix-fmt"
    if kind == "start-after-end":
        return [str(good), "-o", out, "--start", "1", "--end", "0.5"], "--end"
    if kind == "start-past-the-end":
        return [str(good), "-o", out, "--start", "30"], "no video frames"
    raise AssertionError(kind)


BAD_INPUTS = ["missing", "text", "image", "truncated", "audio-only", "zero-frames", "outdir-missing", "same-as-input",
              "unknown-codec", "bad-pix-fmt", "start-after-end", "start-past-the-end"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(capsys, silent, tmp_path, kind):
    good = tmp_path / "good.mp4"
    good.write_bytes(silent.read_bytes())
    before = sorted(p.name for p in tmp_path.iterdir())
    args, needle = _bad_input(kind, tmp_path, good)
    made = sorted(p.name for p in tmp_path.iterdir())
    code, err = clip(capsys, *args, *FAST)
    assert_one_line_error(code, err, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == made  # no output, no temporary
    assert good.read_bytes() == silent.read_bytes() and set(before) <= set(made)


def test_unwritable_output_directory(capsys, silent, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # chmod does not stop root (these tests may run as root): make the permission check see a read-only directory.
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == locked and m & os.W_OK else real_access(p, m, *a, **k))
    code, err = clip(capsys, str(silent), "-o", str(locked / "out.mp4"), *FAST)
    assert_one_line_error(code, err, "not writable")
    code, err = clip(capsys, str(silent), str(silent), "-o", str(locked), *FAST)
    assert_one_line_error(code, err, "not writable")
    assert list(locked.iterdir()) == []


def test_nvenc_is_used_when_available_else_one_line_error(capsys, silent, tmp_path):
    out = tmp_path / "nv.mp4"
    try:
        check_encoder("h264_nvenc", "yuv420p")
    except DeviceUnavailable:
        code, err = clip(capsys, str(silent), "-o", str(out), *FAST, "--codec", "h264_nvenc")
        assert_one_line_error(code, err, "h264_nvenc", "--codec libx264")
        assert not out.exists()
    else:  # a machine with an NVIDIA encoder
        assert clip(capsys, str(silent), "-o", str(out), *FAST, "--codec", "h264_nvenc")[0] == 0
        assert len(video_pts(out)) == 12


def test_missing_face_model_names_the_fix(capsys, silent, tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAM_FACE_MODEL", str(tmp_path / "gone.tflite"))
    code, err = clip(capsys, str(silent), "-o", str(tmp_path / "out.mp4"), *TINY)
    assert_one_line_error(code, err, "gone.tflite")
    code, err = clip(capsys, str(silent), "-o", str(tmp_path / "out.mp4"), *FAST, "--face-model", str(tmp_path / "x.tflite"))
    assert_one_line_error(code, err, "--face-model")
    assert clip(capsys, str(silent), "-o", str(tmp_path / "out.mp4"), *FAST, "--no-face")[0] == 0


def test_existing_output_needs_overwrite(capsys, silent, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    code, err = clip(capsys, str(silent), "-o", str(out), *FAST)
    assert_one_line_error(code, err, "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert clip(capsys, str(silent), "-o", str(out), *FAST, "--overwrite")[0] == 0
    assert len(video_pts(out)) == 12 and leftovers(tmp_path) == []


def test_failure_mid_clip_leaves_nothing_and_says_so(capsys, caplog, silent, tmp_path, monkeypatch):
    from realtime.pipeline.processor import FrameProcessor

    calls = {"n": 0}
    real = FrameProcessor.process

    def flaky(self, frame, timestamp_s=0.0):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom in the stylizer")
        return real(self, frame, timestamp_s)

    monkeypatch.setattr(FrameProcessor, "process", flaky)
    out = tmp_path / "out.mp4"
    with caplog.at_level("WARNING"):
        code, err = clip(capsys, str(silent), "-o", str(out), *FAST)
    assert code == 1 and "boom in the stylizer" in err and len(err.strip().splitlines()) == 1
    assert "not written" in caplog.text and not out.exists() and leftovers(tmp_path) == []


def _child(argv: list[str]) -> list[str]:
    """A `stylecam` subprocess that prints its peak RSS (KiB) on exit."""
    code = ("import resource, sys\nfrom realtime.cli import main\nrc = main(sys.argv[1:])\n"
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
    return [sys.executable, "-c", code, *argv]


def test_ctrl_c_leaves_no_output_and_no_temporary(tmp_path):
    src = make_clip(tmp_path / "long.mp4", n=400, size=(128, 96), audio=True)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "styled.mp4"
    proc = subprocess.Popen(_child(["clip", str(src), "-o", str(out), *TINY]), cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not leftovers(outdir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the temporary file appears once the first frame is being written
    assert leftovers(outdir), "the clip never started writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert list(outdir.iterdir()) == []
    assert "not written" in err and "Traceback" not in err


def test_memory_stays_flat_with_clip_length(tmp_path):
    short = make_clip(tmp_path / "short.mp4", n=40, size=(480, 360))
    long = make_clip(tmp_path / "long.mp4", n=160, size=(480, 360))
    runs = [subprocess.Popen(_child(["clip", str(src), "-o", str(tmp_path / f"out_{src.name}"), "--style", "none",
                                     "--size", "256x192", "--quiet"]),
                             cwd=REPO, stderr=subprocess.PIPE, text=True) for src in (short, long)]
    peaks = []
    for proc in runs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        peaks.append(int(err.split("PEAK_RSS_KB")[1].split()[0]) / 1024)
    assert len(video_pts(tmp_path / "out_long.mp4")) == 160
    # 120 more frames held in memory would be 120 x 0.5 MB (input) + 0.5 MB (output) = 120 MB more.
    assert peaks[1] - peaks[0] < 40, peaks


# ------------------------------------------------------------------------------------------------ small pieces
def test_parse_seconds_and_options_validation():
    import argparse

    assert parse_seconds("12.5") == 12.5 and parse_seconds("1:02.5") == 62.5 and parse_seconds("1:00:02") == 3602
    for bad in ("-1", "x", "1:2:3:4", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seconds(bad)
    with pytest.raises(UsageError, match="--end"):
        ClipOptions(start=2.0, end=1.0)
    with pytest.raises(UsageError, match="--crf"):
        ClipOptions(crf=70)
    with pytest.raises(UsageError, match="queue_size"):
        ClipOptions(queue_size=0)


def test_plan_outputs(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "sub" / "b.mov"
    assert plan_outputs([a], tmp_path / "x.mp4") == [(a, tmp_path / "x.mp4")]
    out = tmp_path / "out"
    out.mkdir()
    assert plan_outputs([a, b], out) == [(a, out / "a.mp4"), (b, out / "b.mov")]
    assert plan_outputs([a], f"{out}/") == [(a, out / "a.mp4")]
    with pytest.raises(OutputError, match="does not exist"):
        plan_outputs([a], f"{tmp_path / 'nope'}/")
    (tmp_path / "file.mp4").write_bytes(b"")
    with pytest.raises(UsageError, match="must be a directory"):
        plan_outputs([a, b], tmp_path / "file.mp4")
