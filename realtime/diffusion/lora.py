"""LoRA files: resolve (local file, hub file, URL), read and fingerprint them.

Applying them is :mod:`realtime.diffusion.lora_switch` (in place, from the kept base weights); their keys are read by
:mod:`realtime.diffusion.lora_keys` and their maths is :mod:`realtime.diffusion.lora_math`. Only ``.safetensors`` is
loaded unless pickle files are explicitly allowed (``.bin``: torch's weights-only loader).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from realtime.config import LoraSpec
from realtime.errors import LoraError
from realtime.diffusion.models import check_not_pickle, file_sha256, hub_offline
from realtime.files import cache_root, download_file

log = logging.getLogger(__name__)


def _hub_file(spec: LoraSpec, allow_pickle: bool) -> tuple[str, str] | None:
    """``(repo, filename)`` when ``spec`` names a hub file ``owner/repo/[dir/]file.safetensors``, else None."""
    parts = spec.path.split("/")
    suffixes = (".safetensors", ".bin") + ((".pt", ".ckpt") if allow_pickle else ())  # .bin: weights-only loader
    if len(parts) >= 3 and not spec.path.startswith((".", "/", "~")) and parts[-1].endswith(suffixes):
        return "/".join(parts[:2]), "/".join(parts[2:])
    return None


def _url_target(url: str) -> Path:
    """Where a LoRA downloaded from ``url`` is cached."""
    name = url.rsplit("/", 1)[-1].split("?")[0] or "lora.safetensors"
    return cache_root() / "loras" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def local_lora(spec: LoraSpec, allow_pickle: bool = False) -> Path | None:
    """:func:`resolve_lora` without the network: the local path when the file is here (a local file, or a hub or URL
    file already cached), ``None`` when it would have to be downloaded; the same errors as :func:`resolve_lora`."""
    if Path(spec.path).expanduser().is_file() or hub_offline():
        return resolve_lora(spec, allow_pickle)  # offline, resolve_lora looks only at the caches
    if spec.path.startswith(("https://", "http://")):
        target = _url_target(spec.path)
        check_not_pickle(target, allow_pickle, "LoRA")
        return target if target.is_file() else None
    hub = _hub_file(spec, allow_pickle)
    if hub is not None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(*hub)
        return Path(found) if isinstance(found, str) else None
    return resolve_lora(spec, allow_pickle)  # not found: its one-line error


def resolve_lora(spec: LoraSpec, allow_pickle: bool = False) -> Path:
    """A local file, a hub file ``owner/repo/[dir/]file.safetensors`` or an https URL -> a local path."""
    path = Path(spec.path).expanduser()
    if path.is_file():
        check_not_pickle(path, allow_pickle, "LoRA")
        return path
    if spec.path.startswith(("https://", "http://")):
        return _download_url(spec.path, allow_pickle)
    hub = _hub_file(spec, allow_pickle)
    if hub is not None:
        from huggingface_hub import hf_hub_download

        repo, filename = hub
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=hub_offline()))
        except Exception as e:  # noqa: BLE001 - any hub failure is the same one-line error for the user
            raise LoraError(
                f"LoRA {spec.path!r} is not available ({type(e).__name__}): "
                + ("it is not cached and HF_HUB_OFFLINE is set" if hub_offline() else "check the hub path and network")
            ) from e
    raise LoraError(f"LoRA file not found: {spec.path}")


def _download_url(url: str, allow_pickle: bool) -> Path:
    target = _url_target(url)
    check_not_pickle(target, allow_pickle, "LoRA")
    if target.is_file():
        return target
    if hub_offline():
        raise LoraError(f"LoRA {url} is not cached and HF_HUB_OFFLINE is set: download it once online or pass a file")
    try:
        download_file(url, target, timeout_s=60.0)  # atomic: a temporary file beside the target, renamed when complete
    except (OSError, ValueError) as e:
        raise LoraError(f"LoRA {url} could not be downloaded: {e}") from e
    return target


def _state_dict(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """Read a LoRA file; a corrupt or non-LoRA file is a :class:`LoraError`."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
            raise LoraError(f"LoRA {path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
        import torch

        check_not_pickle(path, allow_pickle, "LoRA")
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise LoraError(f"LoRA {path} could not be read: {e}") from e
    if not sd or not any("lora" in k.lower() for k in sd):
        raise LoraError(f"LoRA {path} holds no LoRA weights (no 'lora' keys)")
    return sd


def lora_fingerprint(specs: Sequence[LoraSpec], allow_pickle: bool = False) -> list[str]:
    """``sha256:scale`` per LoRA, for engine cache keys."""
    return [f"{file_sha256(resolve_lora(s, allow_pickle))}:{s.scale:g}" for s in specs]


#: Layers only SD 1.x/2.x UNets have (SDXL's first down block and last up block have no attention), in diffusers,
#: peft and kohya spelling, and kohya's single-text-encoder prefix (SDXL's are lora_te1_/lora_te2_).
_SD_ONLY = re.compile(r"(down_blocks[._]0[._]attentions|up_blocks[._]3[._]attentions|^lora_te_)")


def foreign_architecture(keys: Iterable[str], family: str = "sd") -> str | None:
    """Why a LoRA with these keys cannot be for a model of ``family`` (``sd``: SD 2.x / SD-Turbo, one text encoder;
    ``sdxl``: SDXL-Turbo), or ``None`` when its keys do not tell. Weights for a second text encoder mean SDXL; layers
    that only SD 1.x/2.x UNets have, or kohya's single-text-encoder keys, mean SD. Keys only: the preflight checks a
    file's safetensors header with it before any model loads."""
    keys = list(keys)
    if family == "sdxl":
        hit = next((k for k in keys if _SD_ONLY.search(k)), None)
        if hit is not None:
            return f"it is a LoRA for SD 1.x/2.x (e.g. {hit.split('.lora')[0][:60]}), not for this SDXL model"
        return None
    if any("lora_te2_" in k or "text_encoder_2." in k for k in keys):
        return "it has weights for a second text encoder: a LoRA for SDXL, not for SD-Turbo / SD 2.x"
    return None


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """diffusers, peft and transformers silent (logs and warnings) for the block, also where no command line set
    them quiet (a library caller, a background thread), unless stylecam's own logs are at DEBUG
    (``--debug``, ``-vv``)."""
    if logging.getLogger("realtime").isEnabledFor(logging.DEBUG):
        yield
        return
    from transformers.utils import logging as hf_logging  # its weight-loading progress bar goes to stderr

    loggers = [logging.getLogger(n) for n in ("diffusers", "peft", "transformers")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        hf_logging.disable_progress_bar()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
