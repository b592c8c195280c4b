"""Where the MediaPipe model files come from: one resolution rule for the face, pose and segmentation models.

:func:`resolve_model_file` takes a :class:`ModelFile` (what the model is, its cache file name, its official download
with size and sha256, the environment variable and the option that point at a local copy) and returns the file to
load: an explicit path (the option), then the environment variable, then a verified copy in the cache
(:func:`model_cache_dir`), then the official download (atomic, size and sha256 verified), unless offline
(``HF_HUB_OFFLINE`` or ``STYLECAM_OFFLINE``). Errors are one line naming the fix.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from realtime.errors import BadInputFile, InputNotFound, ModelNotFound, OutputError
from realtime.files import cache_root, download_file

__all__ = ["ModelFile", "existing", "model_cache_dir", "offline", "resolve_model_file", "verified"]

log = logging.getLogger(__name__)

_DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ModelFile:
    """One downloadable model file. ``size`` None: only the sha256 is checked (the publisher lists no size)."""

    what: str      # "MediaPipe face model": how messages name it
    file: str      # the file name in the cache
    url: str       # the official download
    sha256: str
    size: int | None
    env: str       # STYLECAM_FACE_MODEL: a local copy
    option: str    # --face-model: the option that names a local copy

    @property
    def fix(self) -> str:
        return f"pass {self.option} PATH or set {self.env}"


def model_cache_dir() -> Path:
    """Where downloaded models are cached: ``models/`` under :func:`realtime.files.cache_root`."""
    return cache_root() / "models"


def offline() -> bool:
    """Downloads are off: ``HF_HUB_OFFLINE`` or ``STYLECAM_OFFLINE`` set to a true value."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("HF_HUB_OFFLINE", "STYLECAM_OFFLINE"))


def verified(path: Path, spec: ModelFile) -> bool:
    """``path`` holds exactly the official file (size, when known, and sha256)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return (spec.size is None or len(data) == spec.size) and hashlib.sha256(data).hexdigest() == spec.sha256


def existing(path: Path, what: str, fix: str) -> Path:
    """``path`` (``~`` expanded) when it is a file, else :class:`InputNotFound` naming ``what`` and ``fix``."""
    path = path.expanduser()
    if not path.is_file():
        raise InputNotFound(f"{what}={path} does not exist: {fix}")
    return path


def _download(spec: ModelFile, dest: Path) -> Path:
    log.info("downloading the %s (%s) to %s", spec.what, f"{spec.size} bytes" if spec.size else spec.url, dest)
    try:
        return download_file(spec.url, dest, size=spec.size, sha256=spec.sha256, timeout_s=_DOWNLOAD_TIMEOUT_S)
    except OutputError as e:
        raise OutputError(f"cannot write the model cache {dest.parent} ({e}): set STYLECAM_CACHE or {spec.fix}") from e
    except BadInputFile as e:
        raise ModelNotFound(f"the {spec.what} downloaded from {spec.url} does not verify ({e}): {spec.fix}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ModelNotFound(f"could not download the {spec.what} from {spec.url} ({e}): {spec.fix}") from e


def resolve_model_file(spec: ModelFile, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file to load for ``spec``: ``explicit``, then ``$spec.env``, then the verified cached copy, then the
    official download. :class:`InputNotFound` for an explicit or environment path that does not exist;
    :class:`ModelNotFound` when the model is not cached and cannot be downloaded (offline, or no network)."""
    if explicit is not None and str(explicit) != "":
        return existing(Path(explicit), spec.option, f"pass {spec.option} PATH to the {spec.what} file")
    env = os.environ.get(spec.env, "")
    if env:
        return existing(Path(env), spec.env, "point it at an existing model file or unset it")
    cached = model_cache_dir() / spec.file
    if cached.is_file():
        if verified(cached, spec):
            return cached
        log.warning("cached %s %s does not match its sha256; fetching it again", spec.what, cached)
    if offline():
        raise ModelNotFound(f"the {spec.what} is not cached ({cached}) and downloads are off (offline mode): {spec.fix}")
    return _download(spec, cached)
