"""``stylecam generate`` on random:tiny-xl: parity with diffusers' StableDiffusionXLPipeline, seeds, --count and its
grid, and bad input (an SD 1.x/2.x LoRA on SDXL) refused before any model loads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from realtime.config import ModelConfig
from realtime.diffusion.generate import GenerateConfig, generate, make_scheduler, sample_latents
from realtime.diffusion.models import load_components
from realtime.geometry import Size

from cli_run import run_cli
from lora_files import write_diffusers_lora

CPU = torch.device("cpu")
TINY = ["--model", "random:tiny-xl", "--size", "64x64"]


@pytest.fixture(scope="module")
def xl():
    return load_components(ModelConfig("random:tiny-xl", controlnet="none"), CPU, torch.float32, seed=0)


@pytest.mark.parametrize("steps,guidance,negative", [(1, 0.0, ""), (3, 0.0, ""), (2, 3.0, "blurry"), (2, 3.0, "")])
def test_generate_equals_diffusers_sdxl_pipeline(xl, steps, guidance, negative):
    """Same modules, same seed: the latents match StableDiffusionXLPipeline's to 1e-4 and the image within 1 grey
    level (Euler ancestral: its noise per step comes from the same generator, in the same order)."""
    from diffusers import StableDiffusionXLPipeline

    cfg = GenerateConfig("a cat in a hat", negative, steps, guidance, Size(64, 64))
    pipe = StableDiffusionXLPipeline(
        vae=xl.vae, text_encoder=xl.text_encoder, text_encoder_2=xl.text_encoder_2, tokenizer=xl.tokenizer,
        tokenizer_2=xl.tokenizer_2, unet=xl.unet, scheduler=make_scheduler(xl), force_zeros_for_empty_prompt=True,
        add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(negative_prompt=negative or None, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64)
    theirs = pipe(cfg.prompt, generator=torch.Generator("cpu").manual_seed(5), output_type="latent", **kw).images
    ours = sample_latents(xl, cfg, 5, device=CPU, dtype=torch.float32)
    assert ours.abs().mean() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    image = pipe(cfg.prompt, generator=torch.Generator("cpu").manual_seed(5), output_type="np", **kw).images[0]
    mine = generate(xl, cfg, 5, device=CPU, dtype=torch.float32)
    assert np.abs(mine.astype(int) - np.round(image * 255).astype(int)).max() <= 1


def test_scheduler_is_the_families_or_the_configs(xl):
    assert type(make_scheduler(xl)).__name__ == "EulerAncestralDiscreteScheduler"  # SDXL-Turbo's own
    sd = load_components(ModelConfig("random:tiny", controlnet="none"), CPU, torch.float32)
    assert type(make_scheduler(sd)).__name__ == "EulerDiscreteScheduler"  # SD-Turbo's
    sd.scheduler_config = {**sd.scheduler_config, "_class_name": "DDIMScheduler"}
    assert type(make_scheduler(sd)).__name__ == "DDIMScheduler"


def test_same_seed_same_bytes_other_seed_differs(capsys, tmp_path):
    outs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        code, err = run_cli(capsys, ["generate", "a cat", "-o", str(tmp_path / f"{name}.png"), "--seed", str(seed), *TINY])
        assert code == 0, err
        outs[name] = (tmp_path / f"{name}.png").read_bytes()
    assert outs["a"] == outs["b"] and outs["a"] != outs["c"]


def test_count_writes_numbered_files_and_a_labelled_grid(capsys, tmp_path):
    code, err = run_cli(capsys, ["generate", "--style", "anime", "-o", str(tmp_path / "base.png"), "--count", "5",
                                 "--seed", "10", *TINY])
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["base-1.png", "base-2.png", "base-3.png", "base-4.png", "base-5.png", "base-grid.png"]
    images = [np.asarray(Image.open(tmp_path / f"base-{i}.png")) for i in range(1, 6)]
    assert all(im.shape == (64, 64, 3) for im in images)
    assert len({im.tobytes() for im in images}) == 5  # five seeds, five images
    grid = np.asarray(Image.open(tmp_path / "base-grid.png"))
    assert grid.shape[1] > 3 * 64 and (grid == 255).any()  # several cells with white label bands
    code, err = run_cli(capsys, ["generate", "a cat", "-o", str(tmp_path / "one.png"), "--seed", "10", *TINY])
    assert code == 0, err
    assert not (tmp_path / "one-grid.png").exists()
    code, err = run_cli(capsys, ["generate", "--style", "anime", "-o", str(tmp_path / "base.png"), "--count", "5", *TINY])
    assert code == 2 and err.count("\n") == 1 and "base-1.png" in err  # exists: --overwrite to replace


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "5"], "--steps 5"),
    (["--steps", "0"], "--steps 0"),
    (["--guidance", "31"], "--guidance 31"),
    (["--count", "0"], "--count 0"),
    (["--size", "100x64"], "--size 100x64"),
    (["--style", "none"], "pass-through"),
    (["--vae", "full"], None),  # a random model has no full VAE: refused when loading (exit 2)
])
def test_bad_input_is_one_line(capsys, tmp_path, argv, needle, no_model_load):
    code, err = run_cli(capsys, ["generate", "a cat", "-o", str(tmp_path / "x.png"), *TINY, *argv])
    if needle is None:  # reached the (patched) model load: the check lives in the loader
        assert code == 1 and "model load was reached" in err
        return
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not list(tmp_path.iterdir())


def test_sd_lora_on_sdxl_is_refused_before_any_model_loads(capsys, tmp_path, tiny_components, no_model_load):
    """An SD 1.x/2.x LoRA (random:tiny's UNet layers) on an SDXL model: one line naming the mismatch, for generate and
    for the stylizer commands (image), before a model loads, so before the frame loop."""
    lora = write_diffusers_lora(tiny_components.unet, tmp_path / "sd.safetensors")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "in.png")
    for argv in (["generate", "a cat", "-o", str(tmp_path / "g.png"), *TINY, "--lora", str(lora)],
                 ["image", str(tmp_path / "in.png"), "-o", str(tmp_path / "i.png"), *TINY, "--lora", str(lora)]):
        code, err = run_cli(capsys, argv)
        assert code == 2 and err.count("\n") == 1, err
        assert "SD 1.x/2.x" in err and "SDXL" in err and "sd.safetensors" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "sd.safetensors"]


def test_sdxl_lora_fuses_into_tiny_xl(tmp_path):
    """A LoRA made for the SDXL UNet loads through SDXL's LoRA loader and changes the image (scale 0: identical)."""
    import copy

    from realtime.config import LoraSpec
    from realtime.diffusion.lora_switch import fuse_loras

    base = load_components(ModelConfig("random:tiny-xl", controlnet="none"), CPU, torch.float32, seed=0)
    lora = write_diffusers_lora(base.unet, tmp_path / "xl.safetensors")
    cfg = GenerateConfig("a cat", steps=1, size=Size(64, 64))
    before = sample_latents(base, cfg, 1, device=CPU, dtype=torch.float32)
    zero, one = copy.deepcopy(base), copy.deepcopy(base)
    fuse_loras(zero, [LoraSpec(str(lora), 0.0)])
    fuse_loras(one, [LoraSpec(str(lora), 1.0)])
    torch.testing.assert_close(sample_latents(zero, cfg, 1, device=CPU, dtype=torch.float32), before)
    assert not torch.allclose(sample_latents(one, cfg, 1, device=CPU, dtype=torch.float32), before)


def test_image_clip_and_live_run_the_sdxl_family(capsys, tmp_path):
    """`--model random:tiny-xl` through the stylizer commands: image, clip (audio-less clip) and a short live run."""
    from media_files import make_clip

    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(tmp_path / "in.png")
    make_clip(tmp_path / "in.mp4", n=4, size=(64, 48))
    runs = [
        ["image", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), *TINY],
        ["clip", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), *TINY, "--no-face", "--quiet"],
        ["live", "--source", str(tmp_path / "in.mp4"), "--output", str(tmp_path / "live.mp4"), *TINY, "--no-face",
         "--no-stdin", "--frames", "3", "--output-size", "64x48"],
    ]
    for argv in runs:
        code, err = run_cli(capsys, argv)
        assert code == 0, (argv[0], err)
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (48, 64, 3)
    assert (tmp_path / "out.mp4").stat().st_size > 0 and (tmp_path / "live.mp4").stat().st_size > 0
