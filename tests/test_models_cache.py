"""Which repo files stylecam loads, safe `.bin` loading, the fp16 variant, and the offline pre-flight check."""
from __future__ import annotations

import json

import pytest
import torch

from realtime.config import ModelConfig
from realtime.errors import ModelNotFound, UsageError
from realtime.diffusion.hubfiles import wanted_files
from realtime.diffusion.models import (
    ARCHS, SD_TURBO_SCHEDULER, build_random_text_encoder, build_random_unet, check_models_available, load_components,
)
from realtime.diffusion.tokenizer import generated_tokenizer

# stabilityai/sd-turbo's layout (diffusers pipeline repo, fp16 variant files beside the default ones).
SD_TURBO = [
    ".gitattributes", "README.md", "LICENSE", "model_index.json", "sd_turbo.safetensors", "feature_extractor/preprocessor_config.json",
    "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
]
PARTS = ("unet", "text_encoder", "tokenizer", "scheduler")


def test_wanted_files_of_a_pipeline_repo():
    common = {"README.md", "LICENSE", "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
              "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
              "tokenizer/vocab.json", "unet/config.json"}
    fp16 = set(wanted_files(SD_TURBO, PARTS, fp16=True))
    assert fp16 == common | {"unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors"}
    fp32 = set(wanted_files(SD_TURBO, PARTS, fp16=False))
    assert fp32 == common | {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}
    with_vae = set(wanted_files(SD_TURBO, PARTS + ("vae",), fp16=True))
    assert with_vae - fp16 == {"vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"}


def test_wanted_files_prefer_safetensors_and_keep_shards_together():
    taesd = ["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors", "taesd_decoder.pth",
             "taesd_encoder.safetensors", "README.md"]
    assert wanted_files(taesd, None, fp16=True) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    bin_only = ["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"]
    assert wanted_files(bin_only, None, fp16=False) == ["config.json", "diffusion_pytorch_model.bin"]
    # fp16 .bin is taken over the default .bin, but default safetensors beat an fp16 .bin
    assert wanted_files(bin_only, None, fp16=True) == ["config.json", "diffusion_pytorch_model.fp16.bin"]
    mixed = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.bin"]
    assert wanted_files(mixed, None, fp16=True) == ["config.json", "diffusion_pytorch_model.safetensors"]
    sharded = ["config.json", "diffusion_pytorch_model.safetensors.index.json",
               "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors",
               "diffusion_pytorch_model.safetensors.index.fp16.json",
               "diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "diffusion_pytorch_model.fp16-00002-of-00002.safetensors"]
    assert wanted_files(sharded, None, fp16=True) == ["config.json"] + sorted(s for s in sharded if "fp16" in s)
    assert wanted_files(sharded, None, fp16=False) == ["config.json"] + sorted(s for s in sharded[1:] if "fp16" not in s)
    with pytest.raises(ValueError, match="no .safetensors or .bin weights"):
        wanted_files(["config.json", "model.ckpt"], None, fp16=False)
    with pytest.raises(ValueError, match="model_index.json"):
        wanted_files(["unet/config.json"], PARTS, fp16=False)


def _save_pipeline(root, *, safe: bool, fp16_seed: int | None = None) -> None:
    """A diffusers pipeline folder from random:tiny components (``.bin`` weights when ``safe`` is False)."""
    torch.manual_seed(0)
    unet, text = build_random_unet("tiny"), build_random_text_encoder("tiny")
    unet.save_pretrained(root / "unet", safe_serialization=safe)
    if safe:
        text.save_pretrained(root / "text_encoder")
    else:  # transformers 5 writes safetensors only: a .bin as older transformers wrote it
        text.config.save_pretrained(root / "text_encoder")
        torch.save(text.state_dict(), root / "text_encoder" / "pytorch_model.bin")
    if fp16_seed is not None:  # a visibly different fp16 variant
        torch.manual_seed(fp16_seed)
        build_random_unet("tiny").half().save_pretrained(root / "unet", variant="fp16")
    generated_tokenizer(ARCHS["tiny"]["text"]["vocab_size"], cache_root=root.parent).save_pretrained(root / "tokenizer")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "EulerDiscreteScheduler", **SD_TURBO_SCHEDULER}))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def test_bin_weights_load_without_allow_pickle(tmp_path):
    model = tmp_path / "bin-model"
    _save_pipeline(model, safe=False)
    assert (model / "unet" / "diffusion_pytorch_model.bin").is_file() and (model / "text_encoder" / "pytorch_model.bin").is_file()
    assert not list(model.rglob("*.safetensors"))
    comps = load_components(ModelConfig(str(model), controlnet="none", vae="random:tiny"), torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    ref = build_random_unet("tiny")
    assert torch.equal(comps.unet.conv_in.weight, ref.conv_in.weight)
    torch.manual_seed(0)
    build_random_unet("tiny")
    text_ref = build_random_text_encoder("tiny")
    emb = comps.text_encoder.get_input_embeddings().weight
    assert torch.equal(emb, text_ref.get_input_embeddings().weight)
    ckpt = tmp_path / "model.ckpt"  # a full pickle still needs --allow-pickle
    ckpt.write_bytes(b"pickle")
    with pytest.raises(UsageError, match="allow-pickle"):
        load_components(ModelConfig(str(ckpt)), torch.device("cpu"), torch.float32)


def test_fp16_variant_is_loaded_for_fp16_runs_only(tmp_path):
    model = tmp_path / "variant-model"
    _save_pipeline(model, safe=True, fp16_seed=7)
    cfg = ModelConfig(str(model), controlnet="none", vae="random:tiny")
    torch.manual_seed(7)
    fp16_ref = build_random_unet("tiny").half().conv_in.weight
    half = load_components(cfg, torch.device("cpu"), torch.float16).unet.conv_in.weight
    assert torch.equal(half, fp16_ref)
    full = load_components(cfg, torch.device("cpu"), torch.float32).unet.conv_in.weight
    torch.manual_seed(0)
    assert torch.equal(full, build_random_unet("tiny").conv_in.weight)


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _fake_snapshot(cache, repo: str, files: list[str]) -> None:
    storage = cache / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text("a" * 40)
    for f in files:
        path = storage / "snapshots" / ("a" * 40) / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_check_models_available_offline(hub_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_models_available(ModelConfig("random:tiny"))  # nothing to fetch
    with pytest.raises(ModelNotFound) as e:
        check_models_available(ModelConfig())
    msg = str(e.value)
    assert "stabilityai/sd-turbo" in msg and "stylecam models pull" in msg and "HF_HOME" in msg and "\n" not in msg
    with pytest.raises(ModelNotFound, match="not found"):
        check_models_available(ModelConfig(str(tmp_path / "missing"), controlnet="none"))
    _fake_snapshot(hub_cache, "stabilityai/sd-turbo", [f for f in SD_TURBO if not f.startswith(("unet/diffusion", "vae/"))])
    _fake_snapshot(hub_cache, "thibaud/controlnet-sd21-canny-diffusers", ["config.json", "diffusion_pytorch_model.fp16.safetensors"])
    _fake_snapshot(hub_cache, "madebyollin/taesd", ["config.json", "diffusion_pytorch_model.bin"])
    with pytest.raises(ModelNotFound, match="'stabilityai/sd-turbo'"):  # unet weights missing
        check_models_available(ModelConfig())
    (hub_cache / "models--stabilityai--sd-turbo" / "snapshots" / ("a" * 40) / "unet" / "diffusion_pytorch_model.safetensors").write_text("{}")
    check_models_available(ModelConfig())
    with pytest.raises(ModelNotFound, match="--vae full"):  # the main model's vae/ is needed and not cached
        check_models_available(ModelConfig(vae="full"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check_models_available(ModelConfig("someone/not-cached"))  # online: the loaders download it
