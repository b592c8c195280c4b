"""``stylecam bench``: per-stage latency, fps and peak memory on this machine, as JSON (docs/design.md §9).

    stylecam bench --model random:sd-turbo --sizes 256x256,512x512 --mode step,pipeline --json out.json
    stylecam bench --backends eager,compile --batch 4                # backend sweep, batched step throughput
    stylecam bench --mode live --fps 60                              # paced synthetic camera: latency, drops
    stylecam bench compare a.json b.json --plot stages.png           # side by side, ratios to the first
    stylecam bench schema                                            # the JSON Schema of result files

The CLI registers this command through :func:`add_parser` (``realtime.cli``'s command modules). The measuring is in
:mod:`realtime.bench.runner` / :mod:`realtime.bench.modes`; the reports in :mod:`realtime.bench.report`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from realtime.cli.options import AddGlobal, Subparsers, add_common_options, region_from_args
from realtime.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_SIZE = "512x512"


def _csv(text: str) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()]


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``bench`` (with ``bench compare`` and ``bench schema``) on the CLI's subparsers. ``add_global`` adds
    the CLI's global options (--debug, -v, -q) to each parser."""
    p = subparsers.add_parser(
        "bench", help="measure latency, fps and memory on this machine",
        description="Measure per-stage latency (p50/p95/p99/max), fps and peak memory of the stylizer on this machine "
                    "and write them as JSON with the device, driver, versions and git commit. Synthetic input by "
                    "default (no camera or disk in the timing). --size defaults to 512x512 here; --sizes sweeps several. "
                    "Subcommands: compare (side by side, --plot), schema.",
    )
    add_common_options(p)
    p.set_defaults(size=DEFAULT_SIZE)
    g = p.add_argument_group("benchmark")
    g.add_argument("--mode", default="step", help="comma-separated: step (the frame step alone), pipeline (every live stage), live (a paced source, end-to-end latency), switch (LoRA/scale/prompt/guidance switches in a live session: frames_to_visible, stall_ms, extra_memory_mb); default step")
    g.add_argument("--sizes", default=None, metavar="WxH[,WxH...]", help=f"sweep of model sizes, e.g. 256x256,384x384,512x512,768x448 (default: --size, {DEFAULT_SIZE} in bench)")
    g.add_argument("--backends", default=None, metavar="B[,B...]", help="sweep of engine backends, e.g. eager,compile (default: --backend)")
    g.add_argument("--batch", type=int, default=1, help="frames per frame-step call in the step mode (throughput); default 1")
    g.add_argument("--frames", type=int, default=300, help="timed frames per run (default 300, so that p99 is not the maximum)")
    g.add_argument("--warmup", type=int, default=5, help="untimed warm-up frames before them (default 5)")
    g.add_argument("--fps", type=float, default=30.0, help="live mode: the source's frame rate, e.g. 30 or 60 (default 30)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--synthetic", dest="source", action="store_const", const=None, help="synthetic camera frames (default)")
    src.add_argument("--source", dest="source", metavar="PATH|INDEX", help="a real source: video file, camera index or /dev/videoN")
    g.add_argument("--camera-size", default="1280x720", help="synthetic camera frame size WxH (default 1280x720)")
    g.add_argument("--output-size", default="1280x720", help="sink frame size WxH (default 1280x720)")
    g.add_argument("--no-face", action="store_true", help="leave out the face stage (reported as skipped)")
    g.add_argument("--face-model", default=None, help="MediaPipe face model (default: STYLECAM_FACE_MODEL, then the cache)")
    g.add_argument("--sink", default="null", choices=("null", "file"), help="null (default) or file (PyAV, written to a temporary file and discarded)")
    g.add_argument("--no-substages", action="store_true", help="pipeline mode, eager: do not split the step into encode/ControlNet/UNet/decode")
    g.add_argument("--json", default=None, metavar="PATH", help="write the result document here (atomically)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    g.add_argument("--label", default=None, help="a free label stored in the result (e.g. 'h100-tensorrt')")
    g.add_argument("--note", action="append", default=[], metavar="TEXT", help="a note stored in the result (repeatable), e.g. 'machine shared with other jobs'")
    add_global(p)
    p.set_defaults(func=run_bench)

    sub = p.add_subparsers(dest="bench_command", metavar="{compare,schema}", parser_class=type(p))
    c = sub.add_parser("compare", help="print result files side by side", description="Print bench result files side by side (grouped by mode and size) with ratios to the first run; optionally plot the stage breakdown.")
    c.add_argument("results", nargs="+", metavar="RESULT.json", help="result files written by `stylecam bench --json`")
    c.add_argument("--plot", default=None, metavar="OUT.png", help="stacked bars of the mean stage times per run (needs matplotlib: pip install 'stylecam[plot]')")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    add_global(c)
    c.set_defaults(func=run_compare)
    s = sub.add_parser("schema", help="print the JSON Schema of result files", description="Print the JSON Schema (draft 2020-12) of bench result files.")
    add_global(s)
    s.set_defaults(func=run_schema)


def settings_from_args(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(BenchSettings, ModelConfig, StyleConfig, RunConfig) from parsed ``bench`` arguments."""
    from realtime.bench.runner import BenchSettings
    from realtime.config import RunConfig
    from realtime.geometry import parse_size
    from realtime.cli.options import model_from_args, style_from_args

    if args.sizes is not None and args.size != DEFAULT_SIZE:
        raise UsageError("--size and --sizes: give one (--sizes is the sweep)")
    if args.backends is not None and args.backend != "auto":
        raise UsageError("--backend and --backends: give one (--backends is the sweep)")
    size_texts = _csv(args.sizes) if args.sizes is not None else [args.size]
    if "auto" in size_texts:
        from realtime.geometry import auto_model_size

        out = parse_size(args.output_size, what="--output-size")
        sizes = tuple(auto_model_size(out) if t == "auto" else parse_size(t, what="--sizes", model=True) for t in size_texts)
    else:
        sizes = tuple(parse_size(t, what="--sizes" if args.sizes else "--size", model=True) for t in size_texts)
    backends = tuple(_csv(args.backends)) if args.backends is not None else (args.backend,)
    settings = BenchSettings(
        modes=tuple(_csv(args.mode)), sizes=sizes, backends=backends, batch=args.batch, frames=args.frames,
        warmup=args.warmup, fps=args.fps, source=args.source,
        camera_size=parse_size(args.camera_size, what="--camera-size"),
        output_size=parse_size(args.output_size, what="--output-size"), face=not args.no_face,
        face_model=args.face_model, sink=args.sink, substages=not args.no_substages, label=args.label,
        notes=tuple(args.note), region=region_from_args(args),
    )
    run = RunConfig(size=sizes[0], seed=args.seed, device=args.device, dtype=args.dtype, backend=backends[0],
                    cache_dir=getattr(args, "cache_dir", None), trt_refit=getattr(args, "trt_refit", False))
    return settings, model_from_args(args), style_from_args(args), run


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "stylecam":
        argv[0] = "stylecam"
    return shlex.join(argv)


def run_bench(args: argparse.Namespace) -> int:
    """``stylecam bench``: measure, print a summary on stdout, write ``--json``."""
    from realtime.bench.runner import run_benchmark
    from realtime.bench.schema import write_json_atomic
    from realtime.cli.options import input_files
    from realtime.cli.preflight import bench_inputs

    settings, model, style, run = settings_from_args(args)
    # models, LoRAs, --source, --face-model, --json and every backend: fail before minutes of measuring, not after
    bench_inputs(settings, model, style, run, json_path=args.json, overwrite=args.overwrite, inputs=input_files(args))
    doc = run_benchmark(settings, model, style, run, command=_command_line())
    sys.stdout.write(summary_text(doc))
    if args.json:
        write_json_atomic(args.json, doc, overwrite=args.overwrite)
        log.info("wrote %s", args.json)
    return 0


def summary_text(doc: dict[str, Any]) -> str:
    """One line per run: mode, size, backend, batch, frame p50/p95/p99/max ms, fps, the slowest stages."""
    from realtime.bench.report import machine, size_text

    lines = [f"stylecam bench on {machine(doc)} ({doc['environment']['device']}), commit "
             f"{doc['environment']['git']['commit'][:12]}"]
    for run in doc["runs"]:
        f = run["frame"]
        top = sorted((s for s in run["stages"] if s["status"] == "ok" and s["parent"] is None),
                     key=lambda s: -s["p50_ms"])[:4]
        stages = ", ".join(f"{s['name']} {s['p50_ms']:.1f}" for s in top)
        skipped = [s["name"] for s in run["stages"] if s["status"] == "skipped" and s["parent"] is None]
        backend = run["backend_used"] if run["backend"] == run["backend_used"] else f"{run['backend']}->{run['backend_used']}"
        line = (f"{run['mode']:<8} {size_text(run):>9} {backend:<11} b{run['batch']}  frame p50 "
                f"{f['p50_ms']:.1f} p95 {f['p95_ms']:.1f} p99 {f['p99_ms']:.1f} max {f['max_ms']:.1f} ms  "
                f"{run['fps']:.2f} fps")
        if run.get("live"):
            lv = run["live"]
            line += (f"  latency p50 {lv['latency']['p50_ms']:.1f} p99 {lv['latency']['p99_ms']:.1f} ms, "
                     f"dropped {lv['dropped']}/{lv['frames_captured']}")
            if lv.get("host_critical"):
                line += (f", host critical p50 {lv['host_critical']['p50_ms']:.2f} ms, added latency p50 "
                         f"{lv['added_latency']['p50_ms']:.1f} ms")
        if run["mode"] != "step":
            line += f"  [{stages}]"
        if skipped:
            line += f"  skipped: {', '.join(skipped)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_compare(args: argparse.Namespace) -> int:
    """``stylecam bench compare A.json B.json ...``: side by side with ratios; ``--plot`` the stage breakdown."""
    from realtime.bench.report import compare_text, plot_stages
    from realtime.bench.schema import load_result

    if args.plot:
        from realtime.files import check_not_input

        check_not_input(args.plot, args.results)  # never drawn over a result it reads, even with --overwrite
    docs = [load_result(p) for p in args.results]
    labels = _labels(args.results, docs)
    sys.stdout.write(compare_text(docs, labels))
    if args.plot:
        plot_stages(docs, labels, args.plot, overwrite=args.overwrite)
        log.info("wrote %s", args.plot)
    return 0


def _labels(paths: list[str], docs: list[dict[str, Any]]) -> list[str]:
    """Each result's label: its own ``label`` field, else the file name without .json (made unique)."""
    out: list[str] = []
    for p, doc in zip(paths, docs, strict=True):
        base = doc.get("label") or Path(p).stem
        name, k = base, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out.append(name)
    return out


def run_schema(args: argparse.Namespace) -> int:
    """``stylecam bench schema``: the JSON Schema of result files on stdout."""
    from realtime.bench.schema import SCHEMA

    sys.stdout.write(json.dumps(SCHEMA, indent=2) + "\n")
    return 0


def compare_main(argv: list[str] | None = None) -> int:
    """``python benchmarks/compare.py A.json B.json [--plot OUT.png]``: the same as ``stylecam bench compare``."""
    from realtime.cli.console import run_main, setup_logging

    parser = argparse.ArgumentParser(prog="compare.py", description="Print stylecam bench results side by side.")
    parser.add_argument("results", nargs="+", metavar="RESULT.json")
    parser.add_argument("--plot", default=None, metavar="OUT.png")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(debug=args.debug)
    return run_main(lambda: run_compare(args), debug=args.debug)
