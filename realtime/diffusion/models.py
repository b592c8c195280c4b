"""Resolve model specs into loaded components (docs/design.md §5).

A spec is a hub id (``owner/name``), a local diffusers directory, a single ``.safetensors`` file, or ``random:<arch>``
(the real architecture with random weights and no download: ``random:sd-turbo`` is SD-Turbo's UNet 865.9M, the SD2.1
ControlNet 364.2M, TAESD 2.4M and the SD 2.x text encoder 340.4M parameters; ``random:tiny`` is a tiny one for tests;
``random:sdxl-turbo`` and ``random:tiny-xl`` are the SDXL family's, see :data:`realtime.diffusion.family.XL_ARCHS`).
The model family (SD or SDXL) comes from the UNet's config (:mod:`realtime.diffusion.family`), never from a name.
Hub models respect ``HF_HUB_OFFLINE``: the cache is always tried first, and a model that is not there while offline is
a one-line :class:`~realtime.errors.ModelNotFound` naming it and the fix. Pickle checkpoints are refused unless allowed.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.config import CONTROL_TYPES, TAESD_REPO, ModelConfig
from realtime.errors import ModelNotFound, UsageError
from realtime.diffusion.family import (TINY_TEXT, XL_ARCHS, Family, family_of_folder, family_of_unet_config, pipeline_parts,
                                       text_encoder_placement, with_family_defaults)
from realtime.diffusion.devices import resolve_device, resolve_dtype  # noqa: F401 (re-exported)
from realtime.diffusion.hubfiles import cached_snapshot, cached_weights, missing_parts
from realtime.diffusion.tokenizer import generated_tokenizer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Full pickles: loading them may need unsafe unpickling, so only with --allow-pickle. ``.bin`` is not here: diffusers
# 0.42.1 (diffusers/models/model_loading_utils.py, load_state_dict: ``torch.load(..., weights_only=True)``) and
# transformers 5.23 (transformers/modeling_utils.py, load_state_dict(weights_only=True), the default of
# from_pretrained's ``weights_only``, behind check_torch_load_is_safe: torch >= 2.6) read ``.bin`` weights with torch's
# weights-only unpickler, which builds tensors and plain containers and runs no code; so does our LoRA reader.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl")

# SD-Turbo's scheduler (EulerDiscreteScheduler config from stabilityai/sd-turbo); only the noise schedule and the
# prediction type matter for a one-step frame.
SD_TURBO_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
}

ARCHS: dict[str, dict[str, Any]] = {
    "sd-turbo": {
        "unet": dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        ),
        "controlnet": dict(conditioning_embedding_out_channels=(16, 32, 96, 256)),
        "taesd": {},
        "text": dict(
            vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
        ),
    },
    "tiny": {
        "unet": dict(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
        ),
        "controlnet": dict(conditioning_embedding_out_channels=(8, 8, 16, 16)),
        "taesd": dict(
            encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1),
        ),
        "text": TINY_TEXT,
    },
    **XL_ARCHS,
}


@dataclass
class Components:
    """Everything one frame needs, loaded and on the device (text encoder included; it runs once per prompt)."""

    unet: Any
    controlnet: Any | None
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)  # what was loaded (for engine cache keys and logs)
    #: the ControlNets of the other controls (``pose``, ``depth``); ``controlnet`` is Canny's
    more_controlnets: dict[str, Any] = field(default_factory=dict)
    text_encoder_2: Any = None  # the SDXL family's second text encoder (CLIPTextModelWithProjection) and tokenizer
    tokenizer_2: Any = None

    @property
    def controlnets(self) -> dict[str, Any]:
        """Every loaded ControlNet by control type, in :data:`~realtime.config.CONTROL_TYPES` order (the frame step's)."""
        nets = {"canny": self.controlnet, **self.more_controlnets}
        return {c: nets[c] for c in CONTROL_TYPES if nets.get(c) is not None}

    @property
    def family(self) -> Family:
        """SD or SDXL, from the UNet's config (:func:`realtime.diffusion.family.family_of_unet_config`)."""
        return family_of_unet_config(getattr(self.unet, "config", {}))  # a UNet without a config (a test's): SD

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    def alphas_cumprod(self) -> "torch.Tensor":
        """``abar_t`` for t = 0..T-1 (float64, CPU), from the scheduler config's beta schedule."""
        from diffusers import DDPMScheduler

        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
        cfg = {k: self.scheduler_config[k] for k in keys if self.scheduler_config.get(k) is not None}
        return DDPMScheduler(**cfg).alphas_cumprod.double()


# --------------------------------------------------------------------------------------------------- random models
def random_arch(spec: str) -> str:
    arch = spec.split(":", 1)[1]
    if arch not in ARCHS:
        raise ModelNotFound(f"unknown random architecture {spec!r}: choose one of {', '.join('random:' + a for a in ARCHS)}")
    return arch


def build_random_unet(arch: str) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**ARCHS[arch]["unet"])


def build_random_controlnet(arch: str, unet: Any | None = None) -> Any:
    from diffusers import ControlNetModel

    unet = unet if unet is not None else build_random_unet(arch)
    import torch

    overrides = ARCHS[arch].get("controlnet_overrides")  # not the UNet's encoder (SDXL's small ControlNet)
    with torch.device("meta") if overrides else contextlib.nullcontext():  # then only its config, no memory
        net = ControlNetModel.from_unet(unet, load_weights_from_unet=False, **ARCHS[arch]["controlnet"])
    if overrides:
        net = ControlNetModel.from_config({**net.config, **overrides})
    # diffusers zero-initialises the "zero convs" (a freshly trained ControlNet starts as a no-op). Random weights
    # must exercise the ControlNet path, so give them torch's default init.
    for module in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
        module.reset_parameters()
    return net


def build_random_taesd(arch: str) -> Any:
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(**ARCHS[arch]["taesd"])


def build_random_text_encoder(arch: str, which: str = "text") -> Any:
    """``which="text"``: the (first) text encoder, a CLIPTextModel; ``"text_2"``: SDXL's second one, with projection."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if which == "text_2" else CLIPTextModel
    return cls(CLIPTextConfig(**ARCHS[arch][which]))


def model_family(spec: str) -> Family | None:
    """The family of a spec without loading it (random arch, local dir, cached snapshot); None: not known yet."""
    kind = spec_kind(spec)
    if kind == "random":
        return family_of_unet_config(ARCHS[random_arch(spec)]["unet"])
    root = Path(spec).expanduser() if kind == "dir" else cached_snapshot(spec) if kind == "hub" else None
    return family_of_folder(root) if root is not None else None


# --------------------------------------------------------------------------------------------------- hub and files
def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_not_pickle(path: Path, allow_pickle: bool, what: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise UsageError(
            f"{what} {path} is a pickle checkpoint, which can run arbitrary code: convert it to .safetensors, "
            "or pass --allow-pickle if you trust it"
        )


def spec_kind(spec: str) -> str:
    """``random``, ``file``, ``dir`` or ``hub``; a spec that is none of these is a :class:`ModelNotFound`."""
    if spec.startswith("random:"):
        return "random"
    path = Path(spec).expanduser()
    if path.is_file():
        return "file"
    if path.is_dir():
        return "dir"
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return "hub"
    raise ModelNotFound(f"model {spec!r} not found: not a local file or directory, a hub id (owner/name) or random:<arch>")


def offline_not_cached(what: str, spec: str) -> ModelNotFound:
    """The one-line error for a hub model that is not cached while offline: it names the model and the fix."""
    pull = {"model": f"--model {spec}", "controlnet": f"--controlnet {spec}", "full vae": f"--model {spec} --vae full",
            "pose controlnet": f"--control pose --pose-controlnet {spec}",
            "depth controlnet": f"--control depth --depth-controlnet {spec}",
            "depth model": f"--control depth --depth-model {spec}"}
    return ModelNotFound(
        f"{what} {spec!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: run `stylecam models pull "
        f"{pull.get(what, f'--vae {spec}')}` on a connected machine (then copy its cache here and point HF_HOME at it), "
        "or unset HF_HUB_OFFLINE; `--model random:tiny` runs without any download"
    )


def hub_load(loader: Callable[..., Any], spec: str, what: str, **kwargs: Any) -> Any:
    """Call a ``from_pretrained``-style ``loader``: the local cache first, then (unless offline) the hub.

    Before a download the hub is asked once (a few seconds at most) whether it is reachable and has ``spec``, so no
    network or a wrong id is one line at once instead of the libraries' retries.
    """
    try:
        return loader(spec, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        if hub_offline():
            raise offline_not_cached(what, spec) from e
    if spec_kind(spec) == "hub":  # single files fetch only their config from the hub
        from realtime.diffusion.pull import probe_repo

        probe_repo(spec, what)
    log.info("downloading %s %s from the Hugging Face hub (first run only; `stylecam models pull` fetches ahead of "
             "time with the total size and a progress bar)", what, spec)
    try:
        return loader(spec, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFound(
            f"{what} {spec!r} could not be loaded from the Hugging Face hub ({first}): check the id, your network and "
            "that you accepted the model's licence (set HF_TOKEN), or pass a local directory"
        ) from e


def hub_repos(cfg: ModelConfig, controls: tuple[str, ...] = ("canny",), family: Family | None = None,
              ) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """``(what, repo id, component folders or None for a model repo)`` for each hub repo that ``cfg`` loads with
    ``controls`` enabled (each control's ControlNet; ``what`` is ``controlnet`` for Canny, ``pose controlnet``...).
    ``family``: the model's, else from the cache (SDXL: its text encoders, ControlNet and TAESDXL; not known: SD's)."""
    out: list[tuple[str, str, tuple[str, ...] | None]] = []
    family = family or model_family(cfg.model)
    cfg = with_family_defaults(cfg, family)
    if spec_kind(cfg.model) == "hub":
        out.append(("model", cfg.model, pipeline_parts(family)))
        if cfg.vae_spec == "full":
            out.append(("full vae", cfg.model, ("vae",)))
    for control, spec in cfg.controlnet_specs(controls).items():
        if spec_kind(spec) == "hub":
            out.append(("controlnet" if control == "canny" else f"{control} controlnet", spec, None))
    if "depth" in controls and spec_kind(cfg.depth_model_spec) == "hub":
        out.append(("depth model", cfg.depth_model_spec, None))
    vae = TAESD_REPO if cfg.vae_spec == "taesd" else cfg.vae_spec
    if vae != "full" and spec_kind(vae) == "hub":
        out.append(("vae", vae, None))
    return out


def check_models_available(cfg: ModelConfig, controls: tuple[str, ...] = ("canny",)) -> None:
    """Pre-flight: raise what loading ``cfg`` would raise for a missing model, without loading anything.

    Every spec must resolve (:func:`spec_kind`: a local path that exists, a hub id or ``random:<arch>``); when
    ``HF_HUB_OFFLINE`` is set, every hub repo must be in the Hugging Face cache with the files the loaders read
    (config and weights of each component), else the same one-line :class:`ModelNotFound` as :func:`hub_load`.
    Online, hub repos that are not cached are left to the loaders (they download). Cheap: file-system look-ups only,
    no torch, no network.
    """
    depth = (cfg.depth_model_spec,) if "depth" in controls else ()
    for spec in (cfg.model, cfg.vae_spec, *cfg.controlnet_specs(controls).values(), *depth):
        if spec and spec not in ("taesd", "full"):
            spec_kind(spec)
    if not hub_offline():
        return
    for what, repo, parts in hub_repos(cfg, controls):
        snap = cached_snapshot(repo)
        if snap is None or missing_parts(snap, parts):
            raise offline_not_cached(what, repo)


def describe_source(spec: str) -> str:
    """A stable description of what a spec loaded, for cache keys: file hashes for files, the snapshot for hub ids."""
    kind = spec_kind(spec)
    if kind == "file":
        return f"file:{file_sha256(spec)}"
    if kind == "dir":
        h = hashlib.sha256()
        for p in sorted(Path(spec).rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(spec)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
        return f"dir:{Path(spec).resolve()}:{h.hexdigest()[:16]}"
    if kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            snap = snapshot_download(spec, local_files_only=True, allow_patterns=["model_index.json", "config.json"])
            return f"hub:{spec}@{Path(snap).name}"
        except Exception:  # noqa: BLE001 - a description only; an unknown revision is keyed by the id alone
            return f"hub:{spec}"
    return spec


# ------------------------------------------------------------------------------------------------------- loading
def load_components(cfg: ModelConfig, device: "torch.device", dtype: "torch.dtype", seed: int = 0,
                    controls: tuple[str, ...] = ("canny",)) -> Components:
    """Load (or build) UNet, the ControlNet of each of ``controls``, VAE, text encoder, tokenizer and scheduler config,
    on ``device`` in ``dtype``.

    ``random:`` components are initialised from ``seed`` (the same seed gives the same weights).
    """
    import torch

    fp16 = dtype == torch.float16  # load the fp16 variant of hub/local weights where it is there (see _pretrained_kwargs)
    main_kind = spec_kind(cfg.model)
    if main_kind == "random":
        arch = random_arch(cfg.model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet, text_encoder = build_random_unet(arch), build_random_text_encoder(arch)
            second = build_random_text_encoder(arch, "text_2") if "text_2" in ARCHS[arch] else None
        tokenizer = generated_tokenizer(ARCHS[arch]["text"]["vocab_size"])
        text_2 = (second, generated_tokenizer(ARCHS[arch]["text_2"]["vocab_size"])) if second is not None else (None, None)
        scheduler_config = dict(SD_TURBO_SCHEDULER)
        full_vae = None
    elif main_kind == "file":
        unet, text_encoder, tokenizer, scheduler_config, full_vae = _load_single_file(Path(cfg.model), cfg.allow_pickle)
    else:
        unet, text_encoder, tokenizer, scheduler_config, full_vae = _load_diffusers_model(cfg.model, fp16)
    family = family_of_unet_config(unet.config)
    if main_kind != "random":
        text_2 = _load_second_text_encoder(cfg.model, fp16) if main_kind != "file" and family.is_xl else (None, None)
    cfg = with_family_defaults(cfg, family)  # SDXL: its ControlNet and TAESDXL for `auto`

    specs = cfg.controlnet_specs(controls)
    nets = {c: _load_controlnet(spec, cfg.allow_pickle, seed + _CONTROL_SEED[c], unet, fp16) for c, spec in specs.items()}
    vae = _load_vae(cfg, full_vae, seed, fp16)
    sources = {"model": describe_source(cfg.model), "vae": cfg.vae_spec if cfg.vae_spec.startswith(("taesd", "full")) else describe_source(cfg.vae_spec)}
    sources["controlnet"] = describe_source(specs["canny"]) if "canny" in specs else "none"
    sources.update({f"{c}_controlnet": describe_source(spec) for c, spec in specs.items() if c != "canny"})
    if cfg.is_random:
        sources["seed"] = str(seed)
    comps = Components(unet, nets.pop("canny", None), vae, text_encoder, tokenizer, scheduler_config, sources, nets, *text_2)
    for module in (comps.unet, comps.vae, comps.text_encoder, comps.text_encoder_2, *comps.controlnets.values()):
        if module is not None:
            text = module is comps.text_encoder or module is comps.text_encoder_2  # on the CPU on a GPU run
            module.to(*(text_encoder_placement(device, dtype) if text else (device, dtype))).eval().requires_grad_(False)
    log.info("loaded %s (%s family)", ", ".join(f"{k}={v}" for k, v in sources.items()), family.name)
    return comps


def _pretrained_kwargs(spec: str, subfolder: str, fp16: bool) -> dict[str, Any]:
    """``from_pretrained`` options for a hub id or local diffusers directory.

    Safetensors where the folder has them, else ``.bin`` through the weights-only loader (no code runs; see
    PICKLE_SUFFIXES), so no --allow-pickle is needed. ``variant="fp16"`` when the weights there (a local directory,
    or the cached snapshot of a hub id) include the fp16 variant and the run is fp16, or the fp16 files are the only
    ones; else the default files. Not cached yet: ``use_safetensors=None`` (the libraries prefer safetensors).
    """
    kw: dict[str, Any] = {"use_safetensors": None}
    root = Path(spec).expanduser() if spec_kind(spec) == "dir" else cached_snapshot(spec)
    found = cached_weights(root / subfolder, fp16) if root is not None else None
    if found is not None:  # say which files, so the libraries do not log a failed safetensors look-up first
        kw["use_safetensors"] = found[1] == "safetensors"
        if found[0]:
            kw["variant"] = found[0]
    if subfolder:
        kw["subfolder"] = subfolder
    return kw


def _load_diffusers_model(spec: str, fp16: bool) -> tuple[Any, Any, Any, dict[str, Any], Any]:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = hub_load(UNet2DConditionModel.from_pretrained, spec, "model", **_pretrained_kwargs(spec, "unet", fp16))
    text_encoder = hub_load(CLIPTextModel.from_pretrained, spec, "model", **_pretrained_kwargs(spec, "text_encoder", fp16))
    tokenizer = hub_load(CLIPTokenizer.from_pretrained, spec, "model", subfolder="tokenizer")
    scheduler_config = dict(hub_load(DDPMScheduler.load_config, spec, "model", subfolder="scheduler"))
    return unet, text_encoder, tokenizer, scheduler_config, spec


def _load_second_text_encoder(spec: str, fp16: bool) -> tuple[Any, Any]:
    """SDXL's ``text_encoder_2`` (CLIPTextModelWithProjection: its pooled output conditions the UNet) and ``tokenizer_2``."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    enc = hub_load(CLIPTextModelWithProjection.from_pretrained, spec, "model",
                   **_pretrained_kwargs(spec, "text_encoder_2", fp16))
    return enc, hub_load(CLIPTokenizer.from_pretrained, spec, "model", subfolder="tokenizer_2")


def _load_single_file(path: Path, allow_pickle: bool) -> tuple[Any, Any, Any, dict[str, Any], Any]:
    """A single-file SD 2.x checkpoint. Unverified here: diffusers fetches the matching config from the hub (cached
    after the first run), which this machine cannot reach."""
    from diffusers import StableDiffusionPipeline

    check_not_pickle(path, allow_pickle, "model")
    pipe = hub_load(lambda p, **kw: StableDiffusionPipeline.from_single_file(p, safety_checker=None, **kw), str(path), "model")
    return pipe.unet, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config), pipe.vae


def add_controlnets(comps: Components, cfg: ModelConfig, controls: tuple[str, ...], seed: int = 0) -> list[str]:
    """Load the ControlNets of ``controls`` that ``comps`` lacks (as :func:`load_components` would: same specs, same
    random seeds) onto the UNet's device and dtype, and add them to ``comps``; returns the controls added. The live
    session calls it on its background worker for a ``controls`` change."""
    import torch

    param = next(comps.unet.parameters())
    fp16 = param.dtype == torch.float16
    added = []
    for control, spec in cfg.controlnet_specs(controls).items():
        if control in comps.controlnets:
            continue
        net = _load_controlnet(spec, cfg.allow_pickle, seed + _CONTROL_SEED[control], comps.unet, fp16)
        net.to(device=param.device, dtype=param.dtype).eval().requires_grad_(False)
        if control == "canny":
            comps.controlnet = net
            comps.sources["controlnet"] = describe_source(spec)
        else:
            comps.more_controlnets[control] = net
            comps.sources[f"{control}_controlnet"] = describe_source(spec)
        added.append(control)
    if added:
        log.info("loaded the ControlNets of %s", ", ".join(added))
    return added


#: Offsets of each control's random ControlNet seed from the run's seed (Canny's +1 as before: same weights).
_CONTROL_SEED = {"canny": 0, "pose": 4, "depth": 5}


def _load_controlnet(spec: str, allow_pickle: bool, seed: int, unet: Any, fp16: bool = False) -> Any:
    import torch
    from diffusers import ControlNetModel

    kind = spec_kind(spec)
    if kind == "random":
        arch = random_arch(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            base = unet if unet.config.block_out_channels == ARCHS[arch]["unet"]["block_out_channels"] else None
            return build_random_controlnet(arch, base)
    if kind == "file":
        check_not_pickle(Path(spec), allow_pickle, "controlnet")
        return hub_load(ControlNetModel.from_single_file, spec, "controlnet")
    return hub_load(ControlNetModel.from_pretrained, spec, "controlnet", **_pretrained_kwargs(spec, "", fp16))


def _load_vae(cfg: ModelConfig, full_vae: Any, seed: int, fp16: bool = False) -> Any:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny

    spec = cfg.vae_spec
    if spec == "full":
        if full_vae is None:
            raise UsageError("--vae full: a random: model has no full VAE; use --vae taesd or a VAE spec")
        if not isinstance(full_vae, str):
            return full_vae
        return hub_load(AutoencoderKL.from_pretrained, full_vae, "full vae", **_pretrained_kwargs(full_vae, "vae", fp16))
    if spec == "taesd":
        return hub_load(AutoencoderTiny.from_pretrained, TAESD_REPO, "vae", **_pretrained_kwargs(TAESD_REPO, "", fp16))
    kind = spec_kind(spec)
    if kind == "random":
        arch = random_arch(spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            return build_random_taesd(arch)
    if kind == "file":
        check_not_pickle(Path(spec), cfg.allow_pickle, "vae")
        return hub_load(AutoencoderKL.from_single_file, spec, "vae")
    loader = AutoencoderTiny if "taesd" in spec.lower() else AutoencoderKL
    return hub_load(loader.from_pretrained, spec, "vae", **_pretrained_kwargs(spec, "", fp16))
