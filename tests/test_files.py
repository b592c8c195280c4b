"""Atomic outputs: complete or absent, never half-written, with the permissions a plain open() gives; the one cache
root; atomic, verified downloads."""
from __future__ import annotations

import hashlib
import io
import stat
import urllib.error

import pytest

from realtime.errors import BadInputFile, OutputError
from realtime.files import atomic_output, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_finished_output_has_plain_open_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out = tmp_path / "report.md"
    write_text_atomic(out, "| a |")
    assert out.read_text() == "| a |\n"  # a text file ends with a newline
    assert _mode(out) == _mode(plain)  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "report.md"]


def test_failure_leaves_target_untouched_and_no_temporary(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json"  # writers that go by the extension still work
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_directory_that_cannot_hold_files_is_an_output_error(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(OutputError, match="cannot write in"):
        write_text_atomic(not_a_dir / "x.txt", "x")


# ------------------------------------------------------------------------------------------------------ the cache root
def test_cache_root_resolution(tmp_path, monkeypatch):
    from pathlib import PurePosixPath, PureWindowsPath

    from realtime.files import cache_root, user_cache_dir

    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("STYLECAM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "stylecam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "stylecam"
    assert user_cache_dir({}, "posix", "/home/ann") == PurePosixPath("/home/ann/.cache/stylecam")
    assert user_cache_dir({"XDG_CACHE_HOME": "/x"}, "posix", "/home/ann") == PurePosixPath("/x/stylecam")
    assert user_cache_dir({"LOCALAPPDATA": r"C:\Users\ann\AppData\Local"}, "nt") == \
        PureWindowsPath(r"C:\Users\ann\AppData\Local\stylecam")
    assert user_cache_dir({}, "nt", r"C:\Users\ann") == PureWindowsPath(r"C:\Users\ann\AppData\Local\stylecam")


def test_engines_default_root_is_the_application_cache_root(tmp_path, monkeypatch):
    """engines cannot import realtime, so it keeps its own documented default: it must agree with cache_root."""
    from engines.cache import default_cache_root
    from engines.cache import user_cache_dir as engines_user_cache_dir
    from realtime.files import cache_root, user_cache_dir

    for env in ({"STYLECAM_CACHE": str(tmp_path / "env")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        for name in ("STYLECAM_CACHE", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert default_cache_root() == cache_root() and default_cache_root("x") == cache_root("x")
    for environ, os_name, home in (({}, "posix", "/h"), ({"XDG_CACHE_HOME": "/x"}, "posix", "/h"), ({}, "nt", r"C:\h"),
                                   ({"LOCALAPPDATA": r"D:\l"}, "nt", None)):
        assert engines_user_cache_dir(environ, os_name, home) == user_cache_dir(environ, os_name, home)


def test_every_cache_lives_under_the_one_root(tmp_path, monkeypatch):
    """The face model, URL LoRAs and generated tokenizers all sit under cache_root() (one function decides)."""
    from realtime.config import LoraSpec
    from realtime.diffusion import lora
    from realtime.vision.face import face_model_cache_dir

    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path))
    assert face_model_cache_dir() == tmp_path / "models"
    assert lora._url_target("https://example.org/a/b.safetensors?x=1").parent.parent == tmp_path / "loras"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert lora.local_lora(LoraSpec("https://example.org/a/b.safetensors")) is None  # not cached, no download


# ---------------------------------------------------------------------------------------------------------- downloads
class _Response(io.BytesIO):
    """What urlopen returns, from bytes (with an optional failure after the first block)."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise urllib.error.URLError("connection reset")
        return super().read(n)


def _serve(monkeypatch, response):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: response)


def test_download_is_atomic_and_verified(tmp_path, monkeypatch):
    from realtime.files import download_file

    payload = b"\x07" * 3000
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "sub" / "model.bin"
    _serve(monkeypatch, _Response(payload))
    assert download_file("https://x/model.bin", dest, size=len(payload), sha256=digest) == dest
    assert dest.read_bytes() == payload and sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert _mode(dest) == _mode(plain)  # not mkstemp's 0600

    for response, match in ((_Response(b"\x08" * 3000), "3000 bytes, expected 3000 with sha256"),
                            (_Response(payload + b"more"), "3001 bytes, expected 3000")):
        _serve(monkeypatch, response)
        with pytest.raises(BadInputFile, match=match):
            download_file("https://x/model.bin", dest, size=len(payload), sha256=digest)
        assert dest.read_bytes() == payload  # the old file untouched
    _serve(monkeypatch, _Response(payload, fail_after=1))
    with pytest.raises(urllib.error.URLError):
        download_file("https://x/other.bin", tmp_path / "sub" / "other.bin")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]  # no temporary, no partial file

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write in"):
        download_file("https://x/model.bin", blocker / "model.bin")


def test_lora_url_download_goes_through_the_atomic_helper(tmp_path, monkeypatch):
    from realtime.config import LoraSpec
    from realtime.diffusion import lora
    from realtime.errors import LoraError

    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    url = "https://example.org/loras/style.safetensors"
    _serve(monkeypatch, _Response(b"\x01" * 100, fail_after=10))
    with pytest.raises(LoraError, match="could not be downloaded"):
        lora.resolve_lora(LoraSpec(url))
    target = lora._url_target(url)
    assert not target.exists() and list(target.parent.iterdir()) == []
    _serve(monkeypatch, _Response(b"\x01" * 100))
    assert lora.resolve_lora(LoraSpec(url)) == target and target.read_bytes() == b"\x01" * 100
