"""``scripts/soak.py``: the command line of the soak (:mod:`realtime.bench.soak`).

The session is built by :func:`realtime.cli.live_setup.build_live` from ``stylecam live`` arguments (the same parser,
the same checks, the same set-up), its file source wrapped in a :class:`~realtime.bench.soak.LoopingSource`, a null
sink added beside the file sink, and run for ``--minutes``; the report (slopes, latency per window, the recording's
check) is written as JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realtime.cli.console import run_main, setup_logging

log = logging.getLogger(__name__)

DESCRIPTION = """\
Run a live session for minutes and watch it: a clip looped at its own rate (default: the demo clip, 640x360 at 30
fps) through `stylecam live`'s own set-up into a video file and a null sink, with runtime commands (style, prompt,
mirror, framing, bypass, blank, strength and, for random:* models, a LoRA's scale) fed through the stdin command path
on a schedule. Samples RSS, open file descriptors, threads, CUDA memory and latency; writes slopes per minute after
the warm-up, latency p50/p99 per window, and a check of the recording (no lost or duplicated frames).
Arguments after `--` go to `stylecam live` as they are (e.g. -- --no-face --output-size 320x180)."""


def build_parser(prog: str = "soak.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long the live loop runs (default 10)")
    p.add_argument("--model", default="random:tiny", help="model spec (default random:tiny)")
    p.add_argument("--size", default=None, help="model size WxH (default 64x64 for random:tiny, else auto)")
    p.add_argument("--source", type=Path, help="clip to loop (default: a generated demo clip)")
    p.add_argument("--json", type=Path, required=True, metavar="PATH", help="where the report goes")
    p.add_argument("--recording", type=Path, help="keep the recording here (default: a temporary file, removed)")
    p.add_argument("--lora", help="LoRA file for the scale commands (default: a random one for random:* models)")
    p.add_argument("--command-every", type=float, default=2.5, metavar="S", help="seconds between commands")
    p.add_argument("--sample-every", type=float, default=2.0, metavar="S", help="seconds between resource samples")
    p.add_argument("--window", type=float, default=60.0, metavar="S", help="latency window in seconds (default 60)")
    p.add_argument("--warmup", type=float, default=None, metavar="S",
                   help="seconds left out of the slopes (default: 60, or a quarter of a shorter run)")
    p.add_argument("--debug", action="store_true", help="tracebacks and library logs")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("live_args", nargs=argparse.REMAINDER, help="-- then `stylecam live` options")
    return p


def _live_argv(args: argparse.Namespace, source: Path, recording: Path) -> list[str]:
    extra = list(args.live_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    size = args.size or ("64x64" if args.model == "random:tiny" else "auto")
    argv = ["live", "--source", str(source), "--output", str(recording), "--model", args.model, "--size", size,
            "--no-stdin", "--fps", "30"]
    if "--output-size" not in extra:
        argv += ["--output-size", "320x180"]
    if "--style" not in extra:
        argv += ["--style", "anime"]
    return argv + extra


def _random_lora(parts: Any, folder: Path) -> str | None:
    """A kohya LoRA with random weights for the running random:* UNet (for the scale commands)."""
    from realtime.bench.soak import write_random_lora

    guard = parts.processor.stylizer
    raw = getattr(guard, "stylizer", None)
    comps = getattr(raw, "components", None)
    if comps is None:
        return None
    return str(write_random_lora(comps.unet, folder / "soak-lora.safetensors"))


def soak_main(args: argparse.Namespace) -> int:
    from realtime.bench.soak import LoopingSource, ScheduledCommands, SoakConfig, check_recording, default_schedule
    from realtime.bench.soak import run_soak, soak_report
    from realtime.cli.demo import make_demo_clip
    from realtime.cli.live_setup import build_live
    from realtime.cli.main import build_parser as live_parser
    from realtime.files import check_output_path, write_text_atomic
    from realtime.io.sinks import NullSink
    from realtime.io.videofile import FileSource
    from realtime.pipeline.live import close_all

    config = SoakConfig(seconds=args.minutes * 60, sample_every_s=args.sample_every, window_s=args.window,
                        command_every_s=args.command_every, warmup_s=args.warmup)
    check_output_path(args.json, overwrite=True)
    with tempfile.TemporaryDirectory(prefix="stylecam-soak-") as tmp:
        folder = Path(tmp)
        source = args.source or make_demo_clip(folder / "soak-source.mp4", seconds=4.0, size=(640, 360))
        recording = args.recording or folder / "soak-recording.mp4"
        live_args = live_parser().parse_args(_live_argv(args, source, recording))
        stack = contextlib.ExitStack()
        with stack:
            parts = build_live(live_args, stack)
            stack.pop_all()
        looped = LoopingSource(lambda: FileSource(source, paced=True), first=parts.source)
        sinks = [*parts.sinks, NullSink()]
        lora = args.lora or (_random_lora(parts, folder) if args.model.startswith("random:") else None)
        commands = ScheduledCommands(default_schedule(lora), config.command_every_s)
        log.info("soak: %.1f min, %s, %d scheduled commands every %.1f s%s", args.minutes, args.model,
                 len(commands.lines), config.command_every_s, f", LoRA {Path(lora).name}" if lora else "")
        try:
            run = run_soak(looped, parts.processor, sinks, parts.session, config, commands)
        finally:
            close_all(sinks, [looped, commands, parts.session, parts.processor])
        report = soak_report(run, config)
        report["recording"] = check_recording(Path(recording), [f[2] for f in run.frames], 30.0)
        report["model"], report["live_args"] = args.model, _live_argv(args, Path("SOURCE"), Path("RECORDING"))
        report["goals"]["recording_ok"] = report["recording"]["ok"]
    write_text_atomic(args.json, json.dumps(report, indent=2))
    s = report["slopes"]
    log.info("soak: %d frames, RSS %s MiB/min, fds %s/min, threads %s/min, p99 last/first %s, recording %s -> %s",
             report["delivered"], _fmt(s["rss_mib_per_min"]), _fmt(s["fds_per_min"]), _fmt(s["threads_per_min"]),
             _fmt(report["p99_last_over_first"]), "ok" if report["recording"]["ok"] else "NOT ok", args.json)
    return 0


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.minutes > 0:
        build_parser().error(f"--minutes {args.minutes}: must be positive")
    setup_logging(args.verbose, args.debug, args.quiet)
    return run_main(lambda: soak_main(args), debug=args.debug)

