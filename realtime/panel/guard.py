"""The panel's security checks, as one pure ASGI middleware and a folder check (no web framework imported here).

- **Token**: every HTTP request and WebSocket carries the per-session token (``?token=`` or the
  ``X-Stylecam-Token`` header); without it: 403.
- **Host**: on a loopback bind the Host header must name this panel (``127.0.0.1``, ``localhost`` or ``[::1]`` with
  its port): a DNS-rebinding page (Host ``evil.example``) is refused.
- **Origin**: when present it must be this panel's own origin (``http://`` + the Host); a WebSocket must carry it. A
  page of another site open in the same browser can neither call the API nor open the WebSocket.
- **Folders**: a path the browser names (a LoRA) must resolve inside a configured folder (:func:`inside`).
"""
from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from realtime.errors import UsageError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_HEADER = "x-stylecam-token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def allowed_hosts(bind_host: str, port: int) -> set[str] | None:
    """The Host header values a panel bound to ``bind_host:port`` answers; None: any (a non-loopback bind, reached
    by whatever address the network gives it: the token is then the only key)."""
    if not is_loopback(bind_host):
        return None
    return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"{bind_host}:{port}"}


def inside(folder: Path | None, name: str, what: str) -> Path:
    """``name`` (as the browser sent it) resolved inside ``folder``; :class:`UsageError` when there is no folder or the
    path leaves it (``..``, an absolute path, a symlink out)."""
    if folder is None:
        raise UsageError(f"{what}: no folder configured for the panel (start with --lora-dir DIR)")
    root = folder.resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise UsageError(f"{what} {name!r}: outside the configured folder {folder}")
    return target


class Guard:
    """ASGI middleware: refuses (403, a JSON body) any request without the token, with a foreign Host or Origin.
    ``hosts``: see :func:`allowed_hosts`."""

    def __init__(self, app: ASGIApp, token: str, hosts: set[str] | None) -> None:
        self.app, self.token, self.hosts = app, token, hosts

    def reason(self, scope: Scope) -> str | None:
        """Why this request is refused, or None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.hosts is not None and host not in self.hosts:
            return f"host {host!r} not allowed"
        origin = headers.get("origin")
        if origin is None and scope["type"] == "websocket":
            return "a WebSocket needs an Origin header"
        if origin is not None and origin != f"http://{host}":
            return f"origin {origin!r} not allowed"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = headers.get(TOKEN_HEADER) or (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "missing or wrong token"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        why = self.reason(scope)
        if why is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
            return
        body = json.dumps({"error": f"forbidden: {why}"}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
