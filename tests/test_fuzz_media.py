"""Fuzz the media inputs (hypothesis): small valid files made here (an MP4 and an MKV with PyAV, a PNG and a JPEG with
Pillow), damaged (truncated at a random offset, bits flipped in the header or the payload, zero length, an absurd
declared size such as a PNG whose IHDR claims 100000x100000), saved under a right or a wrong extension, and fed to
``stylecam image``, ``clip`` and ``live --source ... --style none --output none --frames N`` in a real process (its
real stderr, under a timeout).

Every case: exit 0, 1 or 2; no traceback; a failure is one line on stderr and leaves the output directory empty
(nothing half-written); a success leaves exactly the finished output there (it opens); the input is never changed;
and each case ends within ``HANG_S`` seconds.

Budget: ``CI_EXAMPLES`` cases in the default suite (about 0.3-0.6 s each here); ``STYLECAM_FUZZ_EXAMPLES=N pytest -m fuzz``
for more.
"""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import ci_settings, long_run, long_settings
from media_files import frame_image, make_clip

CI_EXAMPLES = 60
HANG_S = 60
EXTENSIONS = [".png", ".jpg", ".mp4", ".mkv", ".webm", ".gif", ".txt", ""]


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz-seeds")
    make_clip(d / "s.mp4", n=6, size=(64, 48))
    make_clip(d / "s.mkv", n=6, size=(64, 48))
    img = frame_image(3, 64, 48)
    return {"mp4": (d / "s.mp4").read_bytes(), "mkv": (d / "s.mkv").read_bytes(), "png": _png(img),
            "jpg": _jpeg(img)}


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a PNG) whose IHDR claims ``width`` x ``height`` (its CRC fixed, so only the size is absurd)."""
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:16] + bytes(ihdr) + crc + data[33:]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) whose SOF0 marker claims ``width`` x ``height``."""
    at = data.find(b"\xff\xc0")
    if at < 0:
        return data
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


@st.composite
def damaged(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, bytes, str]:
    """(seed kind, damaged bytes, description)."""
    kind = draw(st.sampled_from(sorted(seeds)))
    data = seeds[kind]
    how = draw(st.sampled_from(["truncate", "flip-header", "flip-payload", "zero", "size", "garbage-tail"]))
    if how == "truncate":
        at = draw(st.integers(0, len(data) - 1))
        return kind, data[:at], f"{how}@{at}"
    if how in ("flip-header", "flip-payload"):
        lo, hi = (0, min(64, len(data))) if how == "flip-header" else (min(64, len(data) - 1), len(data))
        out = bytearray(data)
        flips = draw(st.lists(st.tuples(st.integers(lo, hi - 1), st.integers(0, 7)), min_size=1, max_size=8))
        for pos, bit in flips:
            out[pos] ^= 1 << bit
        return kind, bytes(out), f"{how}{flips}"
    if how == "zero":
        return kind, b"", how
    if how == "size":
        w, h = draw(st.sampled_from([(100000, 100000), (65535, 65535), (0, 48), (64, 0), (1, 100000), (2**31 - 1, 1)]))
        if kind == "png":
            return kind, png_with_size(data, w, h), f"{how}{w}x{h}"
        if kind == "jpg":
            return kind, jpeg_with_size(data, min(w, 65535), min(h, 65535)), f"{how}{w}x{h}"
        out = bytearray(data)  # a video: its width/height fields are somewhere in the header: scribble there
        at = draw(st.integers(0, max(0, min(len(data), 600) - 4)))
        out[at:at + 4] = struct.pack(">I", w)
        return kind, bytes(out), f"{how}@{at}"
    tail = draw(st.binary(min_size=1, max_size=64))
    return kind, data + tail, how


def stylecam(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STYLECAM_OFFLINE="1", PYTHONFAULTHANDLER="1")
    try:
        return subprocess.run([sys.executable, "-m", "realtime.cli", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=HANG_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"stylecam {' '.join(argv)}: no end within {HANG_S} s (a hang)") from e


def command_for(kind: str, src: Path, out_dir: Path, pick: int) -> tuple[list[str], Path | None]:
    """The command this case runs, and its output file (None for ``live --output none``)."""
    if kind in ("png", "jpg") and pick != 2:
        out = out_dir / "out.png"
        return ["image", str(src), "-o", str(out), "--style", "none", "-q"], out
    if pick == 0 or kind in ("png", "jpg"):
        out = out_dir / "out.mp4"
        return ["clip", str(src), "-o", str(out), "--style", "none", "--no-face", "-q"], out
    return ["live", "--source", str(src), "--style", "none", "--output", "none", "--frames", "3", "--no-face",
            "--no-stdin", "--no-pace", "-q"], None


def output_opens(path: Path) -> None:
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            im.load()
        return
    import av

    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 1, f"{path}: no frames"


def check_case(kind: str, data: bytes, how: str, ext: str, pick: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = root / f"in{ext}"
        src.write_bytes(data)
        out_dir = root / "out"
        out_dir.mkdir()
        argv, out = command_for(kind, src, out_dir, pick)
        r = stylecam(argv, root)
        case = f"{kind} {how} as {ext or 'no extension'}: stylecam {' '.join(argv[:1])} -> exit {r.returncode}"
        assert "Traceback" not in r.stderr and "Exception in thread" not in r.stderr, f"{case}\n{r.stderr}"
        assert r.returncode in (0, 1, 2), f"{case}\n{r.stderr}"
        assert src.read_bytes() == data, f"{case}: the input was changed"
        left = sorted(p.name for p in out_dir.iterdir())
        if r.returncode != 0:
            lines = r.stderr.splitlines()
            assert len(lines) == 1 and "error" in lines[0], f"{case}: not one line:\n{r.stderr}"
            assert left == [], f"{case}: left {left} behind"
        else:
            assert left == ([out.name] if out is not None else []), f"{case}: left {left}"
            if out is not None:
                output_opens(out)


def _fuzz(seeds: dict[str, bytes], decorate) -> None:
    @decorate
    @given(damaged(seeds), st.sampled_from(EXTENSIONS), st.integers(0, 2), st.booleans())
    def inner(case: tuple[str, bytes, str], ext: str, pick: int, own_ext: bool) -> None:
        kind, data, how = case
        check_case(kind, data, how, f".{kind}" if own_ext else ext, pick)

    inner()


def test_fuzz_media(seeds: dict[str, bytes]) -> None:
    _fuzz(seeds, ci_settings(CI_EXAMPLES))


@pytest.mark.fuzz
@long_run
def test_fuzz_media_long(seeds: dict[str, bytes]) -> None:
    _fuzz(seeds, long_settings())


def test_seeds_are_valid(seeds: dict[str, bytes]) -> None:
    """The undamaged seeds succeed through every command (so the damage is what the fuzzer tests)."""
    for kind in sorted(seeds):
        for pick in range(3):
            check_case(kind, seeds[kind], "none", f".{kind}", pick)


def test_png_claiming_100000x100000_is_one_line(seeds: dict[str, bytes], tmp_path: Path) -> None:
    """A PNG whose header claims 100000x100000 pixels: refused in one line (exit 2), nothing written, no memory blow-up."""
    src = tmp_path / "huge.png"
    src.write_bytes(png_with_size(seeds["png"], 100000, 100000))
    r = stylecam(["image", str(src), "-o", str(tmp_path / "o.png"), "--style", "none"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "huge.png" in r.stderr, r.stderr
    assert not (tmp_path / "o.png").exists()
