"""CPU cost per frame of the live loop's CPU-side stages at camera resolution (default 640x480).

Stages: camera conversion (BGR -> RGB), face detection (MediaPipe), smoothing (tracking + One Euro + hold/ease), crop
to the model size, Canny (OpenCV) on the model-size crop and on the full frame, and the output conversion (cover to the
output size, RGB -> BGR for a sink). Input: skimage's astronaut swaying across a noisy canvas, so the detector really
finds a face in every frame. Prints one JSON object on stdout: wall-clock milliseconds per stage (mean, p50, p95)
and process CPU milliseconds per stage (all threads; less sensitive to other load on the machine).

    python benchmarks/cpu_stages.py --frames 300 --out benchmarks/results/cpu_stages.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _scene(frame_w: int, frame_h: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` BGR uint8 frames (as a camera delivers them): the astronaut swaying, with sensor noise."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    astro = data.astronaut()
    bg = cv2.GaussianBlur(rng.integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8), (0, 0), 6)
    s = 1.2 * frame_h / 480
    frames = []
    for i in range(n):
        fx = frame_w / 2 + 0.15 * frame_w * np.sin(2 * np.pi * i / 90)
        fy = 0.45 * frame_h
        m = np.array([[s, 0, fx - s * 224.5], [0, s, fy - s * 129.5]])
        rgb = bg.copy()
        cv2.warpAffine(astro, m, (frame_w, frame_h), dst=rgb, borderMode=cv2.BORDER_TRANSPARENT)
        rgb = np.clip(rgb.astype(np.int16) + rng.integers(-8, 9, rgb.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        frames.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return frames






def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frame", default="640x480", help="camera frame size WxH (default 640x480)")
    p.add_argument("--size", default="704x384", help="model size WxH (default 704x384: auto for a 16:9 output)")
    p.add_argument("--output-size", default="1280x720", help="sink size WxH (default 1280x720)")
    p.add_argument("--frames", type=int, default=300, help="timed frames (default 300)")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames first (default 20)")
    p.add_argument("--face-model", default=None, help="face model .tflite (default: STYLECAM_FACE_MODEL, cache)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    import cv2

    from realtime.vision.edges import CannyConfig, canny_cpu
    from realtime.vision.face import FaceDetector, FaceTracker, FramingConfig
    from realtime.bench.environment import git_info
    from realtime.geometry import cover_resize, crop_resize, parse_size

    frame = parse_size(args.frame, what="--frame")
    fw, fh = frame.width, frame.height
    model = parse_size(args.size, model=True)
    out_size = parse_size(args.output_size, what="--output-size")
    n = args.warmup + args.frames
    frames = _scene(fw, fh, n)
    cfg = FramingConfig()
    canny = CannyConfig()
    names = ["bgr_to_rgb", "face_detect", "smoothing", "crop", "canny_model_size", "canny_frame", "output"]
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu_times: dict[str, list[float]] = {k: [] for k in names}
    found = 0
    with FaceDetector(args.face_model, min_detection_confidence=cfg.min_score) as det:
        tracker = FaceTracker(cfg, frame, model.aspect)
        for i, bgr in enumerate(frames):
            t, c = [time.perf_counter()], [time.process_time()]
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            t.append(time.perf_counter())
            c.append(time.process_time())
            faces = det.detect(rgb, i / 30.0)
            t.append(time.perf_counter())
            c.append(time.process_time())
            win = tracker.step(faces, i / 30.0)
            t.append(time.perf_counter())
            c.append(time.process_time())
            crop = crop_resize(rgb, win, model)
            t.append(time.perf_counter())
            c.append(time.process_time())
            canny_cpu(crop, canny)
            t.append(time.perf_counter())
            c.append(time.process_time())
            canny_cpu(rgb, canny)
            t.append(time.perf_counter())
            c.append(time.process_time())
            cv2.cvtColor(cover_resize(crop, out_size), cv2.COLOR_RGB2BGR)
            t.append(time.perf_counter())
            c.append(time.process_time())
            if i >= args.warmup:
                found += bool(faces)
                for k, a, b, ca, cb in zip(names, t, t[1:], c, c[1:], strict=False):
                    times[k].append((b - a) * 1e3)
                    cpu_times[k].append((cb - ca) * 1e3)

    def stats(v: list[float]) -> dict[str, float]:
        a = np.asarray(v)
        return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
                "p95": round(float(np.percentile(a, 95)), 3)}

    per_stage = {k: stats(v) for k, v in times.items()}
    per_stage_cpu = {k: round(float(np.mean(v)), 3) for k, v in cpu_times.items()}
    core = ["bgr_to_rgb", "face_detect", "smoothing", "crop", "canny_model_size"]
    result = {
        "benchmark": "cpu_stages",
        "frame": str(frame), "model_size": str(model), "output_size": str(out_size),
        "frames": args.frames, "frames_with_face": found,
        "stages_ms": per_stage,
        "stages_cpu_ms_mean": per_stage_cpu,
        "total_ms": {
            "capture_face_smooth_crop_canny": round(sum(per_stage[k]["mean"] for k in core), 3),
            "with_output_conversion": round(sum(per_stage[k]["mean"] for k in core + ["output"]), 3),
        },
        "total_cpu_ms": {
            "capture_face_smooth_crop_canny": round(sum(per_stage_cpu[k] for k in core), 3),
            "with_output_conversion": round(sum(per_stage_cpu[k] for k in core + ["output"]), 3),
        },
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "opencv_threads": cv2.getNumThreads(), "python": sys.version.split()[0],
        "versions": {m: __import__(m).__version__ for m in ("numpy", "cv2", "mediapipe")},
        "commit": git_info()["commit"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
