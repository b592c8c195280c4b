"""Quality metrics (realtime.research.metrics, realtime.research.evaluation, realtime.research.clip_score) and scripts/evaluate.py, offline on CPU.

Constructed cases with known answers: identical images score perfectly; degraded ones score lower; a clip built by
translating skimage's astronaut on a canvas (true motion known) has near-zero warp error for an output that moves with
it and a clearly higher one for an output that flickers.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.errors import BadInputFile, InputNotFound, ModelNotFound, UsageError
from realtime.research.metrics import (
    FlowEstimator,
    MetricSettings,
    box_iou,
    canny_edges,
    edge_f1,
    flicker_index,
    luma,
    match_size,
    ssim_luma,
    warp_error,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "evaluate.py"


@pytest.fixture()
def face_model(monkeypatch: pytest.MonkeyPatch, face_model_path: Path) -> Path:
    """conftest's face model (STYLECAM_FACE_MODEL), set in the environment for the script."""
    monkeypatch.setenv("STYLECAM_FACE_MODEL", str(face_model_path))
    return face_model_path


def shifted_clip(image: np.ndarray, n: int = 8, size: tuple[int, int] = (256, 192), step: tuple[int, int] = (3, 1)):
    """``n`` frames (HxWx3 uint8 RGB) of ``image`` scaled to 160x160 and translated by ``step`` px per frame on a grey
    canvas of ``size`` (W, H): the true motion of every pixel is known."""
    w, h = size
    src = cv2.resize(image, (160, 160), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(n):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x, y = 20 + step[0] * t, 12 + step[1] * t
        canvas[y : y + 160, x : x + 160] = src
        frames.append(canvas)
    return frames


def brighten(image: np.ndarray, delta: int) -> np.ndarray:
    return np.clip(image.astype(np.int16) + delta, 0, 255).astype(np.uint8)


def mean_over_pairs(fn, ins, outs):
    return float(np.mean([fn(ins[t - 1], ins[t], outs[t - 1], outs[t]) for t in range(1, len(ins))]))


# ------------------------------------------------------------------------------------------------------------- structure


def test_identical_images_score_perfectly(astronaut):
    e = canny_edges(astronaut)
    assert e.dtype == bool and e.shape == astronaut.shape[:2] and 0.01 < e.mean() < 0.3
    score = edge_f1(e, e)
    assert (score.precision, score.recall, score.f1) == (1.0, 1.0, 1.0)
    assert ssim_luma(astronaut, astronaut) == pytest.approx(1.0, abs=1e-9)


def test_degraded_outputs_score_lower(astronaut):
    rng = np.random.default_rng(0)
    noisy = np.clip(astronaut + rng.normal(0, 40, astronaut.shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 3)
    e = canny_edges(astronaut)
    s_noisy, s_blur = edge_f1(e, canny_edges(noisy)), edge_f1(e, canny_edges(blurred))
    assert s_noisy.f1 < 0.9 and s_noisy.precision < 0.8 and s_noisy.recall > 0.9  # noise invents edges
    assert s_blur.f1 < 0.5 and s_blur.recall < 0.3  # blur loses them
    assert ssim_luma(astronaut, noisy) < 0.7
    assert ssim_luma(astronaut, blurred) < 0.85
    assert ssim_luma(astronaut, noisy) > ssim_luma(astronaut, 255 - astronaut)


def test_ssim_matches_skimage_gaussian_ssim(astronaut):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    other = np.clip(astronaut + rng.normal(0, 15, astronaut.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(luma(astronaut), luma(other), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert ssim_luma(astronaut, other) == pytest.approx(ref, abs=1e-4)


def test_edge_f1_tolerance_and_empty_maps():
    a = np.zeros((40, 40), bool)
    a[10:30, 20] = True
    b = np.roll(a, 1, axis=1)  # the same line one pixel to the right
    assert edge_f1(a, b, tolerance=1).f1 == 1.0
    assert edge_f1(a, b, tolerance=0).f1 == 0.0
    empty = np.zeros_like(a)
    assert edge_f1(empty, empty).f1 == 1.0
    assert edge_f1(a, empty).f1 == 0.0
    half = a.copy()
    half[20:30, 20] = False  # the output keeps half of the input's edge
    s = edge_f1(a, half, tolerance=0)
    assert s.precision == 1.0 and s.recall == pytest.approx(0.5) and s.f1 == pytest.approx(2 / 3)
    assert edge_f1(a, half).recall == pytest.approx(11 / 20)  # the tolerance reaches one pixel past the cut


def test_match_size_covers_and_centre_crops(astronaut):
    same, resized = match_size(astronaut, astronaut)
    assert same is astronaut and not resized
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    back, resized = match_size(big, astronaut)
    assert resized and back.shape == astronaut.shape
    assert ssim_luma(astronaut, back) > 0.9
    wide = astronaut[:, :, :]
    out, _ = match_size(np.ascontiguousarray(wide[128:384]), astronaut)  # 512x256 -> cover 512x512 = centre crop
    assert out.shape == astronaut.shape
    with pytest.raises(BadInputFile):
        match_size(np.zeros((4, 4, 3), np.uint8), astronaut)


def test_settings_are_validated():
    with pytest.raises(UsageError, match="flow"):
        MetricSettings(flow="lucas")
    with pytest.raises(UsageError, match="edge_tolerance"):
        MetricSettings(edge_tolerance=-1)
    with pytest.raises(UsageError, match="canny_blur"):
        MetricSettings(canny_blur=4)
    with pytest.raises(UsageError, match="static_threshold"):
        MetricSettings(static_threshold=300)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


# -------------------------------------------------------------------------------------------------------------- temporal


def test_warp_error_near_zero_when_output_moves_with_input(astronaut):
    ins = shifted_clip(astronaut)
    flow = FlowEstimator("dis")
    err = lambda a, b, c, d: warp_error(a, b, c, d, flow=flow).error  # noqa: E731
    same = mean_over_pairs(err, ins, ins)
    stylized = [255 - f for f in ins]  # a per-pixel restyle: still moves exactly with the input
    restyled = mean_over_pairs(err, ins, stylized)
    flicker = [brighten(f, 20 if t % 2 else -20) for t, f in enumerate(ins)]
    flickering = mean_over_pairs(err, ins, flicker)
    rng = np.random.default_rng(2)
    noisy = [np.clip(f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8) for f in ins]
    assert same < 0.005 and restyled < 0.005
    assert flickering > 0.1 and flickering > 20 * same
    assert mean_over_pairs(err, ins, noisy) > 5 * same
    r = warp_error(ins[0], ins[1], ins[0], ins[1], flow=flow)
    assert 0.8 < r.valid_fraction <= 1.0


def test_warp_error_of_a_frozen_output_is_high(astronaut):
    """An output that does not move while the input does is inconsistent with the input's motion."""
    ins = shifted_clip(astronaut, step=(4, 0))
    frozen = [ins[0]] * len(ins)
    err = mean_over_pairs(lambda a, b, c, d: warp_error(a, b, c, d).error, ins, frozen)
    assert err > 0.02


def test_farneback_flow_also_works(astronaut):
    ins = shifted_clip(astronaut, n=3)
    s = MetricSettings(flow="farneback")
    assert warp_error(ins[0], ins[1], ins[0], ins[1], s).error < 0.01


def test_flicker_index_static_and_flickering(astronaut):
    still = [astronaut] * 4
    r = flicker_index(still[0], still[1], still[0], still[1])
    assert r.index == 0.0 and r.static_fraction == 1.0
    flick = [brighten(astronaut, 10 if t % 2 else -10) for t in range(4)]
    fi = mean_over_pairs(lambda a, b, c, d: flicker_index(a, b, c, d).index, still, flick)
    assert fi > 0.05
    ins = shifted_clip(astronaut)  # moving subject on a static background: only the background is static
    r = flicker_index(ins[0], ins[1], ins[0], ins[1])
    assert 0.2 < r.static_fraction < 0.9 and r.index < 0.005


# ----------------------------------------------------------------------------------------------------------------- faces


def test_face_preservation_identical_and_faceless(astronaut, face_model):
    from realtime.research.evaluation import EvalOptions, FacePairScorer, open_face_scorer

    scorer, reason = open_face_scorer(EvalOptions(face_model=face_model))
    assert reason is None and isinstance(scorer, FacePairScorer)
    try:
        for t in range(3):
            scorer.add(astronaut, astronaut, t / 30)
        metrics, reasons, counts = scorer.result()
    finally:
        scorer.close()
    assert metrics["face_preservation"] == 1.0 and metrics["face_iou"] == pytest.approx(1.0, abs=1e-6)
    assert counts["face_frames_with_input_face"] == 3 and not reasons

    faceless = np.full_like(astronaut, 128)
    scorer = FacePairScorer(face_model)
    try:
        scorer.add(astronaut, faceless, 0.0)
        metrics, reasons, _ = scorer.result()
    finally:
        scorer.close()
    assert metrics["face_preservation"] == 0.0 and metrics["face_iou"] is None and "face_iou" in reasons


def test_face_metrics_off_unresolvable_and_explicit_missing_model(tmp_path, monkeypatch, astronaut):
    from realtime.research.evaluation import EvalOptions, evaluate_images, open_face_scorer

    assert open_face_scorer(EvalOptions(face=False)) == (None, "turned off (--no-face)")
    with pytest.raises(ModelNotFound):
        open_face_scorer(EvalOptions(face_model=tmp_path / "missing.tflite"))
    # No explicit model, none in the environment or the (empty) cache, offline: skipped with the reason, not an error.
    monkeypatch.delenv("STYLECAM_FACE_MODEL", raising=False)
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scorer, reason = open_face_scorer(EvalOptions())
    assert scorer is None and "--face-model" in reason
    png = write_png(tmp_path / "a.png", astronaut)
    report = evaluate_images(png, png, EvalOptions(clip=False))
    assert report["metrics"]["face_preservation"] is None and "--face-model" in report["reasons"]["face_iou"]
    assert report["metrics"]["ssim"] == pytest.approx(1.0) and report["settings"]["face"] is None


# ------------------------------------------------------------------------------------------------------------------ CLIP


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIPModel (32px images) with a byte-level tokenizer, saved like a hub snapshot."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from realtime.diffusion.tokenizer import bytes_to_unicode

    chars = bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    eos = vocab["<|endoftext|>"]
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    path = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_clip_score_with_tiny_model(tiny_clip_dir, astronaut):
    from realtime.research.clip_score import ClipScorer, clip_preprocess

    x = clip_preprocess(astronaut[:, :400], 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    with ClipScorer(str(tiny_clip_dir), "an anime portrait") as scorer:
        a, b = scorer.score(astronaut), scorer.score(255 - astronaut)
        assert -1.0 <= a <= 1.0 and a == scorer.score(astronaut)
        assert a != b
        assert scorer.describe()["image_size"] == 32


def test_clip_unavailable_is_error_when_asked_and_null_otherwise(monkeypatch, astronaut, tmp_path):
    import realtime.research.clip_score as clipscore
    from realtime.research.evaluation import EvalOptions, open_clip_scorer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(clipscore, "DEFAULT_CLIP_MODEL", "stylecam-tests/no-such-clip")
    scorer, reason = open_clip_scorer(EvalOptions())
    assert scorer is None and "no CLIP weights" in reason
    with pytest.raises(ModelNotFound, match="no-such-clip"):
        open_clip_scorer(EvalOptions(prompt="a watercolor portrait"))
    with pytest.raises(ModelNotFound):
        open_clip_scorer(EvalOptions(clip_model=str(tmp_path)))  # an empty directory


# ------------------------------------------------------------------------------------------------------ files and the CLI


def write_png(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(rgb).save(path)
    return path


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        stream.options = {"crf": "8", "preset": "ultrafast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_images_writes_json_and_markdown(tmp_path, astronaut, face_model, tiny_clip_dir, capsys):
    inp = write_png(tmp_path / "in.png", astronaut)
    posterized = (astronaut // 64) * 64 + 32  # a crude "style": 4 levels per channel, half the resolution
    out = write_png(tmp_path / "out.png", cv2.resize(posterized, (256, 256), interpolation=cv2.INTER_AREA))
    js = tmp_path / "report.json"
    rc = load_script().main(["images", str(inp), str(out), "--json", str(js), "--clip-model", str(tiny_clip_dir)])
    assert rc == 0
    report = json.loads(js.read_text())
    assert {"mode", "inputs", "settings", "metrics", "reasons", "notes", "frames"} <= set(report)
    assert report["mode"] == "images" and report["inputs"]["output"]["width"] == 256
    assert report["inputs"]["resized_output"] == {"from": [256, 256], "to": [512, 512], "method": "cover + centre crop"}
    m = report["metrics"]
    assert set(m) == {"edge_f1", "edge_precision", "edge_recall", "ssim", "face_preservation", "face_iou", "clip_score",
                      "clip_score_input"}
    assert 0.2 < m["edge_f1"] < 0.95 and 0.5 < m["ssim"] < 0.9  # same picture, coarser: structure partly kept
    assert m["face_preservation"] == 1.0 and m["face_iou"] > 0.8 and -1 <= m["clip_score"] <= 1
    assert report["settings"]["clip"]["model"] == str(tiny_clip_dir)
    table = capsys.readouterr().out
    assert table.count("\n| ") >= 9 and "| edge_f1 | " in table and "resized to the input size" in table

    md = tmp_path / "table.md"
    assert load_script().main(["images", str(inp), str(inp), "--md", str(md), "--no-clip", "--no-face"]) == 0
    text = md.read_text()
    assert "| warp_error" not in text and "Mean \\|output(t)" not in text  # images: no temporal rows
    assert "| edge_f1 | 1.0000 |" in text and "| ssim | 1.0000 |" in text and "n/a: turned off (--no-face)" in text
    assert capsys.readouterr().out == ""


def test_cli_clip_on_generated_videos(tmp_path, astronaut, face_model, capsys):
    ins = shifted_clip(astronaut, n=10)
    inp = write_mp4(tmp_path / "in.mp4", ins)
    steady = write_mp4(tmp_path / "steady.mp4", ins)
    flicker = [cv2.resize(brighten(f, 25 if t % 2 else -25), (512, 384)) for t, f in enumerate(ins[:8])]
    flick = write_mp4(tmp_path / "flicker.mp4", flicker)
    script = load_script()
    js1, js2 = tmp_path / "steady.json", tmp_path / "flicker.json"
    assert script.main(["clip", str(inp), str(steady), "--json", str(js1), "--no-clip"]) == 0
    assert script.main(["clip", str(inp), str(flick), "--json", str(js2), "--no-clip", "--every", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 * 13  # header + 12 metrics, twice
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 4 for row in rows)  # '|' inside cells is escaped
    a, b = json.loads(js1.read_text()), json.loads(js2.read_text())
    assert a["frames"]["compared"] == 10 and a["frames"]["pairs"] == 9 and a["notes"] == []
    assert a["metrics"]["edge_f1"] == pytest.approx(1.0, abs=0.02) and a["metrics"]["ssim"] > 0.98
    assert a["metrics"]["warp_error"] < 0.01 and a["metrics"]["flicker_index"] < 0.01
    assert a["metrics"]["face_preservation"] == 1.0 and a["metrics"]["face_iou"] > 0.95
    assert a["frames"]["face_frames_checked"] == 10 and a["frames"]["face_frames_with_input_face"] >= 8
    assert b["metrics"]["warp_error"] > 0.1 and b["metrics"]["flicker_index"] > 0.1
    assert b["frames"]["compared"] == 8 and b["frames"]["shorter"] == "output"
    assert any("more frames" in n for n in b["notes"]) and any("resized" in n for n in b["notes"])
    assert b["inputs"]["resized_output"]["from"] == [512, 384]


def test_bad_inputs_raise_input_errors(tmp_path, astronaut):
    from realtime.research.evaluation import EvalOptions, evaluate_clip, evaluate_images

    png = write_png(tmp_path / "a.png", astronaut)
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    opts = EvalOptions(face=False, clip=False)
    with pytest.raises(InputNotFound):
        evaluate_images(tmp_path / "missing.png", png, opts)
    with pytest.raises(BadInputFile, match="not a readable image"):  # realtime.io.images.read_image's message
        evaluate_images(png, text, opts)
    with pytest.raises(BadInputFile):
        evaluate_clip(text, text, opts)
    with pytest.raises(BadInputFile, match="still image"):
        evaluate_clip(png, png, opts)  # read as `stylecam clip` reads: a still image is not a video
    one = write_mp4(tmp_path / "one.mp4", [astronaut[:64, :64]])
    with pytest.raises(BadInputFile, match="at least 2"):
        evaluate_clip(one, one, opts)


def test_clip_frames_are_read_as_clip_reads_them_with_the_rotation_applied(tmp_path):
    """evaluate_clip reads through realtime.io.videofile.FileSource: a clip with a 90 degree display matrix is compared
    as displayed (120x160), so it matches a stored-upright copy of itself; frame by frame it equals FileSource."""
    from media_files import make_clip

    from realtime.io.videofile import FileSource
    from realtime.research.evaluation import EvalOptions, VideoReader, evaluate_clip

    rotated = make_clip(tmp_path / "rotated.mp4", n=6, rotation=90, options={"crf": "0"})
    with VideoReader(rotated) as reader, FileSource(rotated) as source:
        assert (reader.info["width"], reader.info["height"]) == (120, 160)
        frames = list(reader)
        expected = []
        while (f := source.read()) is not None:
            expected.append(f.image)
    assert len(frames) == 6 and all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))
    assert frames[0].shape == (160, 120, 3)
    upright = write_mp4(tmp_path / "upright.mp4", frames)
    report = evaluate_clip(rotated, upright, EvalOptions(face=False, clip=False))
    assert "resized_output" not in report["inputs"] and report["frames"]["compared"] == 6
    assert report["metrics"]["ssim"] > 0.98


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=120)


def test_script_missing_file_exits_2_with_one_line(tmp_path, astronaut):
    png = write_png(tmp_path / "a.png", astronaut)
    r = run_script("images", str(tmp_path / "nope.png"), str(png), "--no-face", "--no-clip")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "input not found:" in lines[0] and "nope.png" in lines[0]  # files.check_input_file
    # a still image is not a clip: found before any model (CLIP, face) is looked for
    r = run_script("clip", str(png), str(png), "--no-face", "--prompt", "a watercolor", "--clip-model", "stylecam-tests/no-clip")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "still image" in r.stderr
    mp4 = write_mp4(tmp_path / "a.mp4", [astronaut[:64, :64]] * 2)
    r = run_script("clip", str(mp4), str(mp4), "--no-face", "--prompt", "a watercolor", "--clip-model", "stylecam-tests/no-clip")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no-clip" in r.stderr


def test_script_help_explains_every_metric():
    r = run_script("clip", "--help")
    assert r.returncode == 0
    for name in ("edge_f1", "ssim", "warp_error", "flicker_index", "face_preservation", "face_iou", "clip_score"):
        assert f"  {name}\n" in r.stdout
