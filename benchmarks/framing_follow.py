"""How well face framing follows a moving face, and how still it holds a still one (issue 13, item 2).

A 1280x720 clip at 30 fps is generated in memory: the astronaut (skimage, public domain) sweeps across about half the
width at ~160 px/s, back again, then stands still. Every frame goes through the frame processor with face framing and
the ``none`` style (the framed crop, covered to 1280x720: what a stylizer would be given), and a separate MediaPipe
face detector finds the face in each *output* frame. Reported, for each way of framing:

- ``follow``: std of the face-centre x in the output frames during the sweeps, as a fraction of the output width,
  divided by the same std in the input frames (0: the face never moves on screen; 1: framing does nothing). The goal
  is at most 1/3.
- ``jitter_px``: std of the face-centre x in the output frames while the face stands still (output pixels), from the
  detector, and ``window_jitter_px`` from the crop window itself (no detector noise).

Ways: ``serial`` (detection on the frame thread, as before issue 13, no prediction), ``threaded`` (detection on its
own thread, its window applied to the next frame: exactly one frame behind), each with prediction off and on (``FramingConfig.predict``).

    STYLECAM_FACE_MODEL=.../face_detection_short_range.tflite python benchmarks/framing_follow.py [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys

import numpy as np

from realtime.geometry import Size
from realtime.pipeline.processor import FrameProcessor
from realtime.vision.face import FaceDetector, FaceFramer
from realtime.vision.framer_thread import ThreadedFramer
from realtime.vision.framing import FramingConfig

FRAME = Size(1280, 720)
MODEL = Size(704, 384)
FPS = 30
SPEED = 160.0  # px/s
FACE_XY = np.array([224.5, 129.5])  # the astronaut's face centre in the 512x512 photo
FACE_SCALE = 1.1  # the astronaut's face ~100 px tall: the window (2.6 face heights) stays clear of the frame edges


def timeline() -> list[tuple[float, float, str]]:
    """(face centre x, y, segment) per frame: 1 s still (acquire), sweep right, sweep left, 3 s still."""
    left, right, y = 0.25 * FRAME.width, 0.75 * FRAME.width, 0.45 * FRAME.height
    n_sweep = round((right - left) / SPEED * FPS)
    xs = [(left, "settle")] * FPS
    xs += [(left + (right - left) * i / n_sweep, "sweep") for i in range(n_sweep)]
    xs += [(right - (right - left) * i / n_sweep, "sweep") for i in range(n_sweep)]
    xs += [(left, "settle")] * FPS + [(left, "still")] * (2 * FPS)
    return [(x, y, seg) for x, seg in xs]


def frame_at(face: np.ndarray, background: np.ndarray, x: float, y: float, s: float) -> np.ndarray:
    import cv2

    m = np.array([[s, 0, x - s * FACE_XY[0]], [0, s, y - s * FACE_XY[1]]])
    out = background.copy()
    cv2.warpAffine(face, m, (FRAME.width, FRAME.height), dst=out, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return out


def run(way: str, predict: bool, face: np.ndarray, background: np.ndarray, scale: float) -> dict[str, float]:
    cfg = dataclasses.replace(FramingConfig(), predict=predict)
    if way == "serial":
        framer = FaceFramer(cfg, FRAME, MODEL.aspect)
    else:
        framer = ThreadedFramer(FRAME, MODEL.aspect, lambda size: FaceFramer(cfg, size, MODEL.aspect), wait=True)
    finder = FaceDetector(face_range="short")
    rows = []
    with FrameProcessor(MODEL, FRAME, framer=framer) as proc:
        for i, (x, y, seg) in enumerate(timeline()):
            out = proc.process(frame_at(face, background, x, y, scale), i / FPS)
            win = proc.last_window
            assert win is not None
            small = out[::2, ::2]  # 640x360: the output face fills a good part of the detector's input
            found = finder.detect(np.ascontiguousarray(small), i / FPS)
            fx = 2 * max(found, key=lambda f: f.w).cx if found else math.nan
            wx = (x - win.x) / win.w * FRAME.width  # where the true face centre lands in the output
            rows.append((seg, x, fx, wx))
    finder.close()
    sweep = [r for r in rows if r[0] == "sweep"]
    still = [r for r in rows if r[0] == "still"]
    in_std = np.std([r[1] for r in sweep]) / FRAME.width
    out_x = np.array([r[2] for r in sweep])
    found = out_x[~np.isnan(out_x)]
    out_std = float(np.std(found) / FRAME.width) if len(found) else math.nan
    win_std = float(np.std([r[3] for r in sweep]) / FRAME.width)
    still_x = np.array([r[2] for r in still])
    return {
        "way": way, "predict": predict, "face_scale": scale, "input_std": float(in_std), "output_std": out_std,
        "follow": out_std / in_std, "follow_window": win_std / in_std,
        "found_in_output": float(len(found) / len(out_x)),
        "jitter_px": float(np.nanstd(still_x)), "window_jitter_px": float(np.std([r[3] for r in still])),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--ways", default="serial,threaded", help="which ways of framing (default serial,threaded)")
    p.add_argument("--predict", default="off,on", help="prediction off, on or both (default off,on)")
    p.add_argument("--face-scale", type=float, default=FACE_SCALE,
                   help=f"the astronaut's scale (default {FACE_SCALE}; at 2 the window meets the frame edges)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from skimage import data

    face = data.astronaut()
    yy, xx = np.mgrid[0 : FRAME.height, 0 : FRAME.width].astype(np.float32)
    background = np.stack([90 + 60 * xx / FRAME.width, 110 + 40 * yy / FRAME.height,
                           150 - 50 * xx / FRAME.width], axis=-1).astype(np.uint8)
    results = []
    for way in args.ways.split(","):
        for predict in (p == "on" for p in args.predict.split(",")):
            r = run(way, predict, face, background, args.face_scale)
            results.append(r)
            print(f"{way:9s} prediction {'on ' if predict else 'off'}: follow {r['follow']:.3f} (output std {r['output_std']:.3f} / input "
                  f"{r['input_std']:.3f} of the width; window {r['follow_window']:.3f}), still-face jitter "
                  f"{r['jitter_px']:.2f} px (window {r['window_jitter_px']:.2f} px), face found in "
                  f"{100 * r['found_in_output']:.0f}% of output frames", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frame": str(FRAME), "model": str(MODEL), "fps": FPS, "speed_px_s": SPEED,
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
