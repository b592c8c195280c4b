"""Canny: OpenCV (CPU) and torch agree, automatic thresholds follow the median, configs are validated."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.vision.edges import CannyConfig, EdgeDetector, auto_thresholds, canny_cpu, canny_torch, thresholds_for
from realtime.errors import UsageError


def _synthetic(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """Shapes of several contrasts on a smooth gradient, plus sensor noise: HxWx3 uint8 RGB."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 200 // w + 20, yy * 150 // h + 40, np.full_like(xx, 90)], -1).astype(np.uint8)
    cv2.circle(img, (w // 3, h // 2), h // 4, (230, 60, 40), -1)
    cv2.rectangle(img, (w // 2, h // 5), (w - 30, h // 2), (30, 200, 120), -1)
    cv2.line(img, (10, h - 20), (w - 10, h // 3), (250, 250, 250), 3)
    cv2.ellipse(img, (2 * w // 3, 3 * h // 4), (50, 20), 30, 0, 360, (100, 110, 95), -1)  # low contrast
    noisy = img.astype(np.float32) + rng.normal(0, 4, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _f1(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    tp = np.count_nonzero(a & b)
    return 2 * tp / max(1, np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize(
    "cfg",
    [CannyConfig(), CannyConfig(blur=0), CannyConfig(blur=5), CannyConfig(blur=13), CannyConfig(low=40, high=120),
     CannyConfig(sigma=0.6, blur=7)],
    ids=["auto", "noblur", "blur5", "blur13", "fixed", "sigma"],
)
def test_cpu_and_torch_agree(astronaut: np.ndarray, cfg: CannyConfig) -> None:
    for image in (astronaut, _synthetic()):
        cpu = canny_cpu(image, cfg)
        tch = canny_torch(torch.from_numpy(image), cfg).numpy()
        assert cpu.shape == tch.shape == image.shape[:2] and tch.dtype == np.uint8
        assert set(np.unique(tch)) <= {0, 255}
        assert np.count_nonzero(cpu) > 500  # real edges, not an empty map agreeing with an empty map
        assert np.mean(cpu == tch) >= 0.999
        assert _f1(cpu, tch) >= 0.98


def test_torch_batch_uses_per_image_thresholds(astronaut: np.ndarray) -> None:
    dark = (astronaut.astype(np.float32) * 0.35).astype(np.uint8)
    batch = torch.from_numpy(np.stack([astronaut, dark]))
    out = canny_torch(batch)
    assert out.shape == (2, 512, 512)
    for i, img in enumerate((astronaut, dark)):
        assert _f1(canny_cpu(img), out[i].numpy()) >= 0.98


def test_hysteresis_follows_long_weak_chains() -> None:
    """A step edge whose contrast fades along x: strong only at the left end, so the edge is kept only by following
    the weak chain across the image (many dilation steps), exactly as OpenCV does."""
    h, w = 64, 400
    img = np.full((h, w, 3), 100, np.uint8)
    contrast = np.linspace(120, 8, w).astype(np.int32)
    img[h // 2 :, :, :] = np.clip(100 + contrast, 0, 255)[None, :, None].astype(np.uint8)
    cfg = CannyConfig(low=20, high=200, blur=0)
    cpu = canny_cpu(img, cfg)
    tch = canny_torch(torch.from_numpy(img), cfg).numpy()
    cols = np.flatnonzero(cpu.any(axis=0))
    assert cols.max() - cols.min() > 250  # the chain runs far past the strong part
    np.testing.assert_array_equal(cpu, tch)
    # Bounding the dilation steps cuts the chain short.
    short = canny_torch(torch.from_numpy(img), cfg, max_iters=8).numpy()
    assert np.count_nonzero(short) < np.count_nonzero(cpu)


def test_auto_thresholds_track_the_median(astronaut: np.ndarray) -> None:
    assert auto_thresholds(100, 0.33) == pytest.approx((67.0, 133.0))
    assert auto_thresholds(220, 0.33) == (pytest.approx(147.4), 255.0)
    assert auto_thresholds(0, 0.33) == (0.0, 0.0)
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    lo, hi = thresholds_for(gray, CannyConfig())
    assert (lo, hi) == pytest.approx(auto_thresholds(127, 0.33))  # lower median of 0..255
    assert thresholds_for(gray, CannyConfig(low=10, high=20)) == (10.0, 20.0)

    # Behaviour: a low-contrast copy keeps most of its edges with automatic thresholds, not with fixed ones.
    dim = (astronaut.astype(np.float32) * 0.3).astype(np.uint8)
    n_auto, n_auto_dim = np.count_nonzero(canny_cpu(astronaut)), np.count_nonzero(canny_cpu(dim))
    fixed = CannyConfig(low=60, high=140)
    n_fix, n_fix_dim = np.count_nonzero(canny_cpu(astronaut, fixed)), np.count_nonzero(canny_cpu(dim, fixed))
    assert n_auto_dim > 0.6 * n_auto
    assert n_fix_dim < 0.3 * n_fix


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"low": 10}, "low"),
        ({"high": 10}, "high"),
        ({"low": 100, "high": 50}, "low"),
        ({"low": -1, "high": 50}, "low"),
        ({"low": 10, "high": 256}, "high"),
        ({"low": 1.5, "high": 50}, "low"),
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": 1.5}, "sigma"),
        ({"blur": 2}, "blur"),
        ({"blur": -3}, "blur"),
        ({"blur": 33}, "blur"),
        ({"blur": True}, "blur"),
        ({"blur": 0.0}, "blur"),
    ],
)
def test_invalid_configs_raise(kwargs: dict, field: str) -> None:
    with pytest.raises(UsageError, match=field):
        CannyConfig(**kwargs)


def test_bad_inputs_raise(astronaut: np.ndarray) -> None:
    with pytest.raises(UsageError):
        canny_cpu(astronaut[..., 0])
    with pytest.raises(UsageError):
        canny_cpu(astronaut.astype(np.float32))
    with pytest.raises(UsageError):
        canny_torch(torch.from_numpy(astronaut).float())
    single = canny_torch(torch.from_numpy(astronaut))
    assert single.shape == (512, 512)


def test_edge_detector_stage(astronaut: np.ndarray) -> None:
    with EdgeDetector(CannyConfig(low=50, high=150)) as det:
        out = det(astronaut)
        np.testing.assert_array_equal(out, canny_cpu(astronaut, CannyConfig(low=50, high=150)))
        np.testing.assert_array_equal(det.torch(torch.from_numpy(astronaut)).numpy(), out)
    with pytest.raises(RuntimeError):
        det(astronaut)
    with pytest.raises(UsageError):
        EdgeDetector({"low": 1})  # type: ignore[arg-type]
