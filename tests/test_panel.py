"""The web control panel's API (Starlette's test client on the real app): commands change the session exactly as stdin
lines do, bad commands are 400 with the message, the token/Host/Origin checks (HTTP and WebSocket), LoRA paths kept
inside the configured folder, body limits, the preview, and the missing-extra error."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from realtime.cli.panel import lora_checker  # noqa: E402
from realtime.config import StyleConfig, load_style  # noqa: E402
from realtime.errors import UsageError  # noqa: E402
from realtime.geometry import Size  # noqa: E402
from realtime.io.frames import Frame, SourceStats  # noqa: E402
from realtime.panel.guard import allowed_hosts, inside  # noqa: E402
from realtime.panel.hub import PanelHub  # noqa: E402
from realtime.panel.server import MAX_BODY, PanelServer, create_app  # noqa: E402
from realtime.pipeline.controls import parse_command  # noqa: E402
from realtime.pipeline.live import LiveLoop  # noqa: E402
from realtime.pipeline.processor import FrameProcessor  # noqa: E402
from realtime.pipeline.session import LiveSession  # noqa: E402

TOKEN = "test-token-0123456789"
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
ORIGIN = BASE


class EndlessSource:
    """Synthetic frames (a gradient that moves), about 200 per second, until closed."""

    size = Size(96, 64)
    fps = 200.0

    def __init__(self) -> None:
        self.n = 0
        self.closed = False
        self.stats = SourceStats()

    def read(self, timeout: float | None = None) -> Frame | None:
        if self.closed:
            return None
        time.sleep(0.005)
        self.n += 1
        image = np.zeros((64, 96, 3), np.uint8)
        image[:, :, 0] = (np.arange(96)[None, :] + self.n) % 256
        image[:, :48, 2] = 200
        now = time.perf_counter()
        self.stats = SourceStats(frames=self.n, fps=self.fps)
        return Frame(image, now, self.n - 1, arrived=now)

    def close(self) -> None:
        self.closed = True


class InvertingStylizer:
    """Just enough of a live stylizer for the session: inverts frames, remembers the style and seeds."""

    def __init__(self, style: StyleConfig) -> None:
        self.style, self.seeds = style, []

    def __call__(self, image, control):
        return 255 - image

    def set_style(self, style: StyleConfig, *, wait: bool = False) -> None:
        self.style = style

    def set_seed(self, seed: int) -> None:
        self.seeds.append(seed)

    def reset(self) -> None:
        pass

    def encode_prompt(self, prompt: str, negative: str = "", cfg: bool = False):
        return None

    def close(self) -> None:
        pass


def _session() -> LiveSession:
    style = load_style("anime")
    proc = FrameProcessor(Size(64, 64), Size(96, 64), stylizer=InvertingStylizer(style), style=style)
    return LiveSession(proc, style)


@pytest.fixture()
def live(tmp_path: Path):
    """A live loop on its own thread with a panel hub attached; yields (client, hub, loop, lora folder)."""
    loras = tmp_path / "loras"
    (loras / "sub").mkdir(parents=True)
    (loras / "sub" / "ink.safetensors").write_bytes(b"x")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    hub = PanelHub(preview_fps=50, preview_width=48, state_every_s=0.02, check_command=lora_checker(loras))
    session = _session()
    loop = LiveLoop(EndlessSource(), session.processor, [], session, command_sources=[hub])
    hub.attach(loop)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    app = create_app(hub, TOKEN, hosts=allowed_hosts("127.0.0.1", PORT), lora_dir=loras)
    with TestClient(app, base_url=BASE, headers={"X-Stylecam-Token": TOKEN}) as client:
        yield client, hub, loop, loras
    loop.stop_requested = True
    thread.join(5)
    hub.close()


def _post(client: TestClient, line: str, **kw):
    return client.post("/api/command", json={"command": line}, **kw)


def test_commands_change_the_session_exactly_like_stdin_lines(live) -> None:
    client, hub, loop, _ = live
    lines = ["strength 0.55", "control 1.3", "blend 0.4", "motion-threshold 0.3", "mirror on", "framing off",
             "bypass on", "prompt a watercolor portrait", "seed 7"]
    for line in lines:
        r = _post(client, line)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True
    # The same lines through the stdin parser, applied to a fresh session: the same settings.
    reference = _session()
    for line in lines:
        assert reference.apply(parse_command(line, "stdin"))
    ref_loop = LiveLoop(EndlessSource(), reference.processor, [], reference)
    expected = PanelHub()._snapshot(ref_loop)["settings"]
    got = client.get("/api/state").json()["settings"]
    assert got == expected
    assert got["strength"] == 0.55 and got["mirror"] is True and got["mode"] == "bypass"
    assert got["prompt"] == "a watercolor portrait"
    assert loop.processor.stylizer.seeds == [7]


def test_bad_commands_are_400_with_the_message(live) -> None:
    client, *_ = live
    r = _post(client, "frobnicate 3")
    assert r.status_code == 400 and "unknown command 'frobnicate'" in r.json()["error"]
    r = _post(client, "strength lots")
    assert r.status_code == 400 and "expected a number" in r.json()["error"]
    r = _post(client, "strength 7")  # parses, refused by the session's own check
    assert r.status_code == 400 and "strength" in r.json()["error"]
    assert client.get("/api/state").json()["settings"]["strength"] != 7
    r = client.post("/api/command", content=b"not json")
    assert r.status_code == 400 and "expected JSON" in r.json()["error"]
    r = client.post("/api/command", content=b"{" + b" " * (MAX_BODY + 1) + b"}")
    assert r.status_code == 413 and "over" in r.json()["error"]
    r = _post(client, "prompt two\nlines")
    assert r.status_code == 400


def test_state_has_settings_and_statistics(live) -> None:
    client, hub, loop, _ = live
    deadline = time.monotonic() + 10
    while loop.delivered < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    state = client.get("/api/state").json()
    assert state["live"] is True
    assert state["settings"]["style"] == "anime"
    stats = state["stats"]
    assert stats["delivered"] >= 10 and stats["fps"] > 0
    assert stats["latency_p50_ms"] is not None and stats["latency_p99_ms"] >= stats["latency_p50_ms"]
    assert "stylize" in stats["stages_ms"]
    assert client.get("/api/styles").json()["styles"][0] == "none"
    assert client.get("/api/loras").json()["loras"] == ["sub/ink.safetensors"]


def test_token_host_and_origin_are_checked(live) -> None:
    client, *_ = live
    bare = TestClient(client.app, base_url=BASE)
    for path in ("/", "/api/state", "/static/panel.js"):
        r = bare.get(path)
        assert r.status_code == 403 and "token" in r.json()["error"], path
    assert bare.get("/api/state", headers={"X-Stylecam-Token": "wrong"}).status_code == 403
    assert bare.get(f"/api/state?token={TOKEN}").status_code == 200
    assert bare.post("/api/command", json={"command": "mirror on"}).status_code == 403
    # a page of another site in the same browser, and a DNS-rebinding page (its own host name)
    r = client.get("/api/state", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "origin" in r.json()["error"]
    assert _post(client, "mirror on", headers={"Origin": "http://evil.example"}).status_code == 403
    r = client.get("/api/state", headers={"Host": "evil.example:8765"})
    assert r.status_code == 403 and "host" in r.json()["error"]
    assert client.get("/api/state", headers={"Origin": ORIGIN}).status_code == 200
    html = client.get("/").text
    assert f"panel.js?token={TOKEN}" in html and "{{TOKEN}}" not in html


def test_websocket_needs_the_token_and_the_origin(live) -> None:
    client, *_ = live
    from starlette.websockets import WebSocketDisconnect

    ws_url = f"ws://127.0.0.1:{PORT}/api/ws"
    for url, headers, why in ((f"{ws_url}?token={TOKEN}", {"Origin": "http://evil.example"}, "origin"),
                              (f"{ws_url}?token={TOKEN}", {}, "Origin header"), (ws_url, {"Origin": ORIGIN}, "token")):
        bare = TestClient(client.app, base_url=BASE)
        with pytest.raises(WebSocketDisconnect) as refused:
            with bare.websocket_connect(url, headers=headers) as ws:
                ws.receive_text()
        assert refused.value.code == 1008 and why in refused.value.reason
    bare = TestClient(client.app, base_url=BASE)
    with bare.websocket_connect(f"{ws_url}?token={TOKEN}&input=1", headers={"Origin": ORIGIN}) as ws:
        state = json.loads(ws.receive_text())
        assert state["live"] is True
        kinds = set()
        for _ in range(40):
            message = ws.receive()
            if message.get("bytes"):
                kinds.add(message["bytes"][0])
                assert message["bytes"][1:3] == b"\xff\xd8"  # a JPEG
            if kinds == {0, 1}:
                break
        assert kinds == {0, 1}


def test_preview_is_a_small_jpeg_of_the_output(live) -> None:
    client, hub, loop, _ = live
    time.sleep(0.2)
    assert hub.preview("output")[1] is None  # nobody watched yet: no preview taken
    client.get("/api/preview/output.jpg")  # this request asks for them (404 or the first one)
    deadline = time.monotonic() + 10
    while hub.preview("output")[1] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    r = client.get("/api/preview/output.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    import cv2

    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (32, 48, 3)  # 96x64 output, every 2nd pixel: at most 48 wide
    assert client.get("/api/preview/elsewhere.jpg").status_code == 404


def test_lora_paths_stay_inside_the_configured_folder(live, tmp_path: Path) -> None:
    client, hub, loop, loras = live
    for line in ("lora ../outside.safetensors", f"lora {tmp_path / 'outside.safetensors'}", "lora sub/../../x.safetensors"):
        r = _post(client, line)
        assert r.status_code == 400 and "outside the configured folder" in r.json()["error"], line
    check = lora_checker(loras)
    cmd = check(parse_command("lora sub/ink.safetensors:0.5"))
    assert cmd.value[0].path == str((loras / "sub" / "ink.safetensors").resolve()) and cmd.value[0].scale == 0.5
    assert check(parse_command("lora none")).value == ()
    with pytest.raises(UsageError, match="--lora-dir"):
        inside(None, "a.safetensors", "lora")
    assert client.get("/static/..%2Fhub.py").status_code == 404
    assert client.get("/static/hub.py").status_code == 404


def test_without_a_live_session_commands_are_409() -> None:
    hub = PanelHub()
    try:
        app = create_app(hub, TOKEN, hosts=allowed_hosts("127.0.0.1", PORT))
        client = TestClient(app, base_url=BASE, headers={"X-Stylecam-Token": TOKEN})
        assert client.get("/api/state").json()["live"] is False
        r = _post(client, "mirror on")
        assert r.status_code == 409 and "stylecam live --panel" in r.json()["error"]
    finally:
        hub.close()


def test_server_binds_loopback_and_a_busy_port_is_a_usage_error() -> None:
    hub = PanelHub()
    server = PanelServer(hub, TOKEN, "127.0.0.1", 0)
    try:
        assert server.port > 0 and server.url(TOKEN) == f"http://127.0.0.1:{server.port}/?token={TOKEN}"
        with pytest.raises(UsageError, match="--panel-port"):
            PanelServer(hub, TOKEN, "127.0.0.1", server.port)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
            assert b" 403 " in s.recv(200)
    finally:
        server.close()
        hub.close()


def test_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['starlette'] = None\n"
            "from realtime.cli.main import main\n"
            f"sys.exit(main(['live', '--source', '{tmp_path / 'none.mp4'}', '--style', 'none', '--output', 'none', "
            "'--panel', '--no-stdin']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "stylecam[panel]" in lines[0]


def test_help_imports_no_web_library() -> None:
    code = ("import sys; from realtime.cli.main import build_parser; build_parser()\n"
            "print(sorted(m for m in ('starlette', 'uvicorn', 'realtime.panel.server') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_stylecam_panel_serves_the_page_without_a_session() -> None:
    exe = Path(sys.executable).with_name("stylecam")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "realtime.cli.main"]
    proc = subprocess.Popen([*cmd, "panel", "--panel-port", "0", "-q"], stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        for line in proc.stderr:
            if "panel: http://" in line:
                break
        assert re.fullmatch(r"panel: http://127\.0\.0\.1:\d+/\?token=[\w-]+\n", line), line  # the exact line, even with -q
        url = line.rsplit("panel: ", 1)[1].strip()
        base, token = url.split("/?token=")
        import urllib.error
        import urllib.request

        with urllib.request.urlopen(urllib.request.Request(f"{base}/api/state", headers={"X-Stylecam-Token": token}),
                                    timeout=10) as r:
            assert json.loads(r.read())["live"] is False
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/state", timeout=10)
        assert refused.value.code == 403 and "token" in json.loads(refused.value.read())["error"]
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"stylecam panel" in r.read()
    finally:
        proc.send_signal(__import__("signal").SIGINT)
        assert proc.wait(20) == 0


def test_a_non_loopback_bind_accepts_any_host_but_still_checks_origin_and_token() -> None:
    from realtime.panel.guard import Guard

    assert allowed_hosts("0.0.0.0", 8765) is None and "localhost:8765" in allowed_hosts("127.0.0.1", 8765)
    guard = Guard(None, TOKEN, None)

    def scope(headers: dict[str, str], query: str = f"token={TOKEN}") -> dict:
        return {"type": "http", "query_string": query.encode(),
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}

    assert guard.reason(scope({"host": "192.168.1.5:8765"})) is None
    assert guard.reason(scope({"host": "192.168.1.5:8765", "origin": "http://192.168.1.5:8765"})) is None
    assert "origin" in guard.reason(scope({"host": "192.168.1.5:8765", "origin": "http://evil.example"}))
    assert "token" in guard.reason(scope({"host": "192.168.1.5:8765"}, query=""))
