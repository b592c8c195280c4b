"""Sinks: the video file sink (round trip of frames and timestamps, VFR, audio copied bit-exactly or re-encoded,
trimming, atomic output, abort/Ctrl-C leaving nothing, overwrite and codec errors), the virtual camera (no device here:
the one-line fix; a fake backend for the send path), the preview window (no display; keys with a fake GUI), open_sinks."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media_files import VFR_PTS, frame_image, make_clip, make_vfr_clip
from realtime.io.frames import Sink
from realtime.io.videofile import FileSource
from realtime.errors import DeviceUnavailable, InputError, OutputError, UsageError
from realtime.io.sinks import (
    KEY_ACTIONS,
    NO_DISPLAY,
    NullSink,
    VideoFileSink,
    VirtualCameraSink,
    WindowSink,
    open_sinks,
    virtual_camera_fix,
    virtual_camera_status,
)


def probe(path: Path) -> dict:
    """Frame times, audio packets (bytes) and decoded audio samples of a file."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = [f for f in c.decode(vs)]
        times = [float(f.time) for f in frames]
        images = [f.to_ndarray(format="rgb24") for f in frames]
    audio_packets, samples, codec, rate = [], None, None, None
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            codec, rate = a.codec_context.name, a.codec_context.sample_rate
            audio_packets = [(bytes(p), p.pts, p.duration) for p in c.demux(a) if p.size]
    nsamples = 0
    with av.open(str(path)) as c:
        if c.streams.audio:
            frames = list(c.decode(c.streams.audio[0]))
            samples = np.concatenate([f.to_ndarray() for f in frames], axis=1)
            nsamples = sum(f.samples for f in frames)
    return {"times": times, "images": images, "audio_packets": audio_packets, "samples": samples, "codec": codec,
            "rate": rate, "seconds": nsamples / rate if rate else 0.0}


def transcode(src_path: Path, out: Path, **kw) -> int:
    """What the clip command does: every FileSource frame into a VideoFileSink with its own timestamps."""
    with FileSource(src_path, start=kw.pop("start", None), end=kw.pop("end", None)) as src:
        sink_kw = dict(time_base=src.time_base, audio_from=src_path if src.has_audio else None)
        sink_kw.update(kw)
        with VideoFileSink(out, src.size.width, src.size.height, src.fps, **sink_kw) as sink:
            while (f := src.read(timeout=5)) is not None:
                sink.send(f.image, pts=f.pts - src.pts_offset, duration=f.duration)
            return sink.frames


def duration(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        return c.duration / 1e6


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# --- video file sink -------------------------------------------------------------------------------------------------

def test_numbered_frames_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoFileSink(out, 160, 120, 25) as sink:
        for i in range(12):
            sink.send(frame_image(i))
    info = probe(out)
    assert info["times"] == pytest.approx([i / 25 for i in range(12)])
    for i in (0, 5, 11):
        assert np.abs(info["images"][i].astype(int) - frame_image(i)).mean() < 4
    assert listing(tmp_path) == ["out.mp4"]


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_vfr_timestamps_and_frame_count_survive(tmp_path: Path, ext: str) -> None:
    src = make_vfr_clip(tmp_path / "vfr.mp4")
    out = tmp_path / f"out.{ext}"
    assert transcode(src, out) == len(VFR_PTS)
    times = probe(out)["times"]
    assert [round(t * 1000) for t in times] == VFR_PTS
    assert duration(out) == pytest.approx(0.74, abs=0.002)  # the last frame keeps its own length (1/25 s)


@pytest.mark.parametrize("ext", ["mp4", "mkv", "mov"])
def test_audio_copied_bit_exact(tmp_path: Path, ext: str) -> None:
    src = make_clip(tmp_path / "talk.mp4", n=25, audio=True)
    out = tmp_path / f"styled.{ext}"
    assert transcode(src, out) == 25
    a, b = probe(src), probe(out)
    assert b["codec"] == "aac"
    assert [p[0] for p in b["audio_packets"]] == [p[0] for p in a["audio_packets"]]  # same packets, same bytes
    assert len(b["times"]) == 25
    if ext == "mkv":
        # Matroska has no field for AAC's encoder delay (1024 priming samples, negative times in MP4): the priming
        # is played and every stream is shifted by it, video too, so sync is kept; the samples after it are the same.
        assert np.array_equal(b["samples"][:, 1024:], a["samples"])
    else:
        assert np.array_equal(b["samples"], a["samples"])  # same samples
        assert b["times"] == pytest.approx(a["times"], abs=1e-3)
        assert duration(out) == pytest.approx(duration(src), abs=1e-3) == 1.0
    assert np.diff(b["times"]) == pytest.approx(np.diff(a["times"]), abs=1e-3)


def test_audio_reencoded_when_the_container_cannot_hold_it(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "talk.mp4", n=25, audio=True)
    out = tmp_path / "styled.webm"
    assert transcode(src, out, codec="libvpx-vp9") == 25
    a, b = probe(src), probe(out)
    assert b["codec"] == "opus" and b["rate"] == 48000
    dur_in, dur_out = a["samples"].shape[1] / 48000, b["samples"].shape[1] / 48000
    assert dur_out == pytest.approx(dur_in, abs=0.03)
    # Still the 440 Hz tone: its spectrum peaks at 440 Hz.
    x = b["samples"][0, 4800:4800 + 16384]
    peak = np.argmax(np.abs(np.fft.rfft(x))) * 48000 / len(x)
    assert peak == pytest.approx(440, abs=6)


@pytest.mark.parametrize("source,audio_codec,canonical", [("pcm.mov", "pcm_s16le", "pcm_s16le"),
                                                            ("mp3.mkv", "libmp3lame", "mp3")])
def test_other_audio_codecs_copied_or_reencoded(tmp_path: Path, source: str, audio_codec: str,
                                                canonical: str) -> None:
    src = make_clip(tmp_path / source, n=10, audio=True, audio_codec=audio_codec)
    transcode(src, tmp_path / "copy.mkv")  # Matroska holds anything: copied
    a, b = probe(src), probe(tmp_path / "copy.mkv")
    assert [p[0] for p in b["audio_packets"]] == [p[0] for p in a["audio_packets"]]
    import av

    with av.open(str(tmp_path / "copy.mkv")) as c:
        assert c.streams.audio[0].codec_context.codec.canonical_name == canonical
    transcode(src, tmp_path / "web.webm", codec="libvpx-vp9")  # WebM takes only Opus/Vorbis: re-encoded
    c = probe(tmp_path / "web.webm")
    assert c["codec"] == "opus"
    assert c["seconds"] == pytest.approx(a["seconds"], abs=0.03) and a["seconds"] == pytest.approx(0.4, abs=0.03)


def test_trimmed_range_keeps_video_and_audio_in_step(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "talk.mp4", n=25, audio=True)
    out = tmp_path / "part.mp4"
    n = transcode(src, out, start=0.2, end=0.6, audio_start=0.2, audio_end=0.6)
    info = probe(out)
    assert n == 10 and info["times"] == pytest.approx([i * 0.04 for i in range(10)], abs=1e-3)
    assert info["samples"].shape[1] / 48000 == pytest.approx(0.4, abs=0.022)  # cut within half an AAC packet
    assert duration(out) == pytest.approx(0.4, abs=0.011)


def test_temp_file_next_to_target_until_close(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    sink = VideoFileSink(out, 160, 120, 25)
    sink.send(frame_image(0))
    names = listing(tmp_path)
    assert len(names) == 1 and names[0].startswith(".out.mp4.tmp-") and names[0].endswith(".mp4")
    assert not out.exists()
    sink.close()
    assert listing(tmp_path) == ["out.mp4"]
    with pytest.raises(UsageError, match="after close"):
        sink.send(frame_image(1))


@pytest.mark.parametrize("exc", [RuntimeError("stylizer failed"), KeyboardInterrupt()])
def test_exception_or_ctrl_c_leaves_nothing(tmp_path: Path, exc: BaseException) -> None:
    src = make_clip(tmp_path / "in.mp4", n=5, audio=True)
    out = tmp_path / "out.mp4"
    with pytest.raises(type(exc)):
        with VideoFileSink(out, 160, 120, 25, audio_from=src) as sink:
            sink.send(frame_image(0))
            sink.send(frame_image(1))
            raise exc
    assert listing(tmp_path) == ["in.mp4"]


def test_abort_and_empty_close_leave_nothing(tmp_path: Path) -> None:
    sink = VideoFileSink(tmp_path / "a.mp4", 160, 120, 25)
    sink.send(frame_image(0))
    sink.abort()
    sink.abort()
    assert listing(tmp_path) == []
    with pytest.raises(OutputError, match="no frames"):
        VideoFileSink(tmp_path / "b.mp4", 160, 120, 25).close()
    assert listing(tmp_path) == []


def test_overwrite_rules(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists: pass --overwrite"):
        VideoFileSink(out, 160, 120, 25)
    assert out.read_bytes() == b"precious"
    with VideoFileSink(out, 160, 120, 25, overwrite=True) as sink:
        sink.send(frame_image(0))
        assert out.read_bytes() == b"precious"  # replaced only at close
    assert out.stat().st_size > 100 and len(probe(out)["times"]) == 1
    assert listing(tmp_path) == ["out.mp4"]
    with pytest.raises(OutputError, match="is the input"):
        VideoFileSink(out, 160, 120, 25, overwrite=True, audio_from=tmp_path / "." / "out.mp4")


def test_output_location_errors(tmp_path: Path) -> None:
    cases = [
        (tmp_path / "missing" / "out.mp4", OutputError, "does not exist"),
        (tmp_path, OutputError, "is a directory"),
        (Path("/proc/stylecam-test.mp4"), OutputError, "cannot write"),  # not writable, even for root
        (tmp_path / "out.weird", UsageError, "cannot tell the container format"),
    ]
    for path, exc, words in cases:
        with pytest.raises(exc) as err:
            VideoFileSink(path, 160, 120, 25)
        assert words in str(err.value) and "\n" not in str(err.value), path
        assert isinstance(err.value, InputError)
    assert listing(tmp_path) == []


def test_codec_and_format_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown video codec 'h265x': try one of libx264") as err:
        VideoFileSink(tmp_path / "o.mp4", 160, 120, 25, codec="h265x")
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="unknown video codec 'aac'"):
        VideoFileSink(tmp_path / "o.mp4", 160, 120, 25, codec="aac")
    with pytest.raises(UsageError, match="pixel format"):
        VideoFileSink(tmp_path / "o.mp4", 160, 120, 25, pix_fmt="nope")
    with pytest.raises(UsageError, match="even width and height"):
        VideoFileSink(tmp_path / "o.mp4", 161, 120, 25)
    with pytest.raises(UsageError, match="crf"):
        VideoFileSink(tmp_path / "o.mp4", 160, 120, 25, crf=99)
    assert listing(tmp_path) == []


def test_send_checks_frames_and_timestamps(tmp_path: Path) -> None:
    with VideoFileSink(tmp_path / "t.mkv", 160, 120, 25) as sink:
        with pytest.raises(UsageError, match="120x160x3 uint8"):
            sink.send(np.zeros((120, 160, 3), np.float32))
        # Seconds from any origin (a live loop's perf_counter): snapped to the 1/25 s grid, never repeated.
        for t in (1000.0, 1000.04, 1000.041, 1000.2):
            sink.send(frame_image(0), 1000.0 + (t - 1000.0))
    assert [round(t, 2) for t in probe(tmp_path / "t.mkv")["times"]] == [0.0, 0.04, 0.08, 0.2]
    with VideoFileSink(tmp_path / "p.mp4", 160, 120, 25, time_base=Fraction(1, 1000)) as sink:
        sink.send(frame_image(0), pts=10)
        with pytest.raises(UsageError, match="pts must increase"):
            sink.send(frame_image(1), pts=10)


# --- virtual camera --------------------------------------------------------------------------------------------------

def test_no_virtual_camera_device_gives_the_fix() -> None:
    with pytest.raises(DeviceUnavailable) as err:
        VirtualCameraSink(640, 480, 30)
    msg = str(err.value)
    assert "\n" not in msg
    assert "sudo modprobe v4l2loopback exclusive_caps=1 card_label=stylecam" in msg
    assert "v4l2loopback-dkms" in msg
    with pytest.raises(DeviceUnavailable, match="/dev/video42 does not exist"):
        VirtualCameraSink(640, 480, 30, device="/dev/video42")
    with pytest.raises(UsageError, match="backend 'obs' is not available on Linux: use v4l2loopback"):
        VirtualCameraSink(640, 480, 30, backend="obs")
    ok, line = virtual_camera_status()
    assert not ok and "modprobe v4l2loopback" in line


def test_fix_names_obs_elsewhere() -> None:
    for system in ("Windows", "Darwin"):
        assert "OBS" in virtual_camera_fix(system) and "Virtual Camera" in virtual_camera_fix(system)


def test_virtual_camera_send_path_with_a_fake_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyvirtualcam import camera as vcam

    received = []

    class FakeBackend:
        def __init__(self, *, width, height, fps, fourcc, device, **kw):
            self.size = (width, height)

        def send(self, frame):
            received.append(frame.copy())

        def close(self):
            received.append("closed")

        def device(self):
            return "fake0"

        def native_fourcc(self):
            return None

    monkeypatch.setitem(vcam.BACKENDS, "fake", FakeBackend)
    img = frame_image(3, 64, 48)
    with VirtualCameraSink(64, 48, 30, backend="fake") as cam:
        assert (cam.backend, cam.device) == ("fake", "fake0")
        cam.send(img, 1.0)
        with pytest.raises(UsageError):
            cam.send(np.zeros((48, 65, 3), np.uint8))
    assert np.array_equal(received[0].reshape(48, 64, 3), img) and received[-1] == "closed"


# --- window ----------------------------------------------------------------------------------------------------------

def test_window_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DeviceUnavailable) as err:
        WindowSink("stylecam", 320, 240)
    assert str(err.value) == NO_DISPLAY == "no display for a window: use --output vcam or a file path"


def test_window_with_an_unreachable_display_does_not_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV's Qt backend would abort the whole process here (not raise): the sink must refuse before it tries.
    monkeypatch.setenv("DISPLAY", ":97")
    with pytest.raises(DeviceUnavailable, match="X display :97 does not answer"):
        WindowSink("stylecam", 320, 240)
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-9")
    with pytest.raises(DeviceUnavailable, match="needs X11"):
        WindowSink("stylecam", 320, 240)


class FakeGui:
    WINDOW_NORMAL, WINDOW_KEEPRATIO, WND_PROP_VISIBLE = 0, 0, 4

    def __init__(self, keys, fail=False):
        self.keys, self.fail, self.shown, self.visible, self.destroyed = list(keys), fail, [], 1.0, False

    def namedWindow(self, title, flags):
        if self.fail:
            raise RuntimeError("cannot connect to X server")

    def resizeWindow(self, title, w, h):
        pass

    def imshow(self, title, image):
        self.shown.append(image.copy())

    def waitKey(self, delay):
        return self.keys.pop(0) if self.keys else -1

    def getWindowProperty(self, title, prop):
        return self.visible

    def destroyWindow(self, title):
        self.destroyed = True


def test_window_keys_overlay_and_close() -> None:
    keys = [ord("q"), 27, ord("m"), ord("N"), ord("p"), ord("f"), ord("b"), ord("o"), ord(" "), ord("k"), ord("z")]
    gui = FakeGui(keys)
    seen: list[str] = []
    img = frame_image(1, 64, 48)
    with WindowSink("t", 64, 48, on_key=seen.append, gui=gui) as win:
        win.send(img)
        assert np.array_equal(gui.shown[0], img[..., ::-1])  # RGB -> BGR, nothing drawn without overlay lines
        for _ in range(len(keys) - 1):
            win.poll()
        win.set_overlay(["fps 30.0", "latency 41 ms"])
        win.send(img)
        assert (gui.shown[1] != img[..., ::-1]).any()
        gui.visible = 0.0  # the user closed the window
        actions = win.poll()
    assert seen == ["quit", "quit", "mirror", "next_style", "prev_style", "framing", "blend", "overlay", "bypass",
                    "blank", "quit"]
    assert actions[-1] == "quit" and gui.destroyed
    assert set(KEY_ACTIONS.values()) == {"quit", "mirror", "next_style", "prev_style", "framing", "blend", "overlay",
                                         "bypass", "blank", "region", "background"}


def test_window_gui_failure_is_no_display() -> None:
    with pytest.raises(DeviceUnavailable, match="no display"):
        WindowSink("t", 64, 48, gui=FakeGui([], fail=True))


# --- open_sinks ------------------------------------------------------------------------------------------------------

def test_open_sinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (none,) = open_sinks(["none"], 160, 120, 25)
    assert isinstance(none, NullSink) and isinstance(none, Sink)
    (rec,) = open_sinks([str(tmp_path / "o.mp4")], 160, 120, 25)
    assert isinstance(rec, VideoFileSink) and rec.variable_rate and isinstance(rec, Sink)
    with WindowSink("t", 64, 48, gui=FakeGui([])) as window:
        assert isinstance(window, Sink)  # every sink keeps the one contract the live loop relies on
    for t in (10.0, 10.04, 10.2, 10.24):  # a live recording: capture times, frames dropped in between
        rec.send(frame_image(0), t)
    rec.close()
    assert probe(tmp_path / "o.mp4")["times"] == pytest.approx([0.0, 0.04, 0.2, 0.24])
    assert duration(tmp_path / "o.mp4") == pytest.approx(0.28, abs=0.002)
    (tmp_path / "o.mp4").unlink()
    with pytest.raises(DeviceUnavailable, match="modprobe"):
        open_sinks([str(tmp_path / "o.mp4"), "vcam"], 160, 120, 25)
    assert listing(tmp_path) == []  # the file sink opened first was aborted
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DeviceUnavailable, match="no display"):
        open_sinks(["window"], 160, 120, 25)
    with pytest.raises(UsageError, match="given twice"):
        open_sinks(["vcam", "vcam"], 160, 120, 25)
    with pytest.raises(UsageError, match="cannot be combined"):
        open_sinks(["none", "window"], 160, 120, 25)
    with pytest.raises(UsageError):
        open_sinks([], 160, 120, 25)
