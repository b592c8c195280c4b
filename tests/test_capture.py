"""Capture: camera thread (newest frame wins, reconnects, one-line open errors) with a fake camera, the file reader
(order, end of stream, pacing, rotation, timestamps, bad files, errors surfacing in read()), open_source, list_cameras."""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media_files import (
    VFR_PTS,
    frame_image,
    make_audio_only,
    make_clip,
    make_corrupt_middle,
    make_png,
    make_truncated,
    make_vfr_clip,
    make_zero_frame_video,
)
from realtime.io.camera import CameraLost, CameraSource, list_cameras
from realtime.io.frames import Frame, FrameSource
from realtime.io.sources import open_source
from realtime.io.videofile import FileSource
from realtime.errors import BadInputFile, DeviceUnavailable, InputError, InputNotFound, UsageError
from realtime.geometry import Size
from realtime.io.media import _matrix_ops, apply_ops, display_ops

CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT, CAP_PROP_FPS, CAP_PROP_FOURCC = 3, 4, 5, 6


# --- a fake camera with the cv2.VideoCapture interface ----------------------------------------------------------------

class FakeCamera:
    """Frames at about ``rate`` fps (sleeping in ``read``), BGR, the frame number written into the green channel of
    the first four pixels; ``fail_after`` reads it starts failing (unplugged). ``gate``: a semaphore each read waits
    on (the test decides exactly when frames are produced). ``born[i]``: perf_counter when frame i was produced."""

    def __init__(self, rate: float = 200.0, size=(64, 48), fail_after: int | None = None, opened: bool = True,
                 gate: threading.Semaphore | None = None, blue: int = 200, reported_fps: float = 30.0) -> None:
        self.rate, self.size, self.fail_after, self.opened, self.gate, self.blue = rate, size, fail_after, opened, \
            gate, blue
        self.produced = 0
        self.born: dict[int, float] = {}
        self.sets: list[tuple[int, float]] = []
        self.props = {CAP_PROP_FRAME_WIDTH: 640.0, CAP_PROP_FRAME_HEIGHT: 480.0, CAP_PROP_FPS: reported_fps}
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.sets.append((prop, value))
        if prop != CAP_PROP_FPS:  # the camera lies about its rate: the source must measure it
            self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self):
        if self.released or (self.fail_after is not None and self.produced >= self.fail_after):
            time.sleep(0.001)
            return False, None
        if self.gate is not None:
            if not self.gate.acquire(timeout=5):
                return False, None
        else:
            time.sleep(1.0 / self.rate)
        w, h = self.size
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = self.blue  # BGR: blue first
        img[0, :4, 1] = np.frombuffer(self.produced.to_bytes(4, "little"), np.uint8)
        self.born[self.produced] = time.perf_counter()
        self.produced += 1
        return True, img

    def release(self) -> None:
        self.released = True


def frame_number(frame: Frame) -> int:
    return int.from_bytes(frame.image[0, :4, 1].tobytes(), "little")


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


# --- camera -----------------------------------------------------------------------------------------------------------

def test_newest_frame_wins_and_stale_frames_are_counted() -> None:
    gate = threading.Semaphore(0)
    cam = FakeCamera(gate=gate)
    gate.release()  # the first frame, read when opening
    with CameraSource(0, opener=lambda d: cam) as src:
        for _ in range(5):
            gate.release()
        wait_until(lambda: src.stats.frames == 6)
        f = src.read(timeout=2)
        assert frame_number(f) == 5 and f.index == 5
        assert src.stats.dropped == 5  # frames 0..4 were replaced before anyone read them
        gate.release()
        assert frame_number(src.read(timeout=2)) == 6
        assert src.stats.dropped == 5
        with pytest.raises(TimeoutError):
            src.read(timeout=0.05)


def test_slow_consumer_sees_fresh_frames_and_latency_does_not_grow() -> None:
    cam = FakeCamera(rate=200)
    received: list[tuple[int, int]] = []  # (frame number, frames the camera had produced when we got it)
    ages: list[float] = []  # receipt time minus the fake camera's own production time of that frame
    with CameraSource(0, opener=lambda d: cam) as src:
        for _ in range(15):
            f = src.read(timeout=2)
            got = time.perf_counter()
            received.append((frame_number(f), cam.produced))
            ages.append(got - cam.born[frame_number(f)])
            assert f.timestamp == f.arrived and f.pts is None
            time.sleep(0.04)  # a slow stage: about 8 camera frames
        stats = src.stats
    numbers = [n for n, _ in received]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    # Staleness in camera frames: the newest produced frame vs the one delivered. A queue would grow by ~6 per read.
    staleness = [produced - 1 - n for n, produced in received]
    assert max(staleness) <= 2, staleness
    # Age stays about one camera interval (5 ms), below the 40 ms slow stage; a queue would reach ~0.5 s here.
    assert max(ages) < 0.1, ages
    delivered = len(received)
    assert stats.dropped > 0  # the consumer skipped ahead
    # Every frame the camera produced was delivered, counted as dropped, or is the one still waiting in the box.
    assert stats.frames - delivered - 1 <= stats.dropped <= stats.frames - delivered
    assert sum(b - a - 1 for a, b in zip(numbers, numbers[1:], strict=False)) <= stats.dropped


def test_camera_image_is_rgb_size_and_fps_measured() -> None:
    cam = FakeCamera(rate=120, size=(80, 60), blue=200, reported_fps=30.0)
    with CameraSource("/dev/video7", width=1280, height=720, fps=30, opener=lambda d: cam) as src:
        f = src.read(timeout=2)
        assert f.image.shape == (60, 80, 3) and f.image.dtype == np.uint8
        assert f.image[..., 2].min() == 200 and f.image[..., 0].max() == 0  # BGR -> RGB once
        assert src.size == Size(80, 60)  # what the camera delivers, not what was asked for
        wait_until(lambda: src.stats.frames >= 20)
        fps = src.fps
    born = [cam.born[i] for i in range(5, 19)]
    own_rate = (len(born) - 1) / (born[-1] - born[0])  # the fake camera's own clock
    assert fps == pytest.approx(own_rate, rel=0.35)
    assert abs(fps - 30.0) > abs(fps - own_rate)  # measured, not the 30 the camera reports
    props = [p for p, _ in cam.sets]
    assert props.index(CAP_PROP_FOURCC) < props.index(CAP_PROP_FRAME_WIDTH) < props.index(CAP_PROP_FPS)
    assert dict(cam.sets)[CAP_PROP_FOURCC] == float(int.from_bytes(b"MJPG", "little"))
    assert cam.released


def test_camera_lost_after_bounded_reconnects() -> None:
    calls: list[int] = []

    def opener(device):
        calls.append(device)
        return FakeCamera(fail_after=3) if len(calls) == 1 else FakeCamera(opened=False)

    src = CameraSource(2, reconnect_attempts=3, reconnect_delay=0.01, opener=opener)
    got = []
    with pytest.raises(CameraLost) as err:
        for _ in range(50):
            got.append(src.read(timeout=5))
    src.close()
    assert 1 <= len(got) <= 3
    assert len(calls) == 1 + 3
    msg = str(err.value)
    assert "\n" not in msg and "index 2" in msg and "3 reconnect attempts" in msg
    assert not isinstance(err.value, InputError)  # a runtime failure (exit 1), not bad input


def test_camera_comes_back_after_a_reconnect() -> None:
    cams = [FakeCamera(fail_after=2, blue=10), FakeCamera(opened=False), FakeCamera(blue=99)]
    opener_calls = iter(cams)
    with CameraSource(0, reconnect_attempts=3, reconnect_delay=0.01, opener=lambda d: next(opener_calls)) as src:
        wait_until(lambda: src.stats.reconnects == 1)
        f = src.read(timeout=2)
        while f.image[0, 0, 2] != 99:
            f = src.read(timeout=2)
        assert src.stats.reconnects == 1 and cams[2].produced >= 1


@pytest.mark.parametrize("opener", [lambda d: FakeCamera(opened=False), lambda d: (_ for _ in ()).throw(OSError())])
def test_camera_open_failure_is_one_line(opener) -> None:
    with pytest.raises(DeviceUnavailable) as err:
        CameraSource(3, opener=opener)
    assert str(err.value) == "no camera at index 3: run `stylecam devices` to list cameras"


def test_camera_that_delivers_nothing() -> None:
    cam = FakeCamera(fail_after=0)
    with pytest.raises(DeviceUnavailable, match="delivers no frames"):
        CameraSource(0, opener=lambda d: cam)
    assert cam.released


def test_camera_options_validated() -> None:
    with pytest.raises(UsageError, match="width"):
        CameraSource(0, width=0, opener=lambda d: FakeCamera())


# --- open_source and list_cameras ------------------------------------------------------------------------------------

def test_open_source_dispatch(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", n=5)
    with open_source(str(clip)) as src:
        assert isinstance(src, FileSource) and src.paced and isinstance(src, FrameSource)
    with open_source(str(clip), paced=False) as src:
        assert not src.paced
    with open_source("1", opener=lambda d: FakeCamera()) as src:
        assert isinstance(src, CameraSource) and src.device == 1 and isinstance(src, FrameSource)
    with pytest.raises(DeviceUnavailable, match="no camera at /dev/video99"):
        open_source("/dev/video99")
    with pytest.raises(InputNotFound, match="no such file or camera"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(UsageError):
        open_source("0", start=1.0, opener=lambda d: FakeCamera())


def test_list_cameras_reads_sysfs_and_probes_modes(tmp_path: Path) -> None:
    cls = tmp_path / "class"
    cls.mkdir()
    real = tmp_path / "devices" / "pci0" / "video0"
    real.mkdir(parents=True)
    (real / "name").write_text("Fake Webcam\n")
    (real / "index").write_text("0\n")
    meta = tmp_path / "devices" / "pci0" / "video1"
    meta.mkdir()
    (meta / "name").write_text("Fake Webcam\n")
    (meta / "index").write_text("1\n")  # UVC metadata node: skipped
    loop = tmp_path / "devices" / "virtual" / "video4linux" / "video10"
    loop.mkdir(parents=True)
    (loop / "name").write_text("stylecam\n")
    for node in (real, meta, loop):
        (cls / node.name).symlink_to(node)

    class ModeCamera(FakeCamera):
        def set(self, prop, value):  # only 640x480 and 1280x720 exist
            super().set(prop, value)
            if prop == CAP_PROP_FRAME_HEIGHT and (self.props[3], value) not in ((640, 480), (1280, 720)):
                self.props[3], self.props[4] = 640.0, 480.0
            return True

    opened: list = []

    def opener(index):
        cam = ModeCamera()
        opened.append((index, cam))
        return cam

    cams = list_cameras(sysfs=cls, opener=opener)
    assert [(c.index, c.path, c.name, c.virtual) for c in cams] == [
        (0, "/dev/video0", "Fake Webcam", False), (10, "/dev/video10", "stylecam", True)]
    assert [(m.width, m.height) for m in cams[0].modes] == [(640, 480), (1280, 720)]
    assert all(cam.released for _, cam in opened)


def test_list_cameras_empty_and_quiet_here(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert list_cameras(sysfs="/nonexistent/video4linux") == []
    ghost = tmp_path / "video4linux" / "video57"  # a node whose device cannot be opened: real OpenCV probes it
    ghost.mkdir(parents=True)
    (ghost / "name").write_text("gone\n")
    capfd.readouterr()
    assert list_cameras(sysfs=ghost.parent) == []
    cams = list_cameras()  # this machine has no camera
    out, err = capfd.readouterr()
    assert all(c.index >= 0 for c in cams)
    assert err == "" and out == ""  # OpenCV's own warnings silenced


# --- file source -----------------------------------------------------------------------------------------------------

def test_file_unpaced_delivers_every_frame_in_order(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", n=30)
    with FileSource(clip, queue_size=2) as src:
        assert (src.size, src.fps, src.time_base, src.frame_count) == (Size(160, 120), 25.0, Fraction(1, 12800), 30)
        assert src.duration == pytest.approx(1.2) and not src.has_audio
        time.sleep(0.2)  # a full queue makes the decoder wait; nothing is dropped
        frames = []
        while (f := src.read(timeout=5)) is not None:
            frames.append(f)
        assert src.read() is None and src.read() is None  # the end stays the end
        assert src.stats.frames == 30 and src.stats.dropped == 0 and src.stats.bad_frames == 0
    assert [f.index for f in frames] == list(range(30))
    assert [f.timestamp for f in frames] == pytest.approx([i / 25 for i in range(30)])
    assert [f.pts for f in frames] == [i * 512 for i in range(30)]
    for i in (0, 13, 29):
        assert np.abs(frames[i].image.astype(int) - frame_image(i)).mean() < 4


def test_file_vfr_timestamps_and_range(tmp_path: Path) -> None:
    clip = make_vfr_clip(tmp_path / "vfr.mp4")
    with FileSource(clip) as src:
        got = [f for f in iter(lambda: src.read(timeout=5), None)]
    assert [round(f.timestamp * 1000) for f in got] == VFR_PTS
    # Each frame lasts until the next one (B-frames scramble the decoder's packet durations); the last one 1/25 s.
    assert [float(f.duration * src.time_base) for f in got] == pytest.approx(
        [b / 1000 - a / 1000 for a, b in zip(VFR_PTS, VFR_PTS[1:], strict=False)] + [0.04])
    plain = make_clip(tmp_path / "p.mp4", n=25)
    with FileSource(plain, start=0.2, end=0.6) as src:
        assert src.duration == pytest.approx(0.4) and src.frame_count == 10
        got = [f for f in iter(lambda: src.read(timeout=5), None)]
        assert [f.pts - src.pts_offset for f in got] == [i * 512 for i in range(10)]
    assert [round(f.timestamp, 3) for f in got] == [round(0.2 + i * 0.04, 3) for i in range(10)]
    with pytest.raises(BadInputFile, match="no video frames between"):
        FileSource(plain, start=5.0)
    with pytest.raises(UsageError):
        FileSource(plain, start=1.0, end=0.5)


def test_file_paced_drops_when_the_consumer_is_slow(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "fast.mp4", n=30, rate=100)
    with FileSource(clip, paced=True) as src:
        time.sleep(0.3)  # the clock starts at the first read: nothing is lost while the caller gets ready
        first = src.read(timeout=5)
        assert first.index == 0
        frames = [first]
        while (f := src.read(timeout=5)) is not None:
            frames.append(f)
            time.sleep(0.04)  # 4 clip frames per read
        stats = src.stats
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert stats.frames == 30 and stats.dropped > 0
    assert len(frames) + stats.dropped == 30  # every frame was either delivered or counted as dropped
    assert indices[-1] == 29  # the newest frame still arrives at the end


def test_file_paced_fast_consumer_gets_everything(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "slow.mp4", n=8, rate=20)
    with FileSource(clip, paced=True) as src:
        frames = [f for f in iter(lambda: src.read(timeout=5), None)]
        assert src.stats.dropped == 0
    assert [f.index for f in frames] == list(range(8))
    assert frames[-1].arrived - frames[0].arrived >= 0.3  # released at the clip's own rate (7 x 50 ms)


@pytest.mark.parametrize("rotation,hflip,shape,marker", [
    (90, False, (160, 120), "bottom-left"),   # counter-clockwise 90
    (-90, False, (160, 120), "top-right"),    # clockwise 90 (how phones store portrait video)
    (180, False, (120, 160), "bottom-right"),
    (0, True, (120, 160), "top-right"),       # mirrored
])
def test_file_rotation_honoured(tmp_path: Path, rotation, hflip, shape, marker) -> None:
    clip = make_clip(tmp_path / "r.mp4", n=3, rotation=rotation, hflip=hflip)
    with FileSource(clip) as src:
        img = src.read(timeout=5).image
        assert src.size == Size(shape[1], shape[0])
    assert img.shape[:2] == shape
    h, w = shape
    corners = {"top-left": img[:8, :8], "top-right": img[:8, -8:], "bottom-left": img[-8:, :8],
               "bottom-right": img[-8:, -8:]}
    for name, patch in corners.items():
        assert (patch.min() > 230) == (name == marker), name


def test_display_ops_rules() -> None:
    one = 65536
    assert _matrix_ops((0, -one, 0, one, 0, 0, 0, 0, 1 << 30)) == ("cclock",)
    assert _matrix_ops((0, one, 0, -one, 0, 0, 0, 0, 1 << 30)) == ("clock",)
    assert _matrix_ops((one, 0, 0, 0, one, 0, 0, 0, 1 << 30)) == ()

    class Stream:
        metadata = {"rotate": "90"}  # legacy tag: clockwise degrees

    class NoSideData:
        side_data = ()

    assert display_ops(NoSideData(), Stream()) == ("clock",)
    img = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)
    assert apply_ops(img, ("clock",))[:, :, 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert apply_ops(img, ("transpose",))[:, :, 0].tolist() == [[0, 3], [1, 4], [2, 5]]


@pytest.mark.parametrize("codec", ["mjpeg", "libx264"])
def test_file_corrupt_frame_is_repeated_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    codec: str) -> None:
    clip, bad_pts = make_corrupt_middle(tmp_path / "bad.mkv", n=20, bad=10, codec=codec)
    with caplog.at_level(logging.WARNING, logger="realtime.io.videofile"):
        with FileSource(clip) as src:
            frames = [f for f in iter(lambda: src.read(timeout=5), None)]
            assert src.stats.bad_frames == 1
    assert len(frames) == 20 and [f.index for f in frames] == list(range(20))
    assert [f.repeat for f in frames].count(True) == 1 and frames[10].repeat
    assert frames[10].pts == bad_pts and np.array_equal(frames[10].image, frames[9].image)
    assert [f.pts for f in frames] == sorted(f.pts for f in frames)
    assert any("1 video frame(s) could not be decoded" in r.message for r in caplog.records)
    with FileSource(clip, repeat_bad=False) as src:
        assert len([f for f in iter(lambda: src.read(timeout=5), None)]) == 19


def test_bad_files_get_one_line_errors(tmp_path: Path) -> None:
    good = make_clip(tmp_path / "good.mp4", n=10)
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 20)
    cases = {
        tmp_path / "missing.mp4": (InputNotFound, "no such file"),
        text: (BadInputFile, "not a readable video"),
        make_png(tmp_path / "still.png"): (BadInputFile, "still image"),
        make_audio_only(tmp_path / "tone.m4a"): (BadInputFile, "no video stream"),
        make_zero_frame_video(tmp_path / "empty.avi"): (BadInputFile, "has no video frames"),
        make_truncated(good, tmp_path / "cut.mp4"): (BadInputFile, "truncated, corrupt or not a video"),
        tmp_path: (BadInputFile, "is a directory"),
    }
    for path, (exc, words) in cases.items():
        with pytest.raises(exc) as err:
            FileSource(path)
        assert words in str(err.value) and "\n" not in str(err.value), (path, err.value)
        assert isinstance(err.value, InputError)
    # Index first (faststart), data cut: the file opens and its first frames decode; the index gives it away.
    fast = make_clip(tmp_path / "fast.mp4", n=40, container_options={"movflags": "faststart"})
    with pytest.raises(BadInputFile, match=r"fastcut.mp4 is truncated: its index expects \d+ bytes, the file has"):
        FileSource(make_truncated(fast, tmp_path / "fastcut.mp4", keep=0.6))
    with FileSource(fast) as src:  # the complete file passes the same check
        assert src.frame_count == 40


class _FailingSource(FileSource):
    """Decoding breaks after three frames (a disk error, a decoder bug): the error must reach read()."""

    def _decode(self):
        for i, frame in enumerate(super()._decode()):
            if i == 3:
                raise RuntimeError("decoder exploded")
            yield frame


@pytest.mark.parametrize("paced", [False, True])
def test_decode_thread_errors_reach_read(tmp_path: Path, paced: bool) -> None:
    clip = make_clip(tmp_path / "a.mp4", n=10, rate=100)
    with _FailingSource(clip, paced=paced) as src:
        got = []
        with pytest.raises(RuntimeError, match="decoder exploded"):
            for _ in range(20):
                got.append(src.read(timeout=5))
                if paced:
                    assert got[-1] is not None
        assert 1 <= len(got) <= 3
        with pytest.raises(RuntimeError, match="decoder exploded"):
            src.read(timeout=5)


def test_close_stops_promptly_with_a_full_queue(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", n=60)
    src = FileSource(clip, queue_size=1)
    assert src.read(timeout=5).index == 0
    wait_until(lambda: src._queue.full())
    src.close()
    assert not src._thread.is_alive()
    assert src.read(timeout=1) is None
    paced = FileSource(clip, paced=True)
    paced.read(timeout=5)
    paced.close()
    assert not paced._thread.is_alive() and paced.read(timeout=1) is None


def test_frame_validation() -> None:
    with pytest.raises(UsageError, match="HxWx3 uint8"):
        Frame(np.zeros((4, 4), np.uint8), 0.0, 0)
    with pytest.raises(UsageError):
        Frame(np.zeros((4, 4, 3), np.float32), 0.0, 0)
