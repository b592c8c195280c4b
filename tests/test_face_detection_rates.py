"""Face framing sees small faces and ignores faceless scenes (region tracking, multi-scale scan, confirmation).

Clips are built in memory from skimage's astronaut with a known affine motion in 1280x720 (face 70-100 px wide) plus a
faceless stretch, and from faceless skimage pictures (coffee, a cat, a rocket) drifting over a gradient. Rates are
asserted loosely; ``benchmarks/face_detection_rates.py`` measures them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.errors import InputNotFound, ModelNotFound, UsageError
from realtime.geometry import Size, centre_window
from realtime.vision.face import FaceDetector, FaceFramer, FramingConfig, face_model_range, resolve_face_model
from realtime.vision.framing import FaceBox
from realtime.vision.search import FaceSearch, roi_region, scan_regions

HD = Size(1280, 720)
FACE_XY = np.array([224.5, 129.5])  # the astronaut's face centre in the 512x512 image
FACE_W = 95.0
FACELESS = range(60, 80)
FULL_MODEL = Path(os.environ.get("STYLECAM_FACE_MODEL_FULL",
                                 Path(__file__).resolve().parents[2] / "shared/models/face_detection_full_range_sparse.tflite"))


def _background(size: Size) -> np.ndarray:
    yy, xx = np.mgrid[0:size.height, 0:size.width].astype(np.float32)
    return np.stack([90 + 60 * xx / size.width, 110 + 40 * yy / size.height, 150 - 50 * xx / size.width],
                    axis=-1).astype(np.uint8)


def _place(canvas: np.ndarray, img: np.ndarray, s: float, x: float, y: float, anchor: np.ndarray) -> None:
    m = np.array([[s, 0, x - s * anchor[0]], [0, s, y - s * anchor[1]]])
    cv2.warpAffine(img, m, (canvas.shape[1], canvas.shape[0]), dst=canvas, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)


def small_face_clip(astronaut: np.ndarray, n: int = 100) -> list[tuple[np.ndarray, tuple[float, float] | None]]:
    """(frame, true face centre or None): the face 70-100 px wide, swaying; no face in :data:`FACELESS`."""
    bg, out = _background(HD), []
    for i in range(n):
        frame = bg.copy()
        if i in FACELESS:
            out.append((frame, None))
            continue
        t = i / 30.0
        s = (85 + 15 * math.sin(2 * math.pi * t / 4.0)) / FACE_W
        x, y = 640 + 300 * math.sin(2 * math.pi * t / 5.0), 330 + 60 * math.sin(2 * math.pi * t / 3.0)
        _place(frame, astronaut, s, x, y, FACE_XY)
        out.append((frame, (x, y)))
    return out


def faceless_clip(n: int = 90) -> list[np.ndarray]:
    from skimage import data

    pictures, bg, out = [data.coffee(), data.chelsea(), data.rocket()], _background(HD), []
    for i in range(n):
        t, frame = i / 30.0, bg.copy()
        for k, pic in enumerate(pictures):
            x, y = 250 + 380 * k + 60 * math.sin(0.7 * t + k), 360 + 120 * math.cos(0.5 * t + 2 * k)
            _place(frame, pic, 0.6 + 0.2 * math.sin(t + k), x, y, np.array([pic.shape[1] / 2, pic.shape[0] / 2]))
        cv2.rectangle(frame, (int(100 + 8 * i) % 1200, 620), (int(100 + 8 * i) % 1200 + 90, 700), (40, 40, 200), -1)
        out.append(frame)
    return out


def _rates(framer: FaceFramer, clip) -> tuple[float, int, int]:
    """(share of face frames after the first 10 and after 10 frames of each return with the face found near its true
    place, faceless frames with a detection, faceless frames)."""
    hits = counted = false = 0
    since_face = 0
    for i, (frame, face) in enumerate(clip):
        framer.update(frame, i / 30.0)
        since_face = since_face + 1 if face is not None else 0
        if face is None:
            false += bool(framer.faces)
            continue
        if i >= 10 and since_face > 10:
            counted += 1
            hits += any(math.hypot(f.cx - face[0], f.cy - face[1]) < 0.5 * f.h for f in framer.faces)
    return hits / counted, false, sum(1 for _, f in clip if f is None)


@pytest.fixture(scope="module")
def clip(astronaut: np.ndarray):
    return small_face_clip(astronaut)


def test_small_faces_are_framed_and_the_faceless_stretch_is_not(clip, face_model_path: Path) -> None:
    with FaceDetector(face_model_path) as det:
        assert sum(bool(det.detect(f, i / 30.0)) for i, (f, _) in enumerate(clip[:10])) <= 1  # whole frames: blind
        with FaceFramer(FramingConfig(), HD, 1.0, detector=det) as framer:
            rate, false, faceless = _rates(framer, clip)
            assert framer.search.calls <= 2 * len(clip)  # about one detection per frame, two while scanning
    assert rate >= 0.9, rate
    assert false <= 1, (false, faceless)


@pytest.mark.skipif(not FULL_MODEL.is_file(), reason="no full-range face model (STYLECAM_FACE_MODEL_FULL)")
def test_full_range_model_frames_small_faces(clip, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLECAM_FACE_MODEL_FULL", str(FULL_MODEL))
    with FaceFramer(FramingConfig(face_range="full"), HD, 1.0) as framer:
        assert framer.search.input_side == 192 and len(framer.search.regions) < len(scan_regions(HD, "short"))
        rate, false, _ = _rates(framer, clip[:60])
    assert rate >= 0.9 and false == 0


def test_a_scene_without_people_is_not_framed(face_model_path: Path) -> None:
    frames = faceless_clip()
    centre = centre_window(HD, 1.0)
    with FaceDetector(face_model_path) as det:
        raw = sum(bool(det.detect(f, i / 30.0)) for i, f in enumerate(frames))
        with FaceFramer(FramingConfig(), HD, 1.0, detector=det) as framer:
            engaged = 0
            for i, f in enumerate(frames):
                win = framer.update(f, 10.0 + i / 30.0)
                engaged += framer.tracker.tracked is not None
    assert raw > 10  # the bare detector does fire on these pictures (what confirmation has to reject)
    assert engaged <= 0.03 * len(frames) and win == centre


# ------------------------------------------------------------------------------------------------- the logic, faked


class SquareDetector:
    """A stand-in detector that "sees" the white square of whatever picture it is given (crops and resizes included),
    score 0.95; with ``only`` set, only on those calls."""

    def __init__(self, only: set[int] | None = None) -> None:
        self.only, self.n = only, 0

    def detect(self, rgb: np.ndarray, t: float) -> list[FaceBox]:
        self.n += 1
        ys, xs = np.nonzero(rgb[..., 0] > 200)
        if not len(xs) or (self.only is not None and self.n not in self.only):
            return []
        return [FaceBox(float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                        float(ys.max() - ys.min() + 1), 0.95)]

    def close(self) -> None:
        pass


def _square_frame(x: int = 500, y: int = 300, side: int = 80) -> np.ndarray:
    f = np.zeros((HD.height, HD.width, 3), np.uint8)
    f[y:y + side, x:x + side] = 255
    return f


def test_a_face_is_followed_only_after_it_is_confirmed() -> None:
    cfg = FramingConfig(confirm_frames=3)
    with FaceFramer(cfg, HD, 1.0, detector=SquareDetector()) as framer:
        faces = [bool(framer.update(_square_frame(), i / 30.0)) and bool(framer.faces) for i in range(6)]
        assert faces == [False, False, True, True, True, True]
        (f,) = framer.faces
        assert f.cx == pytest.approx(540, abs=8) and f.w == pytest.approx(80, rel=0.15)  # mapped back to the frame


def test_a_single_frame_false_positive_never_moves_the_window() -> None:
    centre = centre_window(HD, 1.0)
    for call in (1, 2, 5):
        with FaceFramer(FramingConfig(), HD, 1.0, detector=SquareDetector(only={call})) as framer:
            wins = [framer.update(_square_frame(), i / 30.0) for i in range(30)]
        assert all(w == centre for w in wins) and framer.tracker.tracked is None


def test_scan_regions_cover_the_frame_and_small_faces() -> None:
    for frame in (HD, Size(640, 480), Size(192, 144)):
        regions = scan_regions(frame)
        assert regions[0].w == frame.width and regions[0].h == frame.height  # coarse first: the whole frame
        for r in regions:
            assert r.x >= 0 and r.y >= 0 and r.x + r.w <= frame.width and r.y + r.h <= frame.height
        smallest = min(max(r.w, r.h) for r in regions)
        face = smallest // 3
        for x in range(0, frame.width - face, 7):  # any face a third of the smallest tile lies inside one tile
            for y in range(0, frame.height - face, 7):
                assert any(r.x <= x and x + face <= r.x + r.w and r.y <= y and y + face <= r.y + r.h for r in regions)
    assert len(scan_regions(HD, "full")) < len(scan_regions(HD, "short"))
    with pytest.raises(UsageError, match="face range"):
        scan_regions(HD, "medium")


def test_roi_is_a_square_inside_the_frame_growing_with_misses() -> None:
    face = FaceBox(1250, 5, 60, 60)
    a, b = roi_region(face, HD), roi_region(face, HD, misses=2)
    for r in (a, b):
        assert r.w == r.h and r.x >= 0 and r.y >= 0 and r.x + r.w <= HD.width and r.y + r.h <= HD.height
    assert a.w == 240 and b.w > a.w
    assert roi_region(FaceBox(600, 300, 400, 400), HD).w == HD.height  # never more than the frame


def test_search_and_config_validation() -> None:
    with pytest.raises(UsageError, match="confirm_frames"):
        FramingConfig(confirm_frames=0)
    with pytest.raises(UsageError, match="face_range"):
        FramingConfig(face_range="long")
    with pytest.raises(UsageError, match="confirm_frames"):
        FaceSearch(SquareDetector(), HD, confirm_frames=True)


# ------------------------------------------------------------------------------------------------- model resolution


def test_full_range_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, face_model_path: Path) -> None:
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STYLECAM_FACE_MODEL_FULL", raising=False)
    assert resolve_face_model(None, "auto") == face_model_path  # no full-range model: the short one
    with pytest.raises(ModelNotFound, match="STYLECAM_FACE_MODEL_FULL"):
        resolve_face_model(None, "full")
    full = tmp_path / "my_model.tflite"
    full.write_bytes(b"x")
    monkeypatch.setenv("STYLECAM_FACE_MODEL_FULL", str(full))
    assert resolve_face_model(None, "full") == full and resolve_face_model(None, "auto") == full
    assert resolve_face_model(None, "short") == face_model_path
    assert face_model_range(full) == "full" and face_model_range(face_model_path) == "short"
    assert face_model_range(tmp_path / "face_detection_full_range_sparse.tflite") == "full"
    assert face_model_range(full, "short") == "short"
    explicit = tmp_path / "explicit.tflite"
    explicit.write_bytes(b"y")
    assert resolve_face_model(explicit, "full") == explicit  # --face-model keeps working
    monkeypatch.setenv("STYLECAM_FACE_MODEL_FULL", str(tmp_path / "missing.tflite"))
    with pytest.raises(InputNotFound, match="STYLECAM_FACE_MODEL_FULL"):
        resolve_face_model(None, "auto")
    with pytest.raises(UsageError, match="range"):
        resolve_face_model(None, "medium")
