"""The panel in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright's Python API with that
system browser; Playwright's own browser download is never used) opens the panel of a running ``stylecam live --panel``
on a clip, moves the strength slider and toggles mirror, checks both reached the session (``/api/state``), sees the
preview update, and saves a screenshot.

It skips with a one-line reason when no browser is present, except in CI (``CI`` set): there a missing browser is a
failure (``.ci/run`` installs it)."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from media_files import make_clip

CHROMIUM = os.environ.get("STYLECAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser() -> None:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("no Playwright (pip install playwright)")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        missing.append("no Starlette/uvicorn (pip install 'stylecam[panel]')")
    if missing:
        reason = "browser test: " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run it: .ci/run installs them)")
        pytest.skip(reason)


def _stylecam() -> list[str]:
    exe = Path(sys.executable).with_name("stylecam")
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "import sys; from realtime.cli.main import main; "
                                                                    "sys.exit(main())"]


class LivePanel:
    """``stylecam live --panel --panel-port 0`` on ``clip`` in a subprocess; reads its stderr on a thread."""

    def __init__(self, clip: Path) -> None:
        cmd = [*_stylecam(), "live", "--source", str(clip), "--output", "none", "--panel", "--panel-port", "0",
               "--no-stdin", "--no-face", "--model", "random:tiny", "--style", "anime", "--size", "64x64",
               "--output-size", "320x240"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def url(self, timeout_s: float = 180) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = re.search(r"panel: (http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
            if m:
                return m.group(1)
        raise AssertionError("no panel line on stderr:\n" + "".join(self.log))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def _state(url: str) -> dict:
    base, token = url.split("/?token=")
    req = urllib.request.Request(f"{base}/api/state", headers={"X-Stylecam-Token": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _until(what: str, check, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_panel_in_a_real_browser(tmp_path: Path) -> None:
    _need_browser()
    from playwright.sync_api import sync_playwright

    clip = make_clip(tmp_path / "clip.mp4", n=900, size=(160, 120), rate=10)  # 90 s: longer than the test
    live = LivePanel(clip)
    try:
        url = live.url()
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 800})
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.goto(url)
                page.wait_for_function("document.getElementById('status').textContent === 'live'", timeout=60_000)
                page.wait_for_function("Number(document.getElementById('preview-output').dataset.frames || 0) >= 2",
                                       timeout=60_000)
                before = _state(url)["settings"]
                assert before["strength"] != 0.42 and before["mirror"] is False

                page.locator("#strength").fill("0.42")
                page.locator("#mirror").check()
                _until("strength and mirror in /api/state",
                       lambda: (s := _state(url)["settings"])["strength"] == 0.42 and s["mirror"] is True)
                assert "applied" in page.locator("#message").text_content()

                shown = int(page.locator("#preview-output").get_attribute("data-frames"))
                page.wait_for_function(
                    f"Number(document.getElementById('preview-output').dataset.frames) >= {shown + 3}",
                    timeout=60_000)
                size = page.evaluate("[document.getElementById('preview-output').naturalWidth, "
                                     "document.getElementById('preview-output').naturalHeight]")
                assert size == [320, 240]  # the 320x240 output (previews are at most about 480 wide)
                page.locator("#command").fill("frobnicate")
                page.locator("#command").press("Enter")
                page.wait_for_function("document.getElementById('message').className === 'bad'", timeout=30_000)
                assert "unknown command" in page.locator("#message").text_content()
                page.wait_for_function("document.getElementById('stat-fps').textContent !== '–'", timeout=30_000)
                page.locator("#show-input").check()  # the input beside the output (the WebSocket reconnects)
                page.wait_for_function("Number(document.getElementById('preview-input').dataset.frames || 0) >= 2",
                                       timeout=60_000)
                assert page.locator("#input-figure").is_visible()
                shot = Path(os.environ.get("STYLECAM_PANEL_SCREENSHOT") or tmp_path / "panel.png")
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
            finally:
                context.close()
    finally:
        code = live.stop()
    assert code == 0, "".join(live.log)
