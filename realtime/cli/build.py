"""``stylecam build`` (an engine ahead of time) and ``stylecam cache list|clear``."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime

from realtime.errors import UsageError
from realtime.cli.options import AddGlobal, Subparsers, add_common_options

log = logging.getLogger(__name__)


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam build`` and ``stylecam cache``."""
    p = subparsers.add_parser(
        "build", help="build the engine for a style/model/size ahead of time",
        description="Build (and cache) the frame-step engine for a style, model and size, so `live` starts at once. "
        "On an NVIDIA machine with TensorRT: stylecam build --backend tensorrt.",
    )
    p.add_argument("--output-size", default="1280x720", help="the output the engine serves; sets the auto model size (default 1280x720)")
    add_common_options(p, vision=False)
    p.set_defaults(backend="auto")
    add_global(p)
    p.set_defaults(func=run_build)

    p = subparsers.add_parser("cache", help="list or clear cached engines", description="List or clear cached engines.")
    p.add_argument("action", choices=("list", "clear"))
    p.add_argument("--older-than", metavar="YYYY-MM-DD", help="with clear: only entries created before this date")
    p.add_argument("--cache-dir", default=None, help="engine cache directory (default $STYLECAM_CACHE, else the user cache directory)")
    add_global(p)
    p.set_defaults(func=run_cache)


def run_build(args: argparse.Namespace) -> int:
    from realtime.geometry import parse_size
    from realtime.cli.options import model_from_args, run_from_args, style_from_args
    from realtime.cli.preflight import build_inputs

    style = style_from_args(args)
    if style.passthrough:
        raise UsageError("--style none has no model: nothing to build")
    run = run_from_args(args, parse_size(args.output_size, what="--output-size"))
    if run.backend == "eager":
        raise UsageError("--backend eager has nothing to build: choose auto, compile, onnxruntime or tensorrt")
    from realtime.diffusion.engine_select import resolve_backend
    from realtime.diffusion.models import resolve_device

    if resolve_backend(run.backend, resolve_device(run.device))[0] == "eager":
        raise UsageError(f"--backend auto runs eager on {resolve_device(run.device).type}: nothing to build; choose "
                         "compile or onnxruntime (or build on a CUDA device)")
    model = model_from_args(args)
    build_inputs(style, model, run)  # models, LoRAs and the backend on this device, before anything loads
    from realtime.diffusion.build import build_stylizer

    t0 = time.perf_counter()
    log.info("building the %s engine for %s at %s (the first TensorRT build takes minutes)", run.backend, args.model, run.size)
    stylizer = build_stylizer(model, style, run)
    try:
        runner = stylizer.runner
        import numpy as np

        stylizer(np.zeros((run.size.height, run.size.width, 3), np.uint8), np.zeros((run.size.height, run.size.width), np.uint8))
        where = getattr(runner, "cache_key", None)
        from engines import EngineCache

        path = EngineCache(run.cache_dir).entry_path(where) if where else None
        sys.stdout.write(f"backend {runner.backend}: {path if path else '(nothing cached: this backend compiles in memory at start)'}\n")
        log.info("done in %.0f s", time.perf_counter() - t0)
    finally:
        stylizer.close()
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from engines import EngineCache

    cache = EngineCache(args.cache_dir, verify="size")
    if args.action == "list":
        if args.older_than:
            raise UsageError("--older-than goes with `cache clear`")
        entries = cache.entries()
        if not entries:
            sys.stdout.write(f"no engines cached in {cache.engines_dir}\n")
        for e in entries:
            created = e.created.strftime("%Y-%m-%d %H:%M") if e.created else "?"
            state = f"  UNUSABLE: {e.problem}" if e.problem else ""
            sys.stdout.write(f"{e.key}  {e.backend:<11} {e.size_bytes / 2**20:9.1f} MiB  {created}  {e.description}{state}\n")
        return 0
    older = None
    if args.older_than:
        try:
            older = datetime.strptime(args.older_than, "%Y-%m-%d")
        except ValueError:
            raise UsageError(f"--older-than {args.older_than!r}: expected a date YYYY-MM-DD") from None
    removed = cache.clear(older)
    sys.stdout.write(f"removed {len(removed)} engine(s) from {cache.engines_dir}\n")
    return 0
