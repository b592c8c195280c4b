"""The panel's web server: a Starlette app (:func:`create_app`) behind :class:`~realtime.panel.guard.Guard`, served by
uvicorn on its own daemon thread (:class:`PanelServer`). Starlette and uvicorn come with the extra ``stylecam[panel]``
(:func:`require_panel`).

Routes (every one needs the token, docs/design.md and the README's panel section):

- ``GET /``: the page (``static/index.html``, the token written into its asset links); ``GET /static/NAME``: its files
  (only the files shipped, by name).
- ``GET /api/state``: ``{"live", "settings", "stats", "history"}`` (:meth:`~realtime.panel.hub.PanelHub.state`).
- ``POST /api/command`` ``{"command": "<a stdin line>"}``: 200 ``{"ok": true, "state": ...}`` once applied; 400
  ``{"error": ...}`` for a line that does not parse or that the session refused; 202 if not applied within 5 s.
- ``GET /api/styles``, ``GET /api/loras``: what the pickers offer. ``GET /api/preview/{output,input}.jpg``.
- ``WS /api/ws``: pushes the state (JSON text) about 4 times a second and each new preview as a binary message (first
  byte 0 = output, 1 = input, then the JPEG); ``?input=1`` asks for the input side too.

Errors are JSON (``{"error": ...}``), never a traceback. Request bodies are limited to ``MAX_BODY`` bytes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from realtime.config import builtin_style_names
from realtime.errors import InputError, UsageError
from realtime.panel.guard import Guard, allowed_hosts
from realtime.panel.hub import SIDES, PanelHub

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
REPLY_TIMEOUT_S = 5.0
PUSH_EVERY_S = 0.05


def require_panel() -> None:
    """ImportError naming the extra when Starlette or uvicorn is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the panel needs Starlette and uvicorn: pip install 'stylecam[panel]' ({e.name} is "
                          f"missing)") from e


def static_files() -> dict[str, bytes]:
    """The page's files shipped in the package (``realtime/panel/static``), by name."""
    root = resources.files("realtime.panel") / "static"
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file()}


_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def _error(status: int, message: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _page_routes(token: str) -> list[Any]:
    """``/`` (the token written into the page's asset links) and ``/static/NAME`` (only the shipped files)."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    files = static_files()

    async def index(request: Request) -> Response:
        html = files["index.html"].decode("utf-8").replace("{{TOKEN}}", token)
        return Response(html, media_type=_TYPES[".html"], headers={"cache-control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return _error(404, f"no file {name!r}")
        return Response(files[name], media_type=_TYPES.get(Path(name).suffix, "application/octet-stream"))

    return [Route("/", index), Route("/static/{name}", static)]


def _api_routes(hub: PanelHub, lora_dir: Path | None) -> list[Any]:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def state(request: Request) -> Response:
        return JSONResponse(hub.state())

    async def command(request: Request) -> Response:
        body = await _read_body(request)
        try:
            text = json.loads(body)["command"]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'expected JSON {"command": "<a command line>"}')
        try:
            fut = hub.submit(text)
        except (UsageError, InputError) as e:
            return _error(409 if not hub.live else 400, str(e))
        try:
            reason = await asyncio.wait_for(asyncio.wrap_future(fut), REPLY_TIMEOUT_S)
        except asyncio.TimeoutError:
            hub.forget(fut)
            return JSONResponse({"ok": True, "queued": True, "command": text}, status_code=202)
        if reason is not None:
            return _error(400, reason)
        return JSONResponse({"ok": True, "command": text, "state": hub.state()})

    async def styles(request: Request) -> Response:
        return JSONResponse({"styles": ["none", *builtin_style_names()]})

    async def loras(request: Request) -> Response:
        if lora_dir is None:
            return JSONResponse({"folder": None, "loras": []})
        names = sorted(p.relative_to(lora_dir).as_posix() for p in lora_dir.rglob("*.safetensors") if p.is_file())
        return JSONResponse({"folder": str(lora_dir), "loras": names})

    async def preview(request: Request) -> Response:
        side = request.path_params["side"]
        hub.watch()
        if side not in SIDES:
            return _error(404, f"no preview {side!r}: {', '.join(SIDES)}")
        seq, jpeg = hub.preview(side)
        if jpeg is None:
            return _error(404, f"no {side} preview yet")
        return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "no-store", "x-sequence": str(seq)})

    return [Route("/api/state", state), Route("/api/command", command, methods=["POST"]),
            Route("/api/styles", styles), Route("/api/loras", loras), Route("/api/preview/{side}.jpg", preview)]


def _pushes(hub: PanelHub) -> Any:
    """``/api/ws``: the state when it changed and each new preview (first byte: the side), every ``PUSH_EVERY_S``."""
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        hub.want_input = websocket.query_params.get("input") == "1"  # the latest page to connect decides
        seen = {side: 0 for side in SIDES}
        last_state: Any = None
        try:
            while True:
                hub.watch()
                current = hub.state()
                if current is not last_state:
                    last_state = current
                    await websocket.send_json(current)
                for i, side in enumerate(SIDES):
                    seq, jpeg = hub.preview(side)
                    if jpeg is not None and seq != seen[side]:
                        seen[side] = seq
                        await websocket.send_bytes(bytes([i]) + jpeg)
                await asyncio.sleep(PUSH_EVERY_S)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    return WebSocketRoute("/api/ws", ws)


def create_app(hub: PanelHub, token: str, *, hosts: set[str] | None, lora_dir: Path | None = None) -> Any:
    """The ASGI app: the routes above, wrapped in the :class:`Guard` (token, Host, Origin)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return _error(exc.status_code, str(exc.detail))
        log.debug("panel request failed", exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")

    routes = [*_page_routes(token), *_api_routes(hub, lora_dir), _pushes(hub)]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error})
    return Guard(app, token, hosts)


async def _read_body(request: Any) -> bytes:
    """The request body, refused (413) past :data:`MAX_BODY` bytes without reading the rest."""
    from starlette.exceptions import HTTPException

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"request body over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class PanelServer:
    """uvicorn serving ``app`` on ``host:port`` (``port`` 0: any free port; :attr:`port` is the one bound) on a daemon
    thread. The socket is bound in the constructor, so a port in use is an error here (:class:`UsageError`)."""

    def __init__(self, hub: PanelHub, token: str, host: str = "127.0.0.1", port: int = 0,
                 lora_dir: Path | None = None) -> None:
        require_panel()
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
            self._sock.listen(64)  # now: a second panel on this port fails here, not on the server's thread
        except OSError as e:
            self._sock.close()
            raise UsageError(f"--panel-port {port}: cannot listen on {host}:{port} ({e.strerror or e}); choose "
                             f"another port (0: any free one)") from e
        self.host, self.port = host, self._sock.getsockname()[1]
        self.app = create_app(hub, token, hosts=allowed_hosts(host, self.port), lora_dir=lora_dir)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws="auto",
                                access_log=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="stylecam-panel", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException:  # the panel failing must not take the session down
            log.warning("the panel server stopped", exc_info=True)

    def url(self, token: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{shown}:{self.port}/?token={token}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=3)
        self._sock.close()
