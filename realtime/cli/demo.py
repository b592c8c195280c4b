"""``stylecam demo``: make a demo clip (a face moving like in a webcam, with a tone as its sound) and stylize it.

The face is ``assets/astronaut.jpg`` (public domain). The clip is 1280x720 at 30 fps; the stylized copy goes through
exactly what ``stylecam clip`` does (face framing, Canny, the stylizer, audio kept).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from fractions import Fraction
from importlib import resources
from pathlib import Path

import numpy as np

from realtime.cli import clip as clip_command
from realtime.cli.options import AddGlobal, Parser, Subparsers, add_global_options, run_from_args
from realtime.errors import OutputError, UsageError
from realtime.geometry import Size

log = logging.getLogger(__name__)


def demo_frames(seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 30):
    """Yield (H, W, 3) uint8 RGB frames: the astronaut's face swaying and leaning in front of a soft gradient."""
    import cv2
    from PIL import Image

    w, h = size
    with resources.files("realtime.assets").joinpath("astronaut.jpg").open("rb") as f:
        face = np.asarray(Image.open(f).convert("RGB"))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = np.stack([90 + 60 * xx / w, 110 + 40 * yy / h, 150 - 50 * xx / w], axis=-1).astype(np.uint8)
    n = max(1, round(seconds * fps))
    for i in range(n):
        t = i / fps
        scale = 1.55 + 0.25 * math.sin(2 * math.pi * t / 4.0)  # leaning in and out
        cx = w / 2 + 0.18 * w * math.sin(2 * math.pi * t / 3.0)  # swaying
        cy = h / 2 + 0.05 * h * math.sin(2 * math.pi * t / 2.0)
        m = np.array([[scale, 0, cx - scale * face.shape[1] / 2], [0, scale, cy - scale * face.shape[0] / 2]], np.float32)
        frame = background.copy()
        cv2.warpAffine(face, m, (w, h), dst=frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        yield frame


def make_demo_clip(path: Path, seconds: float = 4.0, size: tuple[int, int] = (1280, 720), fps: int = 30) -> Path:
    """Write the demo clip (H.264 + AAC tone) to ``path`` atomically."""
    import av

    from realtime.files import atomic_output

    with atomic_output(path) as tmp:
        with av.open(str(tmp), "w") as out:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
            audio = out.add_stream("aac", rate=48000)
            audio.layout = "mono"
            for frame in demo_frames(seconds, size, fps):
                out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(video.encode())
            sr, chunk = 48000, 1024
            total = int(seconds * sr)
            for start in range(0, total, chunk):
                t = (np.arange(start, min(total, start + chunk)) / sr).astype(np.float32)
                tone = (0.2 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, start, Fraction(1, sr)
                out.mux(audio.encode(af))
            out.mux(audio.encode())
    return path


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam demo``."""
    p = subparsers.add_parser("demo", help="make a demo clip and stylize it", description=(
        "Make a 1280x720 demo clip (a moving face with a tone as its sound) and stylize it like `stylecam clip`. "
        "Uses the default model (downloaded from the hub on first use) unless --model says otherwise."))
    p.add_argument("--out-dir", default="stylecam-demo", help="where demo.mp4 and demo_<style>.mp4 go (default stylecam-demo)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the demo clip (default 4)")
    p.add_argument("--style", default="anime", help="style preset (default anime)")
    p.add_argument("--model", default=None, help="model spec (default stabilityai/sd-turbo; random:tiny runs anywhere in seconds)")
    for opt in ("--size", "--device", "--dtype", "--backend"):
        p.add_argument(opt, default=None, help=f"passed to `stylecam clip` ({opt})")
    p.add_argument("--no-face", action="store_true", help="no face framing (passed to `stylecam clip`)")
    p.add_argument("--face-model", default=None, metavar="PATH", help="MediaPipe face detector .tflite (passed to "
                   "`stylecam clip`; default: STYLECAM_FACE_MODEL, then the cache, then a download)")
    add_global(p)
    p.set_defaults(func=run)


def _clip_parser() -> argparse.ArgumentParser:
    """``stylecam`` with only its ``clip`` command: what the demo's stylized copy is parsed with (same errors)."""
    parser = Parser(prog="stylecam")
    clip_command.add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser),
                            add_global_options)
    return parser


def run(args: argparse.Namespace) -> int:
    from realtime.cli.preflight import demo_inputs

    if not 0.5 <= args.seconds <= 120:
        raise UsageError(f"--seconds {args.seconds}: must be between 0.5 and 120")
    out_dir = Path(args.out_dir)
    clip = out_dir / "demo.mp4"
    target = out_dir / f"demo_{Path(args.style).stem}.mp4"
    argv = ["clip", str(clip), "-o", str(target), "--overwrite", "--style", args.style]
    for name in ("model", "size", "device", "dtype", "backend"):
        if getattr(args, name):
            argv += [f"--{name}", getattr(args, name)]
    if args.no_face and args.face_model:
        raise UsageError("--no-face with --face-model: choose one")
    if args.no_face:
        argv.append("--no-face")
    if args.face_model:
        argv += ["--face-model", args.face_model]
    if args.debug:
        argv.append("--debug")
    clip_args = _clip_parser().parse_args(argv)
    run_from_args(clip_args, Size(1280, 720))  # --size, --device, --dtype: checked before seconds of clip making
    demo_inputs(args, clip_args)  # style, model, face model, encoders, output directory
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out_dir}: {e.strerror}") from e
    log.info("making the demo clip %s (%.0f s)", clip, args.seconds)
    make_demo_clip(clip, args.seconds)
    code = int(clip_args.func(clip_args) or 0)
    if code == 0:
        sys.stdout.write(f"demo clip: {clip}\nstylized:  {target}\n")
    return code
