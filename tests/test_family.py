"""Model families (SD, SDXL): detection from configs, random:tiny-xl, and parity of the frame step with diffusers' own
ControlNet img2img pipelines for both families (same module objects, same timestep, same noise, tiny configs)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from realtime.config import ModelConfig, load_style
from realtime.diffusion.family import SD, SDXL, family_of_folder, family_of_unet_config, with_family_defaults
from realtime.diffusion.models import ARCHS, SD_TURBO_SCHEDULER, load_components, model_family, pipeline_parts
from realtime.diffusion.stylizer import INPUT_NAMES, Stylizer, strength_timestep
from realtime.geometry import Size

CPU = torch.device("cpu")
SIZE = Size(64, 64)


@pytest.fixture(scope="module")
def xl_components():
    return load_components(ModelConfig("random:tiny-xl"), CPU, torch.float32, seed=0)


@pytest.fixture(scope="module")
def sd_components():
    return load_components(ModelConfig("random:tiny"), CPU, torch.float32, seed=0)


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    ctl = np.zeros((64, 64), np.uint8)
    ctl[8:56, 24] = ctl[40, 4:60] = ctl[12:20, 40:48] = 255
    return img, ctl


# ------------------------------------------------------------------------------------------------------ detection
def test_family_from_unet_config_not_name():
    assert family_of_unet_config(ARCHS["sdxl-turbo"]["unet"]) is SDXL
    assert family_of_unet_config(ARCHS["tiny-xl"]["unet"]) is SDXL  # text_time, although cross-attention is 64 wide
    assert family_of_unet_config({"cross_attention_dim": 2048}) is SDXL
    assert family_of_unet_config(ARCHS["sd-turbo"]["unet"]) is SD
    assert family_of_unet_config(ARCHS["tiny"]["unet"]) is SD
    assert model_family("random:tiny-xl") is SDXL and model_family("random:sd-turbo") is SD


def test_family_of_a_local_folder(tmp_path):
    """A directory named like SD-Turbo but holding an SDXL UNet config is SDXL; a model_index.json with a second text
    encoder tells it too; its defaults become the SDXL ControlNet and TAESDXL."""
    xl = tmp_path / "sd-turbo-lookalike"
    (xl / "unet").mkdir(parents=True)
    (xl / "unet" / "config.json").write_text(json.dumps(ARCHS["tiny-xl"]["unet"]), encoding="utf-8")
    assert family_of_folder(xl) is SDXL and model_family(str(xl)) is SDXL
    idx = tmp_path / "index-only"
    idx.mkdir()
    (idx / "model_index.json").write_text(json.dumps({"text_encoder_2": ["transformers", "X"]}), encoding="utf-8")
    assert family_of_folder(idx) is SDXL
    sd = tmp_path / "sd"
    (sd / "unet").mkdir(parents=True)
    (sd / "unet" / "config.json").write_text(json.dumps(ARCHS["tiny"]["unet"]), encoding="utf-8")
    assert family_of_folder(sd) is SD and family_of_folder(tmp_path) is None
    cfg = with_family_defaults(ModelConfig(str(xl)), SDXL)
    assert cfg.controlnet_spec == "diffusers/controlnet-canny-sdxl-1.0-small" and cfg.vae_spec == "madebyollin/taesdxl"
    assert with_family_defaults(ModelConfig(str(sd)), SD) == ModelConfig(str(sd))
    assert with_family_defaults(ModelConfig(str(xl), controlnet="none"), SDXL).controlnet_spec is None
    assert "text_encoder_2" in pipeline_parts(SDXL) and "text_encoder_2" not in pipeline_parts(SD)


def test_tiny_xl_components_and_inputs(xl_components, frame):
    c = xl_components
    assert c.family is SDXL and type(c.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert c.controlnet.config.addition_embed_type == "text_time"
    s = Stylizer(c, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=0)
    names = s.step.input_names
    assert names == INPUT_NAMES + ("text_embeds", "time_ids")
    inputs = dict(zip(names, s.example_inputs(), strict=True))
    assert inputs["prompt_embeds"].shape == (1, 77, 64) and inputs["text_embeds"].shape == (1, 32)
    assert inputs["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]
    a, b = s(*frame), Stylizer(c, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=0)(*frame)
    other = Stylizer(c, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=1)(*frame)
    assert np.array_equal(a, b) and not np.array_equal(a, other)


def test_sdxl_cfg_zeroes_the_empty_negative_prompt(xl_components):
    style = dataclasses.replace(load_style("anime"), guidance=3.0, negative_prompt="")
    s = Stylizer(xl_components, style, SIZE, device=CPU, dtype=torch.float32)
    inputs = dict(zip(s.step.input_names, s.example_inputs(), strict=True))
    assert inputs["prompt_embeds"].shape[0] == 2 and inputs["time_ids"].shape == (2, 6)
    assert not inputs["prompt_embeds"][0].any() and not inputs["text_embeds"][0].any()
    assert inputs["text_embeds"][1].abs().sum() > 0


# --------------------------------------------------------------------------------------------------------- parity
def _run_ours(comps, style, frame) -> tuple[np.ndarray, torch.Tensor]:
    """Our first frame (uint8 image) and its output latent z0."""
    s = Stylizer(comps, style, SIZE, device=CPU, dtype=torch.float32, seed=7)
    return s(*frame), s._prev_out


def _pipe_kwargs(style, frame, steps: int) -> dict:
    img, ctl = frame
    return dict(prompt=style.prompt, image=Image.fromarray(img), control_image=Image.fromarray(ctl).convert("RGB"),
                strength=style.strength, num_inference_steps=steps, guidance_scale=0.0,
                controlnet_conditioning_scale=style.control_scale, generator=torch.Generator("cpu").manual_seed(7),
                output_type="np", height=64, width=64)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SD_TURBO_SCHEDULER)  # SD-Turbo's; SDXL-Turbo's has the same noise schedule


def _close(pipe, kwargs: dict, ours: tuple[np.ndarray, torch.Tensor]) -> None:
    """Images within 2 grey levels, and the latents z0 (before the tiny VAE, which maps much to black) close."""
    image, z0 = ours
    theirs = pipe(**kwargs).images
    diff = np.abs(image.astype(int) - np.round(theirs[0] * 255).astype(int))
    assert image.std() > 1  # not a flat image: the comparison means something
    assert diff.max() <= 2, f"max {diff.max()} grey levels apart"
    kwargs["generator"] = torch.Generator("cpu").manual_seed(7)
    latents = pipe(**{**kwargs, "output_type": "latent"}).images
    assert z0.abs().mean() > 0.1
    torch.testing.assert_close(z0, latents, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strength,steps", [(0.5, 2), (0.25, 4)])
def test_sdxl_frame_step_equals_diffusers_sdxl_controlnet_img2img(xl_components, frame, strength, steps):
    """One step of StableDiffusionXLControlNetImg2ImgPipeline at the same timestep (steps * strength = 1 step, trailing
    spacing: t = strength_timestep) with the same noise and modules equals our first frame within 2 grey levels."""
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    c = xl_components
    style = dataclasses.replace(load_style("anime"), strength=strength, control_scale=1.3)
    sched = _scheduler()
    sched.set_timesteps(steps)
    assert int(sched.timesteps[-1]) == strength_timestep(strength)
    pipe = StableDiffusionXLControlNetImg2ImgPipeline(
        vae=c.vae, text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2, tokenizer=c.tokenizer,
        tokenizer_2=c.tokenizer_2, unet=c.unet, controlnet=c.controlnet, scheduler=_scheduler(),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    _close(pipe, _pipe_kwargs(style, frame, steps), _run_ours(c, style, frame))


def test_sd_frame_step_equals_diffusers_controlnet_img2img(sd_components, frame):
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    c = sd_components
    style = dataclasses.replace(load_style("anime"), strength=0.5, control_scale=1.3)
    pipe = StableDiffusionControlNetImg2ImgPipeline(
        vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet, controlnet=c.controlnet,
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    _close(pipe, _pipe_kwargs(style, frame, 2), _run_ours(c, style, frame))


def test_parity_check_can_fail(xl_components, frame):
    """The latent comparison sees a wrong conditioning: other time ids (the SDXL-only input) move z0 past it."""
    s = Stylizer(xl_components, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=7)
    s(*frame)
    good = s._prev_out
    s.reset()
    s._time_ids = s._time_ids * 0 + 1024.0
    s(*frame)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(s._prev_out, good, rtol=1e-4, atol=1e-4)


def test_sdxl_with_two_controls_puts_its_inputs_last(frame):
    """Several ControlNets and the SDXL family together: the control pairs, then text_embeds and time_ids."""
    c = load_components(ModelConfig("random:tiny-xl"), CPU, torch.float32, seed=0, controls=("canny", "depth"))
    style = dataclasses.replace(load_style("anime"), controls=("canny", "depth"))
    s = Stylizer(c, style, SIZE, device=CPU, dtype=torch.float32, seed=0)
    assert s.step.input_names[-4:] == ("control_depth", "control_scale_depth", "text_embeds", "time_ids")
    depth = np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)
    both = s(frame[0], {"canny": frame[1], "depth": depth})
    canny = Stylizer(c, load_style("anime"), SIZE, device=CPU, dtype=torch.float32, seed=0)(*frame)
    assert both.shape == canny.shape == (64, 64, 3) and not np.array_equal(both, canny)  # the depth ControlNet acts


def test_pull_targets_follow_the_family_of_the_hub_file_list():
    """`stylecam models pull` of an SDXL repo not cached yet: the hub's file list (a text_encoder_2/) makes it SDXL,
    so both text encoders, the SDXL ControlNet and TAESDXL are pulled; an SD repo keeps SD's set."""
    import argparse

    from realtime.cli.models import _targets
    from realtime.diffusion.family import family_of_files

    files = ["model_index.json", "unet/config.json", "text_encoder/config.json", "text_encoder_2/config.json"]
    assert family_of_files(files) is SDXL and family_of_files(files[:3]) is SD
    def pull_args(model: str) -> argparse.Namespace:  # what `stylecam models pull --model MODEL` parses to
        return argparse.Namespace(model=model, controlnet="auto", vae="auto", control="canny",
                                  pose_controlnet="auto", depth_controlnet="auto", depth_model="auto")

    args = pull_args("stabilityai/sdxl-turbo")
    xl = {repo: (what, parts) for what, repo, parts in _targets(args, family_of_files(files))}
    assert xl["stabilityai/sdxl-turbo"][1] == ("unet", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
                                               "scheduler")
    assert xl["diffusers/controlnet-canny-sdxl-1.0-small"] == ("controlnet", None)
    assert xl["madebyollin/taesdxl"] == ("vae", None)
    sd = {repo for _, repo, _ in _targets(pull_args("stabilityai/sd-turbo"))}
    assert sd == {"stabilityai/sd-turbo", "thibaud/controlnet-sd21-canny-diffusers", "madebyollin/taesd"}


def test_a_local_sdxl_folder_loads_both_text_encoders(tmp_path, xl_components):
    """The hub/local path: a diffusers SDXL pipeline folder (random:tiny-xl saved) loads text_encoder_2 and
    tokenizer_2 and is SDXL by its config; its prompt embeddings equal the random components' own."""
    c = xl_components
    root = tmp_path / "tiny-xl"
    c.unet.save_pretrained(root / "unet")
    c.text_encoder.save_pretrained(root / "text_encoder")
    c.text_encoder_2.save_pretrained(root / "text_encoder_2")
    c.tokenizer.save_pretrained(root / "tokenizer")
    c.tokenizer_2.save_pretrained(root / "tokenizer_2")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerAncestralDiscreteScheduler", **SD_TURBO_SCHEDULER}), encoding="utf-8")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline",
                                                       "text_encoder_2": ["transformers", "X"]}), encoding="utf-8")
    loaded = load_components(ModelConfig(str(root), controlnet="none", vae="random:tiny-xl"), CPU, torch.float32)
    assert loaded.family is SDXL and type(loaded.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    from realtime.diffusion.family import encode_prompt

    ours = encode_prompt(loaded, "a cat", "", False, CPU, torch.float32)
    ref = encode_prompt(c, "a cat", "", False, CPU, torch.float32)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_sdxl_offline_check_needs_the_second_text_encoder(tmp_path, monkeypatch):
    """Offline, a cached SDXL snapshot (known by its unet config) must hold text_encoder_2/ and tokenizer_2/, and
    SDXL's ControlNet and TAESDXL must be cached: else the one-line error naming what to pull."""
    from huggingface_hub import constants

    from realtime.diffusion.models import check_models_available
    from realtime.errors import ModelNotFound

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def snapshot(repo: str, files: dict[str, str]) -> Path:
        storage = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / "main").write_text("b" * 40)
        for name, text in files.items():
            path = storage / "snapshots" / ("b" * 40) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return storage / "snapshots" / ("b" * 40)

    base = {"model_index.json": "{}", "unet/config.json": json.dumps(ARCHS["sdxl-turbo"]["unet"]),
            "unet/diffusion_pytorch_model.safetensors": "x", "text_encoder/config.json": "{}",
            "text_encoder/model.safetensors": "x", "tokenizer/vocab.json": "{}", "scheduler/scheduler_config.json": "{}"}
    snap = snapshot("stabilityai/sdxl-turbo", base)
    cfg = ModelConfig("stabilityai/sdxl-turbo")
    with pytest.raises(ModelNotFound, match="'stabilityai/sdxl-turbo'"):
        check_models_available(cfg)  # text_encoder_2/ and tokenizer_2/ missing
    snapshot("stabilityai/sdxl-turbo", {"text_encoder_2/config.json": "{}", "text_encoder_2/model.safetensors": "x",
                                        "tokenizer_2/vocab.json": "{}"})
    assert (snap / "text_encoder_2" / "config.json").is_file()
    with pytest.raises(ModelNotFound, match="controlnet-canny-sdxl-1.0-small"):
        check_models_available(cfg)
    snapshot("diffusers/controlnet-canny-sdxl-1.0-small", {"config.json": "{}", "diffusion_pytorch_model.safetensors": "x"})
    with pytest.raises(ModelNotFound, match="madebyollin/taesdxl"):
        check_models_available(cfg)
    snapshot("madebyollin/taesdxl", {"config.json": "{}", "diffusion_pytorch_model.safetensors": "x"})
    check_models_available(cfg)


def test_sdxl_prompt_mix_and_transition_move_the_pooled_embeddings_too(xl_components, frame):
    """A prompt mix and a prompt transition (realtime/diffusion/blending.py) act on SDXL's pooled embeddings as on its
    prompt embeddings: endpoints exact, the middle neither; a transition ends on the new prompt's pair."""
    a, b = "a red fox in snow", "a blue whale at sea"
    s = Stylizer(xl_components, dataclasses.replace(load_style("anime"), prompt=a, transition_frames=2), SIZE,
                 device=CPU, dtype=torch.float32, seed=0)
    pa, pb = s._encode(a, "", False), s._encode(b, "", False)
    half = dataclasses.replace(s.style, prompt_mix=((a, 0.5), (b, 0.5)))
    emb, pooled = s.conditioning(half)
    assert not torch.equal(pooled, pa[1]) and not torch.equal(pooled, pb[1]) and emb.shape == pa[0].shape
    assert torch.equal(s.conditioning(dataclasses.replace(half, prompt_mix=((a, 1.0), (b, 0.0))))[1], pa[1])
    s.set_style(dataclasses.replace(s.style, prompt=b), wait=True)
    s(*frame)
    assert not torch.equal(s._text_embeds, pb[1])  # one frame into a two-frame transition
    s(*frame)
    assert torch.equal(s._text_embeds, pb[1]) and torch.equal(s._prompt_embeds, pb[0])


def test_sdxl_full_vae_in_fp16_is_refused_with_the_fix(xl_components, sd_components):
    """SDXL's own VAE overflows in fp16 (force_upcast in its config): the stylizer refuses it in one line, naming
    the ways out; fp32, TAESDXL and SD models are not affected."""
    import copy

    from diffusers import AutoencoderKL

    from realtime.diffusion.family import check_vae_precision
    from realtime.errors import UsageError

    kl = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, force_upcast=True)
    xl, sd = copy.copy(xl_components), copy.copy(sd_components)
    xl.vae = sd.vae = kl
    with pytest.raises(UsageError, match=r"^--vae full: .*fp16.*sdxl-vae-fp16-fix"):
        check_vae_precision(xl, torch.float16)
    check_vae_precision(xl, torch.float32)
    check_vae_precision(sd, torch.float16)
    check_vae_precision(xl_components, torch.float16)  # TAESDXL
