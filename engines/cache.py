"""The engine cache: one directory per engine, keyed by a hash of everything that changes it, with a JSON manifest.

Layout under the root (``--cache-dir``, else ``$STYLECAM_CACHE``, else the user cache directory)::

    <root>/engines/<key>/manifest.json     key fields, versions, backend, created date, files with size and sha256
    <root>/engines/<key>/<artifacts>       engine.plan + model.weights.json (tensorrt); model.onnx + .data + map (ort)
    <root>/timing/<name>.cache             TensorRT timing caches (shared by builds on the same GPU and version)
    <root>/auto/<key>.json                 backend="auto" decisions measured on the CPU

Writes are atomic: an entry is built in ``<root>/engines/.tmp-<key>-<id>/`` and renamed into place with its manifest.
A corrupt or version-mismatched entry is reported (a logged warning with the reason) and removed by :meth:`lookup`,
which then returns None so the caller rebuilds; it never raises for a bad entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

from engines.errors import CacheDirError, EngineOptionError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
ENGINE_FORMAT = 1  # bump when what engines/ writes for the same key fields changes (export settings, file layout)
KEY_LENGTH = 20


def default_cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``explicit`` (``--cache-dir``), else ``$STYLECAM_CACHE``, else :func:`user_cache_dir`.

    ``engines`` imports nothing from ``realtime`` (docs/design.md §1), so this is its own copy of the rule that
    :func:`realtime.files.cache_root` decides for the application; ``tests/test_files.py`` pins the two equal."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("STYLECAM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir())


def user_cache_dir(environ: Mapping[str, str] | None = None, os_name: str | None = None,
                   home: str | None = None) -> PurePath:
    """``%LOCALAPPDATA%\\stylecam`` on Windows, ``$XDG_CACHE_HOME/stylecam`` or ``~/.cache/stylecam`` elsewhere.
    (The arguments exist for tests; they default to this process's environment, ``os.name`` and home.)"""
    environ = os.environ if environ is None else environ
    os_name = os.name if os_name is None else os_name
    if os_name == "nt":
        local = environ.get("LOCALAPPDATA")
        base = PureWindowsPath(local) if local else PureWindowsPath(home or str(Path.home())) / "AppData" / "Local"
        return base / "stylecam"
    xdg = environ.get("XDG_CACHE_HOME")
    base_posix = PurePosixPath(xdg) if xdg else PurePosixPath(home or str(Path.home())) / ".cache"
    return base_posix / "stylecam"


def _not_json(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} value {value!r} is not a JSON value")


def canonical_json(fields: Mapping[str, Any]) -> str:
    try:
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_not_json)
    except (TypeError, ValueError) as e:
        raise EngineOptionError(f"cache key fields must be JSON values (str, int, float, bool, None, list, dict): "
                                f"{e}") from e


def cache_key(fields: Mapping[str, Any]) -> str:
    """A stable short hex hash of ``fields`` (sorted-key JSON, sha256). Equal fields give equal keys on any machine;
    any change of any field (names, values, types: ``1`` vs ``1.0``) gives another key."""
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()[:KEY_LENGTH]


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_fields(device: Any, backend: str) -> dict[str, Any]:
    """The key fields this machine adds for ``backend`` on ``device``: backend and library versions, torch version,
    GPU name and compute capability (CUDA) or CPU architecture, and the engines/ format version."""
    import platform

    import torch

    dev = torch.device(device)
    fields: dict[str, Any] = {"backend": backend, "device_type": dev.type, "torch": torch.__version__,
                              "engines_format": ENGINE_FORMAT}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        fields.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    else:
        fields["machine"] = platform.machine()
    if backend in ("onnxruntime", "tensorrt"):
        fields["onnx"] = _version("onnx")
    if backend == "onnxruntime":
        fields["onnxruntime"] = _version("onnxruntime") or _version("onnxruntime-gpu")
    if backend == "tensorrt":
        from engines.tensorrt import tensorrt_version

        fields["tensorrt"] = tensorrt_version()
    return fields


VERSION_FIELDS = ("torch", "onnx", "onnxruntime", "tensorrt", "cuda", "gpu", "compute_capability", "engines_format")


def versions_of(fields: Mapping[str, Any]) -> dict[str, str]:
    """The version-like subset of environment fields, checked again by :meth:`EngineCache.lookup`."""
    return {k: str(fields[k]) for k in VERSION_FIELDS if fields.get(k) is not None}


@dataclass(frozen=True)
class CacheEntry:
    """One cache directory. ``problem`` is None for a valid entry, else why it is unusable (listing only)."""

    key: str
    path: Path
    backend: str
    created: datetime | None
    size_bytes: int
    description: str
    manifest: dict[str, Any] = field(repr=False)
    problem: str | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.manifest.get("extra") or {})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _parse_time(text: object) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class EngineCache:
    """Engines on disk. ``verify``: ``"sha256"`` (default) re-hashes every file on lookup; ``"size"`` checks sizes only
    (faster for multi-GB engines; a corrupt plan is then caught when loading it fails)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, verify: str = "sha256") -> None:
        if verify not in ("sha256", "size"):
            raise EngineOptionError(f"EngineCache verify={verify!r} is not allowed: 'sha256' or 'size'")
        self.root = default_cache_root(root)
        self.verify = verify

    def __repr__(self) -> str:
        return f"EngineCache({str(self.root)!r})"

    @property
    def engines_dir(self) -> Path:
        return self.root / "engines"

    def entry_path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise EngineOptionError(f"cache key {key!r} is not a lowercase hex string")
        return self.engines_dir / key

    def _ensure(self, path: Path) -> Path:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheDirError(f"cannot create the cache directory {path} ({e.strerror or e}): "
                                "choose another with --cache-dir or STYLECAM_CACHE") from e
        return path

    # --- reading ------------------------------------------------------------------------------------------------------
    def _read(self, path: Path, key: str, versions: Mapping[str, str] | None, hashes: bool) -> CacheEntry:
        """The entry at ``path`` with ``problem`` set when it is unusable."""
        def bad(problem: str, manifest: dict[str, Any] | None = None) -> CacheEntry:
            m = manifest or {}
            return CacheEntry(key, path, str(m.get("backend", "?")), _parse_time(m.get("created")),
                              _dir_size(path) if path.exists() else 0, str(m.get("description", "")), m, problem)

        mpath = path / MANIFEST
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return bad("no manifest (an interrupted build?)")
        except (OSError, ValueError) as e:
            return bad(f"unreadable manifest ({e})")
        if not isinstance(manifest, dict):
            return bad("manifest is not a JSON object")
        if manifest.get("format") != MANIFEST_FORMAT:
            return bad(f"manifest format {manifest.get('format')!r} is not {MANIFEST_FORMAT}", manifest)
        if manifest.get("key") != key:
            return bad(f"manifest key {manifest.get('key')!r} does not match the directory", manifest)
        try:
            if cache_key(manifest.get("fields") or {}) != key:
                return bad("key fields in the manifest do not hash to the key", manifest)
        except EngineOptionError:
            return bad("key fields in the manifest are not JSON values", manifest)
        built = manifest.get("versions") or {}
        for name, want in (versions or {}).items():
            have = built.get(name)
            if have is not None and str(have) != str(want):
                return bad(f"built with {name} {have}, this machine has {want}", manifest)
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            return bad("manifest lists no files", manifest)
        total = 0
        for name, info in files.items():
            f = path / name
            if "/" in name or "\\" in name or name in (".", "..", MANIFEST):
                return bad(f"manifest lists an invalid file name {name!r}", manifest)
            if not f.is_file():
                return bad(f"{name} is missing", manifest)
            size = f.stat().st_size
            if size != info.get("size"):
                return bad(f"{name} has {size} bytes, the manifest says {info.get('size')}", manifest)
            if hashes and _sha256(f) != info.get("sha256"):
                return bad(f"{name} does not match its sha256 (corrupt)", manifest)
            total += size
        return CacheEntry(key, path, str(manifest.get("backend", "?")), _parse_time(manifest.get("created")), total,
                          str(manifest.get("description", "")), manifest)

    def lookup(self, key: str, versions: Mapping[str, str] | None = None) -> CacheEntry | None:
        """The valid entry for ``key``, or None. An invalid one (corrupt, truncated, built with other ``versions``) is
        logged with the reason and removed, so the caller rebuilds it."""
        path = self.entry_path(key)
        if not path.exists():
            return None
        entry = self._read(path, key, versions, hashes=self.verify == "sha256")
        if entry.problem is None:
            logger.debug("engine cache hit %s (%s)", key, entry.backend)
            return entry
        self.remove(key, entry.problem)
        return None

    def entries(self) -> list[CacheEntry]:
        """Every entry (sizes and dates for ``stylecam cache list``), oldest first; unusable ones have ``problem`` set.
        Files are checked by size only here (no hashing)."""
        if not self.engines_dir.is_dir():
            return []
        out = [self._read(p, p.name, None, hashes=False) for p in self.engines_dir.iterdir()
               if p.is_dir() and not p.name.startswith(".")]
        far = datetime.max.replace(tzinfo=timezone.utc)
        return sorted(out, key=lambda e: (e.created or far, e.key))

    # --- writing ------------------------------------------------------------------------------------------------------
    def writer(self, key: str, *, fields: Mapping[str, Any], backend: str, description: str = "",
               versions: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> "CacheWriter":
        """A context manager: write the artifacts into ``writer.dir``; on success the entry appears atomically with
        its manifest (``writer.entry``); on an exception nothing is left behind."""
        if cache_key(fields) != key:
            raise EngineOptionError("cache key does not match its fields")
        return CacheWriter(self, key, dict(fields), backend, description, dict(versions or {}), dict(extra or {}))

    def remove(self, key: str, reason: str = "") -> bool:
        path = self.entry_path(key)
        if not path.exists():
            return False
        if reason:
            logger.warning("engine cache entry %s is unusable (%s): removing it, it will be rebuilt", key, reason)
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()

    def clear(self, older_than: datetime | None = None) -> list[str]:
        """Remove every entry (None), or those created before ``older_than`` (a naive datetime is local time).
        Interrupted builds are always removed; clearing everything also drops timing caches and auto decisions.
        Returns the removed keys."""
        removed: list[str] = []
        if self.engines_dir.is_dir():
            limit = older_than.astimezone(timezone.utc) if older_than is not None else None
            for p in self.engines_dir.iterdir():
                if p.name.startswith(".tmp-"):
                    shutil.rmtree(p, ignore_errors=True)
                    continue
                if not p.is_dir():
                    continue
                if limit is not None:
                    created = self._read(p, p.name, None, hashes=False).created
                    if created is None:
                        created = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
                    if created >= limit:
                        continue
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        if older_than is None:
            for sub in ("timing", "auto"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
        if removed:
            logger.info("engine cache: removed %d entries from %s", len(removed), self.engines_dir)
        return sorted(removed)

    # --- side files ---------------------------------------------------------------------------------------------------
    def timing_cache_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        return self._ensure(self.root / "timing") / f"{safe}.cache"

    def read_note(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "auto" / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_note(self, key: str, data: Mapping[str, Any]) -> None:
        d = self._ensure(self.root / "auto")
        tmp = d / f".{key}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        tmp.replace(d / f"{key}.json")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (PermissionError): alive
        return True
    return True


def _sweep_dead_builds(engines_dir: Path) -> None:
    """Remove the temporary directories of builds whose process died (killed halfway: ``.tmp-<key>-<pid>-<id>``).
    They were never entries (lookups ignore them); this only frees their disk space. Builds of live processes stay."""
    for p in engines_dir.glob(".tmp-*"):
        parts = p.name.split("-")
        if len(parts) == 4 and parts[2].isdigit() and not _pid_alive(int(parts[2])):
            logger.info("engine cache: removing %s, left by a build that was killed halfway", p.name)
            shutil.rmtree(p, ignore_errors=True)


class CacheWriter:
    """See :meth:`EngineCache.writer`. The build happens in ``<root>/engines/.tmp-<key>-<pid>-<id>/``; a process
    killed halfway leaves only that directory (never an entry), removed by the next build in that cache."""

    def __init__(self, cache: EngineCache, key: str, fields: dict[str, Any], backend: str, description: str,
                 versions: dict[str, str], extra: dict[str, Any]) -> None:
        self.cache, self.key, self.fields, self.backend = cache, key, fields, backend
        self.description, self.versions, self.extra = description, versions, extra
        self.dir = cache.engines_dir / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.entry: CacheEntry | None = None

    def __enter__(self) -> "CacheWriter":
        self.cache._ensure(self.cache.engines_dir)
        _sweep_dead_builds(self.cache.engines_dir)
        try:
            self.dir.mkdir()
        except OSError as e:
            raise CacheDirError(f"cannot write to the cache directory {self.cache.engines_dir} ({e.strerror or e}): "
                                "choose another with --cache-dir or STYLECAM_CACHE") from e
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        try:
            self._commit()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _commit(self) -> None:
        files = {}
        for p in sorted(self.dir.iterdir()):
            if not p.is_file():
                raise CacheDirError(f"cache entries hold plain files only, found {p.name!r}")
            files[p.name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
        if not files:
            raise CacheDirError("a cache entry needs at least one file")
        manifest = {
            "format": MANIFEST_FORMAT, "key": self.key, "backend": self.backend, "description": self.description,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "fields": self.fields,
            "versions": self.versions, "files": files, "size_bytes": sum(f["size"] for f in files.values()),
            "extra": self.extra,
        }
        (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        final = self.cache.entry_path(self.key)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(self.dir, final)
        except OSError as e:  # another process committed the same key meanwhile: keep theirs if valid
            shutil.rmtree(self.dir, ignore_errors=True)
            if not final.exists():
                raise CacheDirError(f"cannot move the new engine into {final} ({e.strerror or e})") from e
        entry = self.cache._read(final, self.key, None, hashes=False)
        if entry.problem is not None:
            raise CacheDirError(f"the new cache entry {final} is unusable: {entry.problem}")
        self.entry = entry
        logger.info("engine cache: stored %s (%s, %.1f MB) in %s", self.key, self.backend, entry.size_bytes / 1e6,
                    final)
