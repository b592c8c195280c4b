"""``stylecam live``: the command line (options, and :func:`run`, which builds the session with
:func:`realtime.cli.live_setup.build_live` and drives :class:`realtime.pipeline.live.LiveLoop`)."""
from __future__ import annotations

import argparse
import contextlib
import logging

from realtime.cli.live_setup import build_live
from realtime.cli.options import AddGlobal, Subparsers, add_common_options
from realtime.cli.panel import add_live_options as add_panel_options
from realtime.cli.panel import open_panel
from realtime.pipeline.live import LiveLoop, LiveResult, close_all, graceful_sigint, log_summary

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_SIZE = "1280x720"
DEFAULT_CAMERA_SIZE = "1280x720"


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    p = subparsers.add_parser(
        "live", help="stylize a camera live into a virtual camera, a window or a file",
        description="Stylize a camera (or a clip standing in for one) live: face framing, Canny, one-step SD-Turbo, "
                    "out to a virtual camera (video calls), a preview window and/or a video file. Ctrl-C or q stops "
                    "(exit 0; files are finalized and kept). While running, change settings with window keys, "
                    "commands on stdin (type `help`) or --control-file.",
    )
    g = p.add_argument_group("input and output")
    g.add_argument("--source", default="0",
                   help="camera index (0), device path (/dev/video0) or a video file (default 0)")
    g.add_argument("--output", action="append", metavar="vcam|window|PATH|none",
                   help="where frames go: vcam (virtual camera), window (preview), a video file, or none; repeatable "
                        "(default vcam)")
    g.add_argument("--output-size", default=DEFAULT_OUTPUT_SIZE, help=f"output WxH (default {DEFAULT_OUTPUT_SIZE})")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument("--mirror", action="store_true", help="mirror the picture (a selfie view)")
    g.add_argument("--fps", type=float, help="frame rate asked of the camera and given to the outputs; at most this "
                                             "many frames per second are delivered (default: the source's rate)")
    g.add_argument("--frames", type=int, metavar="N", help="stop after N frames delivered to the outputs")
    g.add_argument("--no-pace", action="store_true", help="read a file source as fast as possible instead of at "
                                                          "its own frame rate")
    g.add_argument("--control-file", metavar="PATH", help="TOML/JSON file of settings, applied whenever it changes")
    g.add_argument("--no-stdin", action="store_true", help="do not read commands from stdin")
    g = p.add_argument_group("camera")
    g.add_argument("--camera-size", default=DEFAULT_CAMERA_SIZE, help=f"resolution asked of the camera (default "
                                                                     f"{DEFAULT_CAMERA_SIZE})")
    g.add_argument("--mjpg", action=argparse.BooleanOptionalAction, default=True,
                   help="ask the camera for MJPG (higher rates at high resolutions; default on)")
    g = p.add_argument_group("face framing")
    g.add_argument("--no-face", action="store_true", help="no face framing: the centred window (key f turns it on)")
    g.add_argument("--face-model", metavar="PATH", help="MediaPipe face detector .tflite (default: "
                                                        "STYLECAM_FACE_MODEL, then the cache, then a download)")
    g = p.add_argument_group("virtual camera")
    g.add_argument("--vcam-backend", help="pyvirtualcam backend (v4l2loopback, obs, unitycapture)")
    g.add_argument("--vcam-device", help="virtual camera device (/dev/video10, 'OBS Virtual Camera')")
    add_panel_options(p)
    add_common_options(p, temporal=True)
    add_global(p)
    p.set_defaults(func=run, interrupted_code=0)


def run(args: argparse.Namespace) -> int:
    """``stylecam live`` from parsed arguments; returns the exit code (0 also for Ctrl-C and q)."""
    stack = contextlib.ExitStack()
    with stack:
        panel = open_panel(args)  # listening before any model loads (a busy port or a missing extra: exit 2)
        if panel is not None:
            stack.callback(panel.close)
        parts = build_live(args, stack)
        loop = LiveLoop(parts.source, parts.processor, parts.sinks, parts.session,
                        command_sources=parts.command_sources, frames=args.frames, fps=args.fps)
        if panel is not None:  # one more command source: the same commands as stdin
            loop.command_sources.append(panel.hub)
            panel.hub.attach(loop)
            panel.announce()
        from realtime.io.sinks import WindowSink

        for sink in parts.sinks:
            if isinstance(sink, WindowSink):
                sink.on_key = loop.on_key
        stack.pop_all()  # from here on close_all() closes everything, sinks first
        result: LiveResult | None = None
        try:
            with graceful_sigint(loop):
                try:
                    result = loop.run()
                except KeyboardInterrupt:
                    log.info("stopped at once (second Ctrl-C)")
                    result = loop.result("interrupted")
        finally:
            close_all(parts.sinks, [parts.source, *parts.command_sources, parts.session, parts.processor, panel])
        if result is not None:
            log_summary(result)
    return 0
