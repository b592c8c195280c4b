"""``stylecam image``: one picture in, its stylized version out (the seed's single-image stylization)."""
from __future__ import annotations

import logging
import time

import argparse

from realtime.cli.options import AddGlobal, Subparsers, add_common_options, output_size_arg, run_from_args
from realtime.geometry import Size
from realtime.io.images import write_image

log = logging.getLogger(__name__)


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam image``."""
    p = subparsers.add_parser("image", help="stylize one image", description="Stylize one image.")
    p.add_argument("input", help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp, ...)")
    p.add_argument("--output-size", default=None, help="output WxH (default: the input's size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_common_options(p)
    add_global(p)
    p.set_defaults(func=stylize_image)


def stylize_image(args: argparse.Namespace) -> int:
    """Run ``stylecam image`` from parsed arguments; returns the exit code."""
    from realtime.cli.preflight import image_inputs, region_inputs

    _, dst, frame, style, model = image_inputs(args)  # every input checked before any model loads
    region, background = region_inputs(args, model)
    out_size = output_size_arg(args.output_size) or Size(frame.shape[1], frame.shape[0])
    run = run_from_args(args, out_size)
    from realtime.vision.edges import EdgeDetector
    from realtime.diffusion.build import build_stylizer
    from realtime.pipeline.processor import FrameProcessor, canny_config
    from realtime.pipeline.stages import frame_stages

    t0 = time.perf_counter()
    stylizer = build_stylizer(model, style, run)
    try:
        stages = frame_stages(style, model, region, stylizer=stylizer, background=background, seed=run.seed)
    except BaseException:
        if stylizer is not None:
            stylizer.close()
        raise
    t1 = time.perf_counter()
    with FrameProcessor(run.size, out_size, stylizer=stylizer, edges=EdgeDetector(canny_config(style)), style=style,
                        **stages) as proc:
        result = proc.process(frame)
    t2 = time.perf_counter()
    write_image(dst, result)
    log.info("wrote %s (%s, model %s, style %s): load %.1f s, frame %.2f s", dst, out_size, run.size, style.name, t1 - t0, t2 - t1)
    return 0
