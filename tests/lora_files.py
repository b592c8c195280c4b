"""Build LoRA files for tests: diffusers (peft) format and kohya format, for the random:tiny UNet/text encoder."""
from __future__ import annotations

import copy
from pathlib import Path

import torch


def write_diffusers_lora(unet, path: Path, *, rank: int = 4, seed: int = 0, text_encoder=None) -> Path:
    """A diffusers-format LoRA with non-zero random A and B (so it changes the output) for ``unet``'s attention."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = copy.deepcopy(unet)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    te_layers = None
    if text_encoder is not None:
        te = copy.deepcopy(text_encoder)
        te.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        with torch.no_grad():
            for name, p in te.named_parameters():
                if "lora_" in name:
                    p.normal_(0.0, 0.5)
        te_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(te))
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(str(path.parent), unet_lora_layers=layers, text_encoder_lora_layers=te_layers, weight_name=path.name)
    return path


def write_kohya_lora(unet, path: Path, *, rank: int = 4, seed: int = 1) -> Path:
    """A kohya-format LoRA (``lora_unet_<module_path_with_underscores>.lora_down/lora_up/alpha``) on the attention
    projections of every transformer block of ``unet``."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in ("to_q", "to_k", "to_v") and "attentions" in name:
            key = "lora_unet_" + name.replace(".", "_")
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.5
            sd[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.5
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    assert sd, "no attention projections found"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
