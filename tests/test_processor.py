"""The frame processor as the one frame path: its stages timed on the clock it is given (its own frames, or a caller's
frame held open around it, as the benchmark does), the stylizer's own stages on the same clock, pass-through by
identity, and the Protocols its collaborators implement."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from realtime.config import load_style
from realtime.diffusion.protocols import StageClock, StylizerRunner
from realtime.geometry import Size
from realtime.pipeline.processor import FrameProcessor
from realtime.pipeline.timing import CudaEventClock, PerfCounterClock, StageLog, StageTimes, make_clock
from realtime.vision.protocols import EdgeMap, Framer

SIZE = Size(64, 64)


class Inverter:
    """A stand-in stylizer (the StylizerRunner contract): the inverted crop."""

    def __init__(self, passthrough_on: set[int] | None = None) -> None:
        self.style = load_style("anime")
        self.calls, self.resets = 0, 0
        self.passthrough_on = passthrough_on or set()

    def __call__(self, image: np.ndarray, control: np.ndarray) -> np.ndarray:
        self.calls += 1
        return image if self.calls in self.passthrough_on else 255 - image

    def set_style(self, style) -> None:
        self.style = style

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        pass


def _members(proto: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(proto) if not n.startswith("_") or n == "__call__"} - set(dir(object))


def test_implementations_have_every_protocol_member():
    from realtime.diffusion.stylizer import Stylizer
    from realtime.pipeline.watchdog import GuardedStylizer
    from realtime.vision.edges import EdgeDetector
    from realtime.vision.face import FaceFramer

    for impl, proto in ((FaceFramer, Framer), (EdgeDetector, EdgeMap), (Stylizer, StylizerRunner),
                        (GuardedStylizer, StylizerRunner), (PerfCounterClock, StageClock),
                        (CudaEventClock, StageClock)):
        missing = {m for m in _members(proto) | set(getattr(proto, "__annotations__", {}))
                   if not hasattr(impl, m) and m not in ("cfg", "style")}
        assert not missing, f"{impl.__name__} lacks {missing} of {proto.__name__}"
    assert "__call__" in _members(StylizerRunner) and "mirror" in _members(Framer)


def test_own_frames_are_timed_per_stage_and_summed_in_times():
    frame = np.full((48, 80, 3), 100, np.uint8)
    proc = FrameProcessor(SIZE, Size(32, 32), stylizer=Inverter())
    for _ in range(3):
        out = proc.process(frame, 0.0)
    assert out.shape == (32, 32, 3) and int(out[0, 0, 0]) == 155
    assert set(proc.last_times) == {"face", "crop", "canny", "stylize", "resize"}
    assert proc.times.counts == dict.fromkeys(("face", "crop", "canny", "stylize", "resize"), 3)
    assert not proc.clock.in_frame and proc.stylized == 3
    proc.finish(np.zeros((64, 64, 3), np.uint8), frame)  # a stage alone is its own frame
    assert proc.last_times.keys() == {"resize"} and proc.times.counts["resize"] == 4


def test_a_frame_held_open_by_the_caller_gets_the_stages_and_the_stylizers_own():
    clock = make_clock("cpu")
    log = StageLog()
    proc = FrameProcessor(SIZE, SIZE, stylizer=Inverter(), clock=clock)
    clock.begin()
    with clock.stage("capture"):
        rgb = np.full((64, 64, 3), 7, np.uint8)
    with clock.stage("stylize"):  # stages nest and add up
        pass
    proc.process(rgb)
    with clock.stage("sink"):
        pass
    log.add(clock.end())
    assert set(log.stages) == {"capture", "face", "crop", "canny", "stylize", "resize", "sink"}
    assert proc.times.counts == {}  # the caller's frame, not the processor's


def test_the_real_stylizer_times_upload_step_and_download_on_a_clock(tiny_components):
    from realtime.diffusion.stylizer import Stylizer

    st = Stylizer(tiny_components, load_style("anime"), SIZE, device=torch.device("cpu"), dtype=torch.float32)
    clock = make_clock("cpu")
    proc = FrameProcessor(SIZE, SIZE, stylizer=st, clock=clock)
    plain = proc.process(np.full((64, 64, 3), 90, np.uint8))
    assert "step" not in proc.last_times  # no clock on the stylizer: live's frame path, unchanged
    st.reset()
    st.clock = clock
    timed = proc.process(np.full((64, 64, 3), 90, np.uint8))
    assert {"upload", "step", "download", "stylize"} <= set(proc.last_times)
    assert np.array_equal(plain, timed)  # timing changes nothing in the picture
    st.close()


def test_a_frame_passed_through_is_counted_and_never_reused():
    from realtime.pipeline.temporal import SimilarityFilter

    s = Inverter(passthrough_on={1})
    proc = FrameProcessor(SIZE, SIZE, stylizer=s, similarity=SimilarityFilter(0.99, max_skips=5))
    frame = np.full((64, 64, 3), 40, np.uint8)
    first = proc.process(frame)
    assert int(first[0, 0, 0]) == 40 and proc.passed_through == 1 and proc.stylized == 0
    second = proc.process(frame)  # not skipped: the pass-through is no reference for the similarity filter
    assert int(second[0, 0, 0]) == 215 and s.calls == 2 and proc.stylized == 1


def test_a_failing_frame_leaves_the_clock_closed():
    class Broken(Inverter):
        def __call__(self, image, control):
            raise RuntimeError("boom")

    proc = FrameProcessor(SIZE, SIZE, stylizer=Broken())
    with pytest.raises(RuntimeError, match="boom"):
        proc.process(np.zeros((64, 64, 3), np.uint8))
    assert not proc.clock.in_frame and proc.times.counts == {}
    proc.stylizer = Inverter()
    proc.process(np.zeros((64, 64, 3), np.uint8))
    assert proc.times.counts["stylize"] == 1


def test_stage_times_means_and_summary():
    t = StageTimes()
    t.add_frame({"crop": 2.0, "stylize": 10.0})
    t.add("crop", 4.0)
    assert t.means() == {"crop": 3.0, "stylize": 10.0} and t.summary() == "crop 3.0 ms, stylize 10.0 ms"
    assert isinstance(make_clock(torch.device("cpu")), PerfCounterClock)
    assert not isinstance(make_clock("cpu"), CudaEventClock)
