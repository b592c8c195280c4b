"""``scripts/train_lora.py``: the command line of LoRA training (options -> :class:`~realtime.research.train_config.TrainConfig`
-> :func:`realtime.research.train_lora.train`). The objective and the files are explained in ``--help``.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from realtime.cli.console import run_main, setup_logging
from realtime.config import DEFAULT_MODEL
from realtime.research.train_config import TrainConfig, parse_timesteps
from realtime.research.train_lora import train

log = logging.getLogger(__name__)

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


def build_parser(prog: str = "train_lora.py") -> argparse.ArgumentParser:
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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
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



def train_main(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    n = max(1, len(result.losses) // 10)
    first, last = result.losses[:n], result.losses[-n:]
    log.info("done: steps %d-%d, mean loss of the first %d step(s) %.5f, of the last %d %.5f; LoRA %s",
             result.start_step + 1, result.step, n, sum(first) / len(first), n, sum(last) / len(last), result.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, set up logging, train; exceptions become exit codes (:func:`realtime.cli.console.run_main`)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug, args.quiet)
    return run_main(lambda: train_main(args), debug=args.debug)
