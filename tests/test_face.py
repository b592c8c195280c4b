"""Face framing: model resolution, MediaPipe detection, One Euro smoothing, tracking, hold and ease.

Scenes are built from skimage's astronaut placed on a 640x480 canvas with a known affine motion (scale and
translation), so the true face centre is known in every frame; faceless stretches show the background only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import realtime.vision.face as face_mod
from realtime.errors import BadInputFile, InputNotFound, ModelNotFound, UsageError
from realtime.vision.face import FaceBox, FaceDetector, FaceFramer, FaceTracker, FramingConfig, OneEuroFilter
from realtime.geometry import CropWindow, Size, centre_window

FRAME = Size(640, 480)
FPS = 30.0
ASPECT = 1.0  # a 512x512 model
# The astronaut's face centre and height in the original 512x512 image (MediaPipe's box on the full image).
FACE_XY = np.array([224.5, 129.5])
FACE_H = 95.0


# ------------------------------------------------------------------------------------------------- scenes


class Scene:
    """Frames with a known face position: the astronaut scaled by ``s`` with its face centre at ``(fx, fy)``."""

    def __init__(self, astronaut: np.ndarray, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        noise = rng.integers(0, 256, (FRAME.height, FRAME.width, 3), dtype=np.uint8)
        self.background = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 6), None, 40, 200, cv2.NORM_MINMAX)
        self.astronaut = astronaut
        self.head = np.ascontiguousarray(astronaut[30:250, 120:330])  # a second, smaller face to paste
        self.rng = np.random.default_rng(seed + 1)

    @staticmethod
    def _place(canvas: np.ndarray, img: np.ndarray, s: float, fx: float, fy: float, face: np.ndarray) -> None:
        m = np.array([[s, 0, fx - s * face[0]], [0, s, fy - s * face[1]]])
        cv2.warpAffine(img, m, (FRAME.width, FRAME.height), dst=canvas, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)

    def frame(self, fx: float | None, fy: float = 0.0, s: float = 1.2, *, noise: float = 0.0,
              second: tuple[float, float] | None = None, angle: float = 0.0) -> np.ndarray:
        out = self.background.copy()
        if fx is not None:
            self._place(out, self.astronaut, s, fx, fy, FACE_XY)
        if second is not None:
            self._place(out, self.head, 0.9, second[0], second[1], FACE_XY - np.array([120, 30]))
        if angle:
            rot = cv2.getRotationMatrix2D((fx or 0.0, fy), angle, 1.0)
            out = cv2.warpAffine(out, rot, (FRAME.width, FRAME.height), borderMode=cv2.BORDER_REFLECT)
        if noise:  # sensor noise: uniform, standard deviation ``noise``
            a = int(round(noise * math.sqrt(3)))
            grain = self.rng.integers(-a, a + 1, out.shape, dtype=np.int16)
            out = np.clip(out + grain, 0, 255).astype(np.uint8)
        return out


@pytest.fixture(scope="module")
def scene(astronaut: np.ndarray) -> Scene:
    return Scene(astronaut)


@pytest.fixture(scope="module")
def detector(face_model_path: Path):
    with FaceDetector(face_model_path) as det:
        yield det


def _target_point(win: CropWindow, cfg: FramingConfig) -> tuple[float, float]:
    return win.cx, win.y + cfg.face_y * win.h


def _inside(win: CropWindow, frame: Size = FRAME) -> bool:
    eps = 1e-6
    return (win.x >= -eps and win.y >= -eps and win.x + win.w <= frame.width + eps
            and win.y + win.h <= frame.height + eps)


def _box(cx: float, cy: float, h: float = 100.0, score: float = 0.9) -> FaceBox:
    return FaceBox(cx - h / 2, cy - h / 2, h, h, score)


# ------------------------------------------------------------------------------------------------- model resolution


def test_resolve_face_model_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*a, **k):  # tests never download
        raise AssertionError("resolve_face_model tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    explicit, env = tmp_path / "explicit.tflite", tmp_path / "env.tflite"
    explicit.write_bytes(b"x")
    env.write_bytes(b"y")
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STYLECAM_FACE_MODEL", str(env))
    assert face_mod.resolve_face_model(explicit) == explicit
    assert face_mod.resolve_face_model(str(explicit)) == explicit
    assert face_mod.resolve_face_model() == env
    with pytest.raises(InputNotFound, match="missing.tflite"):
        face_mod.resolve_face_model(tmp_path / "missing.tflite")
    monkeypatch.setenv("STYLECAM_FACE_MODEL", str(tmp_path / "gone.tflite"))
    with pytest.raises(InputNotFound, match="STYLECAM_FACE_MODEL"):
        face_mod.resolve_face_model()

    # Then the cache: a verified file there is used.
    monkeypatch.delenv("STYLECAM_FACE_MODEL")
    payload = b"model bytes"
    monkeypatch.setattr(face_mod, "FACE_MODEL", dataclasses.replace(face_mod.FACE_MODEL, size=len(payload),
                                                                  sha256=hashlib.sha256(payload).hexdigest()))
    cached = tmp_path / "cache" / "models" / face_mod.FACE_MODEL_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(payload)
    assert face_mod.resolve_face_model() == cached
    # Cache location without STYLECAM_CACHE: XDG, then the home directory.
    monkeypatch.delenv("STYLECAM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert face_mod.face_model_cache_dir() == tmp_path / "xdg" / "stylecam" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert face_mod.face_model_cache_dir() == tmp_path / "home" / ".cache" / "stylecam" / "models"


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "STYLECAM_OFFLINE"])
def test_offline_without_cache_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded while offline"))
    monkeypatch.delenv("STYLECAM_FACE_MODEL", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("STYLECAM_OFFLINE", raising=False)
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path))
    monkeypatch.setenv(var, "1")
    with pytest.raises(ModelNotFound) as info:
        face_mod.resolve_face_model()
    msg = str(info.value)
    assert "\n" not in msg and "--face-model PATH" in msg and "STYLECAM_FACE_MODEL" in msg


def test_download_verifies_and_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download path with urlopen faked (no network): good bytes land atomically, bad bytes and network errors
    raise ModelNotFound and leave no file behind."""
    for var in ("STYLECAM_FACE_MODEL", "HF_HUB_OFFLINE", "STYLECAM_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path))
    payload = b"\x01" * 1000
    monkeypatch.setattr(face_mod, "FACE_MODEL", dataclasses.replace(face_mod.FACE_MODEL, size=len(payload),
                                                                  sha256=hashlib.sha256(payload).hexdigest()))
    models = tmp_path / "models"

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"\x02" * 1000))
    with pytest.raises(ModelNotFound, match="does not verify"):
        face_mod.resolve_face_model()
    assert not models.exists() or not any(models.iterdir())

    def refused(*a, **k):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(ModelNotFound, match="--face-model PATH"):
        face_mod.resolve_face_model()

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(payload))
    path = face_mod.resolve_face_model()
    assert path == models / face_mod.FACE_MODEL_FILE and path.read_bytes() == payload
    assert sorted(p.name for p in models.iterdir()) == [face_mod.FACE_MODEL_FILE]  # no temp files left


# ------------------------------------------------------------------------------------------------- detector


def test_detector_finds_the_face(scene: Scene, detector: FaceDetector) -> None:
    faces = detector.detect(scene.frame(300, 220, 1.3), 0.0)
    assert len(faces) == 1
    f = faces[0]
    assert abs(f.cx - 300) < 0.1 * f.h and abs(f.cy - 220) < 0.1 * f.h
    assert 0.85 < f.h / (1.3 * FACE_H) < 1.2 and f.score > 0.8
    assert len(f.keypoints) == 6
    (rx, ry), (lx, ly) = f.keypoints[:2]
    assert rx < lx and abs(ry - ly) < 0.2 * f.h  # the subject's right eye is on the image's left
    # Equal or backwards timestamps are nudged forward instead of failing in MediaPipe.
    assert len(detector.detect(scene.frame(300, 220, 1.3), 0.0)) == 1
    assert detector.detect(scene.frame(None), -5.0) == []
    assert len(detector.detect(np.ascontiguousarray(scene.frame(300, 220, 1.3)[:, ::-1]), 0.0)) == 1
    with pytest.raises(UsageError):
        detector.detect(scene.frame(300, 220)[..., 0], 1.0)


def test_detector_bad_model_and_close(tmp_path: Path, face_model_path: Path, scene: Scene) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(BadInputFile, match="bad.tflite"):
        FaceDetector(bad)
    with pytest.raises(UsageError, match="min_detection_confidence"):
        FaceDetector(face_model_path, min_detection_confidence=1.5)
    det = FaceDetector(face_model_path)
    det.close()
    det.close()  # idempotent
    with pytest.raises(RuntimeError):
        det.detect(scene.frame(300, 220), 0.0)


# ------------------------------------------------------------------------------------------------- One Euro


def test_one_euro_filter() -> None:
    t = np.arange(0, 3, 1 / FPS)
    rng = np.random.default_rng(0)
    noisy = 5.0 + rng.normal(0, 0.5, t.size)
    f = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    out = np.array([f(v, ti) for v, ti in zip(noisy, t, strict=True)])
    assert np.std(out[30:]) < 0.3 * np.std(noisy[30:])
    assert abs(out[-30:].mean() - 5.0) < 0.2

    # On a ramp, beta > 0 cuts the lag.
    ramp = 100 * t
    lag = {}
    for beta in (0.0, 1.0):
        f = OneEuroFilter(min_cutoff=0.5, beta=beta)
        lag[beta] = float(np.mean(ramp[-30:] - np.array([f(v, ti) for v, ti in zip(ramp, t, strict=True)])[-30:]))
    assert lag[1.0] < 0.2 * lag[0.0]

    # Vectors are filtered per element; reset restarts at the next value.
    f = OneEuroFilter(1.0, [0.0, 1.0])
    first = f(np.array([1.0, 2.0]), 0.0)
    np.testing.assert_allclose(first, [1.0, 2.0])
    moved = f(np.array([2.0, 3.0]), 1 / FPS)
    assert moved.shape == (2,) and 1.0 < moved[0] < 2.0
    assert f(np.array([2.0, 3.0]), 1 / FPS)[0] == pytest.approx(moved[0], abs=1e-3)  # repeated time: barely moves
    f.reset()
    assert f(np.array([7.0, 8.0]), 5.0).tolist() == [7.0, 8.0]
    assert isinstance(OneEuroFilter()(3.0, 0.0), float)
    with pytest.raises(UsageError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(UsageError, match="beta"):
        OneEuroFilter(beta=-1.0)
    with pytest.raises(UsageError, match="shape"):
        OneEuroFilter(1.0, [0.0, 1.0])(np.zeros(3), 0.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"face_scale": 0.5}, "face_scale"), ({"face_y": 0.95}, "face_y"), ({"min_cutoff": 0.0}, "min_cutoff"),
     ({"beta": -1.0}, "beta"), ({"d_cutoff": 0.0}, "d_cutoff"), ({"hold_frames": -1}, "hold_frames"),
     ({"ease_frames": 2.5}, "ease_frames"), ({"min_score": 1.5}, "min_score"), ({"enabled": "yes"}, "enabled"),
     ({"level_eyes": 1}, "level_eyes"), ({"face_y": float("nan")}, "face_y")],
)
def test_framing_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(UsageError, match=field):
        FramingConfig(**kwargs)


# ------------------------------------------------------------------------------------------------- tracker logic


def test_tracker_places_the_face_and_stays_inside() -> None:
    cfg = FramingConfig()
    tr = FaceTracker(cfg, FRAME, 704 / 384)
    for i in range(60):
        win = tr.step([_box(300, 200, 60)], i / FPS)
    assert win.w / win.h == pytest.approx(704 / 384)
    assert win.h == pytest.approx(cfg.face_scale * 60, rel=0.01)
    px, py = _target_point(win, cfg)
    assert (px, py) == (pytest.approx(300, abs=1.0), pytest.approx(200, abs=1.0))
    # A face at the frame edge: the window is clamped inside (and shrunk when it would not fit); by default it zooms
    # in towards the face first (edge_zoom), as far as its limit.
    for zoom in (1.0, cfg.edge_zoom):
        tr = FaceTracker(dataclasses.replace(cfg, edge_zoom=zoom), FRAME, 1.0)
        for i in range(60):
            win = tr.step([_box(20, 30, 250)], i / FPS)
        want = FRAME.height if zoom == 1.0 else zoom * cfg.face_scale * 250
        assert _inside(win) and win.h == pytest.approx(want, rel=0.01)


def test_tracker_hold_ease_out_and_back_without_jumps() -> None:
    cfg = FramingConfig(hold_frames=8, ease_frames=20)
    tr = FaceTracker(cfg, FRAME, 1.0)
    centre = centre_window(FRAME, 1.0)
    seq = [[_box(200, 180, 80)]] * 40 + [[]] * 40 + [[_box(420, 220, 90)]] * 50
    wins, tracked = [], []
    for i, faces in enumerate(seq):
        wins.append(tr.step(faces, i / FPS))
        tracked.append(tr.tracked)
    assert all(_inside(w) for w in wins)
    held = wins[39]
    assert all(w == held for w in wins[40:48]) and tracked[47] is not None  # hold
    assert wins[48] != held  # then ease out ...
    assert wins[40 + 8 + 20 - 1] == centre and tracked[40 + 8 + 20 - 1] is None  # ... to the centre window
    assert abs(wins[79].cx - centre.cx) < 1e-9
    px, _ = _target_point(wins[-1], cfg)
    assert px == pytest.approx(420, abs=2)  # and back to the face
    steps = [max(abs(b.cx - a.cx), abs(b.cy - a.cy), abs(b.h - a.h)) for a, b in zip(wins, wins[1:], strict=False)]
    assert max(steps) < 0.05 * FRAME.height  # no jump anywhere


def test_tracker_sticks_to_its_face() -> None:
    cfg = FramingConfig()
    tr = FaceTracker(cfg, FRAME, 1.0)
    # At start: the largest, most central face wins.
    tr.step([_box(100, 100, 60), _box(330, 240, 80), _box(560, 400, 70)], 0.0)
    assert tr.tracked is not None and tr.tracked.cx == 330
    # Then a bigger face appears in the background and the tracked one moves: the window stays with it.
    for i in range(1, 40):
        x = 330 - 3 * i
        tr.step([_box(560, 150, 160), _box(x, 240, 80)], i / FPS)
        assert tr.tracked is not None and tr.tracked.cx == x
    # The tracked face is missed for a few frames while the other stays: the window holds, no switch.
    win_before = tr.window
    for i in range(40, 45):
        win = tr.step([_box(560, 150, 160)], i / FPS)
        assert win == win_before
    # It comes back nearby: still the same face.
    tr.step([_box(560, 150, 160), _box(210, 244, 82)], 45 / FPS)
    assert tr.tracked is not None and tr.tracked.cx == 210
    # Low-score detections are ignored.
    tr2 = FaceTracker(FramingConfig(min_score=0.6), FRAME, 1.0)
    tr2.step([_box(300, 200, 80, score=0.5)], 0.0)
    assert tr2.tracked is None


def test_tracker_roll_from_the_eyes() -> None:
    cfg = FramingConfig(level_eyes=True)
    tr = FaceTracker(cfg, FRAME, 1.0)
    angle = math.radians(12.0)
    eyes = ((280.0, 200.0), (280.0 + 40 * math.cos(angle), 200.0 + 40 * math.sin(angle)))
    box = FaceBox(250, 170, 100, 100, 0.9, eyes + ((300.0, 220.0),) * 4)
    for i in range(60):
        tr.step([box], i / FPS)
    assert tr.roll_deg == pytest.approx(12.0, abs=0.2)
    for i in range(60, 100):
        tr.step([], i / FPS)
    assert tr.roll_deg == 0.0  # eased back with the window
    assert FaceTracker(FramingConfig(), FRAME, 1.0).roll_deg == 0.0


# ------------------------------------------------------------------------------------------------- real detections


def test_framer_follows_a_moving_face(scene: Scene, detector: FaceDetector) -> None:
    cfg = FramingConfig()
    n = 75
    xs = 320 + 100 * np.sin(2 * np.pi * np.arange(n) / 90)  # a sway across the frame, 0.44 frame heights/s peak
    ys = 210 + 25 * np.sin(2 * np.pi * np.arange(n) / 50)
    with FaceFramer(cfg, FRAME, ASPECT, detector) as framer:
        errs = []
        for i in range(n):
            win = framer.update(scene.frame(xs[i], ys[i], 1.2), i / FPS)
            assert _inside(win) and win.w / win.h == pytest.approx(ASPECT)
            if i >= 20:  # after the ease-in from the centre window
                px, py = _target_point(win, cfg)
                errs.append(max(abs(px - xs[i]), abs(py - ys[i])) / win.h)
    assert max(errs) < 0.05  # the face stays within 5% of the window's height from its place
    assert win.h == pytest.approx(cfg.face_scale * 1.2 * FACE_H, rel=0.15)


def test_still_face_with_noise_jitters_far_less_than_detections(scene: Scene, detector: FaceDetector) -> None:
    cfg = FramingConfig()
    raw, smooth = [], []
    with FaceFramer(cfg, FRAME, ASPECT, detector) as framer:
        for i in range(100):
            win = framer.update(scene.frame(320, 220, 1.2, noise=10.0), i / FPS)
            if i >= 30:  # (confirmed and eased in by then)
                (f,) = framer.faces
                raw.append([f.cx, f.cy, cfg.face_scale * f.h])
                smooth.append([win.cx, win.cy, win.h])
    raw_std, smooth_std = np.std(raw, axis=0), np.std(smooth, axis=0)
    assert raw_std[:2].max() > 0.3  # the detections do jitter
    assert np.all(smooth_std < raw_std / 3), (raw_std, smooth_std)


def test_faceless_stretch_eases_out_and_back(scene: Scene, detector: FaceDetector) -> None:
    cfg = FramingConfig(hold_frames=6, ease_frames=15)
    centre = centre_window(FRAME, ASPECT)
    plan = [(230.0, 200.0)] * 30 + [None] * 30 + [(400.0, 230.0)] * 35
    with FaceFramer(cfg, FRAME, ASPECT, detector) as framer:
        wins = [framer.update(scene.frame(*(p if p else (None,))), i / FPS) for i, p in enumerate(plan)]
    assert all(_inside(w) for w in wins)
    assert wins[30 + 6 + 15 + 2] == centre  # full centre window during the faceless stretch
    assert wins[29].h < 0.8 * centre.h  # (it was a real zoom on the face before)
    px, py = _target_point(wins[-1], cfg)
    assert abs(px - 400) < 0.05 * wins[-1].h and abs(py - 230) < 0.05 * wins[-1].h
    steps = [max(abs(b.cx - a.cx), abs(b.cy - a.cy), abs(b.h - a.h)) for a, b in zip(wins, wins[1:], strict=False)]
    assert max(steps) < 0.04 * FRAME.height  # no jump: at most ~19 px per frame at 480 lines


def test_two_faces_the_window_does_not_switch(scene: Scene, detector: FaceDetector) -> None:
    cfg = FramingConfig()
    with FaceFramer(cfg, FRAME, ASPECT, detector) as framer:
        for i in range(45):
            x = 200 + 2.5 * i
            frame = scene.frame(x, 210, 1.2, second=(545, 120))
            if i == 0:
                assert len(detector.detect(frame, 50.0)) == 2  # the detector does see both faces
            win = framer.update(frame, i / FPS)
            tracked = framer.tracker.tracked
            if i >= framer.cfg.confirm_frames + 3:  # (confirmed after a few frames of the scan)
                assert tracked is not None and abs(tracked.cx - x) < 20
            if i >= 20:
                assert abs(win.cx - x) < 0.05 * win.h


def test_level_eyes_reports_the_roll(scene: Scene, detector: FaceDetector) -> None:
    rolls = {}
    for angle in (0.0, 15.0):
        with FaceFramer(FramingConfig(level_eyes=True), FRAME, ASPECT, detector) as framer:
            for i in range(20):
                framer.update(scene.frame(320, 220, 1.3, angle=angle), i / FPS)
            rolls[angle] = framer.roll_deg
    # cv2's positive angle turns the picture counter-clockwise, which raises the image-right eye: roll goes down,
    # and turning the crop by +roll_deg (counter-clockwise) would level the eyes again.
    assert rolls[15.0] - rolls[0.0] == pytest.approx(-15.0, abs=4.0)


def test_framing_disabled_gives_the_centre_window(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    centre = centre_window(FRAME, 704 / 384)

    def no_detector(*a, **k):
        raise AssertionError("a detector was created with framing off")

    monkeypatch.setattr(face_mod, "FaceDetector", no_detector)
    with FaceFramer(FramingConfig(enabled=False), FRAME, 704 / 384) as framer:
        for i, fx in enumerate((250.0, 300.0, None)):
            assert framer.update(scene.frame(fx, 220), i / FPS) == centre
    with FaceFramer(FramingConfig(enabled=False), FRAME, 704 / 384) as framer:
        with pytest.raises(UsageError, match="640x480"):
            framer.update(np.zeros((240, 320, 3), np.uint8), 0.0)


def test_switching_framing_off_while_running_eases_to_centre(scene: Scene, detector: FaceDetector) -> None:
    cfg = FramingConfig(ease_frames=15)
    centre = centre_window(FRAME, ASPECT)
    with FaceFramer(cfg, FRAME, ASPECT, detector) as framer:
        for i in range(30):
            win = framer.update(scene.frame(250, 210), i / FPS)
        assert win.h < 0.8 * centre.h
        framer.enabled = False
        wins = [framer.update(scene.frame(250, 210), (30 + i) / FPS) for i in range(16)]
        assert framer.faces == [] and wins[-1] == centre
        assert max(abs(b.h - a.h) for a, b in zip([win] + wins, wins, strict=False)) < 0.05 * FRAME.height
        framer.enabled = True
        for i in range(25):
            win = framer.update(scene.frame(250, 210), (46 + i) / FPS)
        assert abs(win.cx - 250) < 0.05 * win.h
    assert detector.detect(scene.frame(250, 210), 100.0)  # a detector passed in is not closed by the framer


def test_mirror_flips_the_framing_without_a_jump(scene: Scene, detector: FaceDetector) -> None:
    cfg = FramingConfig(level_eyes=True)
    with FaceFramer(cfg, FRAME, ASPECT, detector) as framer:
        for i in range(30):
            win = framer.update(scene.frame(230, 210), i / FPS)
        roll = framer.roll_deg
        framer.mirror()  # the loop's mirror key: frames now arrive flipped
        flipped = framer.tracker.window
        assert flipped.cx == pytest.approx(FRAME.width - win.cx) and flipped.h == pytest.approx(win.h)
        assert framer.roll_deg == pytest.approx(-roll)
        tracked = framer.tracker.tracked
        wins = [flipped]
        for i in range(30, 45):
            wins.append(framer.update(np.ascontiguousarray(scene.frame(230, 210)[:, ::-1]), i / FPS))
            assert framer.tracker.misses == 0 and framer.tracker.tracked is not tracked  # kept tracking
        steps = [max(abs(b.cx - a.cx), abs(b.cy - a.cy), abs(b.h - a.h)) for a, b in zip(wins, wins[1:], strict=False)]
        assert max(steps) < 0.01 * FRAME.height
        assert abs(wins[-1].cx - (FRAME.width - 230)) < 0.05 * wins[-1].h
