"""Temporal consistency: the similarity filter, latent blending (fixed noise, motion-adaptive) through the real
FrameStep/Stylizer, runtime blending toggles, and Stylizer.set_seed. CPU, fixed seeds, no timing assertions."""
from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from realtime.config import StyleConfig, TemporalConfig, load_style
from realtime.vision.edges import canny_cpu
from realtime.errors import UsageError
from realtime.geometry import Size
from realtime.pipeline.processor import FrameProcessor
from realtime.diffusion.stylizer import Stylizer
from realtime.pipeline.temporal import SimilarityFilter, blend_toggled, cosine_similarity, thumbnail, with_temporal

SIZE = Size(64, 64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def face64(astronaut: np.ndarray) -> np.ndarray:
    return cv2.resize(astronaut[20:340, 60:380], (64, 64), interpolation=cv2.INTER_AREA)


def _style(blend: float, adaptive: bool = False, threshold: float = 0.25) -> StyleConfig:
    return dataclasses.replace(load_style("anime"), temporal=TemporalConfig(blend=blend, motion_adaptive=adaptive,
                                                                             motion_threshold=threshold))


# ------------------------------------------------------------------------------------------------ similarity filter
def test_similarity_filter_skips_identical_frames_up_to_the_maximum(face64: np.ndarray) -> None:
    f = SimilarityFilter(threshold=0.99, max_skips=3)
    decisions = [f.skip(face64) for _ in range(10)]
    # The first frame is stylized; then 3 skips, a forced stylization, 3 skips, ...
    assert decisions == [False, True, True, True, False, True, True, True, False, True]
    assert f.skipped == 7 and f.run == 1
    assert f.similarity == pytest.approx(1.0)


def test_similarity_filter_sees_real_changes_not_sensor_noise(face64: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    f = SimilarityFilter(threshold=0.99, max_skips=100)
    assert not f.skip(face64)
    noisy = np.clip(face64 + rng.normal(0, 3, face64.shape), 0, 255).astype(np.uint8)
    assert f.skip(noisy)  # sensor noise: skipped
    moved = np.roll(face64, 12, axis=1)
    assert not f.skip(moved)  # a real move: stylized, and it becomes the reference
    assert f.skip(moved)
    assert not f.skip(255 - moved)


def test_similarity_reference_is_the_last_stylized_frame_so_drift_is_caught(astronaut: np.ndarray) -> None:
    """A slow pan, one source pixel per frame: each step is tiny, but the filter compares with the last *stylized*
    frame, so the drift adds up and a frame is stylized every few frames."""
    def view(k: int) -> np.ndarray:
        return cv2.resize(astronaut[20:340, 60 + k:380 + k], (64, 64), interpolation=cv2.INTER_AREA)

    assert cosine_similarity(thumbnail(view(0)), thumbnail(view(1))) >= 0.995  # one step alone would be skipped
    f = SimilarityFilter(threshold=0.995, max_skips=1000)
    decisions = [f.skip(view(k)) for k in range(16)]
    assert decisions[:2] == [False, True]
    stylized = [k for k, d in enumerate(decisions) if not d]
    assert len(stylized) >= 4 and max(np.diff(stylized)) <= 4


def test_similarity_filter_zero_max_skips_never_skips_and_reset(face64: np.ndarray) -> None:
    f = SimilarityFilter(threshold=0.5, max_skips=0)
    assert [f.skip(face64) for _ in range(4)] == [False] * 4
    g = SimilarityFilter(threshold=0.5, max_skips=5)
    g.skip(face64)
    g.reset()
    assert not g.skip(face64)  # no reference after a reset


@pytest.mark.parametrize("kwargs, needle", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": -0.1}, "threshold"), ({"max_skips": -1}, "max_skips"),
    ({"max_skips": 2.5}, "max_skips"), ({"side": 2}, "side"),
])
def test_similarity_filter_validation(kwargs: dict, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        SimilarityFilter(**kwargs)


def test_similarity_filter_from_config() -> None:
    assert SimilarityFilter.from_config(TemporalConfig()) is None
    f = SimilarityFilter.from_config(TemporalConfig(similarity_filter=True, similarity_threshold=0.97, max_skips=4))
    assert f is not None and (f.threshold, f.max_skips) == (0.97, 4)


class CountingStylizer:
    """A stand-in stylizer: returns the image inverted and counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.style = load_style("anime")

    def __call__(self, image: np.ndarray, control: np.ndarray) -> np.ndarray:
        self.calls += 1
        return 255 - image

    def set_style(self, style: StyleConfig) -> None:
        self.style = style

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_processor_reuses_the_previous_output_when_skipping(face64: np.ndarray) -> None:
    s = CountingStylizer()
    proc = FrameProcessor(SIZE, SIZE, stylizer=s, similarity=SimilarityFilter(0.99, max_skips=2))
    outs = [proc.process(face64) for _ in range(5)]
    assert s.calls == 2 and proc.skipped == 3 and proc.stylized == 2
    assert all(np.array_equal(o, 255 - face64) for o in outs)
    # A style change shows at once: the next frame is stylized even though the input did not change.
    proc.set_style(dataclasses.replace(load_style("anime"), strength=0.5))
    proc.process(face64)
    assert s.calls == 3
    # Turning the filter off through the temporal settings.
    proc.set_temporal(TemporalConfig(similarity_filter=False))
    proc.process(face64)
    proc.process(face64)
    assert s.calls == 5


# ------------------------------------------------------------------------------------------------ latent blending
def _static_noisy_run(comps, style: StyleConfig, base: np.ndarray, n: int, sigma: float = 8.0) -> list[np.ndarray]:
    s = Stylizer(comps, style, SIZE, device=CPU, dtype=torch.float32, seed=0)
    rng = np.random.default_rng(1)
    outs = []
    for _ in range(n):
        img = np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)
        outs.append(s(img, canny_cpu(img)).astype(np.float32))
    return outs


def _mean_step(outs: list[np.ndarray], start: int) -> float:
    return float(np.mean([np.abs(outs[i] - outs[i - 1]).mean() for i in range(start, len(outs))]))


def test_latent_blending_reduces_frame_to_frame_change_on_a_static_noisy_input(tiny_components, face64) -> None:
    """random:tiny at 64x64: same noisy static scene, blend 0.3 vs 1.0 (off); once the blend has settled (it feeds back
    the previous output latent), consecutive outputs differ less with blending."""
    n, settle = 40, 28
    plain = _static_noisy_run(tiny_components, _style(1.0), face64, n)
    blended = _static_noisy_run(tiny_components, _style(0.3), face64, n)
    d_plain, d_blend = _mean_step(plain, settle), _mean_step(blended, settle)
    assert d_plain > 0  # the input noise does reach the output
    assert d_blend < 0.5 * d_plain


class AutoencoderTiny(torch.nn.Module):
    """A linear stand-in named like diffusers' TAESD (FrameStep takes its ``.latents`` path): latent = 8x8 average of
    RGB plus their mean as a fourth channel; decoding repeats each latent pixel 8x8."""

    config = SimpleNamespace(scaling_factor=1.0)

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        z = torch.nn.functional.avg_pool2d(x, 8)
        return SimpleNamespace(latents=torch.cat([z, z.mean(dim=1, keepdim=True)], dim=1))

    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.nn.functional.interpolate(z[:, :3], scale_factor=8, mode="nearest"))


class NoisePredictor(torch.nn.Module):
    """A UNet that predicts exactly the fixed noise: the one step then returns its input latent, z0 = z_in."""

    def __init__(self) -> None:
        super().__init__()
        self.noise: torch.Tensor | None = None

    def forward(self, sample, t, encoder_hidden_states=None, down_block_additional_residuals=None,
                mid_block_additional_residual=None, return_dict=False):
        assert self.noise is not None
        return (self.noise.expand_as(sample),)


def _linear_stylizer(master, style: StyleConfig) -> Stylizer:
    comps = copy.copy(master)
    comps.unet, comps.controlnet, comps.vae = NoisePredictor(), None, AutoencoderTiny()
    comps.scheduler_config = dict(master.scheduler_config, prediction_type="epsilon")
    s = Stylizer(comps, style, SIZE, device=CPU, dtype=torch.float32, seed=0)
    comps.unet.noise = s.noise
    return s


def _latent(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64) / 127.5 - 1.0
    return x.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))  # (8, 8, 3): the stand-in VAE's RGB latent


def test_blending_is_an_exponential_average_of_latents(_tiny_components_master, face64) -> None:
    """With an identity step, z0_t = a*z_t + (1-a)*z0_(t-1) exactly: FrameStep blends with the previous *output*
    latent, the first frame unblended. On a static input with white noise, consecutive outputs differ by
    a*(x_t - ema_(t-1)) instead of x_t - x_(t-1): a / sqrt(2 - a) times as much."""
    a = 0.3
    s = _linear_stylizer(_tiny_components_master, _style(a))
    plain = _linear_stylizer(_tiny_components_master, _style(1.0))
    rng = np.random.default_rng(3)
    ema = None
    outs, raw = [], []
    for t in range(40):
        img = np.clip(face64 + rng.normal(0, 12, face64.shape), 0, 255).astype(np.uint8)
        z = _latent(img)
        ema = z if ema is None else a * z + (1 - a) * ema
        out = s(img, np.zeros((64, 64), np.uint8))
        expect = np.clip(np.round((np.clip(ema, -1, 1) + 1) * 127.5), 0, 255)
        assert np.abs(out[::8, ::8].astype(np.float64) - expect).max() <= 1.0, t
        outs.append(out.astype(np.float32))
        raw.append(plain(img, np.zeros((64, 64), np.uint8)).astype(np.float32))
    ratio = _mean_step(outs, 10) / _mean_step(raw, 10)
    assert ratio == pytest.approx(a / np.sqrt(2 - a), abs=0.05)


def test_motion_adaptive_blending_follows_moving_parts(_tiny_components_master, face64) -> None:
    """A jump in the input: plain blending ghosts (the output keeps 70% of the old latent), motion-adaptive blending
    takes the new frame where the latent moved."""
    before, after = face64, np.roll(face64, 24, axis=1)
    ctl = np.zeros((64, 64), np.uint8)
    results = {}
    for adaptive in (False, True):
        s = _linear_stylizer(_tiny_components_master, _style(0.3, adaptive=adaptive, threshold=0.02))
        for _ in range(5):
            s(before, ctl)
        results[adaptive] = s(after, ctl).astype(np.float64)
    target = np.clip(np.round((np.clip(_latent(after), -1, 1) + 1) * 127.5), 0, 255)
    err_plain = np.abs(results[False][::8, ::8] - target).mean()
    err_adaptive = np.abs(results[True][::8, ::8] - target).mean()
    assert err_adaptive < 0.3 * err_plain


# ------------------------------------------------------------------------------------------------ runtime tuning
def test_blend_toggle_remembers_the_weight() -> None:
    style = _style(0.45)
    off, remembered = blend_toggled(style, None)
    assert off.temporal.blend == 1.0 and remembered == 0.45
    on, remembered = blend_toggled(off, remembered)
    assert on.temporal.blend == 0.45 and remembered is None
    default_on, _ = blend_toggled(_style(1.0), None)
    assert default_on.temporal.blend == TemporalConfig().blend
    assert with_temporal(style, motion_threshold=0.5).temporal.motion_threshold == 0.5
    with pytest.raises(UsageError, match="blend"):
        with_temporal(style, blend=0.0)


def test_set_seed_redraws_the_fixed_noise_as_a_fresh_stylizer(tiny_components, face64) -> None:
    ctl = canny_cpu(face64)
    a = Stylizer(tiny_components, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=0)
    b = Stylizer(tiny_components, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=7)
    first = a(face64, ctl)
    a.set_seed(7)
    assert a.seed == 7 and torch.equal(a.noise, b.noise)
    a.reset()
    assert np.array_equal(a(face64, ctl), b(face64, ctl))
    assert not np.array_equal(first, b(face64, ctl))
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="seed"):
            a.set_seed(bad)  # type: ignore[arg-type]
