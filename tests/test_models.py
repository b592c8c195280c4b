"""Model specs, random architectures, config and presets, sizes."""
from __future__ import annotations

import pytest
import torch

from realtime.config import LoraSpec, ModelConfig, RunConfig, StyleConfig, TemporalConfig, builtin_style_names, load_style, override_style
from realtime.errors import DeviceUnavailable, InputError, ModelNotFound, UsageError
from realtime.geometry import Size, auto_model_size, parse_size
from realtime.diffusion.models import (
    ARCHS, build_random_controlnet, build_random_taesd, build_random_text_encoder, build_random_unet,
    load_components, resolve_device, spec_kind,
)
from realtime.diffusion.tokenizer import generated_tokenizer


def _millions(module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def test_random_sd_turbo_is_the_real_architecture():
    with torch.device("meta"):
        unet = build_random_unet("sd-turbo")
        controlnet = build_random_controlnet("sd-turbo", unet)
        taesd = build_random_taesd("sd-turbo")
        text = build_random_text_encoder("sd-turbo")
    assert _millions(unet) == 865.9
    assert _millions(controlnet) == 364.2
    assert _millions(taesd) == 2.4
    assert _millions(text) == 340.4
    assert unet.config.cross_attention_dim == text.config.hidden_size == 1024
    assert text.config.num_hidden_layers == 23 and text.config.num_attention_heads == 16


def test_random_sdxl_turbo_is_the_real_architecture():
    """Counted on the meta device (no memory): SDXL-Turbo's UNet, the small SDXL Canny ControlNet, TAESDXL's
    architecture and both text encoders; their widths fit (768 + 1280 = 2048 cross-attention, 1280 pooled + 6 * 256
    time ids = 2816 added embedding)."""
    with torch.device("meta"):
        unet = build_random_unet("sdxl-turbo")
        controlnet = build_random_controlnet("sdxl-turbo", unet)
        taesd = build_random_taesd("sdxl-turbo")
        text, text_2 = build_random_text_encoder("sdxl-turbo"), build_random_text_encoder("sdxl-turbo", "text_2")
    assert (_millions(unet), _millions(controlnet), _millions(taesd)) == (2567.5, 194.9, 2.4)
    assert (_millions(text), _millions(text_2)) == (123.1, 694.7)
    assert type(text_2).__name__ == "CLIPTextModelWithProjection"
    assert unet.config.cross_attention_dim == text.config.hidden_size + text_2.config.hidden_size == 2048
    assert unet.config.projection_class_embeddings_input_dim == text_2.config.projection_dim + 6 * 256
    assert set(controlnet.config.down_block_types) == {"DownBlock2D"}  # the small ControlNet: no attention going down


def test_generated_tokenizer_has_the_real_vocabulary_size(tmp_path):
    tok = generated_tokenizer(49408, cache_root=tmp_path)
    assert len(tok) == 49408
    ids = tok(["an anime portrait"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and int(ids.max()) < 49408
    again = generated_tokenizer(49408, cache_root=tmp_path)  # cached on disk, same result
    assert again(["an anime portrait"]).input_ids == tok(["an anime portrait"]).input_ids


def test_random_tiny_components_load_offline(_tiny_components_master):
    c = _tiny_components_master
    assert c.controlnet is not None and type(c.vae).__name__ == "AutoencoderTiny"
    assert c.prediction_type == "epsilon"
    abar = c.alphas_cumprod()
    assert abar.shape == (1000,) and 0 < float(abar[-1]) < float(abar[0]) < 1
    assert len(c.tokenizer) == ARCHS["tiny"]["text"]["vocab_size"]


def test_unknown_random_architecture():
    with pytest.raises(ModelNotFound, match="random:sd-turbo"):
        load_components(ModelConfig("random:nope"), torch.device("cpu"), torch.float32)


def test_hub_model_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as e:
        load_components(ModelConfig("stabilityai/sd-turbo"), torch.device("cpu"), torch.float32)
    msg = str(e.value)
    assert "stabilityai/sd-turbo" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg
    assert isinstance(e.value, InputError)


def test_spec_kinds(tmp_path):
    assert spec_kind("random:tiny") == "random"
    assert spec_kind("stabilityai/sd-turbo") == "hub"
    assert spec_kind(str(tmp_path)) == "dir"
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x")
    assert spec_kind(str(f)) == "file"
    with pytest.raises(ModelNotFound, match="not found"):
        spec_kind("./no/such/model")
    with pytest.raises(ModelNotFound):
        spec_kind("just-a-word")


def test_pickle_model_file_is_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(UsageError, match="allow-pickle"):
        load_components(ModelConfig(str(ckpt)), torch.device("cpu"), torch.float32)


def test_device_errors_never_fall_back():
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        pytest.skip("this machine has CUDA: the no-CUDA error cannot happen here")
    with pytest.raises(DeviceUnavailable, match="--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceUnavailable):
        resolve_device("cuda:1")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_model_config_defaults_follow_the_model():
    hub = ModelConfig()
    assert hub.controlnet_spec == "thibaud/controlnet-sd21-canny-diffusers" and hub.vae_spec == "taesd"
    rnd = ModelConfig("random:tiny")
    assert rnd.controlnet_spec == "random:tiny" and rnd.vae_spec == "random:tiny"
    assert ModelConfig("random:tiny", controlnet="none").controlnet_spec is None
    assert ModelConfig("random:tiny", vae="full").vae_spec == "full"


def test_presets():
    names = builtin_style_names()
    assert names[0] == "anime"
    assert set(names) == {"anime", "anime-soft", "soft-render", "cel-shaded", "vibrant", "watercolor", "none"}
    assert load_style("anime-soft").control_scale < load_style("anime").control_scale
    none = load_style("none")
    assert none.passthrough
    with pytest.raises(UsageError, match="loads no model"):
        override_style(none, strength=0.5)
    with pytest.raises(UsageError, match="unknown style"):
        load_style("nope")


def test_user_preset_file_and_overrides(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('prompt = "ink drawing"\nstrength = 0.4\n[temporal]\nblend = 0.9\n[[lora]]\npath = "x.safetensors"\nscale = 0.5\n')
    s = load_style(str(f))
    assert (s.name, s.prompt, s.strength, s.temporal.blend) == ("mine", "ink drawing", 0.4, 0.9)
    assert s.loras == (LoraSpec("x.safetensors", 0.5),)
    o = override_style(s, strength=0.9, temporal_blend=1.0, loras=(LoraSpec("y.safetensors"),), prompt=None)
    assert o.strength == 0.9 and o.temporal.blend == 1.0 and o.prompt == "ink drawing"
    assert [x.path for x in o.loras] == ["x.safetensors", "y.safetensors"]
    bad = tmp_path / "bad.toml"
    bad.write_text('prompt = "x"\nstrenght = 0.4\n')
    with pytest.raises(UsageError, match="strenght"):
        load_style(str(bad))


@pytest.mark.parametrize("kwargs", [dict(strength=0.0), dict(strength=1.01), dict(control_scale=-1.0), dict(guidance=0.5), dict(canny_low=10), dict(prompt="")])
def test_style_validation(kwargs):
    base = dict(name="t", prompt="p")
    base.update(kwargs)
    with pytest.raises(UsageError):
        StyleConfig(**base)


def test_temporal_validation():
    with pytest.raises(UsageError, match="blend"):
        TemporalConfig(blend=0.0)
    assert TemporalConfig(motion_adaptive=False).motion_gain == 0.0
    assert TemporalConfig(motion_threshold=0.5).motion_gain == 2.0


def test_lora_spec_parsing():
    assert LoraSpec.parse("a.safetensors:0.8") == LoraSpec("a.safetensors", 0.8)
    assert LoraSpec.parse(r"C:\loras\a.safetensors") == LoraSpec(r"C:\loras\a.safetensors", 1.0)
    assert LoraSpec.parse(r"C:\loras\a.safetensors:0.5") == LoraSpec(r"C:\loras\a.safetensors", 0.5)
    assert LoraSpec.parse("owner/repo/file.safetensors") == LoraSpec("owner/repo/file.safetensors", 1.0)


def test_sizes():
    assert auto_model_size(Size(1280, 720)) == Size(704, 384)
    assert auto_model_size(Size(640, 640)) == Size(512, 512)
    assert auto_model_size(Size(720, 1280)) == Size(384, 704)
    assert parse_size("512x512", model=True) == Size(512, 512)
    for bad in ("500x512", "0x64", "4096x64", "abc", "32x32"):
        with pytest.raises(UsageError):
            parse_size(bad, model=True)
    with pytest.raises(UsageError):
        RunConfig(size=Size(100, 64))
    with pytest.raises(UsageError):
        RunConfig(device="gpu")
