"""The resumable manifest of a clip batch (``stylecam clip IN... -o DIR --ray``): ``DIR/stylecam-manifest.json``.

One entry per finished output (keyed by its file name): the input's path, size, modification time and SHA-256, the
settings the output was made with (and their hash) and the output's size. Re-running the same command skips an output
whose entry matches (same input bytes, same settings, the output still there with its size) and redoes one whose
input or settings changed. The file is rewritten atomically after each finished output, by the driver alone, so an
interruption at any moment leaves it valid and listing only complete outputs. Hashing: an input whose size and
modification time match its entry keeps the recorded hash (not read again); any other is read once (about 1 s per GB).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.errors import UsageError
from realtime.files import write_text_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME = "stylecam-manifest.json"
_VERSION = 1
_BLOCK = 1 << 20


@dataclass(frozen=True)
class InputStamp:
    """What identifies an input's content: size (bytes), modification time (ns) and SHA-256 (hex)."""

    size: int
    mtime_ns: int
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def settings_of(**parts: Any) -> dict[str, Any]:
    """The settings that shape an output, as plain JSON data: dataclasses (configs) become dicts, paths strings."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        return str(v)

    return {k: plain(v) for k, v in sorted(parts.items())}


def settings_hash(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Manifest:
    """The manifest of output directory ``directory`` (read when it exists). An unreadable or foreign file is a
    :class:`UsageError` naming it (remove it to start afresh): it is never silently replaced."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / MANIFEST_NAME
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("version") != _VERSION or not isinstance(data.get("outputs"), dict):
                    raise ValueError("not a stylecam manifest of this version")
                self.entries = data["outputs"]
            except (OSError, ValueError, AttributeError) as e:
                raise UsageError(f"{self.path}: unreadable manifest ({e}): remove it to redo every output") from e

    def stamp(self, src: Path, dst: Path) -> InputStamp:
        """``src``'s stamp now; its hash is taken from ``dst``'s entry when size and modification time are unchanged."""
        st = os.stat(src)
        old = self.entries.get(dst.name, {}).get("input", {})
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns and old.get("sha256"):
            return InputStamp(st.st_size, st.st_mtime_ns, old["sha256"])
        return InputStamp(st.st_size, st.st_mtime_ns, file_sha256(src))

    def status(self, src: Path, dst: Path, settings: Mapping[str, Any]) -> tuple[str, InputStamp]:
        """``("done" | "changed" | "new", stamp)``: done when ``dst``'s entry has this input content and these
        settings and ``dst`` is there with its recorded size; changed when there is an entry that does not match
        (the output is ours to replace); new otherwise."""
        stamp = self.stamp(src, dst)
        entry = self.entries.get(dst.name)
        if entry is None:
            return "new", stamp
        same_input = entry.get("input", {}).get("size") == stamp.size and entry["input"].get("sha256") == stamp.sha256
        same_settings = entry.get("settings_hash") == settings_hash(settings)
        try:
            intact = dst.stat().st_size == entry.get("output_size")
        except OSError:
            intact = False
        if same_input and same_settings and intact:
            return "done", stamp
        why = [w for w, ok in (("input", same_input), ("settings", same_settings), ("output", intact)) if not ok]
        log.info("%s: %s changed since it was written: redone", dst.name, " and ".join(why))
        return "changed", stamp

    def owns(self, dst: Path) -> bool:
        """Whether ``dst`` was written by an earlier run (so it may be replaced without ``--overwrite``)."""
        return dst.name in self.entries

    def record(self, src: Path, dst: Path, stamp: InputStamp, settings: Mapping[str, Any], frames: int) -> None:
        """Add (or replace) ``dst``'s entry and rewrite the manifest atomically."""
        self.entries[dst.name] = {
            "input": {"path": str(src), **dataclasses.asdict(stamp)},
            "settings_hash": settings_hash(settings), "settings": dict(settings),
            "output_size": dst.stat().st_size, "frames": frames,
        }
        data = {"version": _VERSION, "outputs": dict(sorted(self.entries.items()))}
        write_text_atomic(self.path, json.dumps(data, indent=1))
