"""The pipelined live loop and face framing off the frame thread (issue 13, item 2): every frame delivered exactly
once, in order, with its own timestamp, sink writes overlapping the next frame, clean stops (end of input, a stop
mid-pipeline, Ctrl-C in a real process), detection on its own thread on a downscaled copy with its window applied to
the next frame, and prediction that follows a moving face without shaking a still one."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from live_clips import CaptureSink, ListSource
from realtime.config import load_style
from realtime.geometry import Size
from realtime.pipeline.live import LiveLoop
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.session import LiveSession
from realtime.vision.framer_thread import ThreadedFramer, detection_size
from realtime.vision.framing import FaceBox, FaceTracker, FramingConfig

SIZE = Size(128, 96)


class SlowSink(CaptureSink):
    """A CaptureSink that takes ``delay`` seconds per frame and logs when each send starts and ends."""

    def __init__(self, events: list, delay: float = 0.02) -> None:
        super().__init__()
        self.events, self.delay, self.threads = events, delay, set()

    def send(self, frame, timestamp=None):
        self.threads.add(threading.current_thread().name)
        self.events.append(("send", timestamp))
        time.sleep(self.delay)
        super().send(frame, timestamp)
        self.events.append(("sent", timestamp))


class LoggingProcessor(FrameProcessor):
    def __init__(self, events: list) -> None:
        super().__init__(SIZE, SIZE, style=load_style("none"))
        self.events = events

    def process(self, frame, timestamp_s=0.0):
        self.events.append(("process", timestamp_s))
        return super().process(frame, timestamp_s)


def _loop(n: int, events: list, **kw) -> tuple[LiveLoop, SlowSink, CaptureSink]:
    proc = LoggingProcessor(events)
    slow, fast = SlowSink(events), CaptureSink()
    loop = LiveLoop(ListSource(n), proc, [slow, fast], LiveSession(proc, load_style("none")), **kw)
    return loop, slow, fast


def test_every_frame_once_in_order_with_its_own_timestamp_and_writes_overlap_the_next_frame():
    events: list = []
    loop, slow, fast = _loop(12, events)
    result = loop.run()
    want = [i / 30.0 for i in range(12)]
    assert result.delivered == 12 and result.ended == "end of input"
    assert slow.timestamps == want and fast.timestamps == want  # exactly once, in order, its own timestamp
    serial = FrameProcessor(SIZE, SIZE, style=load_style("none"))
    src = ListSource(12)
    for got in slow.frames:  # each output is its own frame's (the moving bar)
        f = src.read()
        assert np.array_equal(got, serial.process(f.image, f.timestamp))
    assert slow.threads == {"stylecam-output"}  # written off the frame thread...
    order = {e: k for k, e in enumerate(events)}
    overlapped = [i for i in range(11) if order[("process", want[i + 1])] < order[("sent", want[i])]]
    assert len(overlapped) >= 8, events  # ...while the next frame was processed


def test_a_stop_mid_pipeline_still_writes_every_frame_handed_over():
    events: list = []
    loop, slow, fast = _loop(1000, events, on_frame=lambda lp, frame, out: setattr(
        lp, "stop_requested", lp.delivered >= 7))
    result = loop.run()
    assert result.ended == "interrupted" and result.delivered == 7
    assert slow.timestamps == fast.timestamps == [i / 30.0 for i in range(7)]


def test_a_sink_failing_on_the_output_thread_is_dropped_and_the_others_go_on(caplog):
    class Broken(CaptureSink):
        def send(self, frame, timestamp=None):
            if len(self.frames) == 3:
                raise OSError("device unplugged")
            super().send(frame, timestamp)

    proc = FrameProcessor(SIZE, SIZE, style=load_style("none"))
    broken, good = Broken(), CaptureSink()
    loop = LiveLoop(ListSource(10), proc, [broken, good], LiveSession(proc, load_style("none")))
    assert loop.run().delivered == 10
    assert len(broken.frames) == 3 and broken.closed and good.timestamps == [i / 30.0 for i in range(10)]
    assert loop.dropped_sinks == [broken] and "device unplugged" in caplog.text


SCRIPT = r"""
import logging, sys, time
from live_clips import ListSource
from realtime.config import load_style
from realtime.geometry import Size
from realtime.pipeline.live import LiveLoop, graceful_sigint
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.session import LiveSession

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
out = open(sys.argv[1], "w")

class FileSink:
    def send(self, frame, timestamp=None):
        time.sleep(0.01)
        out.write(f"{timestamp!r} {int(frame[0].argmax(axis=0)[0])}\n")
        out.flush()
    def close(self):
        out.write("closed\n")
        out.close()

proc = FrameProcessor(Size(128, 96), Size(128, 96), style=load_style("none"))
loop = LiveLoop(ListSource(10**6), proc, [FileSink()], LiveSession(proc, load_style("none")))
with graceful_sigint(loop):
    result = loop.run()
print("delivered", result.delivered, result.ended, flush=True)
loop.sinks[0].close()
"""


def test_ctrl_c_mid_pipeline_stops_cleanly_with_every_frame_written_once(tmp_path: Path):
    """A real process (subprocess.Popen: a bash `&` job would have SIGINT ignored) gets SIGINT mid-run."""
    tests = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests)]))
    lines = tmp_path / "frames.txt"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(lines)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # until some frames are written
            if lines.exists() and len(lines.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    delivered = int(out.split()[1])
    rows = lines.read_text().splitlines()
    assert rows[-1] == "closed" and "interrupted" in out
    written = [r.split() for r in rows[:-1]]
    assert len(written) == delivered >= 5
    assert [float(ts) for ts, _ in written] == [i / 30.0 for i in range(delivered)]  # once each, in order
    assert [int(col) for _, col in written] == [(i * 3) % 128 for i in range(delivered)]  # its own picture


# ------------------------------------------------------------------------------------------ the face thread
def _box_at(t: float, frame: Size, speed: float = 0.0, x0: float = 0.3) -> FaceBox:
    """A face box of a tenth of the frame height moving right at ``speed`` frame widths per second."""
    h = frame.height / 5
    cx = (x0 + speed * t) * frame.width
    return FaceBox(cx - h / 2, frame.height * 0.45 - h / 2, h, h, 0.95)


class BoxFramer:
    """A framer (the Framer contract) whose 'detector' knows where the face is at each time: a FaceTracker fed with
    :func:`_box_at`, recording which thread ran it and what it was given."""

    def __init__(self, size: Size, cfg: FramingConfig, speed: float) -> None:
        self.size, self.speed = size, speed
        self.tracker = FaceTracker(cfg, size, 1.0)
        self.enabled = True
        self.seen: list[tuple[str, tuple, float]] = []

    def update(self, rgb, t):
        self.seen.append((threading.current_thread().name, rgb.shape, t))
        return self.tracker.step([_box_at(t, self.size, self.speed)], t)

    def mirror(self):
        self.tracker.mirror()

    def close(self):
        pass


def test_detection_runs_on_its_own_thread_on_a_downscaled_copy_one_frame_behind():
    frame = Size(1280, 720)
    cfg = dataclasses.replace(FramingConfig(), predict=False)
    small = detection_size(frame)
    assert small == Size(640, 360) and detection_size(Size(320, 240)) == Size(320, 240)
    threaded = ThreadedFramer(frame, 1.0, lambda size: BoxFramer(size, cfg, 0.1), wait=True)
    serial = BoxFramer(small, cfg, 0.1)
    img = np.zeros((720, 1280, 3), np.uint8)
    got, want = [], []
    for i in range(12):
        got.append(threaded.update(img, i / 30))
        want.append(serial.update(img[::2, ::2], i / 30))
    threaded.close()
    seen = threaded.inner.seen
    assert {name for name, _, _ in seen} == {"stylecam-face"} and {shape for _, shape, _ in seen} == {(360, 640, 3)}
    for i in range(1, 12):  # frame i gets the window detection made on frame i-1 (no prediction here), scaled up
        w = want[i - 1]
        assert got[i].cx == pytest.approx(2 * w.cx, abs=1e-6) and got[i].h == pytest.approx(2 * w.h, abs=1e-6)


def test_a_detection_error_is_raised_on_the_next_update():
    class Failing(BoxFramer):
        def update(self, rgb, t):
            raise RuntimeError("model gone")

    framer = ThreadedFramer(SIZE, 1.0, lambda size: Failing(size, FramingConfig(), 0.0), wait=True)
    img = np.zeros((96, 128, 3), np.uint8)
    framer.update(img, 0.0)
    with pytest.raises(RuntimeError, match="model gone"):
        framer.update(img, 1 / 30)
    framer.close()


def _track(cfg: FramingConfig, speed: float, n: int, noise: float = 0.0, seed: int = 0) -> list[float]:
    """Window centre x minus the face centre x (frame pixels), per frame, for a face moving at ``speed``."""
    frame = Size(1280, 720)
    rng = np.random.default_rng(seed)
    tracker = FaceTracker(cfg, frame, 16 / 9)
    lags = []
    for i in range(n):
        t = i / 30
        box = _box_at(t, frame, speed, x0=0.35)
        jitter = rng.normal(0, noise, 2) if noise else (0.0, 0.0)
        box = dataclasses.replace(box, x=box.x + jitter[0], y=box.y + jitter[1])
        win = tracker.step([box], t)
        lags.append(win.cx - _box_at(t, frame, speed, x0=0.35).cx)
    return lags


def test_prediction_takes_back_the_lag_on_a_moving_face_and_leaves_a_still_one_alone():
    plain = dataclasses.replace(FramingConfig(), predict=False)
    predicted = FramingConfig()
    speed = 160 / 1280  # 160 px/s
    lag_plain = np.mean(np.abs(_track(plain, speed, 60)[30:]))  # after the ease-in, before the frame edge
    lag_pred = np.mean(np.abs(_track(predicted, speed, 60)[30:]))
    assert lag_plain > 3.0 and lag_pred < lag_plain / 3, (lag_plain, lag_pred)
    still_plain = np.std(_track(plain, 0.0, 120, noise=1.5)[30:])
    still_pred = np.std(_track(predicted, 0.0, 120, noise=1.5)[30:])
    assert still_pred <= 1.05 * still_plain + 1e-9, (still_plain, still_pred)  # no jitter added


def test_predict_extrapolates_a_moving_face_and_holds_a_still_one():
    frame = Size(1280, 720)
    for speed, moves in ((0.1, True), (0.0, False)):
        tracker = FaceTracker(FramingConfig(), frame, 16 / 9)
        for i in range(40):
            tracker.step([_box_at(i / 30, frame, speed)], i / 30)
        ahead = tracker.predict(39 / 30 + 0.1)
        assert bool(ahead.cx > tracker.window.cx + 5) is moves and ahead.h == pytest.approx(tracker.window.h)
