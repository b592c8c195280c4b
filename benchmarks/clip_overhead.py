"""What `stylecam clip` costs on top of the stylizer: decode + face framing + crop + resize + encode (+ audio copy).

Makes the demo clip (``realtime.cli.demo``: the astronaut swaying, H.264 + an AAC tone) at ``--frame`` size, then measures
on the same frames, models loaded once and warmed up:

- ``stylizer``: the model part alone on ready model-size crops: Canny + the stylizer (``FrameProcessor.stylize``);
- ``clip``: the whole clip path of ``stylecam clip`` (:class:`realtime.pipeline.clip.ClipJob`: decode thread, face framing,
  crop, Canny + stylizer, cover resize, encode, audio copy, atomic rename);

alternately ``--repeats`` times (the best of each is kept), and reports frames per second of both, the overhead per frame (clip - stylizer) and the clip's stage means. Wall and
process CPU times are both given (CPU time is less sensitive to other load on a shared machine). One JSON object on
stdout (and ``--out``).

    python benchmarks/clip_overhead.py --model random:tiny --size 64x64 --frames 120
    python benchmarks/clip_overhead.py --model random:sd-turbo --size 256x256 --frames 16
    python benchmarks/clip_overhead.py --style none --frames 300   # no model: the pure overhead
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path






def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frame", default="640x360", help="clip frame size WxH (default 640x360)")
    p.add_argument("--fps", type=int, default=30, help="clip frame rate (default 30)")
    p.add_argument("--frames", type=int, default=120, help="timed frames (default 120)")
    p.add_argument("--warmup", type=int, default=5, help="untimed stylizer frames first (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each measurement; the best is kept")
    p.add_argument("--style", default="anime", help="style preset (default anime; 'none' = no model)")
    p.add_argument("--model", default="random:tiny", help="model spec (default random:tiny)")
    p.add_argument("--size", default="64x64", help="model size WxH (default 64x64)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-face", action="store_true", help="no face framing")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    import av
    import numpy as np
    import torch

    from realtime.pipeline.clip import ClipOptions, ClipJob
    from realtime.config import ModelConfig, RunConfig, load_style
    from realtime.cli.console import setup_logging
    from realtime.cli.demo import make_demo_clip
    from realtime.vision.edges import EdgeDetector
    from realtime.io.videofile import FileSource
    from realtime.bench.environment import git_info
    from realtime.geometry import parse_size
    from realtime.diffusion.build import build_stylizer
    from realtime.pipeline.processor import FrameProcessor, canny_config

    setup_logging(quiet=True)
    frame_size = parse_size(args.frame, what="--frame")
    fw, fh = frame_size.width, frame_size.height
    model_size = parse_size(args.size, model=True)
    style = load_style(args.style)
    run = RunConfig(size=model_size, device=args.device)
    stylizer = build_stylizer(ModelConfig(args.model), style, run) if not style.passthrough else None
    edges = EdgeDetector(canny_config(style))
    with tempfile.TemporaryDirectory() as tmp:
        src = make_demo_clip(Path(tmp) / "bench.mp4", seconds=args.frames / args.fps, size=(fw, fh), fps=args.fps)
        # the stylizer alone, on the clip's own frames already cropped to the model size
        crops = []
        with FileSource(src) as source, FrameProcessor(model_size, None, edges=EdgeDetector()) as prep:
            while (frame := source.read()) is not None:
                crops.append(prep.prepare(frame.image, frame.timestamp))
        alone = FrameProcessor(model_size, None, stylizer=stylizer, edges=edges)
        for crop in crops[: args.warmup]:
            alone.stylize(crop)
        opts = ClipOptions(face=not args.no_face, progress=False, overwrite=True)
        runner = ClipJob(opts, model_size, stylizer=stylizer, edges=edges)
        alone_runs, clip_runs, results = [], [], []
        for _ in range(args.repeats):  # alternate the two, keep the best of each (other load only slows things down)
            if stylizer is not None:
                stylizer.reset()
            w0, c0 = time.perf_counter(), time.process_time()
            for crop in crops:
                alone.stylize(crop)
            alone_runs.append(((time.perf_counter() - w0) / len(crops), (time.process_time() - c0) / len(crops)))
            c0 = time.process_time()
            result = runner.process(src, Path(tmp) / "out.mp4")
            results.append(result)
            clip_runs.append((result.wall_seconds / result.frames, (time.process_time() - c0) / result.frames))
        runner.close()
    stylizer_wall, stylizer_cpu = min(alone_runs)
    clip_wall, clip_cpu = min(clip_runs)
    result = results[clip_runs.index(min(clip_runs))]
    report = {
        "benchmark": "clip_overhead",
        "frames": result.frames,
        "frame_size": f"{fw}x{fh}",
        "fps_in": args.fps,
        "model": None if style.passthrough else args.model,
        "style": style.name,
        "model_size": str(model_size),
        "face_framing": not args.no_face,
        "faces_found_in": result.face_frames,
        "stylizer_alone": {"fps": 1 / stylizer_wall if stylizer_wall else None, "ms_per_frame": 1e3 * stylizer_wall,
                           "cpu_ms_per_frame": 1e3 * stylizer_cpu},
        "clip": {"fps": result.fps, "ms_per_frame": 1e3 * clip_wall, "cpu_ms_per_frame": 1e3 * clip_cpu},
        "overhead_ms_per_frame": 1e3 * (clip_wall - stylizer_wall),
        "overhead_cpu_ms_per_frame": 1e3 * (clip_cpu - stylizer_cpu),
        # the same overhead from inside the clip run alone (its wall time minus its own Canny + stylizer time):
        # immune to load that hit one of the two measurements and not the other
        "overhead_in_clip_ms_per_frame": 1e3 * clip_wall - result.stage_ms.get("canny", 0.0)
        - result.stage_ms.get("stylize", 0.0),
        "clip_throughput_vs_stylizer": stylizer_wall / clip_wall if stylizer_wall else None,
        "clip_stage_ms": {k: round(v, 3) for k, v in result.stage_ms.items()},
        "runs_ms_per_frame": {"stylizer": [round(1e3 * w, 2) for w, _ in alone_runs],
                              "clip": [round(1e3 * w, 2) for w, _ in clip_runs]},
        "device": str(getattr(getattr(stylizer, "device", None), "type", "cpu")),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "av": av.__version__,
                     "numpy": np.__version__},
        "commit": git_info()["commit"],
    }
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
