"""``stylecam devices``: the cameras (index, path, name, modes) and the virtual camera backends and devices.

One line each (``--json`` for machines). Finding nothing is not an error: the lines say so, with the fix.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from realtime.cli.options import AddGlobal, Subparsers

log = logging.getLogger(__name__)


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam devices``."""
    p = subparsers.add_parser("devices", help="list cameras and virtual cameras",
                              description="List the cameras (what --source takes: index or path, name, modes) and the "
                                          "virtual camera backends and devices (what --output vcam uses).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--max-index", type=int, default=10, help="camera indices probed where devices cannot be listed "
                                                             "(Windows, macOS; default 10)")
    add_global(p)
    p.set_defaults(func=run)


def collect(max_index: int = 10) -> dict[str, Any]:
    """``{"cameras": [...], "virtual_camera": {...}}`` (plain data, JSON-ready)."""
    from realtime.io.camera import list_cameras
    from realtime.io.sinks import virtual_camera_status

    cams = list_cameras(max_index)
    try:
        from pyvirtualcam import camera as vcam

        backends = sorted(vcam.BACKENDS)
    except ImportError:
        backends = []
    ok, detail = virtual_camera_status()
    return {
        "cameras": [
            {"index": c.index, "path": c.path, "name": c.name, "virtual": c.virtual,
             "modes": [{"width": m.width, "height": m.height, "fps": m.fps} for m in c.modes]}
            for c in cams
        ],
        "virtual_camera": {"available": ok, "backends": backends, "detail": detail},
    }


def format_lines(info: dict[str, Any]) -> list[str]:
    lines = []
    cams = info["cameras"]
    if not cams:
        lines.append("camera: none found (plug one in, or check that no other application holds it)")
    for c in cams:
        modes = ", ".join(f"{m['width']}x{m['height']}" + (f"@{m['fps']:g}" if m["fps"] else "") for m in c["modes"])
        where = f" {c['path']}" if c["path"] else ""
        tag = " [virtual]" if c["virtual"] else ""
        lines.append(f"camera {c['index']}:{where} {c['name']}{tag}" + (f" ({modes})" if modes else ""))
    v = info["virtual_camera"]
    backends = ", ".join(v["backends"]) or "none"
    lines.append(f"virtual camera: {'ok' if v['available'] else 'unavailable'}, backends {backends}: {v['detail']}")
    return lines


def run(args: argparse.Namespace) -> int:
    from realtime.errors import UsageError

    if not 1 <= args.max_index <= 64:
        raise UsageError(f"--max-index {args.max_index}: must be in 1..64")
    info = collect(args.max_index)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(format_lines(info)) + "\n")
    return 0
