"""LoRA fine-tuning of the UNet (optionally the text encoder) on a folder of captioned images, with peft.

Objective: the standard denoising loss. Images are encoded once with the stylizer's VAE (TAESD by default, the same
latent convention as :class:`realtime.diffusion.stylizer.FrameStep`); each example draws a timestep ``t`` uniformly from
``timesteps`` (inclusive) and noise ``n``; ``x_t = sqrt(abar_t) z + sqrt(1 - abar_t) n``; the UNet predicts, from
``x_t``, ``t`` and the caption's embeddings, the target the scheduler config names: ``n`` (epsilon), the velocity
``sqrt(abar_t) n - sqrt(1 - abar_t) z`` (v_prediction) or ``z`` (sample); the loss is the MSE. The timesteps default
to the range the stylizer uses at inference: ``strength_timestep`` of the lowest and highest strength of the built-in
presets (599-799 for SD's 1000 steps). A one-step model such as SD-Turbo is thus only taught at the noise levels it will
see, and stays one-step; widen the range (``--timesteps 0-999``) for a multi-step model. ControlNet is not used in
training: the LoRA learns the look, ControlNet keeps the structure at inference.

Style strength at inference is the LoRA scale (``--lora FILE:SCALE``). The final file is in the diffusers LoRA format
(``pytorch_lora_weights``-style keys) with ``alpha / rank`` folded into the up-projections, so any loader that assumes
``alpha = rank`` applies it exactly.

Gradient accumulation: each micro-batch's loss is divided by ``grad_accum`` and the optimizer steps every
``grad_accum`` micro-batches, so 2 micro-batches of 1 equal one batch of 2. Randomness (data order, timesteps, noise)
comes from one generator seeded by ``seed`` and drawn per example, so it does not depend on how examples are batched;
its state is saved in checkpoints, so a resumed run continues exactly where the interrupted one was.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.config import DEFAULT_MODEL, DEFAULT_STYLE
from realtime.errors import OutputError, UsageError

if TYPE_CHECKING:
    import argparse

log = logging.getLogger(__name__)

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PRECISIONS = ("no", "fp16", "bf16")
#: training settings a resumed run must share with its checkpoint
RESUME_KEYS = ("model", "vae", "rank", "alpha", "train_text_encoder", "resolution", "model_seed")


def default_timestep_range() -> tuple[int, int]:
    """``(t_lo, t_hi)`` spanned by the built-in presets' strengths (what the stylizer uses at inference)."""
    from realtime.config import builtin_style_names, load_style
    from realtime.diffusion.stylizer import strength_timestep

    strengths = [s.strength for s in map(load_style, builtin_style_names()) if not s.passthrough]
    return strength_timestep(min(strengths)), strength_timestep(max(strengths))


def parse_timesteps(text: str | None, num_train_timesteps: int = 1000) -> tuple[int, int] | None:
    """``"LO-HI"``, ``"T"`` or ``"all"`` -> an inclusive range; ``None``/``"auto"`` -> None (the default range)."""
    if text is None or text == "auto":
        return None
    if text == "all":
        return 0, num_train_timesteps - 1
    lo, sep, hi = text.partition("-")
    try:
        rng = (int(lo), int(hi) if sep else int(lo))
    except ValueError:
        raise UsageError(f"--timesteps {text!r}: expected LO-HI (e.g. 599-799), one timestep, or 'all'") from None
    return rng


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see ``scripts/train_lora.py --help`` for each field's meaning."""

    data: Path
    out: Path
    model: str = DEFAULT_MODEL
    vae: str = "auto"
    steps: int = 1000
    grad_accum: int = 1
    batch_size: int = 1
    rank: int = 4
    alpha: float | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    lora_dropout: float = 0.0
    resolution: int = 512
    mixed_precision: str = "no"
    seed: int = 0
    model_seed: int = 0
    timesteps: tuple[int, int] | None = None
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0
    validate_every: int = 0
    validation_image: Path | None = None
    validation_style: str = DEFAULT_STYLE
    validation_prompt: str | None = None
    work_dir: Path | None = None
    resume: Path | None = None
    default_caption: str | None = None
    device: str = "auto"
    allow_pickle: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "grad_accum", "batch_size", "rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"--{name.replace('_', '-')} {v!r}: must be a positive integer")
        for name in ("checkpoint_every", "validate_every", "seed", "model_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"--{name.replace('_', '-')} {v!r}: must be a non-negative integer (0 = off)")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise UsageError(f"--alpha {self.alpha!r}: must be a positive number (default: the rank)")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise UsageError(f"--lr {self.lr!r}: must be in (0, 1)")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay < 1):
            raise UsageError(f"--weight-decay {self.weight_decay!r}: must be in [0, 1)")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise UsageError(f"--max-grad-norm {self.max_grad_norm!r}: must be positive (0 is written as 'none')")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout {self.lora_dropout!r}: must be in [0, 1)")
        if self.resolution % 64 or not 64 <= self.resolution <= 2048:
            raise UsageError(f"--resolution {self.resolution}: must be a multiple of 64 in 64..2048")
        if self.mixed_precision not in PRECISIONS:
            raise UsageError(f"--mixed-precision {self.mixed_precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.timesteps is not None:
            lo, hi = self.timesteps
            if not 0 <= lo <= hi <= 999:
                raise UsageError(f"--timesteps {lo}-{hi}: need 0 <= LO <= HI <= 999")
        if self.validate_every and self.validation_image is None:
            raise UsageError("--validate-every needs --validation-image IMG")
        if Path(self.out).suffix.lower() != ".safetensors":
            raise UsageError(f"--out {self.out}: the LoRA is written as .safetensors; name the file *.safetensors")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    @property
    def workspace(self) -> Path:
        """Checkpoints and validation images: ``work_dir``, default ``<out-stem>-training/`` beside ``out``."""
        return Path(self.work_dir) if self.work_dir is not None else Path(self.out).with_name(Path(self.out).stem + "-training")

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (written beside checkpoints; checked on resume)."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        d["alpha"] = self.lora_alpha
        return d


@dataclass
class TrainResult:
    """What a run did: steps (global, including those before a resume), per-step loss, files written."""

    start_step: int
    step: int
    losses: list[float] = field(default_factory=list)  # mean micro-batch loss per optimizer step, from step 1
    fixed_loss_before: float | None = None
    fixed_loss_after: float | None = None
    out: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    validations: list[Path] = field(default_factory=list)


def check_outputs(cfg: TrainConfig) -> None:
    """Refuse to clobber: the final file, or checkpoints of another run (unless --overwrite or --resume)."""
    from realtime.files import check_output_path

    out = Path(cfg.out)
    check_output_path(out, overwrite=cfg.overwrite)
    ws = cfg.workspace
    if ws.exists() and not ws.is_dir():
        raise OutputError(f"--work-dir {ws} is a file: give a directory")
    old = sorted(ws.glob("checkpoint-*")) if ws.is_dir() else []
    if old and cfg.resume is None and not cfg.overwrite:
        raise OutputError(f"{ws} holds checkpoints of an earlier run ({old[0].name}): pass --resume {ws}, --overwrite, or another --work-dir")


def find_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a checkpoint directory, else its latest ``checkpoint-<step>`` subdirectory."""
    from realtime.errors import InputNotFound

    path = Path(path)
    if (path / "state.pt").is_file():
        return path
    if path.is_dir():
        found = [(int(p.name.split("-", 1)[1]), p) for p in path.glob("checkpoint-*")
                 if p.name.split("-", 1)[1].isdigit() and (p / "state.pt").is_file()]
        if found:
            return max(found)[1]
    raise InputNotFound(f"--resume {path}: no checkpoint there (a checkpoint-<step> directory with state.pt, or a folder of them)")


# ------------------------------------------------------------------------------------------------- command line
DESCRIPTION = """\
LoRA fine-tuning of a model's UNet (and optionally its text encoder) on a folder of captioned images, with peft.
The result is a .safetensors LoRA in the diffusers format: use it with `stylecam image|live|clip --lora FILE:SCALE`;
the scale is the style strength at inference.

Data: images in --data (recursively) with a caption each, from a metadata.jsonl ({"file_name": ..., "text": ...} per
line) or a .txt file beside each image. Images are resized and centre-cropped to --resolution.

Objective: the standard denoising loss. Latents come from the stylizer's VAE (TAESD unless --vae); each example draws a
timestep t uniformly from --timesteps and noise n; the UNet sees x_t = sqrt(abar_t) z + sqrt(1 - abar_t) n and is
trained (MSE) to predict what the scheduler config names: n (epsilon, SD-Turbo), the velocity
sqrt(abar_t) n - sqrt(1 - abar_t) z (v_prediction) or z (sample). --timesteps defaults to the range the stylizer uses at
inference (the built-in presets' strengths: 599-799), so a one-step model is taught only the noise levels it will see
and stays one-step; use --timesteps 0-999 (or all) for a multi-step model. ControlNet is not used in training.

Gradient accumulation: the loss of each micro-batch is divided by --grad-accum and the optimizer steps every
--grad-accum micro-batches (effective batch = --batch-size x --grad-accum); --steps counts optimizer steps. A run is
deterministic for a --seed; --resume continues the step count, optimizer, data order and random state exactly."""

EPILOG = """\
files: --out FILE.safetensors (written at the end, atomically); in the work directory (default <out-stem>-training/
beside --out): checkpoint-<step>/ (pytorch_lora_weights.safetensors usable with --lora, trainable.safetensors,
state.pt with optimizer/step/RNG states, config.json) and validation/step-<step>.png.

examples:
  python scripts/train_lora.py --model stabilityai/sd-turbo --data my_style/ --steps 2000 --grad-accum 4 --rank 8 \\
      --out my_style.safetensors --mixed-precision bf16 --checkpoint-every 250 --validate-every 250 --validation-image me.jpg
  python scripts/train_lora.py ... --steps 3000 --resume my_style-training/        # continue from the latest checkpoint
  stylecam image me.jpg -o me_styled.png --lora my_style.safetensors:0.8

exit codes: 0 done, 2 bad input or usage (missing data or captions, bad value, output exists without --overwrite,
fp16 without a GPU, model not available), 1 any other failure (e.g. the loss became NaN), 130 interrupted (the
checkpoints written so far are complete; nothing half-written is left)."""


def _positive_or_none(text: str) -> float | None:
    return None if text.lower() in ("none", "0", "off") else float(text)


def build_parser(prog: str = "train_lora.py") -> "argparse.ArgumentParser":
    import argparse

    from realtime.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"base model spec: hub id, local path or random:tiny (default {DEFAULT_MODEL})")
    p.add_argument("--vae", default="auto", help="VAE that encodes the images: the stylizer's (default auto = TAESD), 'full' or a spec")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="folder of images with captions (.txt per image or metadata.jsonl)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.safetensors", help="the trained LoRA")
    p.add_argument("--overwrite", action="store_true", help="replace --out and an earlier run's checkpoints")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default 1000)")
    g.add_argument("--batch-size", type=int, default=1, help="examples per micro-batch (default 1)")
    g.add_argument("--grad-accum", type=int, default=1, metavar="K", help="micro-batches per optimizer step (default 1)")
    g.add_argument("--rank", type=int, default=4, metavar="R", help="LoRA rank (default 4)")
    g.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank, i.e. scale 1)")
    g.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    g.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default 0.01)")
    g.add_argument("--max-grad-norm", type=_positive_or_none, default=1.0, help="clip the gradient norm (default 1; 'none' = off)")
    g.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the LoRA input (default 0)")
    g.add_argument("--resolution", type=int, default=512, help="training size, a multiple of 64 (default 512)")
    g.add_argument("--timesteps", default="auto", metavar="LO-HI", help="timestep range drawn uniformly, e.g. 599-799, 999, or all (default auto: the presets' strengths)")
    g.add_argument("--train-text-encoder", action="store_true", help="also put a LoRA on the text encoder's attention")
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="half-precision frozen weights + autocast (fp16: CUDA only); LoRA weights stay fp32")
    g.add_argument("--gradient-checkpointing", action="store_true", help="less GPU memory, ~30%% slower")
    g.add_argument("--seed", type=int, default=0, help="seed of the LoRA init, data order, timesteps and noise (default 0)")
    g.add_argument("--model-seed", type=int, default=0, help="seed of random: model weights (match stylecam's --seed; default 0)")
    g.add_argument("--default-caption", metavar="TEXT", help="caption for images without one (default: such images are an error)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument("--allow-pickle", action="store_true", help="allow pickle checkpoints for the model (only files you trust)")
    g = p.add_argument_group("checkpoints and validation")
    g.add_argument("--work-dir", type=Path, metavar="DIR", help="checkpoints and validation images (default <out-stem>-training/ beside --out)")
    g.add_argument("--checkpoint-every", type=int, default=0, metavar="N", help="write DIR/checkpoint-<step>/ every N steps (0 = off)")
    g.add_argument("--resume", type=Path, metavar="DIR", help="continue from a checkpoint directory, or the latest in a work directory")
    g.add_argument("--validate-every", type=int, default=0, metavar="N", help="render --validation-image every N steps (and before training)")
    g.add_argument("--validation-image", type=Path, metavar="IMG", help="image rendered through the stylizer with the current LoRA")
    g.add_argument("--validation-style", default="anime", help="preset or .toml for validation renders (default anime)")
    g.add_argument("--validation-prompt", help="prompt for validation renders (default: the style's)")
    g = p.add_argument_group("output")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", help="tracebacks and library logs")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def config_from_args(args: "argparse.Namespace") -> TrainConfig:
    return TrainConfig(
        data=args.data, out=args.out, model=args.model, vae=args.vae, steps=args.steps, grad_accum=args.grad_accum,
        batch_size=args.batch_size, rank=args.rank, alpha=args.alpha, lr=args.lr, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, lora_dropout=args.lora_dropout, resolution=args.resolution,
        mixed_precision=args.mixed_precision, seed=args.seed, model_seed=args.model_seed,
        timesteps=parse_timesteps(args.timesteps), train_text_encoder=args.train_text_encoder,
        gradient_checkpointing=args.gradient_checkpointing, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, validation_image=args.validation_image,
        validation_style=args.validation_style, validation_prompt=args.validation_prompt, work_dir=args.work_dir,
        resume=args.resume, default_caption=args.default_caption, device=args.device, allow_pickle=args.allow_pickle,
        overwrite=args.overwrite, progress=not args.no_progress,
    )


def train(cfg: TrainConfig, components: Any = None) -> TrainResult:
    """Check the outputs, build the trainer (resuming if asked), train, write the LoRA."""
    from realtime.research.lora_trainer import LoraTrainer
    from realtime.pipeline.preflight import train_inputs

    check_outputs(cfg)
    checkpoint = find_checkpoint(cfg.resume) if cfg.resume is not None else None  # before any model is loaded
    train_inputs(cfg, model=components is None)  # data images, validation image and style, model specs
    with LoraTrainer(cfg, components) as trainer:
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
        return trainer.fit()


def train_main(args: "argparse.Namespace") -> int:
    result = train(config_from_args(args))
    n = max(1, len(result.losses) // 10)
    first, last = result.losses[:n], result.losses[-n:]
    log.info("done: steps %d-%d, mean loss of the first %d step(s) %.5f, of the last %d %.5f; LoRA %s",
             result.start_step + 1, result.step, n, sum(first) / len(first), n, sum(last) / len(last), result.out)
    return 0
