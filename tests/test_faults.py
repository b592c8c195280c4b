"""Injected faults in a live session, through documented seams (``realtime.io.sources.use_camera_opener``,
``realtime.io.sinks.use_virtual_camera``, the sinks and stylizer a ``LiveLoop``/``LiveSession`` is given): a camera
lost mid-run, a virtual camera failing, a recording whose disk fills or whose directory is removed, out of memory
during a frame and during a LoRA switch, SIGTERM mid-run. CPU only, no timing assertions."""
from __future__ import annotations

import errno
import logging
import os
import shutil
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
from live_clips import ListSource, make_face_clip
from realtime.cli import main
from realtime.config import LoraSpec, load_style
from realtime.geometry import Size
from realtime.io.sinks import NullSink, VideoFileSink, WindowSink, use_virtual_camera
from realtime.io.sources import use_camera_opener
from realtime.pipeline.controls import Command
from realtime.pipeline.live import LiveLoop
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.session import LiveSession
from realtime.pipeline.watchdog import GuardedStylizer

N = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    return make_face_clip(tmp_path_factory.mktemp("faults") / "clip.mp4", astronaut, n=N)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code)
    return code, capsys.readouterr().err


class FakeCamera:
    """A cv2.VideoCapture stand-in: the first one opened gives ``good`` frames, then it is gone; later opens fail."""

    def __init__(self, good: int, first: bool) -> None:
        self.alive, self.left = first, good

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
        img = np.zeros((96, 128, 3), np.uint8)
        img[...] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None]
        return True, img

    def release(self) -> None:
        pass


class FakeVcam:
    """A pyvirtualcam.Camera stand-in that raises on send number ``fail_at`` (1-based; 0: never)."""

    made: list[FakeVcam] = []

    def __init__(self, width, height, fps, *, fmt=None, backend=None, device=None, fail_at: int = 0) -> None:
        self.backend, self.device = "fake", device or "/dev/video42"
        self.sent, self.closed, self.fail_at = 0, False, fail_at
        FakeVcam.made.append(self)

    def send(self, frame: np.ndarray) -> None:
        if self.fail_at and self.sent + 1 >= self.fail_at:
            raise RuntimeError("'v4l2loopback' backend: device /dev/video42 was removed")
        self.sent += 1

    def close(self) -> None:
        self.closed = True


def warnings(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and needle in r.getMessage()]


# ------------------------------------------------------------------------------------------------- the camera
def test_camera_lost_mid_run_reconnects_then_stops_with_exit_1_and_every_sink_finalized(
        capsys, caplog, tmp_path: Path) -> None:
    opened: list[FakeCamera] = []

    def opener(device):
        opened.append(FakeCamera(good=12, first=not opened))
        return opened[-1]

    FakeVcam.made = []
    out = tmp_path / "rec.mp4"
    caplog.set_level(logging.INFO)
    with use_camera_opener(opener), use_virtual_camera(FakeVcam):
        code, err = run_cli(capsys, "live", "--source", "0", "--output", str(out), "--output", "vcam", "--style",
                            "none", "--no-face", "--output-size", "128x96", "--no-stdin")
    errors = [ln for ln in err.splitlines() if ln.startswith("stylecam")]
    assert code == 1 and len(errors) == 1 and "camera index 0 was lost" in errors[0], err
    assert "Traceback" not in err
    attempts = warnings(caplog, "reconnect attempt")  # the visible status: one line per attempt, bounded
    assert [a.rsplit(" ", 1)[-1] for a in attempts] == [f"{i}/5" for i in range(1, 6)]
    assert len(opened) == 6  # the first open and five reconnects, then it gave up
    frames = video_frames(out)  # finalized and playable
    assert 1 <= len(frames) <= 12 and frames[0].shape == (96, 128, 3)
    (vcam,) = FakeVcam.made
    assert vcam.closed and vcam.sent == len(frames)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------- the outputs
def test_virtual_camera_failing_mid_run_is_dropped_with_one_warning_and_the_recording_continues(
        capsys, caplog, clip: Path, tmp_path: Path) -> None:
    FakeVcam.made = []
    out = tmp_path / "rec.mp4"
    with use_virtual_camera(lambda *a, **k: FakeVcam(*a, **k, fail_at=6)):
        code, err = run_cli(capsys, "live", "--source", str(clip), "--output", "vcam", "--output", str(out),
                            "--style", "none", "--no-face", "--output-size", "128x96", "--no-stdin", "--no-pace")
    assert code == 0, err
    dropped = warnings(caplog, "dropped")
    assert len(dropped) == 1 and "virtual camera /dev/video42" in dropped[0] and "removed" in dropped[0], dropped
    (vcam,) = FakeVcam.made
    assert vcam.sent == 5 and vcam.closed
    assert len(video_frames(out)) == N  # the recording got every frame
    assert leftovers(tmp_path) == []


class DiskFull:
    """Wraps a real VideoFileSink; from send number ``at`` on, the disk is full (ENOSPC)."""

    def __init__(self, sink: VideoFileSink, at: int) -> None:
        self.sink, self.at, self.calls = sink, at, 0
        self.path = sink.path

    def send(self, frame, timestamp=None) -> None:
        self.calls += 1
        if self.calls >= self.at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        self.sink.send(frame, timestamp)

    def close(self) -> None:
        self.sink.close()


def _loop(source, sinks, **kw) -> LiveLoop:
    proc = FrameProcessor(Size(128, 96), Size(128, 96), style=load_style("none"), **kw)
    return LiveLoop(source, proc, sinks, LiveSession(proc, load_style("none")))


def test_recording_disk_full_stops_the_recording_keeps_its_frames_and_live_continues(caplog, tmp_path: Path) -> None:
    out = tmp_path / "rec.mp4"
    rec = DiskFull(VideoFileSink(out, 128, 96, 30, variable_rate=True), at=11)
    null = NullSink()
    loop = _loop(ListSource(40), [rec, null])
    result = loop.run()
    assert result.delivered == 40 and null.frames == 40  # live went on
    lines = warnings(caplog, "rec.mp4")
    assert len(lines) == 1 and "No space left on device" in lines[0] and "dropped" in lines[0], lines
    assert len(video_frames(out)) == 10  # the frames written before the disk filled, playable
    assert leftovers(tmp_path) == [] and loop.dropped_sinks == [rec]


def test_recording_directory_removed_mid_run_is_one_line_and_live_continues(caplog, tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    out = folder / "rec.mp4"
    rec, null = VideoFileSink(out, 128, 96, 30, variable_rate=True), NullSink()
    loop = _loop(ListSource(40), [rec, null])
    loop.on_frame = lambda lp, frame, img: shutil.rmtree(folder) if frame.index == 10 else None
    result = loop.run()
    assert result.delivered == 40 and null.frames == 40
    from realtime.errors import OutputError
    from realtime.pipeline.live import close_all

    with pytest.raises(OutputError) as e:  # the recording cannot be kept: said once, at the end (exit 1)
        close_all(loop.sinks, [])
    assert "rec.mp4" in str(e.value) and "was removed" in str(e.value) and "\n" not in str(e.value)
    assert ".tmp" not in str(e.value)
    assert not folder.exists()


def test_last_output_failing_is_a_runtime_failure() -> None:
    from realtime.errors import OutputError

    FakeVcam.made = []
    with use_virtual_camera(lambda *a, **k: FakeVcam(*a, **k, fail_at=3)):
        from realtime.io.sinks import VirtualCameraSink

        sink = VirtualCameraSink(128, 96, 30)
    loop = _loop(ListSource(10), [sink])
    with pytest.raises(OutputError, match="no output left"):
        loop.run()
    assert FakeVcam.made[0].closed and loop.delivered == 2


# ------------------------------------------------------------------------------------------------- out of memory
class OomStylizer:
    """Inverts the picture; raises torch.OutOfMemoryError on the calls in ``fail_on`` (1-based)."""

    def __init__(self, fail_on=()) -> None:
        self.calls, self.fail_on, self.style = 0, set(fail_on), load_style("anime")

    def __call__(self, image, control):
        self.calls += 1
        if self.calls in self.fail_on:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 255 - image

    def set_style(self, style, wait=False):
        self.style = style

    def set_seed(self, seed):
        pass

    def reset(self):
        pass

    def conditioning(self, style):
        return None

    loras = None

    def close(self):
        pass


class FakeGui:
    WINDOW_NORMAL = WINDOW_KEEPRATIO = 0

    def namedWindow(self, *a):
        pass

    def resizeWindow(self, *a):
        pass

    def imshow(self, *a):
        pass

    def waitKey(self, ms):
        return -1

    def getWindowProperty(self, *a):
        return 1.0

    def destroyWindow(self, *a):
        pass


def test_oom_during_a_frame_passes_through_with_an_overlay_and_recovers(caplog) -> None:
    clock = [0.0]
    guard = GuardedStylizer(OomStylizer(fail_on={3}), deadline_s=30.0, cooldown_s=1.0, clock=lambda: clock[0])
    window = WindowSink("t", 128, 96, gui=FakeGui())
    proc = FrameProcessor(Size(128, 96), Size(128, 96), stylizer=guard, style=load_style("anime"))
    loop = LiveLoop(ListSource(8), proc, [window], LiveSession(proc, load_style("anime")))
    overlays, styled = [], []

    def on_frame(lp, frame, out):
        overlays.append(" ".join(lp._overlay_lines()))
        styled.append(bool(np.array_equal(out, 255 - frame.image)))
        clock[0] += 0.4

    loop.on_frame = on_frame
    loop.run()
    assert styled == [True, True, False, False, False, True, True, True]  # passed through, then recovered
    assert ["PASS-THROUGH" in o for o in overlays] == [not s for s in styled]
    assert guard.failures == 1 and "out of memory" in caplog.text and "recovered" in caplog.text
    guard.close()


def test_oom_during_a_lora_switch_keeps_the_previous_style(caplog, tmp_path: Path) -> None:
    running = OomStylizer()
    done = threading.Event()

    class OomSwitcher:  # reading the LoRA files runs out of memory
        def prepare(self, specs):
            done.set()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    running.loras = OomSwitcher()
    guard = GuardedStylizer(running, deadline_s=30.0)
    proc = FrameProcessor(Size(64, 64), Size(64, 64), stylizer=guard, style=running.style)
    session = LiveSession(proc, running.style)
    lora = tmp_path / "a.safetensors"
    lora.write_bytes(b"x")
    assert session.apply(Command("lora", (LoraSpec(str(lora), 0.8),)))
    assert done.wait(30)
    frame = np.full((64, 64, 3), 30, np.uint8)
    for _ in range(200):  # bounded: until the failed load is noticed between frames
        session.tick()
        if session.pending_style is None:
            break
        time.sleep(0.01)
    assert session.pending_style is None
    assert proc.stylizer is guard and guard.stylizer is running  # the previous stylizer still runs
    assert session.style.loras == () and session.style.name == "anime"
    assert np.array_equal(proc.process(frame), 255 - frame)  # still stylizing
    lines = warnings(caplog, "not applied")
    assert len(lines) == 1 and "out of memory" in lines[0]
    session.close()
    guard.close()


# ------------------------------------------------------------------------------------------------- SIGTERM
def _popen_until(cmd: list[str], marker: str) -> tuple[subprocess.Popen, list[str], threading.Event]:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    seen = threading.Event()

    def reader() -> None:
        for line in proc.stderr:
            lines.append(line)
            if marker in line:
                seen.set()

    threading.Thread(target=reader, daemon=True).start()
    return proc, lines, seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_live_stopped_by_a_signal_mid_run_is_a_normal_stop_with_a_finalized_file(clip: Path, tmp_path: Path,
                                                                                  sig: int) -> None:
    out = tmp_path / "rec.mp4"
    cmd = [sys.executable, "-m", "realtime.cli", "live", "--source", str(clip), "--output", str(out), "--style",
           "none", "--no-face", "--output-size", "128x96"]
    proc, lines, started = _popen_until(cmd, "first frame delivered")
    try:
        assert started.wait(120), "".join(lines)
        time.sleep(0.3)
        proc.send_signal(sig)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.1)
    err = "".join(lines)
    assert code == 0 and "Traceback" not in err, err
    assert "stopping (" in err and "fps; interrupted)" in err
    assert 1 <= len(video_frames(out)) < N
    assert leftovers(tmp_path) == []


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 300 kB tmpfs (a real ENOSPC); skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_really_full_disk_drops_the_recording_with_one_line_and_leaves_no_temporary(caplog, tiny_disk: Path) -> None:
    """On a disk that is really full an MP4 cannot be finalized (its index goes at the end): the recording is
    dropped with one line that says so, its temporary file removed, and live goes on."""

    class Noisy(ListSource):  # incompressible frames fill 300 kB quickly
        def read(self, timeout=None):
            f = super().read(timeout)
            if f is not None:
                f.image[...] = np.random.default_rng(f.index).integers(0, 255, f.image.shape, dtype=np.uint8)
            return f

    rec, null = VideoFileSink(tiny_disk / "rec.mp4", 128, 96, 30, variable_rate=True, crf=0), NullSink()
    loop = _loop(Noisy(200), [rec, null])
    assert loop.run().delivered == 200 and null.frames == 200
    lines = warnings(caplog, "rec.mp4")
    assert len(lines) == 1 and "No space left on device" in lines[0] and "could not be finalized" in lines[0]
    assert list(tiny_disk.iterdir()) == []


def test_oom_during_a_style_switch_keeps_the_previous_style_and_says_so(caplog) -> None:
    class OomOnSwitch(OomStylizer):
        def set_style(self, style, wait=False):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    running = OomOnSwitch()
    guard = GuardedStylizer(running, deadline_s=30.0)
    proc = FrameProcessor(Size(128, 96), Size(128, 96), stylizer=guard, style=running.style)
    loop = LiveLoop(ListSource(6), proc, [NullSink()], LiveSession(proc, running.style))
    seen: list[tuple[str, bool]] = []

    def on_frame(lp, frame, out):
        if frame.index == 1:
            lp.session.apply(Command("style", "watercolor"))
            guard.schedule(lambda: None).result(10)  # the switch has run (and failed) on the stylizer's thread
        seen.append((lp._overlay_lines()[0].split()[0], bool(np.array_equal(out, 255 - frame.image))))

    loop.on_frame = on_frame
    loop.run()
    assert all(ok for _, ok in seen)  # frames kept coming, stylized
    assert [name for name, _ in seen][2:] == ["anime"] * 4  # the overlay shows the style that really runs
    assert running.style.name == "anime"
    lines = warnings(caplog, "not applied")
    assert len(lines) == 1 and "watercolor" in lines[0] and "out of memory" in lines[0], lines
    guard.close()
