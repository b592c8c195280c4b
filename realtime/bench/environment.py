"""The environment a benchmark ran in: GPU, driver, CUDA, library versions, CPU, OS, Python, git commit, date.

Nothing here imports an optional library just to ask its version (``importlib.metadata`` reads the installed
distributions); a value that cannot be found is ``None`` (or ``"unknown"`` for the git commit), never a guess.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Distributions whose versions a result records (the first installed name of each group is used).
VERSION_PACKAGES: dict[str, tuple[str, ...]] = {
    "stylecam": ("stylecam",),
    "torch": ("torch",),
    "diffusers": ("diffusers",),
    "transformers": ("transformers",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnx": ("onnx",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_rtx", "tensorrt-rtx"),
    "numpy": ("numpy",),
    "opencv": ("opencv-contrib-python", "opencv-python", "opencv-python-headless", "opencv-contrib-python-headless"),
    "mediapipe": ("mediapipe",),
    "av": ("av",),
    "streamdiffusion": ("streamdiffusion",),
}


def package_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 5.0) -> str | None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_info(start: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the checkout this package runs from."""
    where = start or Path(__file__).resolve().parents[1]
    if shutil.which("git") is None:
        return {"commit": "unknown", "dirty": None}
    sha = _run(["git", "rev-parse", "HEAD"], cwd=where)
    if not sha:
        return {"commit": "unknown", "dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where)
    return {"commit": sha, "dirty": None if status is None else bool(status)}


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _nvml_driver() -> str | None:
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001 - NVML errors are many and all mean "not known"
        log.debug("NVML driver query failed: %s", e)
        return None


def driver_version() -> str | None:
    """The NVIDIA driver version (NVML if ``nvidia-ml-py`` is installed, else ``nvidia-smi``), None if unknown."""
    v = _nvml_driver()
    if v:
        return v
    if shutil.which("nvidia-smi"):
        out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        if out:
            return out.splitlines()[0].strip()
    return None


def gpu_info(device: Any) -> dict[str, Any] | None:
    """Name, compute capability, memory and driver of ``device`` when it is a CUDA device, else None."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_total_mb": props.total_memory / float(1 << 20),
        "multiprocessors": props.multi_processor_count,
        "driver": driver_version(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": cudnn,
        "device_count": torch.cuda.device_count(),
    }


def environment(device: Any) -> dict[str, Any]:
    """Everything a result needs to be compared across machines (see the schema's ``environment``)."""
    import torch

    try:
        load = list(os.getloadavg())
    except (OSError, AttributeError):
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node() or None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "load_average": load},
        "device": str(device),
        "gpu": gpu_info(device),
        "torch_cuda": torch.version.cuda,
        "versions": {k: package_version(v) for k, v in VERSION_PACKAGES.items()},
        "git": git_info(),
    }
