"""Regions: stylize only the person or only the background; the rest is the camera's own pixels, blurred, or an image.
The mask is smoothed over time and feathered; compositing happens in pixel space after decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.config import RegionConfig, load_style
from realtime.errors import UsageError
from realtime.geometry import Size, cover_resize
from realtime.pipeline.processor import FrameProcessor
from realtime.vision.regions import MaskFilter, RegionCompositor, gaussian_blur
from realtime.vision.segment import SelfieSegmenter

SIZE = 64


class HalfMask:
    """The left half is the person (1), the right half is not (0)."""

    def __init__(self):
        self.calls, self.closed = 0, False

    def mask(self, rgb, timestamp_s):
        self.calls += 1
        m = np.zeros(rgb.shape[:2], np.float32)
        m[:, : rgb.shape[1] // 2] = 1.0
        return m

    def close(self):
        self.closed = True


class Inverter:
    style = load_style("anime")

    def __call__(self, image, control):
        return 255 - image

    def set_style(self, style):
        pass

    def reset(self):
        pass

    def close(self):
        pass


@pytest.fixture()
def crop() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)


def regions(region="person", background="keep", image=None, **kw) -> RegionCompositor:
    return RegionCompositor(RegionConfig(region=region, background=background, **kw), HalfMask(), background=image)


def test_person_region_keeps_the_cameras_own_pixels_where_the_mask_is_zero(crop):
    stylized = 255 - crop
    comp = regions()
    out = comp(stylized, crop)
    m = comp.last_mask.numpy()
    zero, one = m < 0.01, m > 0.99
    assert zero.sum() > 500 and one.sum() > 500  # most of each half, away from the feathered edge
    assert np.abs(out[zero].astype(int) - crop[zero]).max() <= 2  # the input, within 2 grey levels
    assert np.abs(out[one].astype(int) - stylized[one]).max() <= 2  # the stylized output
    edge = (m > 0.2) & (m < 0.8)  # feathered: a soft edge, neither picture alone
    assert edge.any() and not zero[:, SIZE // 2 - 1 : SIZE // 2 + 1].any()
    back = RegionCompositor(RegionConfig(region="background"), HalfMask())(stylized, crop)
    assert np.abs(back[zero].astype(int) - stylized[zero]).max() <= 2  # region background: the other way round
    assert np.abs(back[one].astype(int) - crop[one]).max() <= 2


def test_background_blur_and_file(crop):
    stylized = 255 - crop
    comp = regions(background="blur", blur=4.0)
    out = comp(stylized, crop)
    zero = comp.last_mask.numpy() < 0.01
    blurred = gaussian_blur(torch.from_numpy(crop).permute(2, 0, 1)[None].float(), 4.0)[0].permute(1, 2, 0)
    blurred = blurred.round().numpy().astype(np.uint8)
    assert np.abs(out[zero].astype(int) - blurred[zero]).max() <= 1
    assert np.abs(out[zero].astype(int) - crop[zero]).mean() > 20  # really blurred, not the crop
    photo = np.zeros((30, 90, 3), np.uint8)
    photo[..., 2] = np.linspace(0, 255, 90, dtype=np.uint8)  # any size: cover-resized to the model size
    comp = regions(background="photo.png", image=photo)
    out = comp(stylized, crop)
    zero = comp.last_mask.numpy() < 0.01
    assert np.abs(out[zero].astype(int) - cover_resize(photo, Size(SIZE, SIZE))[zero]).max() <= 1
    assert regions(region="all").__call__(stylized, crop) is stylized  # region all: nothing to do


def test_mask_is_smoothed_over_time_on_a_clip():
    """A mask whose edge flickers on and off every other frame (a segmenter's noise): smoothed, the edge moves less."""
    filt = MaskFilter(smoothing=0.6, feather=0.0)
    rng = np.random.default_rng(1)
    raw_seq, out_seq = [], []
    for i in range(30):
        raw = np.zeros((16, 16), np.float32)
        raw[:, :8] = 1.0
        raw[:, 8] = float(i % 2)  # the flickering edge column
        raw += rng.normal(0, 0.05, raw.shape).astype(np.float32)
        raw_seq.append(np.clip(raw, 0, 1))
        out_seq.append(filt(torch.from_numpy(raw_seq[-1])).numpy())
    raw_flicker = np.abs(np.diff(np.stack(raw_seq)[10:, :, 8], axis=0)).mean()
    out_flicker = np.abs(np.diff(np.stack(out_seq)[10:, :, 8], axis=0)).mean()
    assert out_flicker < raw_flicker / 3  # (1 - s) / (1 + s) = 0.25 of the flicker in steady state
    filt.reset()
    assert np.allclose(filt(torch.from_numpy(raw_seq[0])).numpy(), raw_seq[0])  # after a reset: the raw mask


def test_processor_composites_after_stylizing_at_the_model_size():
    rng = np.random.default_rng(2)
    frame = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    masks = HalfMask()
    comp = RegionCompositor(RegionConfig(region="person"), masks)
    with FrameProcessor(Size(SIZE, SIZE), Size(128, 96), stylizer=Inverter(), regions=comp) as proc:
        out = proc.process(frame, 0.0)
        assert "segment" in proc.last_times  # timed as its own stage
        proc.set_mode("bypass")
        kept = proc.process(frame, 0.04)  # the camera's own pixels through the same crop and resize
        proc.set_mode("stylize")
        full = FrameProcessor(Size(SIZE, SIZE), Size(128, 96), stylizer=Inverter()).process(frame, 0.0)
    assert masks.closed  # the processor closes its stages
    right, left = (slice(None), slice(80, None)), (slice(None), slice(0, 48))  # far from the feathered middle
    assert np.abs(out[right].astype(int) - kept[right]).max() <= 2
    assert np.abs(out[left].astype(int) - full[left]).max() <= 2


def test_region_options_are_checked():
    with pytest.raises(UsageError, match="--region 'body': expected one of all, person, background"):
        RegionConfig(region="body")
    with pytest.raises(UsageError, match="--background 'blur' needs --region person"):
        RegionConfig(region="all", background="blur")
    with pytest.raises(UsageError, match="--background 'beach.jpg' needs --region person"):
        RegionConfig(region="background", background="beach.jpg")
    assert RegionConfig(region="person", background="beach.jpg").background_file == "beach.jpg"
    assert not RegionConfig().active


def test_real_selfie_segmenter_finds_the_astronaut(astronaut, segment_model_path):
    with SelfieSegmenter(segment_model_path) as seg:
        m = seg.mask(astronaut, 0.0)
    assert m.shape == (512, 512) and m.dtype == np.float32
    assert m[400:, 150:300].mean() > 0.7 and m[:40, :40].mean() < 0.05  # her body, the photo's corner
