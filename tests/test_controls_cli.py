"""--control, --control-scale, --region, --background on image, clip, live and bench: bad input is one stderr line and
exit 2 before any model loads (no_model_load); good ones run (random:tiny, CPU) with each control and region."""
from __future__ import annotations

import numpy as np
import pytest

from cli_run import run_cli
from media_files import make_clip

TINY = ["--model", "random:tiny", "--size", "64x64"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    from PIL import Image

    d = tmp_path_factory.mktemp("controls")
    png = d / "astro.png"
    Image.fromarray(astronaut[::4, ::4]).save(png)
    fake = d / "beach.jpg"
    fake.write_text("not an image\n")
    return {"png": png, "clip": make_clip(d / "in.mp4", n=4, size=(96, 64)), "fake": fake, "dir": d}


BAD = {
    "unknown-control": (["--control", "canny,hed"], "unknown control 'hed'; choose from canny, pose, depth"),
    "scale-not-enabled": (["--control-scale", "canny=1.0,depth=0.5"], "the depth control is not enabled"),
    "bad-scale": (["--control", "depth", "--control-scale", "depth=lots"], "--control-scale depth='lots': not a number"),
    "pose-model-offline": (["--control", "pose"], "pose landmarker model is not cached"),
    "pose-model-missing": (["--control", "pose", "--pose-model", "nope.task"], "--pose-model"),
    "depth-model-offline": (["--control", "depth", "--model", "stylecam-tests/nothing", "--depth-model",
                             "stylecam-tests/no-depth"], "not in the Hugging Face cache"),
    "background-not-image": (["--region", "person", "--segment-model", "SEG", "--background", "FAKE"],
                             "not a readable image"),
    "background-needs-person": (["--background", "blur"], "--background 'blur' needs --region person"),
    "segment-model-offline": (["--region", "person"], "segmentation model is not cached"),
}


def _args(case: str, files, segment_model) -> tuple[list[str], str]:
    extra, needle = BAD[case]
    extra = [str(segment_model) if a == "SEG" else str(files["fake"]) if a == "FAKE" else a for a in extra]
    return (extra if "--model" in extra else [*TINY, *extra]), needle


def _one_line(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stylecam: error: ") and needle in lines[0], err


@pytest.mark.usefixtures("no_model_load")
@pytest.mark.parametrize("case", sorted(BAD))
def test_image_and_clip_bad_input(capsys, tmp_path, monkeypatch, files, segment_model_path, case):
    monkeypatch.delenv("STYLECAM_POSE_MODEL", raising=False)
    monkeypatch.delenv("STYLECAM_SEGMENT_MODEL", raising=False)
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))  # nothing cached
    extra, needle = _args(case, files, segment_model_path)
    code, err = run_cli(capsys, ["image", str(files["png"]), "-o", str(tmp_path / "x.png"), *extra])
    _one_line(code, err, needle)
    code, err = run_cli(capsys, ["clip", str(files["clip"]), "-o", str(tmp_path / "x.mp4"), "--no-face", *extra])
    _one_line(code, err, needle)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.mp4").exists()  # nothing written


@pytest.mark.usefixtures("no_model_load")
@pytest.mark.parametrize("case", ["unknown-control", "scale-not-enabled", "background-not-image"])
def test_bench_and_live_bad_input(capsys, tmp_path, files, segment_model_path, case):
    extra, needle = _args(case, files, segment_model_path)
    code, err = run_cli(capsys, ["bench", "--frames", "1", "--warmup", "0", *extra])
    _one_line(code, err, needle)
    code, err = run_cli(capsys, ["live", "--source", str(files["clip"]), "--output", "none", "--no-face",
                                 "--no-stdin", *extra])
    _one_line(code, err, needle)


@pytest.mark.parametrize("controls", ["canny,depth", "canny,pose,depth"])
def test_image_runs_with_the_controls_and_a_person_region(capsys, tmp_path, files, segment_model_path, request, controls):
    from realtime.io.images import read_image

    out = tmp_path / "all.png"
    pose = ["--pose-model", str(request.getfixturevalue("pose_task"))] if "pose" in controls else []  # skips without one
    code, err = run_cli(capsys, ["image", str(files["png"]), "-o", str(out), *TINY, "--control", controls,
                                 "--control-scale", "canny=1,depth=0.5", *pose,
                                 "--region", "person", "--segment-model", str(segment_model_path)])
    assert code == 0, err
    plain = tmp_path / "plain.png"  # the camera's own pixels through the same model-size crop and resize
    assert run_cli(capsys, ["image", str(files["png"]), "-o", str(plain), "--style", "none", "--size", "64x64"])[0] == 0
    img, kept = read_image(out), read_image(plain)
    assert img.shape == kept.shape
    # The photo's top corner is background: kept as it was, within 2 grey levels.
    assert np.abs(img[:8, :8].astype(int) - kept[:8, :8]).max() <= 2
    assert np.abs(img[90:, 40:80].astype(int) - kept[90:, 40:80]).mean() > 10  # her body: stylized
