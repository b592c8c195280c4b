"""``scripts/evaluate.py``: the command line of the quality metrics (a stylized image or clip against its input, as
JSON and a markdown table); the metrics are :mod:`realtime.research.evaluation` and :mod:`realtime.research.metrics`.
Exit codes: 0 done, 2 bad input or usage (missing file, not an image/video, a model asked for but unavailable), 1 any
other failure, 130 interrupted. Errors are one line on stderr (a traceback with --debug).
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from realtime.cli.console import run_main, setup_logging
from realtime.errors import ModelNotFound, UsageError
from realtime.pipeline.preflight import check_image, check_video

log = logging.getLogger(__name__)


def _metric_help() -> str:
    from realtime.research.evaluation import CLIP_METRICS, METRIC_DOCS

    rows = []
    for name in CLIP_METRICS:
        text = textwrap.fill(METRIC_DOCS[name], width=96, initial_indent="      ", subsequent_indent="      ")
        rows.append(f"  {name}\n{text}")
    return "metrics (images: all but the temporal ones; clip: all, averaged over frames):\n" + "\n".join(rows)


def _common(p: argparse.ArgumentParser) -> None:
    from realtime.research.clip_score import DEFAULT_CLIP_MODEL
    from realtime.research.evaluation import DEFAULT_PROMPT

    p.add_argument("input", type=Path, help="the original (what was stylized)")
    p.add_argument("output", type=Path, help="the stylized result (resized to the input's size if it differs)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the report (metrics, settings, inputs) as JSON")
    p.add_argument("--md", type=Path, metavar="PATH", help="write the markdown table to PATH instead of stdout")
    g = p.add_argument_group("structure and temporal metrics")
    g.add_argument("--edge-tolerance", type=int, default=1, metavar="PX",
                   help="edges match within this many pixels (default 1)")
    g.add_argument("--canny-sigma", type=float, default=0.33,
                   help="automatic Canny thresholds (1 -/+ sigma) x median grey (default 0.33)")
    g.add_argument("--canny-blur", type=int, default=3, metavar="K",
                   help="Gaussian blur before Canny, as the pipeline (0 = off, odd 1..31; default 3)")
    g.add_argument("--flow", choices=("dis", "farneback"), default="dis", help="optical flow for the warp error")
    g.add_argument("--static-threshold", type=float, default=2.0, metavar="LEVELS",
                   help="input luminance change (0..255) up to which a pixel counts as static (default 2)")
    g = p.add_argument_group("face preservation (MediaPipe)")
    g.add_argument("--face-model", type=Path, metavar="PATH",
                   help="face detector .tflite (default: $STYLECAM_FACE_MODEL, then the cache/download)")
    g.add_argument("--no-face", action="store_true", help="skip the face metrics")
    g = p.add_argument_group("style adherence (CLIP score)")
    g.add_argument("--prompt", help=f"text to score the output against (default {DEFAULT_PROMPT!r}); giving it asks "
                                    "for CLIP, so missing weights are an error")
    g.add_argument("--clip-model", metavar="ID_OR_DIR",
                   help=f"CLIP hub id or local directory (default {DEFAULT_CLIP_MODEL}; without --prompt or this, only "
                        "weights already on disk are used and the score is n/a when there are none)")
    g.add_argument("--clip-device", default="cpu", help="torch device for CLIP (default cpu)")
    g.add_argument("--no-clip", action="store_true", help="skip the CLIP score")
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    g.add_argument("--debug", action="store_true", help="tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Quality metrics of a stylized image or clip against its input: structure (edge F1, SSIM), "
        "temporal consistency (warp error, flicker), face preservation (MediaPipe) and style adherence (CLIP score). "
        "Writes a markdown table (stdout, or --md) and optionally the full report as JSON (--json).",
        epilog=_metric_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="{images,clip}")
    p_img = sub.add_parser("images", help="compare one stylized image with its input", epilog=_metric_help(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p_img)
    p_clip = sub.add_parser("clip", help="compare a stylized clip with its input, frame by frame", epilog=_metric_help(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p_clip)
    p_clip.add_argument("--every", type=int, default=1, metavar="N",
                        help="structure and face metrics on every N-th frame (temporal ones use every pair; default 1)")
    p_clip.add_argument("--clip-every", type=int, default=10, metavar="N",
                        help="CLIP score on every N-th frame (default 10)")
    p_clip.add_argument("--max-frames", type=int, metavar="N", help="compare at most N frames")
    p_clip.add_argument("--progress", action="store_true", help="show a progress bar")
    return parser


def _run(args: argparse.Namespace) -> int:
    from realtime.files import check_output_path, write_text_atomic
    from realtime.research.evaluation import EvalOptions, evaluate_clip, evaluate_images, to_json, to_markdown
    from realtime.research.metrics import MetricSettings

    read = (args.input, args.output, args.face_model)  # both compared files are inputs here
    if args.json is not None:
        check_output_path(args.json, overwrite=True, inputs=read)
    if args.md is not None:
        check_output_path(args.md, overwrite=True, inputs=(*read, args.json))
    if args.no_clip and (args.prompt is not None or args.clip_model is not None):
        raise UsageError("--no-clip with --prompt/--clip-model: choose one")
    if args.no_face and args.face_model is not None:
        raise UsageError("--no-face with --face-model: choose one")
    # both files decode (a clip: its first frame) before the face and CLIP models load
    evaluate_inputs(args.mode, args.input, args.output, face=not args.no_face, face_model_path=args.face_model)
    settings = MetricSettings(edge_tolerance=args.edge_tolerance, canny_sigma=args.canny_sigma,
                              canny_blur=args.canny_blur, flow=args.flow,
                              static_threshold=args.static_threshold)
    extra = {}
    if args.mode == "clip":
        extra = {"every": args.every, "clip_every": args.clip_every, "max_frames": args.max_frames}
    opts = EvalOptions(settings=settings, face=not args.no_face, face_model=args.face_model, clip=not args.no_clip,
                       prompt=args.prompt, clip_model=args.clip_model, clip_device=args.clip_device, **extra)
    if args.mode == "images":
        report = evaluate_images(args.input, args.output, opts)
    else:
        report = evaluate_clip(args.input, args.output, opts, progress=args.progress)
    if args.json is not None:
        write_text_atomic(args.json, to_json(report))
        log.info("wrote %s", args.json)
    table = to_markdown(report)
    if args.md is not None:
        write_text_atomic(args.md, table)
        log.info("wrote %s", args.md)
    else:
        sys.stdout.write(table)
    return 0


def evaluate_inputs(mode: str, input_path: Path, output_path: Path, *, face: bool, face_model_path: Path | None) -> None:
    """Before any model loads: both files decode (a clip: its first frame) and an explicit face model exists."""
    for what, path in (("input", input_path), ("output", output_path)):
        if mode == "images":
            check_image(path, what=what)
        else:
            check_video(path, what=what)
    if face and face_model_path is not None and not Path(face_model_path).is_file():
        raise ModelNotFound(f"--face-model {face_model_path}: no such file")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug, args.quiet)
    return run_main(lambda: _run(args), debug=args.debug)
