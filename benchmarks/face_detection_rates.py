"""How often face framing follows a visible face, how often it frames something that is not one, and what it costs.

Clips (built in memory, deterministic):

- ``demo``: the project's demo clip (``realtime.cli.demo.demo_frames``: the astronaut swaying and leaning, 1280x720,
  30 fps, 4 s; the face is visible in every frame, ~95-130 px wide);
- ``small_faces``: skimage's astronaut with its face 70-100 px wide in 1280x720, moving with a known affine motion,
  with a faceless stretch (frames 90-119);
- ``faceless``: no person at all: skimage's coffee, cat (``chelsea``) and rocket pictures and a few shapes drifting
  over a gradient, 1280x720;
- ``webcam``: a 640x480 frame with a near face (as in a webcam call), for the cost per frame at that size.

Methods: ``before`` is the framing as it was (the detector on the whole frame, every detection straight to the
tracker); ``short`` and ``full`` are :class:`realtime.vision.face.FaceFramer` (region tracking + scan + confirmation,
:mod:`realtime.vision.search`) with the short- and full-range models. Per clip and method: frames where framing
follows a face (``engaged``: the tracker has a face; the window is on it or holding it, which includes the
hold-and-ease frames after a face leaves), frames with a confirmed detection (``detected``; in faceless frames: false
detections that reach the tracker), the detector calls per frame and the milliseconds of framing per frame (``FaceFramer.update``: crops,
resizes, MediaPipe, tracking). One JSON object on stdout (and ``--out``).

    python benchmarks/face_detection_rates.py --out benchmarks/results/face_detection_rates.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
FACE_XY = np.array([224.5, 129.5])  # the astronaut's face centre in the 512x512 image
FACE_W = 95.0  # its width there (MediaPipe's box)
SMALL_FACELESS = range(90, 120)


def _background(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([90 + 60 * xx / w, 110 + 40 * yy / h, 150 - 50 * xx / w], axis=-1).astype(np.uint8)


def _place(canvas: np.ndarray, img: np.ndarray, s: float, x: float, y: float, anchor: np.ndarray) -> None:
    import cv2

    m = np.array([[s, 0, x - s * anchor[0]], [0, s, y - s * anchor[1]]])
    cv2.warpAffine(img, m, (canvas.shape[1], canvas.shape[0]), dst=canvas, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)


def small_face_frames(n: int = 150):
    """(frame, face centre or None): the face 70-100 px wide, swaying and leaning; none in ``SMALL_FACELESS``."""
    from skimage import data

    astronaut, bg = data.astronaut(), _background(1280, 720)
    for i in range(n):
        frame = bg.copy()
        if i in SMALL_FACELESS:
            yield frame, None
            continue
        t = i / 30.0
        s = (85 + 15 * math.sin(2 * math.pi * t / 4.0)) / FACE_W
        x, y = 640 + 300 * math.sin(2 * math.pi * t / 5.0), 330 + 60 * math.sin(2 * math.pi * t / 3.0)
        _place(frame, astronaut, s, x, y, FACE_XY)
        yield frame, (x, y)


def faceless_frames(n: int = 150):
    """No person: coffee, a cat, a rocket and shapes drifting over a gradient (1280x720)."""
    import cv2
    from skimage import data

    pictures = [data.coffee(), data.chelsea(), data.rocket()]
    bg = _background(1280, 720)
    for i in range(n):
        t = i / 30.0
        frame = bg.copy()
        for k, pic in enumerate(pictures):
            s = 0.6 + 0.2 * math.sin(t + k)
            x, y = 250 + 380 * k + 60 * math.sin(0.7 * t + k), 360 + 120 * math.cos(0.5 * t + 2 * k)
            _place(frame, pic, s, x, y, np.array([pic.shape[1] / 2, pic.shape[0] / 2]))
        cv2.circle(frame, (int(640 + 500 * math.sin(0.3 * t)), 90), 50, (230, 200, 60), -1)
        cv2.rectangle(frame, (int(100 + 8 * i) % 1200, 620), (int(100 + 8 * i) % 1200 + 90, 700), (40, 40, 200), -1)
        yield frame, None


def demo_clip_frames():
    from realtime.cli.demo import demo_frames

    for f in demo_frames(4.0):
        yield f, True


def webcam_frames(n: int = 90):
    from skimage import data

    astronaut, bg = data.astronaut(), _background(640, 480)
    for i in range(n):
        frame = bg.copy()
        _place(frame, astronaut, 1.2, 320 + 60 * math.sin(i / 15.0), 220, FACE_XY)
        yield frame, True


CLIPS = {"demo": demo_clip_frames, "small_faces": small_face_frames, "faceless": faceless_frames,
         "webcam": webcam_frames}


def run_clip(name: str, method: str, models: dict[str, Path]) -> dict:
    from realtime.geometry import Size
    from realtime.vision.face import FaceDetector, FaceFramer, FaceTracker, FramingConfig

    frames = list(CLIPS[name]())
    h, w = frames[0][0].shape[:2]
    size, cfg = Size(w, h), FramingConfig()
    model = models["full" if method == "full" else "short"]
    det = FaceDetector(model, min_detection_confidence=cfg.min_score, face_range="full" if method == "full" else "short")
    engaged = detected = 0
    with_face = sum(1 for _, face in frames if face is not None)
    engaged_faceless = detected_faceless = 0
    times = []
    try:
        framer = None if method == "before" else FaceFramer(cfg, size, 1.0, detector=det)
        tracker = FaceTracker(cfg, size, 1.0) if framer is None else framer.tracker
        for i, (frame, face) in enumerate(frames):
            t0 = time.perf_counter()
            if framer is None:
                faces = det.detect(frame, i / 30.0)
                tracker.step(faces, i / 30.0)
            else:
                framer.update(frame, i / 30.0)
                faces = framer.faces
            times.append(time.perf_counter() - t0)
            on = tracker.tracked is not None
            if face is not None:
                engaged += on
                detected += bool(faces)
            else:
                engaged_faceless += on
                detected_faceless += bool(faces)
        calls = len(frames) if framer is None else framer.search.calls
    finally:
        det.close()
    n = len(frames)
    return {
        "frames": n, "frame": f"{w}x{h}", "face_frames": with_face, "faceless_frames": n - with_face,
        "engaged_face_frames": engaged, "detected_face_frames": detected, "engaged_faceless_frames": engaged_faceless,
        "detected_faceless_frames": detected_faceless,
        "engaged_rate": round(engaged / with_face, 3) if with_face else None,
        "false_framing_rate": round(engaged_faceless / (n - with_face), 3) if n > with_face else None,
        "detector_calls_per_frame": round(calls / n, 2),
        "ms_per_frame_mean": round(1000 * float(np.mean(times)), 2),
        "ms_per_frame_p50": round(1000 * float(np.median(times)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short-model", type=Path, default=Path(os.environ.get(
        "STYLECAM_FACE_MODEL", SHARED / "face_detection_short_range.tflite")))
    p.add_argument("--full-model", type=Path, default=Path(os.environ.get(
        "STYLECAM_FACE_MODEL_FULL", SHARED / "face_detection_full_range_sparse.tflite")))
    p.add_argument("--clips", default=",".join(CLIPS), help=f"comma-separated, of {', '.join(CLIPS)}")
    p.add_argument("--methods", default="before,short,full", help="comma-separated, of before, short, full")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    models = {"short": args.short_model, "full": args.full_model}
    results: dict = {}
    for clip in args.clips.split(","):
        results[clip] = {m: run_clip(clip, m, models) for m in args.methods.split(",")}
    report = {
        "benchmark": "face_detection_rates", "machine": platform.node(), "processor": platform.processor(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "note": "engaged = the tracker follows a face; ms = FaceFramer.update (MediaPipe + crops + tracking), wall "
                "time on a shared machine",
        "models": {k: v.name for k, v in models.items()}, "results": results,
    }
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
