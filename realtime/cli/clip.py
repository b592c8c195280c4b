"""``stylecam clip IN [IN ...] -o OUT``: the command line (options, the checks before any model loads, the batch loop).
The per-file work is :class:`realtime.pipeline.clip.ClipJob`; exit codes as docs/design.md §7 (batch: 1 when any file failed).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from realtime.cli.clip_ray import clip_run_config, ray_options_from_args, run_ray
from realtime.cli.console import one_line
from realtime.cli.options import (AddGlobal, Subparsers, add_common_options, input_files, model_from_args, output_size_arg,
                                  region_from_args,
                                  run_from_args, style_from_args)
from realtime.geometry import Size
from realtime.pipeline.clip import (DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PIX_FMT, ClipOptions, check_encoder,
                                    clip_inputs, open_clip_job, plan_outputs)

log = logging.getLogger(__name__)


def parse_seconds(text: str) -> float:
    """``12.5``, ``1:02.5`` or ``1:00:02`` -> seconds (argparse type: bad text is a usage error, exit 2)."""
    try:
        parts = [float(p) for p in str(text).strip().split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 or not np.isfinite(p) for p in parts):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds >= 0 (12.5) or [HH:]MM:SS(.ms)") from None
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam clip``."""
    p = subparsers.add_parser(
        "clip", help="stylize video files (audio and timing kept)",
        description="Stylize video files frame by frame with the live look (face framing, Canny, temporal blending). "
        "Audio is copied, timestamps and rotation kept; the output appears only when complete.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="input video(s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file; with several inputs a directory (each output keeps its input's name)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g = p.add_argument_group("clip")
    g.add_argument("--start", type=parse_seconds, help="start at this time (seconds or [HH:]MM:SS)")
    g.add_argument("--end", type=parse_seconds, help="stop at this time (seconds or [HH:]MM:SS)")
    g.add_argument("--output-size", default=None, help="output WxH (default: the input's display size)")
    g.add_argument("--codec", default=None, help=f"video encoder (default: {DEFAULT_CODEC}, or VP9 for .webm; h264_nvenc on NVIDIA GPUs, libx265, libvpx-vp9, ...)")
    g.add_argument("--crf", type=int, default=DEFAULT_CRF, help=f"quality for CRF encoders, 0..63, lower is better (default {DEFAULT_CRF})")
    g.add_argument("--pix-fmt", default=DEFAULT_PIX_FMT, help=f"encoder pixel format (default {DEFAULT_PIX_FMT}, the one every player takes)")
    g = p.add_argument_group("face framing")
    g.add_argument("--no-face", action="store_true", help="no face framing: the centred window of the model's aspect")
    g.add_argument("--face-model", default=None, metavar="PATH", help="MediaPipe face detector .tflite (default: STYLECAM_FACE_MODEL, then the cache)")
    g = p.add_argument_group("Ray: spread the files over the GPUs of a Ray cluster (pip install 'stylecam[ray]')")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: alone, join the instance `ray start` made on this machine or start one; with an "
                   "address (host:port, ray://host:10001), that cluster. One worker per GPU; resumable (a manifest in "
                   "the output directory: a re-run skips finished outputs and redoes changed ones)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --ray: N workers (default: one per GPU of the cluster; on a cluster without GPUs, "
                   "N CPU workers)")
    g.add_argument("--segment-seconds", type=parse_seconds, default=None, metavar="S",
                   help="with --ray: cut clips at key frames about every S seconds, stylize the segments on several "
                   "workers and join them losslessly (the audio copied once)")
    g.add_argument("--warmup-frames", type=int, default=8, metavar="N",
                   help="with --segment-seconds: frames each segment stylizes before its start and drops, so the "
                   "temporal blending runs on across the joins (default 8)")
    add_common_options(p, temporal=True)
    add_global(p)
    p.set_defaults(func=run, interrupted_code=130)


def options_from_args(args: argparse.Namespace) -> ClipOptions:
    return ClipOptions(
        start=args.start, end=args.end, output_size=output_size_arg(args.output_size), codec=args.codec,
        crf=args.crf, pix_fmt=args.pix_fmt, overwrite=args.overwrite, face=not args.no_face,
        face_model=args.face_model, progress=not args.quiet, region=region_from_args(args),
    )


def run(args: argparse.Namespace) -> int:
    """``stylecam clip``: every input checked first (:func:`realtime.pipeline.clip.clip_inputs`: exit 2 before any model
    loads), then the models once, then each file. One input: its error is the command's. Several: each bad file is
    reported on its own line and the others go on; 0 when all succeeded, else 1."""
    ray_options = ray_options_from_args(args)  # before anything: no Ray extra, no other work
    opts = options_from_args(args)
    style = style_from_args(args)
    model = model_from_args(args)
    run_from_args(args, Size(512, 512))  # --size, --seed, --device, --dtype checked before any file
    if opts.codec is not None:
        check_encoder(opts.codec, opts.pix_fmt)
    pairs = plan_outputs(args.inputs, args.output)
    if ray_options is not None:
        return run_ray(args, opts, style, model, pairs, ray_options)
    batch = len(pairs) > 1
    checked, bad = clip_inputs(pairs, opts, style, model, batch=batch, inputs=input_files(args))
    for src, e in bad:
        log.error("%s failed: %s", src, one_line(e))
    failed = [src for src, _ in bad]
    written = 0
    if checked:
        written = _run_files(args, opts, style, model, checked, failed)
    if batch:
        log.info("%d of %d files written to %s%s", written, len(pairs), pairs[0][1].parent,
                 f"; failed: {', '.join(p.name for p in failed)}" if failed else "")
    return 1 if failed else 0


def _run_files(args: argparse.Namespace, opts: ClipOptions, style: Any, model: Any,
               checked: list[tuple[Path, Path, Size]], failed: list[Path]) -> int:
    """Load the models once and stylize each checked file; returns how many were written (failures appended)."""
    batch = len(checked) + len(failed) > 1
    written = 0
    runner = open_clip_job(opts, style, model, clip_run_config(args, opts, style, checked[0][2]))
    with runner:
        for src, dst, _ in checked:
            try:
                runner.process(src, dst)
                written += 1
            except KeyboardInterrupt:
                if batch:
                    log.warning("interrupted: %d of %d file(s) written before, the rest not started", written,
                                len(checked) + len(failed))
                raise
            except Exception as e:
                if not batch:
                    raise
                failed.append(src)
                log.error("%s failed: %s", src, one_line(e))
    return written
