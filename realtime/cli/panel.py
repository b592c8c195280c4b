"""The web control panel from the command line: ``stylecam live --panel`` (:func:`add_live_options`,
:func:`open_panel`) and ``stylecam panel`` (the same page without a camera).

The panel is one more command source of the live loop: every button and slider sends a command line that
:func:`realtime.pipeline.controls.parse_command` reads exactly as it reads stdin (docs/design.md §10: a runtime control
lives in ``pipeline/controls.py`` and ``pipeline/session.py``; the panel adds no semantics of its own). Starlette and
uvicorn are imported only when a panel is asked for.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realtime.cli.options import AddGlobal, Subparsers
from realtime.errors import UsageError

if TYPE_CHECKING:
    from realtime.pipeline.controls import Command

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number (0: any free port)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: a port is 0..65535 (0: any free port)")
    return port


def _server_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--panel-port", type=_port, default=DEFAULT_PORT,
                   help=f"panel port (default {DEFAULT_PORT}; 0: any free port)")
    g.add_argument("--panel-host", default="127.0.0.1",
                   help="address the panel listens on (default 127.0.0.1, this machine only; any other address is "
                        "reachable from the network and is protected by the token alone)")
    g.add_argument("--open", action="store_true", help="open the panel in the web browser")
    g.add_argument("--lora-dir", metavar="DIR", help="folder of LoRA .safetensors files the panel may pick from")


def add_live_options(p: argparse.ArgumentParser) -> None:
    """``--panel``, ``--panel-port``, ``--panel-host``, ``--open``, ``--lora-dir`` of ``stylecam live``."""
    g = p.add_argument_group("web control panel (pip install 'stylecam[panel]')")
    g.add_argument("--panel", action="store_true",
                   help="serve a control panel (preview, sliders, statistics) in the browser; prints its address "
                        "with the session's token")
    _server_options(g)


def _lora_dir(args: argparse.Namespace) -> Path | None:
    if not args.lora_dir:
        return None
    folder = Path(args.lora_dir).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--lora-dir {folder}: not a directory")
    return folder


def lora_checker(folder: Path | None) -> Any:
    """What the panel may send as ``lora``: files inside ``folder`` only, named relative to it (rewritten to the full
    path); ``lora none`` always. Returns the (possibly rewritten) command; :class:`UsageError` for a path outside."""
    import dataclasses

    from realtime.panel.guard import inside
    from realtime.pipeline.controls import Command

    def check(cmd: Command) -> Command:
        if cmd.name != "lora" or not cmd.value:
            return cmd
        specs = tuple(dataclasses.replace(spec, path=str(inside(folder, spec.path, "lora"))) for spec in cmd.value)
        return Command(cmd.name, specs, cmd.source)

    return check


class Panel:
    """A running panel: the hub (the live loop's command source), the server thread and the token."""

    def __init__(self, args: argparse.Namespace) -> None:
        from realtime.panel.guard import is_loopback, new_token
        from realtime.panel.hub import PanelHub
        from realtime.panel.server import PanelServer, require_panel

        require_panel()
        self.lora_dir = _lora_dir(args)
        self.token = new_token()
        self.hub = PanelHub(check_command=lora_checker(self.lora_dir))
        try:
            self.server = PanelServer(self.hub, self.token, args.panel_host, args.panel_port, lora_dir=self.lora_dir)
        except BaseException:
            self.hub.close()
            raise
        self.url = self.server.url(self.token)
        self.open_browser = bool(args.open)
        if not is_loopback(args.panel_host):
            log.warning("panel on %s: reachable from the network; every request needs the token in the address "
                        "below (keep it private)", args.panel_host)

    def announce(self) -> None:
        # The interface: exactly this line on stderr (not a log record: no prefix, and -q keeps it).
        sys.stderr.write(f"panel: {self.url}\n")
        sys.stderr.flush()
        if self.open_browser:
            threading.Thread(target=webbrowser.open, args=(self.url,), daemon=True).start()

    def close(self) -> None:
        self.server.close()
        self.hub.close()


def open_panel(args: argparse.Namespace) -> Panel | None:
    """The panel ``stylecam live`` asked for (None without ``--panel``): checked and listening before any model
    loads (a missing extra or a busy port is exit 2 at once); attach it to the loop with ``panel.hub.attach``."""
    if not args.panel:
        return None
    try:
        return Panel(args)
    except ImportError as e:
        raise UsageError(str(e)) from e


# ------------------------------------------------------------------------------------------- stylecam panel
def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    p = subparsers.add_parser(
        "panel", help="serve the web control panel without a camera",
        description="Serve the control panel page without a live session (for trying the page; commands need "
                    "`stylecam live --panel`). Prints its address with the token; Ctrl-C stops.",
    )
    _server_options(p.add_argument_group("panel"))
    add_global(p)
    p.set_defaults(func=run, interrupted_code=0)


def run(args: argparse.Namespace) -> int:
    try:
        panel = Panel(args)
    except ImportError as e:
        raise UsageError(str(e)) from e
    try:
        panel.announce()
        threading.Event().wait()
    finally:
        panel.close()
    return 0
