"""The device frame path (realtime/pipeline/framepath.py): crop + resize, Canny and cover against OpenCV on real
pictures (the figures are printed: run with -s), the whole frame against the host path on random:tiny, extra
FrameStep inputs passed through by name, and no host sync per frame (counted on the CPU; CUDA's sync debug mode in a
``gpu`` test)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from realtime.config import load_style
from realtime.geometry import CropWindow, Size, centre_window, cover_resize, crop_resize
from realtime.pipeline.framepath import PARAM_NAMES, DevicePath, FramePath
from realtime.vision.edges import HYSTERESIS_STEPS, CannyConfig, canny_cpu, canny_torch
from realtime.vision.resample import CoverResize, CropResize

CAMERA = Size(1280, 720)
MODEL = Size(704, 384)


def _frame(astronaut: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(astronaut, (CAMERA.width, CAMERA.height), interpolation=cv2.INTER_CUBIC)


def _crop_t(frame: np.ndarray, win: CropWindow, model: Size, mirror: bool) -> np.ndarray:
    m = CropResize(Size(frame.shape[1], frame.shape[0]), model)
    w = torch.tensor([win.x, win.y, win.w, win.h], dtype=torch.float32)
    return m(torch.from_numpy(frame)[None], w, torch.tensor(float(mirror)))[0].numpy()


WINDOWS = [  # (model size, window): the centre window (shrinks), a sub-pixel face window, zoomed in (enlarges)
    (MODEL, centre_window(CAMERA, MODEL.aspect)), (MODEL, CropWindow(100.3, 50.7, 600.2, 327.4)),
    (Size(512, 512), CropWindow(300.6, 100.2, 200.3, 200.3)), (Size(64, 64), CropWindow(10.25, 3.5, 700.5, 700.5)),
    (MODEL, CropWindow(288, 168, 704, 384)),  # integer, scale 1: an exact copy
]


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("model,win", WINDOWS)
def test_crop_resize_matches_opencv_within_two_grey_levels(astronaut, model, win, mirror):
    frame = _frame(astronaut)
    want = crop_resize(frame[:, ::-1] if mirror else frame, win, model)
    got = _crop_t(frame, win, model, mirror)
    d = np.abs(got.astype(int) - want)
    print(f"crop {model} {win}: mean {d.mean():.3f}, max {d.max()} grey levels")
    assert got.shape == want.shape and d.max() <= 2 and d.mean() < 0.5


@pytest.mark.parametrize("model,out", [(MODEL, Size(1280, 720)), (Size(512, 512), Size(1280, 720)),
                                       (MODEL, Size(640, 480)), (Size(64, 64), Size(32, 32)), (MODEL, MODEL)])
def test_cover_resize_matches_opencv_within_two_grey_levels(astronaut, model, out):
    import cv2

    img = cv2.resize(astronaut, (model.width, model.height), interpolation=cv2.INTER_AREA)
    want = cover_resize(img, out)
    got = CoverResize(model, out)(torch.from_numpy(img)[None])[0].numpy()
    d = np.abs(got.astype(int) - want)
    assert got.shape == want.shape and d.max() <= 2 and d.mean() < 0.5


def test_gather_and_sparse_taps_agree(astronaut):
    from realtime.vision.resample import apply_taps, axis_taps

    frame = torch.from_numpy(_frame(astronaut))[None]
    area = torch.tensor(True)
    cols = axis_taps(torch.tensor(100.3), torch.tensor(600.2), 704, 1280, area, 3)
    rows = axis_taps(torch.tensor(50.7), torch.tensor(327.4), 384, 720, area, 3)
    assert torch.equal(apply_taps(frame, rows, cols, sparse=True), apply_taps(frame, rows, cols, sparse=False))


def _agreement(frames: list[np.ndarray], cfg: CannyConfig) -> tuple[float, float]:
    agree, recall = [], []
    for f in frames:
        want = canny_cpu(f, cfg)
        got = canny_torch(torch.from_numpy(f), cfg, max_iters=HYSTERESIS_STEPS, fixed=True).numpy()
        agree.append(float((want == got).mean()))
        recall.append(float(((got > 0) & (want > 0)).sum() / max(1, (want > 0).sum())))
    return min(agree), min(recall)


@pytest.mark.parametrize("cfg", [CannyConfig(), CannyConfig(low=100, high=200)])
def test_fixed_step_canny_agrees_with_opencv_on_the_astronaut_and_the_demo_clip(astronaut, cfg):
    from realtime.cli.demo import demo_frames

    clip = [crop_resize(f, centre_window(CAMERA, MODEL.aspect), MODEL)
            for f in itertools.islice(demo_frames(2.0), 0, 60, 10)]
    a_agree, a_recall = _agreement([astronaut], cfg)
    d_agree, d_recall = _agreement(clip, cfg)
    print(f"canny {cfg.low}/{cfg.high}, {HYSTERESIS_STEPS} steps: astronaut {100 * a_agree:.2f}% of pixels "
          f"(edge recall {100 * a_recall:.1f}%), demo clip worst frame {100 * d_agree:.2f}% ({100 * d_recall:.1f}%)")
    assert a_agree >= 0.95 and d_agree >= 0.95
    assert a_recall >= 0.9 and d_recall >= 0.9  # the edges themselves, not just the empty background


def _stylizer(components, size: Size):
    from realtime.diffusion.stylizer import Stylizer

    return Stylizer(components, load_style("anime"), size, device=torch.device("cpu"), dtype=torch.float32, seed=3)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_whole_frame_is_within_two_grey_levels_of_the_host_path(tiny_components, astronaut, family):
    """random:tiny (and random:tiny-xl: the SDXL inputs pass through by name), three frames with blending: the device
    path against cv2 crop + cv2 Canny + the stylizer's numpy call + cv2 cover (the path before it)."""
    from realtime.pipeline.processor import FrameProcessor, canny_config

    if family == "sdxl":
        from realtime.config import ModelConfig
        from realtime.diffusion.models import load_components

        tiny_components = load_components(ModelConfig("random:tiny-xl"), torch.device("cpu"), torch.float32, seed=0)
    camera, model, out = Size(320, 240), Size(128, 64), Size(256, 144)
    import cv2

    frames = [cv2.resize(np.roll(astronaut, 9 * i, axis=1), (camera.width, camera.height)) for i in range(3)]
    host, dev = _stylizer(tiny_components, model), _stylizer(tiny_components, model)
    proc = FrameProcessor(model, out, stylizer=dev)
    win = centre_window(camera, model.aspect)
    cfg = canny_config(dev.style)
    for f in frames:
        crop = crop_resize(f, win, model)
        want = cover_resize(host(crop, canny_cpu(crop, cfg)), out)
        got = proc.process(f)
        d = np.abs(got.astype(int) - want)
        print(f"whole frame: mean {d.mean():.3f}, max {d.max()} grey levels")
        assert got.shape == want.shape and d.max() <= 2
    assert proc.stylized == 3 and proc.device_path(frames[0]).frames == 3  # it ran the device path


def test_extra_framestep_inputs_pass_through_by_name():
    """A FrameStep input the path does not know (another control's map and scale) reaches the step by name, and the
    numbers land where their names say."""
    from realtime.diffusion.stylizer import INPUT_NAMES, NUMBER_NAMES, input_names

    names = input_names(("canny", "extra"))
    assert names == (*INPUT_NAMES, "control_extra", "control_scale_extra")
    seen = {}

    def step(*args):
        seen.update(zip(names, args, strict=True))
        return args[0], args[3], args[4]

    path = FramePath(Size(64, 64), Size(64, 64), Size(64, 64), CannyConfig(), step, input_names=names,
                     number_names=(*NUMBER_NAMES, "control_scale_extra"))
    params = torch.tensor([0, 0, 64, 64, 0, *range(8)], dtype=torch.float32)
    extra = torch.full((1, 64, 64), 7, dtype=torch.uint8)
    state = {"control_extra": extra, "prev_in_latent": torch.zeros(1), "prev_out_latent": torch.zeros(1),
             "noise": torch.zeros(1), "prompt_embeds": torch.zeros(1)}
    path(torch.zeros((1, 64, 64, 3), dtype=torch.uint8), params, **state)
    assert seen["control_extra"] is extra and float(seen["control_scale"]) == 5.0
    assert float(seen["control_scale_extra"]) == 7.0 and len(PARAM_NAMES) == 12


class _SyncCounter:
    """Counts the calls that read a tensor's value on the host (a device sync on a GPU)."""

    METHODS = ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for name in self.METHODS:
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, orig))
        orig_equal = torch.equal
        monkeypatch.setattr(torch, "equal", lambda *a, **k: (self.calls.append("equal"), orig_equal(*a, **k))[1])

    def _wrap(self, name, orig):
        def counted(t, *a, **k):
            self.calls.append(name)
            return orig(t, *a, **k)
        return counted


def test_no_host_sync_in_the_device_path_but_the_final_readback(tiny_components, monkeypatch):
    from realtime.vision.edges import CannyConfig as Cfg

    st = _stylizer(tiny_components, Size(64, 64))
    path = DevicePath(Size(160, 120), Size(64, 64), Size(96, 96))
    frame = np.full((120, 160, 3), 90, np.uint8)
    win = CropWindow(10.5, 3.25, 100.0, 100.0)
    path.run(frame, win, False, Cfg(), st)  # warm: first-use work is not per frame
    counter = _SyncCounter(monkeypatch)
    for mirror in (False, True):
        out = path.run(frame, win, mirror, Cfg(), st)
    assert out.shape == (96, 96, 3)
    assert counter.calls == ["numpy", "numpy"], counter.calls  # one readback per frame, nothing else


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU)")
def test_no_host_sync_on_cuda(tiny_components):
    from realtime.diffusion.stylizer import Stylizer

    comps = tiny_components
    for m in (comps.unet, comps.controlnet, comps.vae, comps.text_encoder):
        if m is not None:
            m.to("cuda")
    st = Stylizer(comps, load_style("anime"), Size(64, 64), device=torch.device("cuda"), dtype=torch.float32)
    path = DevicePath(Size(160, 120), Size(64, 64), Size(96, 96), "cuda")
    frame = np.full((120, 160, 3), 90, np.uint8)
    win = CropWindow(10.5, 3.25, 100.0, 100.0)
    path.run(frame, win, False, CannyConfig(), st)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # the readback waits on an event (not a sync the debug mode flags); anything else raises
        out = path.run(frame, win, True, CannyConfig(), st)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (96, 96, 3)
