"""``stylecam generate "PROMPT" -o out.png``: text to image with SDXL-Turbo (clean anime bases to stylize from).

1-4 steps (``--steps``, default 1), guidance 0 by default (as SDXL-Turbo is trained), ``--seed``, ``--size`` (default
512x512), ``--lora`` (SDXL LoRAs), ``--style`` (a preset's prompt, negative prompt and LoRAs), ``--count N`` (N numbered
files from seeds seed..seed+N-1 and a labelled grid, the sweep's), TAESDXL by default or the model's own VAE with
``--vae full``. Every input is checked before a model loads; the files are written only when every image is made.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.cli.options import AddGlobal, Subparsers, input_files
from realtime.config import DEVICE_CHOICES, DTYPE_CHOICES, LoraSpec, ModelConfig, RunConfig, check_seed, load_style
from realtime.diffusion.family import SDXL_TURBO
from realtime.errors import UsageError
from realtime.files import check_output_path
from realtime.geometry import parse_size

log = logging.getLogger(__name__)

MAX_COUNT = 100


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam generate``."""
    p = subparsers.add_parser("generate", help="text to image with SDXL-Turbo",
                              description="Text to image with SDXL-Turbo (1-4 steps, no guidance by default).")
    p.add_argument("prompt", nargs="?", default=None, help="what to draw (default: the --style preset's prompt)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp); with --count N: "
                   "OUT-1.png ... OUT-N.png and OUT-grid.png")
    p.add_argument("--style", default=None, help="a preset name or .toml file whose prompt, negative prompt and LoRAs "
                   "to use (PROMPT, --negative-prompt and --lora override or add to them)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (used when --guidance > 1)")
    p.add_argument("--steps", type=int, default=1, help="sampling steps, 1-4 (default 1)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance; 0 (default) or up to 1 = "
                   "one UNet pass, as SDXL-Turbo is trained; above 1 doubles the work")
    p.add_argument("--count", type=int, default=1, help=f"how many images, seeds SEED..SEED+N-1 (1-{MAX_COUNT}); "
                   "more than one also writes a labelled grid")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]", help="SDXL LoRA file (diffusers "
                   "or kohya .safetensors, a hub file or a URL) with an optional scale; repeatable")
    p.add_argument("--model", default=SDXL_TURBO, help=f"hub id, local directory or random:sdxl-turbo / "
                   f"random:tiny-xl (random weights, no download); default {SDXL_TURBO}")
    p.add_argument("--vae", default="auto", help="'taesd' (TAESDXL for an SDXL model; fast, default), 'full' (the "
                   "model's own VAE) or a spec")
    p.add_argument("--allow-pickle", action="store_true", help="allow full pickle checkpoints (only files you trust)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image's noise (and of random: weights)")
    p.add_argument("--size", default="512x512", help="image size WxH, multiples of 64 (default 512x512)")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: fp16 on GPUs, fp32 on the CPU")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_global(p)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class GenerateJob:
    """What a checked command line asks for: the request, the model, the LoRAs, the seeds and the files to write."""

    request: Any  # realtime.diffusion.generate.GenerateConfig
    model: ModelConfig
    loras: tuple[LoraSpec, ...]
    seeds: tuple[int, ...]
    outputs: tuple[Path, ...]
    grid: Path | None


def numbered(dst: Path, count: int) -> tuple[tuple[Path, ...], Path | None]:
    """The files of ``--count``: ``dst`` itself for one image; else ``stem-1 .. stem-N`` (zero-padded to N's digits)
    and ``stem-grid`` beside it, with ``dst``'s suffix."""
    if count == 1:
        return (dst,), None
    width = len(str(count))
    files = tuple(dst.with_name(f"{dst.stem}-{i:0{width}d}{dst.suffix}") for i in range(1, count + 1))
    return files, dst.with_name(f"{dst.stem}-grid{dst.suffix}")


def generate_inputs(args: argparse.Namespace) -> GenerateJob:
    """Every check of ``stylecam generate`` before any model loads (one line, exit 2, on the first failure)."""
    from realtime.diffusion.generate import GenerateConfig
    from realtime.diffusion.models import model_family, resolve_device
    from realtime.io.images import image_format
    from realtime.pipeline.preflight import check_loras, check_model

    if isinstance(args.count, bool) or not 1 <= args.count <= MAX_COUNT:
        raise UsageError(f"--count {args.count}: must be an integer in 1..{MAX_COUNT}")
    seed = check_seed(args.seed, "--seed")
    check_seed(seed + args.count - 1, "--seed + --count - 1")
    dst = Path(args.output)
    image_format(dst)
    outputs, grid = numbered(dst, args.count)
    inputs = input_files(args)
    for path in (*outputs, *([grid] if grid else [])):
        check_output_path(path, overwrite=args.overwrite, inputs=inputs)
    style = load_style(args.style) if args.style is not None else None
    if style is not None and style.passthrough:
        raise UsageError(f"--style {args.style}: a pass-through style has no prompt to generate from")
    prompt = args.prompt if args.prompt is not None else (style.prompt if style is not None else "")
    negative = args.negative_prompt if args.negative_prompt is not None else (style.negative_prompt if style else "")
    request = GenerateConfig(prompt, negative, args.steps, args.guidance, parse_size(args.size, model=True))
    loras = (*(style.loras if style is not None else ()), *(LoraSpec.parse(x) for x in args.lora))
    model = ModelConfig(args.model, controlnet="none", vae=args.vae, allow_pickle=args.allow_pickle)
    check_model(model)
    family = model_family(model.model)
    check_loras(loras, model.allow_pickle, family.name if family is not None else None)
    resolve_device(RunConfig(size=request.size, seed=seed, device=args.device, dtype=args.dtype).device)
    return GenerateJob(request, model, tuple(loras), tuple(range(seed, seed + args.count)), outputs, grid)


def run(args: argparse.Namespace) -> int:
    """Run ``stylecam generate`` from parsed arguments; returns the exit code."""
    import time

    job = generate_inputs(args)  # every input checked before any model loads
    t0 = time.perf_counter()
    images = make_images(job, args.device, args.dtype)
    _write(job, images)
    log.info("wrote %s%s (%s, %d step(s), guidance %g) in %.1f s", job.outputs[0],
             f" .. {job.outputs[-1]} and {job.grid}" if job.grid else "", job.request.size, job.request.steps,
             job.request.guidance, time.perf_counter() - t0)
    return 0


def make_images(job: GenerateJob, device_spec: str, dtype_spec: str) -> list[Any]:
    """Load the model (LoRAs fused) and make one (H, W, 3) uint8 RGB image per seed."""
    from realtime.diffusion.generate import generate
    from realtime.diffusion.lora_switch import fuse_loras
    from realtime.diffusion.models import load_components, resolve_device, resolve_dtype

    device = resolve_device(device_spec)
    dtype = resolve_dtype(dtype_spec, device)
    comps = load_components(job.model, device, dtype, seed=job.seeds[0], controls=())
    if device.type == "cpu":
        log.warning("generating on the CPU: expect seconds to minutes per image at real model sizes")
    fuse_loras(comps, job.loras, allow_pickle=job.model.allow_pickle)
    images = []
    for i, seed in enumerate(job.seeds, 1):
        images.append(generate(comps, job.request, seed, device=device, dtype=dtype))
        log.info("image %d/%d (seed %d) done", i, len(job.seeds), seed)
    return images


def _write(job: GenerateJob, images: list[Any]) -> None:
    """Every image, then the grid (each file atomic); an interruption removes the ones already written."""
    from realtime.io.images import write_image
    from realtime.research.grid import make_grid

    written: list[Path] = []
    try:
        for path, image in zip(job.outputs, images, strict=True):
            write_image(path, image)
            written.append(path)
        if job.grid is not None:
            r = job.request
            labels = [[f"seed {s}", f"{r.steps} step(s), guidance {r.guidance:g}"] for s in job.seeds]
            write_image(job.grid, make_grid(images, labels))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
