"""Model families: SD (SD-Turbo, SD 1.x/2.x) and SDXL (SDXL-Turbo), told apart by the model's config, never its name.

A family says what the one-frame math needs beyond the shared code (docs/design.md §4): SDXL has two text encoders
(their penultimate hidden states concatenated: (1, 77, 2048) for SDXL-Turbo), a pooled text embedding of the second
one (``text_embeds``, (1, 1280)) and six size numbers (``time_ids``: original size, crop corner, target size). Those two
are fixed inputs of :class:`~realtime.diffusion.stylizer.FrameStep`, computed once per prompt and size, passed to the
UNet and the ControlNet as ``added_cond_kwargs``. Everything else (fixed noise, blending, one-step x0, uint8 in/out,
engines) is the same code for both.

Detection (:func:`family_of_unet_config`): a UNet whose ``addition_embed_type`` is ``text_time`` (SDXL's micro-
conditioning), or whose cross-attention width is 2048 (two text encoders concatenated), is SDXL; a pipeline folder
whose ``model_index.json`` lists a ``text_encoder_2`` is SDXL too (:func:`family_of_index`). File-system look-ups only
(:func:`family_of_spec`), so the preflight and ``stylecam models pull`` know the family without loading torch.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.config import DEFAULT_CONTROLNET, TAESD_REPO, ModelConfig
from realtime.errors import UsageError

if TYPE_CHECKING:
    import torch

    from realtime.geometry import Size

log = logging.getLogger(__name__)

#: SDXL-Turbo's ControlNet when ``--controlnet auto``: diffusers' own SDXL Canny ControlNet in diffusers format, the
#: small variant (194.9M parameters against 1251.0M for diffusers/controlnet-canny-sdxl-1.0: no attention in its down
#: blocks, one transformer layer in the middle), because a live frame runs it every time and the full one would add
#: about half the UNet's cost. Its card calls it experimental and says the bigger checkpoints do better on complex
#: conditionings: ``--controlnet diffusers/controlnet-canny-sdxl-1.0`` takes the full one.
#: ``stylecam generate``'s default model (its licence: README, SDXL-Turbo).
SDXL_TURBO = "stabilityai/sdxl-turbo"
SDXL_CONTROLNET = "diffusers/controlnet-canny-sdxl-1.0-small"
#: The other controls' SDXL ControlNets for ``auto`` (diffusers format; unverified here: no hub on this machine).
SDXL_MORE_CONTROLNETS = {"pose": "thibaud/controlnet-openpose-sdxl-1.0", "depth": "diffusers/controlnet-depth-sdxl-1.0-small"}
TAESDXL_REPO = "madebyollin/taesdxl"
#: The tiny CLIP text encoder config of ``random:tiny`` and both of ``random:tiny-xl``'s.
TINY_TEXT: dict[str, Any] = dict(
    vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=32, bos_token_id=998, eos_token_id=999,
    pad_token_id=999,
)
#: The random SDXL architectures (``random:<arch>``; :data:`realtime.diffusion.models.ARCHS` holds them with the SD
#: ones). ``sdxl-turbo``: stabilityai/sdxl-turbo's UNet (2567.5M parameters) and text encoders (CLIP ViT-L 123.1M, OpenCLIP
#: ViT-bigG with projection 694.7M), SDXL_CONTROLNET's architecture (194.9M) and TAESDXL (2.4M, TAESD's architecture).
#: ``tiny-xl``: the same shapes in miniature for tests (UNet with ``text_time`` conditioning, two text encoders).
XL_ARCHS: dict[str, dict[str, Any]] = {
    "sdxl-turbo": {
        "unet": dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ),
        "controlnet_overrides": dict(down_block_types=("DownBlock2D",) * 3, transformer_layers_per_block=(0, 0, 1)),
        "controlnet": dict(conditioning_embedding_out_channels=(16, 32, 96, 256)),
        "taesd": {},
        "text": dict(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        ),
        "text_2": dict(
            vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
        ),
    },
    "tiny-xl": {
        "unet": dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), cross_attention_dim=64, attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80, norm_num_groups=8,  # 6 time ids * 8 + pooled 32
        ),
        "controlnet_overrides": dict(down_block_types=("DownBlock2D",) * 2, transformer_layers_per_block=(0, 1)),
        "controlnet": dict(conditioning_embedding_out_channels=(8, 8, 16, 16)),
        "taesd": dict(
            encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
        ),
        "text": TINY_TEXT,
        "text_2": TINY_TEXT,
    },
}
#: FrameStep's extra inputs for SDXL, appended to ``INPUT_NAMES`` in this order.
SDXL_INPUT_NAMES = ("text_embeds", "time_ids")  # (B, P) pooled text embedding of text_encoder_2; (B, 6) size numbers


@dataclass(frozen=True)
class Family:
    """What differs between model families. ``text_parts``: the pipeline folders stylecam loads beside ``unet/`` and
    ``scheduler/``; ``controlnet`` / ``taesd``: the hub defaults for ``--controlnet auto`` / ``--vae taesd``;
    ``scheduler``: the diffusers scheduler class the family's turbo model ships with (``stylecam generate`` steps with
    it when a scheduler config names none, as the random ones do); ``extra_inputs``: FrameStep inputs it adds;
    ``more_controlnets``: (control, default ControlNet) pairs for ``--pose-controlnet``/``--depth-controlnet auto``."""

    name: str
    controlnet: str
    taesd: str
    text_parts: tuple[str, ...]
    scheduler: str
    extra_inputs: tuple[str, ...] = ()
    more_controlnets: tuple[tuple[str, str], ...] = ()

    @property
    def is_xl(self) -> bool:
        return self.name == "sdxl"


SD = Family("sd", DEFAULT_CONTROLNET, TAESD_REPO, ("text_encoder", "tokenizer"), "EulerDiscreteScheduler")
SDXL = Family("sdxl", SDXL_CONTROLNET, TAESDXL_REPO, ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
              "EulerAncestralDiscreteScheduler", SDXL_INPUT_NAMES, tuple(SDXL_MORE_CONTROLNETS.items()))


def family_of_unet_config(config: Mapping[str, Any]) -> Family:
    """The family of a UNet from its config (a ``UNet2DConditionModel.config`` or its ``config.json``)."""
    if config.get("addition_embed_type") == "text_time" or config.get("cross_attention_dim") == 2048:
        return SDXL
    return SD


def family_of_index(index: Mapping[str, Any]) -> Family:
    """The family of a pipeline from its ``model_index.json``: a second text encoder means SDXL."""
    return SDXL if index.get("text_encoder_2") else SD


def family_of_files(names: Iterable[str]) -> Family:
    """The family of a pipeline repo from its file names (the hub's list, before anything is downloaded): a second
    text encoder (``text_encoder_2/``) means SDXL."""
    return SDXL if any(n.startswith("text_encoder_2/") for n in names) else SD


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def family_of_folder(root: Path) -> Family | None:
    """The family of a diffusers pipeline folder (a local directory or a cached snapshot), or None when it has
    neither ``unet/config.json`` nor ``model_index.json``."""
    unet = _read_json(root / "unet" / "config.json")
    if unet is not None:
        return family_of_unet_config(unet)
    index = _read_json(root / "model_index.json")
    return family_of_index(index) if index is not None else None


def pipeline_parts(family: Family | None) -> tuple[str, ...]:
    """The folders of a pipeline repo stylecam loads for ``family`` (``PIPELINE_PARTS`` for SD or not known)."""
    from realtime.diffusion.hubfiles import PIPELINE_PARTS

    if family is None or not family.is_xl:
        return PIPELINE_PARTS
    return ("unet", *family.text_parts, "scheduler")


def with_family_defaults(cfg: ModelConfig, family: Family | None) -> ModelConfig:
    """``cfg`` with ``--controlnet auto`` (and the pose/depth ones) and ``--vae auto/taesd`` resolved for ``family``
    (hub and local models; ``random:`` models use their own architecture). SD, or not known yet: ``cfg`` unchanged."""
    if family is None or not family.is_xl or cfg.is_random:
        return cfg
    out = cfg
    if cfg.controlnet == "auto":
        out = replace(out, controlnet=family.controlnet)
    for control, spec in family.more_controlnets:
        if getattr(cfg, f"{control}_controlnet") == "auto":
            out = replace(out, **{f"{control}_controlnet": spec})
    if cfg.vae in ("auto", "taesd"):
        out = replace(out, vae=family.taesd)
    return out


# ------------------------------------------------------------------------------------------------ conditioning
def time_ids(size: "Size", batch: int, device: "torch.device", dtype: "torch.dtype") -> "torch.Tensor":
    """SDXL's micro-conditioning for a ``size`` image, uncropped: ``[H, W, 0, 0, H, W]`` per batch row, (B, 6)
    (what diffusers' ``_get_add_time_ids`` builds with ``original_size = target_size = (H, W)``)."""
    import torch

    row = [size.height, size.width, 0, 0, size.height, size.width]
    return torch.tensor([row] * batch, device=device, dtype=dtype)


def text_encoder_placement(device: "torch.device", dtype: "torch.dtype") -> tuple["torch.device", "torch.dtype"]:
    """Where the text encoders live: on a GPU it stays on the CPU in float32 (memory diet: the SD 2.x encoder is
    0.63 GiB in fp16; prompts are encoded off the frame path, where ~0.1-1 s on the CPU is invisible; the stylizer
    moves the embeddings to the device). On the CPU: the run's device and dtype."""
    import torch

    if device.type == "cpu":
        return device, dtype
    return torch.device("cpu"), torch.float32


def encode_texts(comps: Any, texts: list[str], device: "torch.device", dtype: "torch.dtype",
                 ) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Prompt embeddings (B, 77, D) for ``texts``, and for SDXL the pooled embeddings (B, P) (None for SD).

    SD: the text encoder's last hidden state. SDXL (as diffusers' ``StableDiffusionXLPipeline.encode_prompt``): each
    encoder's penultimate hidden state, concatenated on the last axis; the pooled output of the second encoder
    (``CLIPTextModelWithProjection.text_embeds``)."""
    import torch

    pairs = [(comps.tokenizer, comps.text_encoder)]
    if comps.text_encoder_2 is not None:
        pairs.append((comps.tokenizer_2, comps.text_encoder_2))
    hidden, pooled = [], None
    with torch.inference_mode():
        for tok, enc in pairs:
            ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(enc.device)
            if len(pairs) == 1:
                return enc(ids)[0].to(device, dtype), None
            out = enc(ids, output_hidden_states=True)
            if out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
    assert pooled is not None, "the second SDXL text encoder must be a CLIPTextModelWithProjection"
    return torch.cat(hidden, dim=-1).to(device, dtype), pooled.to(device, dtype)


def encode_prompt(comps: Any, prompt: str, negative: str, cfg: bool, device: "torch.device", dtype: "torch.dtype",
                  ) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """(prompt embeddings, pooled embeddings or None for SD) for one prompt: (1, 77, D) / (1, P), or with ``cfg``
    (2, ...) = [negative, positive]. SDXL with CFG and no negative prompt: zeros for the negative row, as diffusers'
    SDXL pipelines do (``force_zeros_for_empty_prompt``)."""
    emb, pooled = encode_texts(comps, [negative, prompt] if cfg else [prompt], device, dtype)
    if cfg and pooled is not None and not negative.strip():
        emb, pooled = emb.clone(), pooled.clone()
        emb[0].zero_()
        pooled[0].zero_()
    return emb, pooled


def each_conditioning(fn: Any, *conds: tuple[Any, ...]) -> tuple[Any, ...]:
    """``fn`` over the tensors of conditionings ``(prompt embeddings, pooled embeddings or None)``, part by part (a
    prompt mix or transition of SDXL mixes its pooled embeddings as its prompt embeddings)."""
    return tuple(None if parts[0] is None else fn(*parts) for parts in zip(*conds, strict=True))


def check_vae_precision(comps: Any, dtype: "torch.dtype") -> None:
    """The stylizer with an SDXL model's own VAE in fp16: refused (diffusers' SDXL pipelines decode it in fp32 because
    it overflows in fp16, which its config says with ``force_upcast``; the frame step runs one dtype throughout)."""
    import torch

    vae = comps.vae
    if (dtype == torch.float16 and comps.family.is_xl and type(vae).__name__ == "AutoencoderKL"
            and getattr(vae.config, "force_upcast", False)):
        raise UsageError("--vae full: this SDXL model's VAE overflows in fp16 (its config sets force_upcast): use the "
                         "default TAESDXL, --dtype bf16 or fp32, or an fp16-safe VAE (--vae madebyollin/sdxl-vae-fp16-fix)")
