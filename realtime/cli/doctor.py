"""``stylecam doctor``: what this machine can and cannot do, each line with the fix where something is missing."""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from pathlib import Path

from realtime import __version__
from realtime.cli.options import AddGlobal, Subparsers


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - doctor reports any import failure as "not importable"
        return None
    return str(getattr(mod, "__version__", "?"))


def _line(ok: bool | None, what: str, detail: str) -> str:
    mark = {True: "ok  ", False: "MISS", None: "info"}[ok]
    return f"[{mark}] {what:<16} {detail}"


def doctor_lines(face_model: str | None = None) -> list[str]:
    lines = [_line(None, "stylecam", f"{__version__} on Python {platform.python_version()} ({platform.system()} {platform.machine()})")]
    torch_v = _version("torch")
    if torch_v is None:
        lines.append(_line(False, "torch", "not importable: pip install torch"))
    else:
        import torch

        cuda = torch.version.cuda or "CPU-only build"
        lines.append(_line(True, "torch", f"{torch_v} (CUDA {cuda})"))
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                lines.append(_line(True, f"cuda:{i}", f"{p.name}, compute {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB"))
        else:
            lines.append(_line(False, "GPU", "no CUDA GPU visible: live stylization needs an NVIDIA GPU (CPU runs take seconds per frame)"))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            lines.append(_line(True, "mps", "Apple Metal available"))
    for mod in ("diffusers", "transformers", "peft", "onnx", "av", "mediapipe", "cv2"):
        v = _version(mod)
        lines.append(_line(v is not None, mod, v or f"not importable: pip install stylecam (reinstall {mod})"))
    v = _version("onnxruntime")
    lines.append(_line(v is not None, "onnxruntime", v or "not installed (optional): pip install 'stylecam[ort]'"))
    v = _version("tensorrt")
    lines.append(_line(v is not None, "tensorrt", v or "not installed (optional, fastest on NVIDIA): pip install 'stylecam[trt]'"))
    v = _version("ray")
    lines.append(_line(v is not None, "ray", v or "not installed (optional, `clip --ray` on a cluster): pip install 'stylecam[ray]'"))
    lines.append(_vcam_line())
    lines.append(_face_line(face_model))
    lines.extend(_hub_lines())
    lines.extend(_engine_lines())
    return lines


def _vcam_line() -> str:
    try:
        from realtime.io.sinks import virtual_camera_status
    except ImportError:
        return _line(None, "virtual camera", "check not available in this build")
    ok, detail = virtual_camera_status()
    return _line(ok, "virtual camera", detail)


def _face_line(explicit: str | None) -> str:
    from realtime.vision.face import FACE_MODEL_FILE, face_model_cache_dir

    env = os.environ.get("STYLECAM_FACE_MODEL")
    path = Path(explicit or env or face_model_cache_dir() / FACE_MODEL_FILE).expanduser()
    if path is not None and path.is_file():
        return _line(True, "face model", str(path))
    if explicit:
        return _line(False, "face model", f"{explicit} not found")
    return _line(False, "face model", "not cached: downloaded on first `stylecam live` (or set STYLECAM_FACE_MODEL / --face-model PATH)")


def _hub_lines() -> list[str]:
    from realtime.config import DEFAULT_CONTROLNET, DEFAULT_MODEL, TAESD_REPO
    from realtime.diffusion.models import hub_offline

    lines = [_line(None, "hub", f"cache {os.environ.get('HF_HOME') or Path.home() / '.cache/huggingface'}; HF_HUB_OFFLINE={'1' if hub_offline() else 'unset'}")]
    try:
        from huggingface_hub import scan_cache_dir

        cached = {r.repo_id for r in scan_cache_dir().repos}
    except Exception:  # noqa: BLE001 - no cache yet
        cached = set()
    for repo in (DEFAULT_MODEL, DEFAULT_CONTROLNET, TAESD_REPO):
        ok = repo in cached
        lines.append(_line(ok, "model", f"{repo}: " + ("cached" if ok else "not cached: stylecam models pull (or downloaded on first use; accept its licence on the hub)")))
    return lines


def _engine_lines() -> list[str]:
    try:
        from engines.cache import EngineCache
    except ImportError:
        return []

    entries = list(EngineCache(None).entries())
    if not entries:
        return [_line(None, "engines", f"none cached in {EngineCache(None).engines_dir}")]
    return [_line(None, "engine", f"{e.key} {e.backend} {e.size_bytes / 2**20:.0f} MiB {e.created}") for e in entries]


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam doctor``."""
    p = subparsers.add_parser("doctor", help="check this machine", description="Check Python, torch, GPU, TensorRT, virtual camera, face model and model cache.")
    p.add_argument("--face-model", default=None, help="face model to check (default: STYLECAM_FACE_MODEL, then the cache)")
    add_global(p)
    p.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    for line in doctor_lines(args.face_model):
        sys.stdout.write(line + "\n")
    return 0
