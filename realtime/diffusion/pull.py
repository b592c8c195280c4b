"""Download models ahead of time into the Hugging Face cache (``stylecam models pull``).

The plan comes from the hub's model-info API with file metadata (one request per repo: the commit, every file and its
size), filtered to what stylecam loads (:func:`realtime.diffusion.hubfiles.wanted_files`). Files are then fetched one by one with
``huggingface_hub.hf_hub_download`` pinned to that commit, into the normal cache (``HF_HOME``, ``HF_TOKEN`` and
``HF_ENDPOINT`` work as for every huggingface_hub call), with one progress bar over all bytes.

What is verified is what huggingface_hub verifies: the size of each plain HTTP download (its consistency check) and,
for Xet-stored files, the Xet content hashes; a file enters the cache only complete, under its ETag (the sha256 of an
LFS file). Resume: huggingface_hub 2.x resumes a transfer cut by the network inside the same run (an HTTP ``Range``
request, up to 5 tries while data still arrives); it no longer keeps partial files across runs (each download writes a
process-unique ``.incomplete`` file that is deleted on failure), so a second ``pull`` skips the completed files and
fetches the rest, starting the interrupted file again.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from realtime.errors import ModelNotFound
from realtime.diffusion.hubfiles import repo_storage, wanted_files, write_ref

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 10.0  # per connect/read of a metadata request: no network is one line within seconds


@dataclass(frozen=True)
class RepoPlan:
    """What a pull fetches from one repo: ``files`` maps each path to its size in bytes (None when unknown)."""

    what: str
    repo_id: str
    revision: str
    commit: str
    files: dict[str, int | None]

    def cached(self, path: str) -> bool:
        return (repo_storage(self.repo_id) / "snapshots" / self.commit / path).is_file()

    @property
    def to_fetch(self) -> dict[str, int | None]:
        return {p: n for p, n in self.files.items() if not self.cached(p)}


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network-level errors (huggingface_hub 2.x uses httpx2, 1.x httpx, older requests)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def hub_error(exc: BaseException, what: str, repo_id: str) -> ModelNotFound | None:
    """The one-line error for a hub failure while asking for ``repo_id`` (None: not a hub/network failure)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, GatedRepoError):
        return ModelNotFound(f"{what} {repo_id!r} is gated on the hub: accept its licence on its model page and set "
                             "HF_TOKEN (or `hf auth login`)")
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(f"{what} {repo_id!r} was not found on the hub {constants.ENDPOINT} (check the id; a "
                             "private repo needs HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(f"{what} {repo_id!r}: that revision does not exist on the hub ({first})")
    if isinstance(exc, transport_errors()):
        return ModelNotFound(
            f"cannot reach the Hugging Face hub at {constants.ENDPOINT} for {what} {repo_id!r} ({type(exc).__name__}: "
            f"{first}): check the network or proxy (HTTPS_PROXY), or run `stylecam models pull` on a connected "
            "machine and point HF_HOME at a copy of its cache; `--model random:tiny` runs without the hub"
        )
    if isinstance(exc, HfHubHTTPError):
        return ModelNotFound(f"the Hugging Face hub answered an error for {what} {repo_id!r}: {first}")
    return None


@lru_cache(maxsize=None)
def _model_info(repo_id: str, revision: str, files_metadata: bool) -> Any:
    from huggingface_hub import HfApi

    return HfApi().model_info(repo_id, revision=revision, files_metadata=files_metadata, timeout=HUB_TIMEOUT_S)


def model_info(repo_id: str, what: str, revision: str = "main", files_metadata: bool = True) -> Any:
    """``HfApi.model_info`` with a short timeout and no retries; failures are one :class:`ModelNotFound` line."""
    try:
        return _model_info(repo_id, revision, files_metadata)
    except Exception as e:  # noqa: BLE001 - mapped to one line below, anything else re-raised as is
        err = hub_error(e, what, repo_id)
        if err is None:
            raise
        raise err from e


def probe_repo(repo_id: str, what: str) -> None:
    """Fail fast, in one line, when the hub is unreachable or does not have ``repo_id`` (one small request)."""
    model_info(repo_id, what, files_metadata=False)


def plan_repo(what: str, repo_id: str, parts: tuple[str, ...] | None, fp16: bool, revision: str = "main") -> RepoPlan:
    """Ask the hub for ``repo_id``'s files and keep those stylecam loads (see :func:`realtime.diffusion.hubfiles.wanted_files`)."""
    info = model_info(repo_id, what, revision)
    sizes: dict[str, int | None] = {}
    for s in info.siblings or []:
        sizes[s.rfilename] = s.size if s.size is not None else (s.lfs.size if s.lfs is not None else None)
    try:
        files = wanted_files(sizes, parts, fp16)
    except ValueError as e:
        raise ModelNotFound(f"{what} {repo_id!r} is not a diffusers {'pipeline' if parts else 'model'} repo "
                            f"stylecam can load: {e}") from e
    return RepoPlan(what, repo_id, revision, str(info.sha), {f: sizes[f] for f in files})


class _Bar:
    """Stands in for huggingface_hub's per-file progress bar (the ``tqdm_class`` it instantiates for each file) and
    forwards the bytes to one shared bar. huggingface_hub rolls back with a negative update when a resumed request
    restarts from zero, so the shared count stays right."""

    shared: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.total = kwargs.get("total")
        self.n = 0

    def update(self, n: float | None = 1) -> None:
        self.n += int(n or 0)
        if self.shared is not None:
            self.shared.update(int(n or 0))

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    # Defined on the class (huggingface_hub's Xet reporter looks there) so that network-transfer bytes are not
    # counted a second time: only written bytes (update) move the shared bar.
    def update_transfer(self, n: float | None = 1) -> None:
        return None

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        return None

    set_transfer_postfix_str = set_postfix_str
    refresh = close = set_postfix_str

    def __getattr__(self, name: str) -> Any:  # any other tqdm method huggingface_hub may call: a no-op
        return lambda *a, **k: None


def human_size(n: float | None) -> str:
    if n is None:
        return "unknown size"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"  # pragma: no cover


def download(plans: list[RepoPlan], *, progress: bool = True) -> None:
    """Fetch every file of ``plans`` not yet cached, with one progress bar over bytes; then record each revision."""
    from huggingface_hub import hf_hub_download
    from tqdm import tqdm

    todo = [(plan, path, size) for plan in plans for path, size in plan.to_fetch.items()]
    known = [s for _, _, s in todo if s is not None]
    total = sum(known) if len(known) == len(todo) else None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="stylecam models pull", file=sys.stderr,
               disable=not progress or not todo, mininterval=0.5, dynamic_ncols=True)
    _Bar.shared = bar
    try:
        for plan, path, _ in todo:
            bar.set_postfix_str(f"{plan.repo_id}/{path}", refresh=False)
            try:
                hf_hub_download(plan.repo_id, path, revision=plan.commit, tqdm_class=_Bar)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001 - network failures become one line; the rest propagates
                if isinstance(e, transport_errors()):
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise ConnectionError(
                        f"download of {plan.repo_id}/{path} failed ({type(e).__name__}: {first}): run `stylecam "
                        "models pull` again to fetch the rest (completed files are kept)"
                    ) from e
                raise
        for plan in plans:
            write_ref(plan.repo_id, plan.revision, plan.commit)
    finally:
        _Bar.shared = None
        bar.close()
