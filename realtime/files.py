"""Checking inputs and outputs before any work, and writing outputs safely: a temporary file beside the target, renamed
over it only when complete.

:func:`check_input_file` and :func:`check_output_path` are the one place that says whether an input can be read and an
output can be written (missing, unreadable, not a file, the input itself, an existing file without ``--overwrite``).

Every command that writes a file goes through :func:`atomic_output`, so Ctrl-C, SIGTERM or an error never leaves a
half-written output or a stray temporary file, and the finished file gets the permissions a plain ``open()`` would give.

:func:`cache_root` is the one place that says where stylecam caches things (engines, the face model, downloaded LoRAs,
generated tokenizers), and :func:`download_file` the one way a file is downloaded (atomic, verified when a size or
sha256 is known).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

from realtime.errors import BadInputFile, InputNotFound, OutputError

__all__ = ["atomic_output", "cache_root", "check_input_file", "check_not_input", "check_output_path", "default_mode",
           "download_file", "same_file", "user_cache_dir", "write_text_atomic"]


def check_input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    """``path`` as a :class:`Path` when it is a readable file, else :class:`InputNotFound` naming ``what``."""
    p = Path(path)
    if not p.exists():
        raise InputNotFound(f"{what} not found: {p}")
    if not p.is_file():
        raise InputNotFound(f"{what} is not a file: {p}")
    if not os.access(p, os.R_OK):
        raise InputNotFound(f"{what} is not readable: {p}")
    return p


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name the same file: the same resolved path (symlinks, ``..``, ``~`` followed), or, both
    existing, the same inode on the same device (hard links, bind mounts, case-insensitive file systems)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.resolve() == pb.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: fall through to the inode check
        pass
    try:
        sa, sb = os.stat(pa), os.stat(pb)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_not_input(path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], *,
                    what: str = "output") -> None:
    """:class:`OutputError` when ``path`` is one of ``inputs`` (:func:`same_file`; ``None`` entries are skipped),
    whatever ``--overwrite`` says: an output never replaces a file the command reads."""
    for src in inputs:
        if src is not None and str(src) and same_file(path, src):
            same = "" if str(Path(src)) == str(Path(path)) else f" (the same file as {src})"
            raise OutputError(f"{what} {path} is the input{same}: choose another name")


def check_output_path(path: Path, *, overwrite: bool,
                      inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """Fail (:class:`OutputError`) unless ``path`` can be written: its directory exists and is writable, it is not a
    directory, not one of ``inputs`` (:func:`check_not_input`: the same file by path or inode, even with
    ``overwrite``), and does not exist unless ``overwrite``."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    check_not_input(path, inputs)
    if not parent.is_dir():
        if parent.exists():
            raise OutputError(f"output directory {parent} is a file, not a directory")
        raise OutputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise OutputError(f"output {path} is a directory: give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"output {path} exists: pass --overwrite to replace it")


def _umask() -> int:
    """The process umask, read from /proc (never set: ``os.umask`` is process-wide and races with other threads);
    022 where /proc has no answer."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def default_mode(path: Path) -> None:
    """Give a temporary file (``mkstemp`` makes it 0600) the permissions a new file would get: 0666 minus the umask."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (hidden, same suffix, so writers that go by the extension work); it is
    renamed onto ``path`` only if the block succeeds. On any failure or Ctrl-C the temporary file is removed and
    ``path`` is untouched. A directory that cannot be written is an :class:`OutputError`."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write in {parent}: {e.strerror or e}") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ending in a newline) to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------------ the cache root
def user_cache_dir(environ: Mapping[str, str] | None = None, os_name: str | None = None,
                   home: str | None = None) -> PurePath:
    """``%LOCALAPPDATA%\\stylecam`` on Windows (``~\\AppData\\Local\\stylecam`` without it), ``$XDG_CACHE_HOME/stylecam``
    or ``~/.cache/stylecam`` elsewhere. (The arguments exist for tests; they default to this process's environment,
    ``os.name`` and home directory.)"""
    environ = os.environ if environ is None else environ
    os_name = os.name if os_name is None else os_name
    if os_name == "nt":
        local = environ.get("LOCALAPPDATA")
        base = PureWindowsPath(local) if local else PureWindowsPath(home or str(Path.home())) / "AppData" / "Local"
        return base / "stylecam"
    xdg = environ.get("XDG_CACHE_HOME")
    base_posix = PurePosixPath(xdg) if xdg else PurePosixPath(home or str(Path.home())) / ".cache"
    return base_posix / "stylecam"


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The stylecam cache root: ``explicit`` (``--cache-dir``), else ``$STYLECAM_CACHE``, else :func:`user_cache_dir`.

    Under it: ``engines/``, ``timing/``, ``auto/`` (the engine cache, :mod:`engines.cache`), ``models/`` (the face
    model), ``loras/`` (LoRAs downloaded from URLs), ``tokenizers/`` (generated tokenizers of random: models)."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("STYLECAM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir())


# ---------------------------------------------------------------------------------------------------------- downloads
_BLOCK = 1 << 20


def _expected(size: int | None, sha256: str | None) -> str:
    parts = ([f"{size}"] if size is not None else []) + ([f"sha256 {sha256[:12]}..."] if sha256 else [])
    return " with ".join(parts) if size is not None else "".join(parts)


def _fetch_into(url: str, f: object, size: int | None, timeout_s: float) -> tuple[int, str]:
    """Stream ``url`` into the open binary file ``f``; returns (bytes written, sha256 hex). Network errors propagate;
    local write errors become :class:`OutputError`. With ``size`` known, at most ``size + 1`` bytes are read."""
    import urllib.request  # here: every command imports this module, and http/ssl cost `stylecam --help` ~10 ms

    digest, written = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (callers pass https URLs)
        while size is None or written <= size:
            block = resp.read(_BLOCK if size is None else min(_BLOCK, size + 1 - written))
            if not block:
                break
            try:
                f.write(block)  # type: ignore[attr-defined]
            except OSError as e:
                raise OutputError(f"cannot write {getattr(f, 'name', 'the download')} ({e.strerror or e})") from e
            digest.update(block)
            written += len(block)
    return written, digest.hexdigest()


def download_file(url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
                  timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically: streamed into a hidden temporary file beside ``dest``, flushed to disk
    (fsync), checked against ``size`` (bytes) and ``sha256`` (hex) when given, then renamed onto ``dest``. On any
    failure or Ctrl-C the temporary file is removed and ``dest`` is untouched. Returns ``dest``.

    Raises: :class:`OutputError` when ``dest``'s directory cannot be created or written; :class:`BadInputFile` when
    the bytes do not verify (the message is ``"<n> bytes, expected <size> with sha256 <prefix>..."``); network errors
    (``urllib.error.URLError``, ``TimeoutError``, other ``OSError``, ``ValueError`` for a bad URL) as they come.
    Callers put these into their own one-line messages."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise OutputError(f"cannot write in {dest.parent} ({e.strerror or e})") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            written, digest = _fetch_into(url, f, size, timeout_s)
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise OutputError(f"cannot write {tmp} ({e.strerror or e})") from e
        if (size is not None and written != size) or (sha256 and digest != sha256.lower()):
            raise BadInputFile(f"{written} bytes, expected {_expected(size, sha256)}")
        default_mode(tmp)
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise OutputError(f"cannot write {dest} ({e.strerror or e})") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError, AttributeError):  # the rename itself reaches the disk (POSIX only)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return dest
