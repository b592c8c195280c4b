"""`stylecam live` and `stylecam devices`: end to end on clips of skimage's astronaut (random:tiny models, small
sizes), the first frame, framing with --style none, one-line errors and exit codes, the watchdog, Ctrl-C, a lost
camera. CPU only, no timing assertions (waits are bounded synchronisation, not measurements)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_files import leftovers, video_frames
from live_clips import CLIP_FPS, CaptureSink, face_x, make_face_clip
from realtime.cli import build_parser, main
from realtime.config import load_style
from realtime.errors import UsageError
from realtime.geometry import Size
from realtime.pipeline.live import LiveLoop, close_all
from realtime.cli.live_setup import build_live
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.watchdog import GuardedStylizer

TINY = ["--model", "random:tiny", "--size", "64x64", "--output-size", "128x96", "--no-stdin"]
N_FRAMES = 40


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    return make_face_clip(tmp_path_factory.mktemp("live") / "clip.mp4", astronaut, n=N_FRAMES)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = int(e.code)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str, exit_code: int = 2) -> str:
    assert code == exit_code, err
    lines = [ln for ln in err.splitlines() if ln.startswith("stylecam")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def parts_for(argv: list[str]):
    import contextlib

    args = build_parser().parse_args(["live", *argv])
    stack = contextlib.ExitStack()
    with stack:
        parts = build_live(args, stack)
        stack.pop_all()
    return args, parts


# ------------------------------------------------------------------------------------------------- end to end
def test_live_clip_to_file_end_to_end(capsys, caplog, clip: Path, tmp_path: Path) -> None:
    """The issue's command (file source paced at its own rate), small sizes: 20 frames delivered, file finalized."""
    out = tmp_path / "out.mp4"
    code, err = run_cli(capsys, "live", "--source", str(clip), "--output", str(out), *TINY, "--frames", "20")
    assert code == 0, err
    frames = video_frames(out)
    assert len(frames) == 20 and frames[0].shape == (96, 128, 3)
    assert leftovers(tmp_path) == []
    assert "s per frame at 64x64, expect about" in caplog.text  # the CPU warning, with the rate to expect
    assert "20 frames delivered" in caplog.text


def test_first_frame_is_a_real_stylized_frame_of_that_input(clip: Path) -> None:
    """No warm-up placeholder and no n-1 delay: the first frame delivered is exactly what a fresh pipeline makes of
    the first input frame."""
    from realtime.io.sources import open_source
    from realtime.config import ModelConfig, RunConfig
    from realtime.vision.edges import EdgeDetector
    from realtime.vision.face import FaceFramer, FramingConfig
    from realtime.diffusion.build import build_stylizer

    args, parts = parts_for(["--source", str(clip), "--output", "none", "--no-pace", *TINY, "--frames", "3"])
    sink = CaptureSink()
    loop = LiveLoop(parts.source, parts.processor, [sink], parts.session, frames=3)
    try:
        loop.run()
    finally:
        close_all(parts.sinks, [parts.source, parts.session, parts.processor])
    assert len(sink.frames) == 3
    with open_source(str(clip), paced=False) as src:
        first = src.read()
    fresh = FrameProcessor(
        Size(64, 64), Size(128, 96),
        stylizer=build_stylizer(ModelConfig("random:tiny"), load_style("anime"),
                                RunConfig(size=Size(64, 64), device="cpu")),
        edges=EdgeDetector(), framer=FaceFramer(FramingConfig(), Size(192, 144), 1.0),
    )
    with fresh:
        expected = fresh.process(first.image, first.timestamp)
    assert np.array_equal(sink.frames[0], expected)
    assert sink.frames[0].std() > 0  # not a flat placeholder


def test_style_none_frames_the_moving_face(capsys, clip: Path, tmp_path: Path, astronaut: np.ndarray) -> None:
    """Framing only: the output is the framed crop (as FaceFramer on its own thread, one frame behind, +
    FrameProcessor make it), the face stays steady in the output while it crosses the input."""
    from realtime.io.sources import open_source
    from realtime.vision.face import FaceDetector, FaceFramer, FramingConfig
    from realtime.vision.framer_thread import ThreadedFramer

    out = tmp_path / "framed.mp4"
    code, err = run_cli(capsys, "live", "--source", str(clip), "--output", str(out), "--style", "none", "--no-pace",
                        "--output-size", "128x96", "--no-stdin")
    assert code == 0, err
    got = video_frames(out)
    assert len(got) == N_FRAMES
    expected, windows = [], []
    with open_source(str(clip), paced=False) as src, FrameProcessor(Size(128, 96), Size(128, 96), framer=ThreadedFramer(
            src.size, 128 / 96, lambda size: FaceFramer(FramingConfig(), size, 128 / 96))) as proc:
        while (f := src.read()) is not None:
            expected.append(proc.process(f.image, f.timestamp))
            windows.append(proc.last_window)
    for g, e in zip(got, expected, strict=True):
        assert np.abs(g.astype(np.int16) - e).mean() < 4.0  # equal up to H.264
    # The window follows the face across the frame; in the output the face stays put.
    # (The window eases in from the full frame over the first 20 frames, holds through the faceless frames 24-29.)
    later = (20, 22, 37, 39)  # not 30-35: the window eases from where it held to where the face came back
    assert windows[39].cx - windows[20].cx > 30 and face_x(39, N_FRAMES) - face_x(20, N_FRAMES) > 30
    with FaceDetector() as det:
        found = [det.detect(expected[i], i / CLIP_FPS) for i in later]
    centres = [faces[0].cx for faces in found if faces]
    assert len(centres) == len(later)
    assert max(centres) - min(centres) < 0.05 * 128


# ------------------------------------------------------------------------------------------------- errors
def test_vcam_without_a_device_is_a_one_line_hint(capsys, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyvirtualcam

    from realtime.io.sinks import _loopback_devices

    if _loopback_devices():  # this machine has one: make the backend fail as it does without a device
        def no_device(*a, **k):
            raise RuntimeError("'v4l2loopback' backend: No v4l2 loopback device found at /dev/video[0-99]. Did you "
                               "run 'modprobe v4l2loopback'?")

        monkeypatch.setattr(pyvirtualcam, "Camera", no_device)
    code, err = run_cli(capsys, "live", "--source", str(clip), "--style", "none", "--no-stdin")  # default: vcam
    line = assert_one_line_error(code, err, "virtual camera")
    assert "modprobe v4l2loopback" in line or "OBS" in line


def test_window_without_a_display(capsys, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check is the X11/Wayland one")
    code, err = run_cli(capsys, "live", "--source", str(clip), "--output", "window", "--style", "none", "--no-stdin")
    assert_one_line_error(code, err, "no display")


def test_bad_sources_and_outputs(capsys, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.io.camera as capture

    class Closed:
        def isOpened(self) -> bool:
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(capture, "_default_opener", lambda device: Closed())
    none = ["--output", "none", "--style", "none", "--no-stdin"]
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(tmp_path / "missing.mp4"), *none), "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(text), *none), "not a readable video")
    assert_one_line_error(*run_cli(capsys, "live", "--source", "3", *none), "no camera at index 3")
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(clip), "--output", str(tmp_path / "no" / "o.mp4"),
                                   "--style", "none", "--no-stdin"), "does not exist")
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(clip), "--output", "none", "--output", "vcam",
                                   "--style", "none", "--no-stdin"), "none")
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(clip), *none, "--frames", "0"), "--frames")
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(clip), *none, "--strength", "0.5"), "--strength")
    assert_one_line_error(*run_cli(capsys, "live", "--source", str(clip), *none, "--output-size", "127x96"), "even")
    assert leftovers(tmp_path) == []


class FakeCamera:
    """A cv2.VideoCapture stand-in: ``good`` frames (a grey gradient, BGR), then it is gone (and cannot reopen)."""

    opened = 0

    def __init__(self, good: int) -> None:
        FakeCamera.opened += 1
        self.alive = FakeCamera.opened == 1
        self.left = good

    def isOpened(self) -> bool:
        return self.alive

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == 5 else 0.0

    def read(self):
        time.sleep(0.01)
        if not self.alive or self.left <= 0:
            return False, None
        self.left -= 1
        img = np.zeros((144, 192, 3), np.uint8)
        img[...] = np.linspace(0, 255, 192, dtype=np.uint8)[None, :, None]
        return True, img

    def release(self) -> None:
        pass


def test_camera_unplugged_mid_run_exits_1_and_keeps_the_recording(capsys, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.io.camera as capture

    FakeCamera.opened = 0
    monkeypatch.setattr(capture, "_default_opener", lambda device: FakeCamera(good=12))
    out = tmp_path / "rec.mp4"
    code, err = run_cli(capsys, "live", "--source", "0", "--output", str(out), "--style", "none", "--no-face",
                        "--output-size", "128x96", "--no-stdin")
    line = assert_one_line_error(code, err, "camera index 0 was lost", exit_code=1)
    assert "reconnect" in line
    assert out.is_file() and 1 <= len(video_frames(out)) <= 12
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------- watchdog
class FlakyStylizer:
    """Inverts the image; raises ``error`` on the calls listed in ``fail_on`` (1-based); ``gate``: calls in
    ``block_on`` wait for it (a stall)."""

    def __init__(self, fail_on=(), error: BaseException | None = None, block_on=(), gate=None) -> None:
        self.calls, self.resets = 0, 0
        self.fail_on, self.error, self.block_on, self.gate = set(fail_on), error, set(block_on), gate
        self.style = load_style("anime")

    def __call__(self, image: np.ndarray, control: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls in self.block_on:
            assert self.gate.wait(30)
        if self.calls in self.fail_on:
            raise self.error
        return 255 - image

    def reset(self) -> None:
        self.resets += 1

    def set_style(self, style) -> None:
        self.style = style

    def close(self) -> None:
        pass


def test_watchdog_passes_frames_through_on_failure_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    inner = FlakyStylizer(fail_on={3}, error=oom)
    guard = GuardedStylizer(inner, deadline_s=30.0, cooldown_s=1.0, clock=lambda: clock[0])
    proc = FrameProcessor(Size(64, 64), Size(64, 64), stylizer=guard)
    frame = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (64, 1, 3))
    outs = []
    for _ in range(7):
        outs.append(proc.process(frame))
        clock[0] += 0.4
    stylized, passed = 255 - frame, frame
    assert [np.array_equal(o, stylized) for o in outs] == [True, True, False, False, False, True, True]
    assert all(np.array_equal(o, passed) for o in outs[2:5])  # framed, unstylized
    assert inner.calls == 5  # 7 frames, but no call during the 1 s cool-down (frames 4 and 5)
    assert guard.failures == 1 and proc.passed_through == 3 and inner.resets >= 1
    assert "out of memory" in caplog.text and "recovered" in caplog.text
    guard.close()


def test_watchdog_stall_passes_through_until_the_stylizer_answers() -> None:
    gate = threading.Event()
    inner = FlakyStylizer(block_on={2}, gate=gate)
    guard = GuardedStylizer(inner, deadline_s=0.05)
    frame = np.full((64, 64, 3), 40, np.uint8)
    ctl = np.zeros((64, 64), np.uint8)
    assert guard(frame, ctl)[0, 0, 0] == 215 and guard.last_ok
    assert guard(frame, ctl) is frame and not guard.last_ok and guard.stalls == 1  # stalled: passed through
    assert guard(frame, ctl) is frame and inner.calls == 2  # still stalled: no new call queued behind it
    gate.set()
    for _ in range(500):  # bounded wait for the stalled call to return
        out = guard(frame, ctl)
        if guard.last_ok:
            break
        time.sleep(0.01)
    assert guard.last_ok and out[0, 0, 0] == 215 and inner.resets >= 1
    guard.close()


def test_watchdog_lets_bugs_through() -> None:
    guard = GuardedStylizer(FlakyStylizer(fail_on={1}, error=TypeError("bug")), deadline_s=5)
    with pytest.raises(TypeError):
        guard(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    guard2 = GuardedStylizer(FlakyStylizer(fail_on={1}, error=UsageError("bad setting")), deadline_s=5)
    with pytest.raises(UsageError):
        guard2(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))


# ------------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_is_a_normal_stop_with_a_finalized_file(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    cmd = [sys.executable, "-m", "realtime.cli", "live", "--source", str(clip), "--output", str(out), "--style",
           "none", "--output-size", "128x96"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    started = threading.Event()

    def reader() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "first frame delivered" in line:
                started.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert started.wait(120), "".join(lines)
        time.sleep(0.3)  # a few more frames (the paced clip runs 4 s)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    t.join(10)
    err = "".join(lines)
    assert code == 0, err
    assert "Traceback" not in err and "stylecam: interrupted" not in err  # a normal stop, not an abort
    assert "stopping (Ctrl-C" in err and "fps; interrupted)" in err  # the summary at exit
    # stderr holds our log lines only: no OpenCV/MediaPipe/absl spam.
    assert all(ln.startswith(("INFO ", "WARNING ")) for ln in err.splitlines()), err
    frames = video_frames(out)
    assert 1 <= len(frames) < N_FRAMES and frames[0].shape == (96, 128, 3)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------- devices
def test_devices_lists_cameras_and_virtual_cameras(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import realtime.io.camera as capture
    import realtime.io.sinks as sinks
    from realtime.io.camera import CameraInfo, CameraMode

    monkeypatch.setattr(capture, "list_cameras", lambda max_index=10, **k: [
        CameraInfo(0, "/dev/video0", "Integrated Camera", (CameraMode(640, 480, 30.0), CameraMode(1280, 720, 30.0))),
        CameraInfo(10, "/dev/video10", "stylecam", (), True),
    ])
    monkeypatch.setattr(sinks, "virtual_camera_status",
                        lambda probe=None: (True, "v4l2loopback: /dev/video10 (stylecam)"))
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "camera 0: /dev/video0 Integrated Camera (640x480@30, 1280x720@30)"
    assert lines[1] == "camera 10: /dev/video10 stylecam [virtual]"
    assert lines[2].startswith("virtual camera: ok") and "/dev/video10" in lines[2]
    assert main(["devices", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cameras"][0]["modes"][1] == {"width": 1280, "height": 720, "fps": 30.0}
    assert data["virtual_camera"]["available"] is True

    monkeypatch.setattr(capture, "list_cameras", lambda max_index=10, **k: [])
    monkeypatch.setattr(sinks, "virtual_camera_status",
                        lambda probe=None: (False, "no v4l2loopback device: sudo modprobe v4l2loopback"))
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "camera: none found" in out and "virtual camera: unavailable" in out and "modprobe" in out
