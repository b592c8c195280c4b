"""Which device and dtype a run uses (``--device``, ``--dtype``): ``auto`` picks, a device that is not there is an
error with the fix, never a silent fallback. :mod:`realtime.diffusion.models` re-exports both functions."""
from __future__ import annotations

from typing import TYPE_CHECKING

from realtime.errors import DeviceUnavailable

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str = "auto") -> "torch.device":
    """``auto`` picks CUDA, then MPS, then CPU. A device that is not there is an error, never a silent fallback."""
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceUnavailable(
                f"--device {spec}: no CUDA GPU is visible to torch {torch.__version__} ({build}); "
                "install a CUDA build of torch and the NVIDIA driver, or use --device cpu"
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if spec == "mps" and not has_mps:
        raise DeviceUnavailable("--device mps: Metal (MPS) is not available here; use --device cpu")
    return torch.device(spec)


def resolve_dtype(spec: str, device: "torch.device") -> "torch.dtype":
    """``auto``: fp16 on CUDA and MPS, fp32 on the CPU."""
    import torch

    if spec == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[spec]
