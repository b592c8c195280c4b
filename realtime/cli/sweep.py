"""``scripts/sweep.py``: the command line of the parameter sweep (options -> :class:`~realtime.research.sweep.SweepJob`
-> :func:`realtime.research.sweep.run_sweep`); ``--help`` explains the axes and the files written.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from realtime.cli.console import run_main, setup_logging
from realtime.cli.options import add_common_options, output_size_arg, seed_blend_arg, style_overrides
from realtime.errors import UsageError
from realtime.geometry import parse_size
from realtime.research.sweep import SweepAxes, SweepBase, SweepJob, parse_list, plan_sweep, run_sweep, sweep_inputs

log = logging.getLogger(__name__)

DESCRIPTION = """\
Run the stylizer over a grid of settings for one or more images. Writes every output
(DIR/<input-stem>/<NN>_<slug>.png, at the input's size unless --output-size), a labelled comparison grid per input
(DIR/<input-stem>_grid.png: the input as the model sees it first, then each output titled with its settings) and the
settings of every output (DIR/settings.json, DIR/settings.csv).

Axes (comma-separated values; the grid is the cartesian product): --models, --styles, --lora-scales (the scale of every
--lora), --control-scales, --guidances, --strengths. The other stylizer options (--prompt, --lora, --strength, ...)
apply to every cell; an option and its own axis cannot be given together. With no axis and no --style the grid is the
five seed experiments: anime (strong ControlNet, strong style), anime-soft (weaker ControlNet), soft-render,
cel-shaded and vibrant. Each model is loaded once; a LoRA scale is always fused into the pristine weights."""

EPILOG = """\
examples:
  python scripts/sweep.py --input me.jpg --out-dir sweep/                      # the five presets
  python scripts/sweep.py --input me.jpg --out-dir sweep/ --lora anime.safetensors --lora-scales 0,0.5,1 \\
      --control-scales 0.5,1
  python scripts/sweep.py --input a.png b.png --out-dir sweep/ --model random:tiny --size 64x64   # smoke run

exit codes: 0 done, 2 bad input or usage (missing/unreadable image, bad value, output exists without --overwrite,
model not available), 1 any other failure, 130 interrupted (every file written so far is complete)."""


def build_parser(prog: str = "sweep.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, metavar="IMG", help="input image(s) (PNG, JPEG, WebP, ...)")
    p.add_argument("--out-dir", required=True, type=Path, metavar="DIR", help="where outputs, grids and settings go (created if missing)")
    g = p.add_argument_group("grid axes (comma-separated lists)")
    g.add_argument("--models", metavar="SPEC,...", help="model specs to compare (each loaded once)")
    g.add_argument("--styles", metavar="NAME,...", help="presets or .toml files, e.g. anime,cel-shaded,vibrant")
    g.add_argument("--lora-scales", metavar="X,...", help="scales applied to every --lora, e.g. 0,0.5,1")
    g.add_argument("--control-scales", metavar="X,...", help="ControlNet scales, e.g. 0.5,0.8,1.1")
    g.add_argument("--guidances", metavar="X,...", help="guidance scales (1 = one UNet pass; > 1 runs CFG)")
    g.add_argument("--strengths", metavar="X,...", help="strengths in (0, 1], e.g. 0.6,0.75,0.9")
    g = p.add_argument_group("outputs")
    g.add_argument("--output-size", default=None, help="size of the written outputs WxH (default: each input's size)")
    g.add_argument("--grid-columns", type=int, default=None, metavar="N", help="grid cells per row (default: min(cells, 6))")
    g.add_argument("--cell-width", type=int, default=256, metavar="PX", help="enlarge grid cells to at least this width (default 256)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--progress", action="store_true", help="show a progress bar")
    add_common_options(p, vision=False)
    p.set_defaults(style=None, model=None)
    g = p.add_argument_group("logging")
    g.add_argument("--debug", action="store_true", help="tracebacks and library logs")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def job_from_args(args: argparse.Namespace) -> SweepJob:
    """Translate parsed options into a :class:`SweepJob` (validating everything before any model is loaded)."""
    if args.backend not in ("eager", "auto"):
        raise UsageError(f"--backend {args.backend}: the sweep runs eagerly (an engine per setting would be rebuilt); drop --backend")
    axes = SweepAxes(
        models=parse_list(args.models, "--models", str), styles=parse_list(args.styles, "--styles", str),
        lora_scales=parse_list(args.lora_scales, "--lora-scales"), control_scales=parse_list(args.control_scales, "--control-scales"),
        guidances=parse_list(args.guidances, "--guidances"), strengths=parse_list(args.strengths, "--strengths"),
    )
    base = SweepBase(style=args.style, model=args.model, controlnet=args.controlnet, vae=args.vae,
                     allow_pickle=args.allow_pickle, lora=tuple(args.lora or ()), overrides=style_overrides(args, loras=False))
    settings = plan_sweep(base, axes)
    size = None if args.size == "auto" else parse_size(args.size, model=True)
    return SweepJob(
        inputs=tuple(Path(p) for p in args.input), out_dir=Path(args.out_dir), settings=tuple(settings), size=size,
        output_size=output_size_arg(args.output_size), seed=args.seed, seed_blend=seed_blend_arg(args.seed_blend),
        device=args.device, dtype=args.dtype,
        overwrite=args.overwrite, columns=args.grid_columns, cell_width=args.cell_width, progress=args.progress,
    )


def sweep_main(args: argparse.Namespace) -> int:
    """Run a sweep from parsed options (exceptions are turned into exit codes by the caller)."""
    job = job_from_args(args)
    sweep_inputs(job)  # images, outputs, models and LoRAs: before any model loads
    log.info("sweep: %d setting(s) x %d input(s) -> %s", len(job.settings), len(job.inputs), job.out_dir)
    report = run_sweep(job)
    log.info("wrote %d output(s), %d grid(s), %s and %s", len(report.records), len(report.grids),
             report.settings_json, report.settings_csv)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, set up logging, sweep; exceptions become exit codes (:func:`realtime.cli.console.run_main`)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug, args.quiet)
    return run_main(lambda: sweep_main(args), debug=args.debug)
