"""``stylecam styles``: the style presets and their settings, as a table or JSON."""
from __future__ import annotations

import argparse
import dataclasses
import json

from realtime.cli.options import AddGlobal, Subparsers
from realtime.config import builtin_style_names, load_style


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam styles``."""
    p = subparsers.add_parser("styles", help="list the style presets", description="List the style presets and their settings.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_global(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    styles = [load_style(n) for n in builtin_style_names()]
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in styles], indent=2))
        return 0
    print(f"{'style':<12} {'strength':>8} {'control':>7} {'guidance':>8} {'blend':>5}  description")
    for s in styles:
        if s.passthrough:
            print(f"{s.name:<12} {'-':>8} {'-':>7} {'-':>8} {'-':>5}  {s.description}")
        else:
            loras = f" [LoRA: {', '.join(map(str, s.loras))}]" if s.loras else ""
            print(f"{s.name:<12} {s.strength:>8.2f} {s.control_scale:>7.2f} {s.guidance:>8.1f} {s.temporal.blend:>5.2f}  {s.description}{loras}")
    return 0
