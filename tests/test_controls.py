"""Several ControlNets at once: each control's map and scale are inputs of the frame step (random:tiny, CPU, fp32)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from realtime.config import ModelConfig, check_controls, load_style, parse_control_scales, scale_overrides
from realtime.diffusion.models import load_components
from realtime.diffusion.stylizer import INPUT_NAMES, Stylizer
from realtime.errors import UsageError
from realtime.geometry import Size

SIZE = Size(64, 64)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def all_controls():
    return load_components(ModelConfig("random:tiny"), CPU, torch.float32, seed=0, controls=("canny", "pose", "depth"))


@pytest.fixture(scope="module")
def maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    canny = np.zeros((64, 64), np.uint8)
    canny[10:50, 30] = canny[20, 5:60] = 255
    pose = np.zeros((64, 64, 3), np.uint8)
    pose[20:40, 28:36] = (255, 85, 0)
    depth = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    return {"image": image, "canny": canny, "pose": pose, "depth": depth}


def stylize(comps, maps, **style_changes) -> np.ndarray:
    style = dataclasses.replace(load_style("anime"), **style_changes)
    with Stylizer(comps, style, SIZE, device=CPU, dtype=torch.float32, seed=0) as s:
        return s(maps["image"], {c: maps[c] for c in style.controls})


def test_each_control_loads_its_own_random_controlnet(all_controls):
    nets = all_controls.controlnets
    assert list(nets) == ["canny", "pose", "depth"]
    weights = [next(iter(n.parameters())).flatten()[:50] for n in nets.values()]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    only = load_components(ModelConfig("random:tiny"), CPU, torch.float32, seed=0, controls=("depth",))
    assert only.controlnet is None and list(only.controlnets) == ["depth"]
    assert torch.equal(next(iter(only.controlnets["depth"].parameters())), next(iter(nets["depth"].parameters())))


def test_scale_zero_equals_the_control_left_out(all_controls, maps):
    canny_only = stylize(all_controls, maps, controls=("canny",))
    zero_depth = stylize(all_controls, maps, controls=("canny", "depth"), depth_scale=0.0)
    with_depth = stylize(all_controls, maps, controls=("canny", "depth"), depth_scale=5.0)
    assert np.abs(zero_depth.astype(int) - canny_only.astype(int)).max() <= 1
    assert np.abs(with_depth.astype(int) - canny_only.astype(int)).max() > 4  # the depth ControlNet does act
    zero_all = stylize(all_controls, maps, controls=("canny", "pose", "depth"), control_scale=0.0, pose_scale=0.0,
                       depth_scale=0.0)
    no_controlnet = dataclasses.replace(all_controls, controlnet=None, more_controlnets={})
    assert np.abs(zero_all.astype(int) - stylize(no_controlnet, maps).astype(int)).max() <= 1


def test_scales_are_step_inputs_changing_one_never_rebuilds(all_controls, maps):
    built = []

    def factory(step, example):
        built.append([tuple(t.shape) for t in example])
        return step

    style = dataclasses.replace(load_style("anime"), controls=("canny", "pose", "depth"), pose_scale=1.0)
    with Stylizer(all_controls, style, SIZE, device=CPU, dtype=torch.float32, seed=0, runner_factory=factory) as s:
        assert s.step.input_names == (*INPUT_NAMES, "control_pose", "control_scale_pose", "control_depth",
                                      "control_scale_depth")
        assert len(built[0]) == len(s.step.input_names) and built[0][-4] == (1, 64, 64, 3)  # the pose map is RGB
        inputs = {c: maps[c] for c in s.controls}
        a = s(maps["image"], inputs)
        s.reset()
        s.set_style(dataclasses.replace(style, pose_scale=0.0), wait=True)
        b = s(maps["image"], inputs)
        assert len(built) == 1  # a scale is a tensor input: no rebuild
        assert not np.array_equal(a, b)
        s.set_style(dataclasses.replace(style, controls=("canny",)))  # removing a control: the step is rebuilt
        assert len(built) == 2 and s.controls == ("canny",) and s.step.input_names == INPUT_NAMES
        s.set_style(style)
        assert len(built) == 3 and s.controls == ("canny", "pose", "depth")
        with pytest.raises(UsageError, match="no depth map given"):
            s(maps["image"], {"canny": maps["canny"], "pose": maps["pose"]})
        with pytest.raises(UsageError, match="pose control map must be 64x64x3 uint8"):
            s(maps["image"], {**inputs, "pose": maps["canny"]})


def test_control_and_scale_parsing():
    assert check_controls("depth, canny") == ("canny", "depth")  # the step's order, whatever the user's
    assert check_controls(["pose"]) == ("pose",)
    assert parse_control_scales("0.5") == {"canny": 0.5}  # a bare number keeps meaning the Canny scale
    assert parse_control_scales("canny=1.0,depth=0.5") == {"canny": 1.0, "depth": 0.5}
    assert scale_overrides({"canny": 1.0, "depth": 0.5}, ("canny", "depth")) == {"control_scale": 1.0, "depth_scale": 0.5}
    with pytest.raises(UsageError, match="unknown control 'hed'; choose from canny, pose, depth"):
        check_controls("canny,hed")
    with pytest.raises(UsageError, match="expected a number or NAME=X"):
        parse_control_scales("normal=1")
    with pytest.raises(UsageError, match="depth given twice"):
        parse_control_scales("depth=1,depth=2")
    with pytest.raises(UsageError, match="the depth control is not enabled.*--control canny,depth"):
        scale_overrides({"depth": 0.5}, ("canny",))
    with pytest.raises(UsageError, match="depth_scale"):
        dataclasses.replace(load_style("anime"), depth_scale=7.0)


def test_presets_may_set_controls_and_scales(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('prompt = "x"\ncontrols = ["depth", "canny"]\ndepth_scale = 0.4\n')
    style = load_style(str(path))
    assert style.controls == ("canny", "depth") and style.scale_of("depth") == 0.4
    path.write_text('prompt = "x"\ncontrols = ["normal"]\n')
    with pytest.raises(UsageError, match="unknown control 'normal'"):
        load_style(str(path))


def test_hub_controlnets_per_control():
    cfg = ModelConfig()
    assert cfg.controlnet_specs(("canny", "pose", "depth")) == {
        "canny": "thibaud/controlnet-sd21-canny-diffusers",
        "pose": "thibaud/controlnet-sd21-openpose-diffusers",
        "depth": "thibaud/controlnet-sd21-depth-diffusers",
    }
    assert ModelConfig("random:sd-turbo").controlnet_specs(("pose",)) == {"pose": "random:sd-turbo"}
    assert ModelConfig(controlnet="none").controlnet_specs(("canny", "depth")) == {"depth": "thibaud/controlnet-sd21-depth-diffusers"}


def test_models_pull_fetches_each_controls_controlnet_and_the_depth_model():
    from realtime.cli import build_parser
    from realtime.cli.models import _targets

    args = build_parser().parse_args(["models", "pull", "--control", "depth,pose,canny"])
    assert [(what, repo) for what, repo, _ in _targets(args)] == [
        ("model", "stabilityai/sd-turbo"),
        ("controlnet", "thibaud/controlnet-sd21-canny-diffusers"),
        ("pose controlnet", "thibaud/controlnet-sd21-openpose-diffusers"),
        ("depth controlnet", "thibaud/controlnet-sd21-depth-diffusers"),
        ("depth model", "depth-anything/Depth-Anything-V2-Small-hf"),
        ("vae", "madebyollin/taesd"),
    ]
    default = build_parser().parse_args(["models", "pull"])
    assert [repo for _, repo, _ in _targets(default)] == ["stabilityai/sd-turbo", "thibaud/controlnet-sd21-canny-diffusers",
                                                          "madebyollin/taesd"]


def test_offline_each_controls_models_must_be_cached(tmp_path, monkeypatch):
    from realtime.diffusion.models import check_models_available
    from realtime.errors import ModelNotFound

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    cfg = ModelConfig("random:tiny", pose_controlnet="thibaud/controlnet-sd21-openpose-diffusers")
    check_models_available(cfg, ("canny", "depth"))  # random ControlNets and depth model: nothing to cache
    with pytest.raises(ModelNotFound) as info:
        check_models_available(cfg, ("canny", "pose"))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("pose controlnet 'thibaud/controlnet-sd21-openpose-diffusers' is not in")
    assert "stylecam models pull --control pose --pose-controlnet thibaud/controlnet-sd21-openpose-diffusers" in msg
    with pytest.raises(ModelNotFound, match="^depth model 'depth-anything/Depth-Anything-V2-Small-hf' is not in"):
        check_models_available(dataclasses.replace(cfg, depth_model="depth-anything/Depth-Anything-V2-Small-hf"),
                               ("depth",))


def test_a_control_added_while_running_loads_its_controlnet_first(maps):
    from realtime.diffusion.models import add_controlnets

    cfg = ModelConfig("random:tiny")
    comps = load_components(cfg, CPU, torch.float32, seed=0)  # Canny only
    style = load_style("anime")
    with Stylizer(comps, style, SIZE, device=CPU, dtype=torch.float32, seed=0) as s:
        with pytest.raises(UsageError, match="control depth is enabled but its ControlNet is not loaded"):
            s.set_style(dataclasses.replace(style, controls=("canny", "depth")))
        assert s.controls == ("canny",)  # the running step stays
        assert add_controlnets(comps, cfg, ("canny", "depth"), seed=0) == ["depth"]
        assert add_controlnets(comps, cfg, ("canny", "depth"), seed=0) == []  # already there
        s.set_style(dataclasses.replace(style, controls=("canny", "depth")))
        assert s.controls == ("canny", "depth")
        out = s(maps["image"], {"canny": maps["canny"], "depth": maps["depth"]})
    # The same weights as a stylizer loaded with both controls from the start (same seeds).
    both = load_components(cfg, CPU, torch.float32, seed=0, controls=("canny", "depth"))
    assert np.array_equal(out, stylize(both, maps, controls=("canny", "depth")))
