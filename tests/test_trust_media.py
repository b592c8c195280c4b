"""Issue 19, silent corruption and supported-looking outputs: every input conversion keeps the picture and the timing
(or refuses in one line), and every video suffix stylecam accepts is written with an encoder its container takes.

- images of any Pillow mode (16-bit and 32-bit greyscale, float, palette, transparency, CMYK) come out as the same
  picture in uint8 RGB (``realtime.io.images.read_image``, which evaluation and every command read through);
- AVI keeps decode order only: a clip written to or read from AVI keeps its frames in order with increasing
  timestamps (MJPEG AVI in, AVI out; an AVI with B-frames in);
- ``clip``/``live`` to .webm/.mkv/.mov/.avi/.mp4 with no ``--codec`` work; an image suffix as a video output is the
  one-line exit 2 that an unknown suffix gets, before any model loads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media_files import frame_image, make_clip
from realtime.errors import BadInputFile
from realtime.io.images import read_image
from cli_run import run_cli

TINY = ["--model", "random:tiny", "--size", "64x64"]




# ------------------------------------------------------------------------------------------------------ images
def ramp16(h: int = 32, w: int = 64) -> np.ndarray:
    """A horizontal 16-bit ramp 0..65535."""
    return np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))


def expected8(a16: np.ndarray) -> np.ndarray:
    return np.rint(a16.astype(np.float64) / 65535 * 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["png16", "tiff16", "tiff32", "pgm16", "float01"])
def test_high_bit_depth_greyscale_keeps_its_picture(tmp_path, kind):
    from PIL import Image

    a = ramp16()
    path = tmp_path / {"png16": "g.png", "tiff16": "g.tif", "tiff32": "g32.tif", "pgm16": "g.pgm",
                       "float01": "f.tif"}[kind]
    if kind == "tiff32":
        Image.fromarray(a.astype(np.int32), "I").save(path)
    elif kind == "float01":
        Image.fromarray((a / 65535).astype(np.float32), "F").save(path)
    else:
        Image.fromarray(a).save(path)
    rgb = read_image(path)
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0].astype(int) - expected8(a)).max() <= 1  # scaled, not clipped to white
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb[:, 0].max() <= 1 and rgb[:, -1].min() >= 254 and abs(rgb.mean() - 127.5) < 3


def test_sixteen_bit_png_is_read_right_by_the_evaluation_too(tmp_path):
    from PIL import Image

    from realtime.pipeline.preflight import check_image

    path = tmp_path / "dark16.png"
    a = (ramp16() // 8).astype(np.uint16)  # a dark 16-bit picture: 0..8191
    Image.fromarray(a).save(path)
    assert np.abs(check_image(path)[..., 1].astype(int) - expected8(a)).max() <= 1


def test_modes_keep_their_picture(tmp_path):
    from PIL import Image

    rgb = frame_image(3, 64, 48)
    cases = {
        "palette.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=255),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "cmyk.tif": Image.fromarray(rgb).convert("CMYK"),
        "grey.png": Image.fromarray(rgb).convert("L"),
    }
    for name, im in cases.items():
        im.save(tmp_path / name, **({"quality": 95} if name.endswith(".jpg") else {}))
        got = read_image(tmp_path / name).astype(int)
        want = np.asarray(im.convert("RGB")).astype(int) if name.startswith("grey") else rgb.astype(int)
        assert np.abs(got - want).mean() < 8, name


def test_transparency_is_composited_not_dropped(tmp_path):
    from PIL import Image

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)  # hidden colour under full transparency
    rgba[:16, :, 3] = 0
    rgba[16:, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    la = np.zeros((32, 32, 2), np.uint8)
    la[..., 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    got = read_image(tmp_path / "a.png")
    assert (got[:16] == 255).all()  # transparent: the white background, not the hidden green
    assert (got[16:] == (10, 200, 30)).all()
    assert (read_image(tmp_path / "la.png") == 255).all()


def test_every_pillow_mode_converts():
    from PIL import Image

    from realtime.io.images import to_rgb8

    for mode in ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I",
                 "I;16", "I;16B", "I;16L", "I;16N", "F"):
        rgb = to_rgb8(Image.new(mode, (16, 12)), mode)
        assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8, mode


@pytest.mark.parametrize("values", [[np.nan, 0.5], [-3.0, 1.0], [0.0, 1e6]])
def test_float_pixels_that_are_no_picture_are_refused_in_one_line(tmp_path, values):
    from PIL import Image

    a = np.full((16, 16), values[1], np.float32)
    a[0, 0] = values[0]
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    with pytest.raises(BadInputFile) as info:
        read_image(tmp_path / "f.tif")
    assert "\n" not in str(info.value) and "f.tif" in str(info.value)


def test_image_command_on_a_16_bit_png(capsys, tmp_path):
    from PIL import Image

    src = tmp_path / "g16.png"
    Image.fromarray(ramp16(64, 64)).save(src)
    code, err = run_cli(capsys, ["image", str(src), "-o", str(tmp_path / "o.png"), "--style", "none"])
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    assert abs(out.mean() - 127.5) < 5 and out[:, :4].max() < 16


# ------------------------------------------------------------------------------------------------------ AVI timing
def decoded(path: Path) -> tuple[list[int], list[float]]:
    """(pts in the order the decoder returns frames, the red level of each frame's lower right part)."""
    import av

    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [f.pts for f in frames], [float(f.to_ndarray(format="rgb24")[40:, 60:, 0].mean()) for f in frames]


N = 18  # frame_image's red level rises with the index for the first 20 frames: the frame order is visible


@pytest.mark.parametrize("suffix", [".avi", ".mxf", ".mp4"])
def test_mjpeg_avi_clip_keeps_frame_order_and_timestamps(capsys, tmp_path, suffix):
    """AVI (and MXF) keep decode order only: written with B-frames, their frames came back with scrambled times."""
    src = make_clip(tmp_path / "in.avi", n=N, size=(96, 64), codec="mjpeg", pix_fmt="yuvj420p")
    pts_in, red_in = decoded(src)
    assert pts_in == sorted(pts_in) and red_in == sorted(red_in)
    for out in (tmp_path / f"out{suffix}",):
        code, err = run_cli(capsys, ["clip", str(src), "-o", str(out), "--style", "none", "--no-face", "-q"])
        assert code == 0, err
        pts, red = decoded(out)
        assert len(pts) == N, out
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), (out, pts)  # shown in order, none repeated
        assert all(b > a for a, b in zip(red, red[1:], strict=False)), (out, red)  # the frames in their order


@pytest.mark.parametrize("suffix", [".avi", ".mxf"])
def test_b_frames_in_a_decode_order_container_are_read_in_order(tmp_path, suffix):
    """An AVI (MXF) whose H.264 has B-frames (what other tools write): frames in order, increasing timestamps, none
    lost or counted as undecodable."""
    from realtime.io.videofile import FileSource

    src = make_clip(tmp_path / f"b{suffix}", n=N, size=(96, 64), options={"bf": "3", "g": "12"})
    with FileSource(src, paced=False) as source:
        frames = []
        while (f := source.read()) is not None:
            frames.append(f)
    assert len(frames) == N and not any(f.repeat for f in frames)
    pts = [f.pts for f in frames]
    red = [float(f.image[40:, 60:, 0].mean()) for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    assert all(b > a for a, b in zip(red, red[1:], strict=False)), red


# ------------------------------------------------------------------------------------------------------ containers
@pytest.mark.parametrize("suffix", [".webm", ".mkv", ".mov", ".avi", ".mp4"])
def test_clip_to_every_video_suffix_with_the_default_codec(capsys, tmp_path, suffix):
    src = make_clip(tmp_path / "in.mp4", n=6, size=(96, 64))
    out = tmp_path / f"out{suffix}"
    code, err = run_cli(capsys, ["clip", str(src), "-o", str(out), "--style", "none", "--no-face", "-q"])
    assert code == 0, err
    pts, _ = decoded(out)
    assert len(pts) == 6 and pts == sorted(pts)


def test_live_to_webm_with_the_default_codec(capsys, tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=6, size=(96, 64))
    out = tmp_path / "live.webm"
    code, err = run_cli(capsys, ["live", "--source", str(src), "--output", str(out), "--output-size", "96x64",
                                 "--style", "none", "--no-face", "--no-stdin", "--no-pace", "--frames", "4", "-q"])
    assert code == 0, err
    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        assert len(list(c.decode(video=0))) == 4




@pytest.mark.parametrize("suffix", [".png", ".gif", ".jpg", ".webp", ".bmp", ".tiff", ".apng",
                                    ".m4a", ".mka", ".mp3", ".wav"])
@pytest.mark.parametrize("command", ["clip", "live"])
def test_picture_or_sound_suffix_as_a_video_output_is_one_line_exit_2(capsys, tmp_path, no_model_load, suffix,
                                                                       command):
    src = make_clip(tmp_path / "in.mp4", n=3, size=(96, 64))
    out = tmp_path / f"out{suffix}"
    argv = (["clip", str(src), "-o", str(out)] if command == "clip" else
            ["live", "--source", str(src), "--output", str(out), "--no-stdin", "--frames", "1"])
    code, err = run_cli(capsys, [*argv, "--no-face", *TINY])
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("stylecam: error: "), err
    kind = "audio format" if suffix in (".m4a", ".mka", ".mp3", ".wav") else "image format"
    assert kind in lines[0] and "out" + suffix in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
