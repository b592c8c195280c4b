"""Cost per frame of the pose, depth and segmentation stages at model sizes, measured side by side in one run.

Stages (each on skimage's astronaut resized to the model size): ``pose`` (MediaPipe PoseLandmarker in VIDEO mode +
the OpenPose drawing; needs a pose bundle: ``--pose-model``, e.g. the legacy models bundled by scripts/pose_task.py),
``segment`` (MediaPipe selfie segmentation + mask smoothing, feathering and compositing), ``depth`` (Depth Anything
V2 Small's architecture, ``random:sd-turbo`` weights: the cost is the architecture's). Prints one JSON object: wall
milliseconds per stage (mean, p50) per size.

    python benchmarks/vision_stages.py --pose-model POSE.task --segment-model selfie_segmentation.tflite \\
        --frames 10 --out benchmarks/results/vision_stages_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _time(fn, frames: int) -> dict[str, float]:
    fn()  # warm-up
    ms = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"mean_ms": round(float(np.mean(ms)), 2), "p50_ms": round(float(np.median(ms)), 2)}


def main(argv: list[str] | None = None) -> int:
    import cv2
    import torch
    from skimage import data

    from realtime.config import RegionConfig
    from realtime.vision.depth import DepthEstimator
    from realtime.vision.pose import PoseMap
    from realtime.vision.regions import RegionCompositor
    from realtime.vision.segment import SelfieSegmenter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pose-model", required=True)
    p.add_argument("--segment-model", required=True)
    p.add_argument("--sizes", default="512x512,704x384")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    astro = data.astronaut()
    pose = PoseMap(model=args.pose_model)
    regions = RegionCompositor(RegionConfig(region="person"), SelfieSegmenter(args.segment_model))
    depth = DepthEstimator("random:sd-turbo")
    result: dict[str, object] = {"machine": platform.processor() or platform.machine(), "torch_threads": args.threads,
                                 "frames": args.frames, "depth_input": {}, "sizes": {}}
    for text in args.sizes.split(","):
        w, h = (int(v) for v in text.split("x"))
        crop = cv2.resize(astro, (w, h), interpolation=cv2.INTER_AREA)
        result["sizes"][text] = {  # type: ignore[index]
            "pose": _time(lambda c=crop: pose(c), args.frames),
            "segment": _time(lambda c=crop: regions(255 - c, c), args.frames),
            "depth": _time(lambda c=crop: depth(c), max(2, args.frames // 3)),
        }
        result["depth_input"][text] = list(depth.input_size(h, w))  # type: ignore[index]
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
