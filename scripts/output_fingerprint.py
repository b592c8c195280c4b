"""Fingerprint what ``stylecam image`` and ``stylecam clip`` write on ``random:tiny``, to show that a refactor changed
no output: run it before and after, then ``diff`` the two JSON files.

Usage: python scripts/output_fingerprint.py OUT_DIR > fingerprint.json

It runs the installed ``stylecam`` command (the CLI is the interface that must not change): the demo clip (which goes
through ``clip`` with face framing), a plain ``clip`` without framing, and ``image`` on the packaged astronaut, all
with random:tiny weights on the CPU. It prints the sha256 of each file and of its decoded frames and audio samples
(so a container-level difference, such as a muxer version string, is told apart from a picture difference).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path


def _run(*args: str) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run(["stylecam", *args, "-q"], check=True, env=env, stdout=sys.stderr)  # stdout is the JSON


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decoded(path: Path) -> dict[str, object]:
    import av

    video, audio, frames, pts = hashlib.sha256(), hashlib.sha256(), 0, []
    with av.open(str(path)) as c:
        for frame in c.decode(*c.streams):
            if isinstance(frame, av.VideoFrame):
                video.update(frame.to_ndarray(format="rgb24").tobytes())
                pts.append(frame.pts)
                frames += 1
            else:
                audio.update(frame.to_ndarray().tobytes())
    return {"frames": frames, "video_sha256": video.hexdigest(), "audio_sha256": audio.hexdigest(),
            "pts_sha256": hashlib.sha256(json.dumps(pts).encode()).hexdigest()}


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    face = os.environ.get("STYLECAM_FACE_MODEL")
    if not face:
        sys.stderr.write("set STYLECAM_FACE_MODEL to a face_detection_short_range.tflite\n")
        return 2
    src = out / "astronaut.jpg"
    src.write_bytes(resources.files("realtime.assets").joinpath("astronaut.jpg").read_bytes())
    _run("image", str(src), "-o", str(out / "image.png"), "--model", "random:tiny", "--size", "128x128", "--overwrite")
    _run("demo", "--model", "random:tiny", "--seconds", "1", "--size", "128x64", "--out-dir", str(out / "demo"))
    demo_clip = out / "demo" / "demo.mp4"
    _run("clip", str(demo_clip), "-o", str(out / "clip.mp4"), "--model", "random:tiny", "--size", "128x64",
         "--no-face", "--style", "cel-shaded", "--overwrite")
    result: dict[str, object] = {"image.png": {"sha256": _sha(out / "image.png")}}
    for path in sorted((out / "demo").glob("*.mp4")) + [out / "clip.mp4"]:
        result[str(path.relative_to(out))] = {"sha256": _sha(path), **_decoded(path)}
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
