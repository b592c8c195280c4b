"""Depth control: Depth Anything (real architecture from config, random weights) and the depth map's normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.config import DEFAULT_DEPTH_MODEL, ModelConfig
from realtime.errors import ModelNotFound, UsageError
from realtime.vision.depth import DepthEstimator, build_random_depth, normalise_depth


def test_normalisation_is_min_max_of_inverse_depth_with_a_smoothed_range():
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0]])  # relative inverse depth: bigger = nearer
    out, rng = normalise_depth(pred, None, smoothing=0.5)
    assert out.dtype == torch.uint8 and out.tolist() == [[0, 64], [128, 255]]  # near = white, far = black
    assert rng == (1.0, 5.0)
    # Next frame: the scene's range doubled; half of the old range is kept (smoothing 0.5), values beyond clip.
    out2, rng2 = normalise_depth(pred * 2, rng, smoothing=0.5)
    assert rng2 == (1.5, 7.5)
    assert out2.tolist() == [[21, 106], [191, 255]]  # (2 - 1.5) / 6 * 255 = 21.25
    per_frame, _ = normalise_depth(pred * 2, rng, smoothing=0.0)
    assert per_frame.tolist() == out.tolist()  # min-max alone is scale invariant
    flat, _ = normalise_depth(torch.full((2, 2), 3.0), None, smoothing=0.0)
    assert not flat.any()


def test_random_depth_is_the_v2_small_architecture():
    net = build_random_depth("sd-turbo")
    assert type(net).__name__ == "DepthAnythingForDepthEstimation"
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 24.8  # Depth-Anything-V2-Small: 24.8M
    assert net.config.backbone_config.hidden_size == 384 and net.config.backbone_config.num_hidden_layers == 12
    with pytest.raises(ModelNotFound, match="random:sd-turbo, random:tiny"):
        build_random_depth("huge")


def test_estimator_maps_a_frame_to_a_normalised_depth_map(astronaut):
    est = DepthEstimator("random:tiny", seed=0)
    crop = np.ascontiguousarray(astronaut[::4, ::4])  # 128x128
    assert est.input_size(128, 128) == (56, 56) and est.input_size(64, 112) == (56, 98)  # multiples of the 14 px patch
    a = est(crop)
    assert a.shape == (128, 128) and a.dtype == np.uint8
    assert a.min() == 0 and a.max() == 255  # the first frame spans the full range
    same = DepthEstimator("random:tiny", seed=0)(crop)
    assert np.array_equal(a, same)  # same seed, same weights
    with pytest.raises(UsageError, match="HxWx3 uint8"):
        est(crop[..., 0])


def test_depth_model_spec_follows_the_model():
    assert ModelConfig().depth_model_spec == DEFAULT_DEPTH_MODEL == "depth-anything/Depth-Anything-V2-Small-hf"
    assert ModelConfig("random:tiny").depth_model_spec == "random:tiny"
    assert ModelConfig(depth_model="./my-depth").depth_model_spec == "./my-depth"


def test_hub_depth_model_offline_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound) as info:
        DepthEstimator("stylecam-tests/no-such-depth")
    assert "\n" not in str(info.value) and "stylecam models pull --control depth" in str(info.value)
