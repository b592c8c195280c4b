"""The LoRA training loop (:class:`LoraTrainer`): peft adapters on the UNet (and optionally the text encoder), the
denoising objective described in :mod:`realtime.research.train_lora`, gradient accumulation, mixed precision, checkpoints and
exact resume, validation renders through the project's :class:`~realtime.diffusion.stylizer.Stylizer`, and the final file.

Tensors: latents (B, 4, R/8, R/8) float32 in the stylizer's scaled latent space; timesteps (B,) int64; prompt
embeddings (B, 77, D). Cached latents and embeddings stay on the CPU and move to the device per micro-batch.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.errors import DeviceUnavailable, UsageError
from realtime.files import check_input_file
from realtime.research.train_config import (RESUME_KEYS, TEXT_TARGETS, UNET_TARGETS, TrainConfig, TrainResult,
                                           default_timestep_range, find_checkpoint)

if TYPE_CHECKING:
    import torch

    from realtime.diffusion.models import Components

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
FIXED_BATCH = 16  # examples in the fixed-noise loss reported before and after training
FIXED_SEED_OFFSET = 1_000_003


def precision(mode: str, device: "torch.device") -> tuple["torch.dtype", "torch.dtype | None"]:
    """(dtype of the frozen weights, autocast dtype or None) for ``--mixed-precision``. LoRA weights stay float32."""
    import torch

    if mode == "no":
        return torch.float32, None
    if mode == "fp16":
        if device.type != "cuda":
            raise DeviceUnavailable(f"--mixed-precision fp16 needs a CUDA GPU (this run is on {device.type}): use bf16 or no")
        return torch.float16, torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailable("--mixed-precision bf16: this GPU has no bfloat16; use fp16")
    if device.type == "mps":
        raise DeviceUnavailable("--mixed-precision bf16 is not supported on MPS: use no")
    return torch.bfloat16, torch.bfloat16


class LoraTrainer:
    """One training run. ``components`` (optional) are taken over and modified (adapters added); by default the model
    of ``cfg`` is loaded, with its ControlNet only when validation images are asked for."""

    def __init__(self, cfg: TrainConfig, components: "Components | None" = None) -> None:
        import torch
        from peft import LoraConfig

        from realtime.config import ModelConfig, load_style, override_style
        from realtime.io.images import read_image
        from realtime.research.lora_dataset import scan_dataset
        from realtime.diffusion.models import load_components, resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.weight_dtype, self.autocast_dtype = precision(cfg.mixed_precision, self.device)
        self.examples = scan_dataset(Path(cfg.data), cfg.default_caption)
        self.validation_frame = None
        self.validation_style = None
        if cfg.validation_image is not None:
            self.validation_frame = read_image(check_input_file(cfg.validation_image, "--validation-image"))
            style = load_style(cfg.validation_style)
            if style.passthrough:
                raise UsageError(f"--validation-style {style.name}: a pass-through style renders no LoRA")
            self.validation_style = override_style(style, prompt=cfg.validation_prompt)
        if components is None:
            model = ModelConfig(cfg.model, controlnet="auto" if self.validation_frame is not None else "none",
                                vae=cfg.vae, allow_pickle=cfg.allow_pickle)
            components = load_components(model, self.device, self.weight_dtype, seed=cfg.model_seed)
        for name in ("unet", "controlnet", "vae", "text_encoder"):
            module = getattr(components, name)
            if module is not None:
                module.to(device=self.device, dtype=self.weight_dtype).requires_grad_(False)
        self.comps = components
        abar = components.alphas_cumprod()
        self.t_range = cfg.timesteps or default_timestep_range()
        if self.t_range[1] >= len(abar):
            raise UsageError(f"--timesteps {self.t_range[0]}-{self.t_range[1]}: the model has {len(abar)} timesteps")
        self.abar = abar.float()
        self.prediction_type = components.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise UsageError(f"scheduler prediction_type {self.prediction_type!r}: expected epsilon, v_prediction or sample")

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            lora = dict(r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, init_lora_weights=True)
            components.unet.add_adapter(LoraConfig(target_modules=list(UNET_TARGETS), **lora))
            if cfg.train_text_encoder:
                components.text_encoder.add_adapter(LoraConfig(target_modules=list(TEXT_TARGETS), **lora))
        self.modules = {"unet": components.unet} | ({"text_encoder": components.text_encoder} if cfg.train_text_encoder else {})
        self.params: dict[str, torch.nn.Parameter] = {}
        for prefix, module in self.modules.items():
            for name, p in module.named_parameters():
                if p.requires_grad:
                    p.data = p.data.float()  # LoRA weights train in float32 even when the frozen weights are half
                    self.params[f"{prefix}.{name}"] = p
        if not self.params:
            raise UsageError(f"model {cfg.model}: no {', '.join(UNET_TARGETS)} layers to put a LoRA on")
        if cfg.gradient_checkpointing:
            components.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                components.text_encoder.gradient_checkpointing_enable()
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.mixed_precision == "fp16" else None
        self.gen = torch.Generator("cpu").manual_seed(cfg.seed)
        self.step = 0
        self.losses: list[float] = []
        self._order: list[int] = []
        self._pos = 0
        self._rng_state: dict[str, Any] | None = None
        self._encode_dataset()
        log.info("training a rank-%d LoRA (alpha %g) on %d image(s) at %dx%d, %d trainable parameters, timesteps %d-%d, "
                 "%s target, %s on %s", cfg.rank, cfg.lora_alpha, len(self.examples), cfg.resolution, cfg.resolution,
                 sum(p.numel() for p in self.params.values()), *self.t_range, self.prediction_type,
                 cfg.mixed_precision if cfg.mixed_precision != "no" else "fp32", self.device)

    # ------------------------------------------------------------------------------------------------------ data
    def _autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None)

    def _encode_dataset(self) -> None:
        """Encode every image once with the VAE (frozen, so latents never change) and every caption once."""
        import numpy as np
        import torch

        from realtime.research.lora_dataset import load_square
        from realtime.diffusion.stylizer import FrameStep

        step = FrameStep(self.comps.unet, None, self.comps.vae, self.prediction_type)
        latents = []
        with torch.no_grad():
            for i in range(0, len(self.examples), 8):
                imgs = np.stack([load_square(e.path, self.cfg.resolution) for e in self.examples[i : i + 8]])
                x = torch.from_numpy(imgs).to(self.device).permute(0, 3, 1, 2).to(self.weight_dtype) / 127.5 - 1.0
                latents.append(step.encode(x).float().cpu())
        self.latents = torch.cat(latents)
        captions = sorted({e.caption for e in self.examples})
        self.caption_of = [captions.index(e.caption) for e in self.examples]
        tok = self.comps.tokenizer
        self.token_ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        self.embeddings = None
        if not self.cfg.train_text_encoder:
            with torch.no_grad():
                self.embeddings = self.comps.text_encoder(self.token_ids.to(self.device))[0].float().cpu()

    def _next_index(self) -> int:
        import torch

        if self._pos >= len(self._order):
            self._order = torch.randperm(len(self.examples), generator=self.gen).tolist()
            self._pos = 0
        self._pos += 1
        return self._order[self._pos - 1]

    def _draw(self, n: int, gen: "torch.Generator | None" = None, indices: list[int] | None = None) -> tuple["torch.Tensor", ...]:
        """``n`` examples, each drawing (index, timestep, noise) in turn, so draws do not depend on the batching."""
        import torch

        g = gen or self.gen
        idx, ts, noise = [], [], []
        for k in range(n):
            idx.append(indices[k] if indices is not None else self._next_index())
            ts.append(int(torch.randint(self.t_range[0], self.t_range[1] + 1, (1,), generator=g)))
            noise.append(torch.randn(self.latents.shape[1:], generator=g))
        return self.latents[idx], torch.stack(noise), torch.tensor(ts, dtype=torch.long), torch.tensor([self.caption_of[i] for i in idx])

    def loss(self, z: "torch.Tensor", noise: "torch.Tensor", t: "torch.Tensor", captions: "torch.Tensor") -> "torch.Tensor":
        """The denoising MSE of one micro-batch (a scalar, float32)."""
        import torch.nn.functional as F

        dev = self.device
        z, noise = z.to(dev), noise.to(dev)
        a = self.abar[t].view(-1, 1, 1, 1).to(dev)
        x_t = a.sqrt() * z + (1 - a).sqrt() * noise
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = a.sqrt() * noise - (1 - a).sqrt() * z
        else:
            target = z
        with self._autocast():
            if self.embeddings is not None:
                emb = self.embeddings[captions].to(dev)
            else:
                emb = self.comps.text_encoder(self.token_ids[captions].to(dev))[0]
            pred = self.comps.unet(x_t.to(self.weight_dtype), t.to(dev), encoder_hidden_states=emb.to(self.weight_dtype)).sample
        return F.mse_loss(pred.float(), target.float())

    # ------------------------------------------------------------------------------------------------- training
    def train_step(self) -> float:
        """One optimizer step over ``grad_accum`` micro-batches of ``batch_size``; returns their mean loss."""
        import torch

        cfg = self.cfg
        for m in self.modules.values():
            m.train()
        total = 0.0
        for _ in range(cfg.grad_accum):
            loss = self.loss(*self._draw(cfg.batch_size))
            scaled = loss / cfg.grad_accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        mean = total / cfg.grad_accum
        self.losses.append(mean)
        return mean

    def fixed_batch_loss(self, n: int = FIXED_BATCH) -> float:
        """Mean loss over the first ``n`` examples with noise and timesteps fixed by the seed (no training state is
        touched): comparable before and after training."""
        import torch

        g = torch.Generator("cpu").manual_seed(self.cfg.seed + FIXED_SEED_OFFSET)
        count = min(n, len(self.examples))
        for m in self.modules.values():
            m.eval()
        with torch.no_grad():
            return float(self.loss(*self._draw(count, gen=g, indices=list(range(count)))))

    def fit(self) -> TrainResult:
        """Train to ``cfg.steps`` (from the resumed step, if any), with checkpoints and validations; write ``cfg.out``."""
        import torch
        from tqdm import tqdm

        cfg = self.cfg
        if self.step >= cfg.steps:
            raise UsageError(f"the checkpoint is at step {self.step} and --steps is {cfg.steps}: nothing to do; raise --steps")
        result = TrainResult(start_step=self.step, step=self.step)
        ws = cfg.workspace
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            if self._rng_state is None:
                torch.manual_seed(cfg.seed)
            else:
                torch.set_rng_state(self._rng_state["cpu"])
                if cuda and self._rng_state.get("cuda") is not None:
                    torch.cuda.set_rng_state(self._rng_state["cuda"], self.device)
            result.fixed_loss_before = self.fixed_batch_loss()
            if self.validation_frame is not None and self.step == 0:
                result.validations.append(self.validate(ws / "validation" / "step-000000.png"))
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not cfg.progress)
            try:
                while self.step < cfg.steps:
                    loss = self.train_step()
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss} at step {self.step}: lower --lr, or use --mixed-precision bf16/no")
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        result.checkpoints.append(self.save_checkpoint(ws / f"checkpoint-{self.step}"))
                    if cfg.validate_every and self.step % cfg.validate_every == 0:
                        result.validations.append(self.validate(ws / "validation" / f"step-{self.step:06d}.png"))
            finally:
                bar.close()
            result.fixed_loss_after = self.fixed_batch_loss()
        result.step, result.losses = self.step, list(self.losses)
        result.out = self.save_lora(Path(cfg.out))
        log.info("step %d: loss on a fixed batch %.5f -> %.5f; wrote %s", self.step, result.fixed_loss_before,
                 result.fixed_loss_after, cfg.out)
        return result

    # ---------------------------------------------------------------------------------------------------- files
    def lora_layers(self) -> dict[str, dict[str, "torch.Tensor"]]:
        """The adapters in the diffusers LoRA format per module, alpha/rank folded into the up-projections."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        scale = self.cfg.lora_alpha / self.cfg.rank
        out = {}
        for prefix, module in self.modules.items():
            sd = get_peft_model_state_dict(module)
            sd = {k: (v * scale if "lora_B" in k else v).detach().float().cpu().contiguous() for k, v in sd.items()}
            out[prefix] = convert_state_dict_to_diffusers(sd)
        return out

    def save_lora(self, path: Path) -> Path:
        """Write the LoRA (diffusers format, ``.safetensors``) atomically; ``stylecam --lora PATH:SCALE`` loads it."""
        from diffusers import StableDiffusionPipeline

        from realtime.files import atomic_output

        layers = self.lora_layers()
        with atomic_output(path) as tmp:
            StableDiffusionPipeline.save_lora_weights(str(tmp.parent), unet_lora_layers=layers["unet"],
                                                      text_encoder_lora_layers=layers.get("text_encoder"), weight_name=tmp.name)
        return path

    def save_checkpoint(self, directory: Path) -> Path:
        """``directory``/: the LoRA file, the exact trainable weights, optimizer (and scaler) state, step, loss
        history, data order and RNG states, and the settings. Written to a temporary directory, then renamed."""
        import torch
        from safetensors.torch import save_file

        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            self.save_lora(tmp / LORA_FILE)
            save_file({k: p.detach().cpu().contiguous() for k, p in self.params.items()}, str(tmp / "trainable.safetensors"))
            cuda = self.device.type == "cuda"
            state = {
                "step": self.step, "losses": list(self.losses), "order": list(self._order), "pos": self._pos,
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            }
            torch.save(state, tmp / "state.pt")
            (tmp / "config.json").write_text(json.dumps(self.cfg.describe(), indent=2) + "\n", encoding="utf-8")
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("checkpoint %s", directory)
        return directory

    def load_checkpoint(self, path: Path) -> Path:
        """Continue from a checkpoint (see :func:`realtime.research.train_config.find_checkpoint`): weights, optimizer, step,
        data order and RNG states. Settings that shape the LoRA (rank, alpha, model, ...) must match."""
        import torch
        from safetensors.torch import load_file

        directory = find_checkpoint(path)
        saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        mine = self.cfg.describe()
        diff = [f"{k} {saved.get(k)!r} -> {mine[k]!r}" for k in RESUME_KEYS if saved.get(k) != mine[k]]
        if diff:
            raise UsageError(f"--resume {directory}: the checkpoint was trained with other settings ({'; '.join(diff)})")
        weights = load_file(str(directory / "trainable.safetensors"))
        if set(weights) != set(self.params):
            raise UsageError(f"--resume {directory}: its LoRA layers do not match this model's")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(weights[k])
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # --lr / --weight-decay of this run win over the checkpoint's
            group["lr"], group["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.gen.set_state(state["generator"])
        self.step, self.losses = int(state["step"]), [float(x) for x in state["losses"]]
        self._order, self._pos = [int(i) for i in state["order"]], int(state["pos"])
        self._rng_state = {"cpu": state["torch_rng"], "cuda": state.get("cuda_rng")}
        log.info("resumed from %s at step %d", directory, self.step)
        return directory

    def validate(self, path: Path) -> Path:
        """Render the validation image through the Stylizer with the current LoRA (scale 1) and write it to ``path``."""
        from realtime.vision.edges import EdgeDetector
        from realtime.geometry import Size
        from realtime.io.images import write_image
        from realtime.pipeline.processor import FrameProcessor, canny_config
        from realtime.diffusion.stylizer import Stylizer

        assert self.validation_frame is not None and self.validation_style is not None
        for m in self.modules.values():
            m.eval()
        size = Size(self.cfg.resolution, self.cfg.resolution)
        style = self.validation_style
        stylizer = Stylizer(self.comps, style, size, device=self.device, dtype=self.weight_dtype, seed=self.cfg.seed)
        with FrameProcessor(size, None, stylizer=stylizer, edges=EdgeDetector(canny_config(style))) as proc:
            image = proc.process(self.validation_frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, image)
        log.info("validation image %s", path)
        return path

    def close(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def __enter__(self) -> "LoraTrainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
