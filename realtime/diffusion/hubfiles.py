"""Which files of a Hugging Face repo stylecam loads, and what of them the local cache holds (docs/design.md §5).

Pure functions over file names plus a look at the cache folders: no torch, no download, so ``stylecam models``, the
loaders in :mod:`realtime.diffusion.models` and the pre-flight check agree on one layout without loading anything.

Layout (diffusers): a pipeline repo (the main model) has ``model_index.json`` and one folder per component; stylecam
loads ``unet/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (``vae/`` only with ``--vae full``; an SDXL
pipeline also ``text_encoder_2/`` and ``tokenizer_2/``, see ``models.pipeline_parts``). A model repo
(ControlNet, TAESD) is one component at the repo root. Weights in a folder: ``diffusion_pytorch_model`` (diffusers),
``model`` or ``pytorch_model`` (transformers), optionally a variant (``.fp16``), optionally sharded (``-00001-of-00002``
plus an ``.index.json``), as ``.safetensors`` or ``.bin``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PIPELINE_PARTS = ("unet", "text_encoder", "tokenizer", "scheduler")
WEIGHT_PARTS = frozenset({"unet", "text_encoder", "text_encoder_2", "vae", ""})  # folders that must hold weights ("" = a model repo)
REPO_DOCS = re.compile(r"^(README\.md|LICEN[CS]E(\.[\w.-]+)?)$", re.IGNORECASE)  # licence and model card
CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer vocabularies and merges, sentencepiece models

_STEM = r"(?P<stem>diffusion_pytorch_model|pytorch_model|model)"
_WEIGHT = re.compile(
    rf"^{_STEM}(?:\.(?P<v1>[A-Za-z0-9_]+))?(?:-\d{{5}}-of-\d{{5}})?(?:\.(?P<v2>[A-Za-z0-9_]+))?\.(?P<fmt>safetensors|bin)$"
)
_INDEX = re.compile(rf"^{_STEM}\.(?P<fmt>safetensors|bin)\.index(?:\.(?P<v>[A-Za-z0-9_]+))?\.json$")

#: Weight groups in order of preference: safetensors before ``.bin`` (``.bin`` only where a folder has no
#: safetensors), and for an fp16 run the fp16 variant first.
_ORDER_FP16 = (("fp16", "safetensors"), (None, "safetensors"), ("fp16", "bin"), (None, "bin"))
_ORDER_DEFAULT = ((None, "safetensors"), (None, "bin"), ("fp16", "safetensors"), ("fp16", "bin"))


def weight_group(name: str) -> tuple[str | None, str] | None:
    """``(variant, format)`` of a weight or shard-index file name (no folder), or None for any other file."""
    m = _WEIGHT.match(name)
    if m:
        return (m.group("v1") or m.group("v2"), m.group("fmt"))
    m = _INDEX.match(name)
    if m:
        return (m.group("v"), m.group("fmt"))
    return None


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder, name


def choose_weights(names: Iterable[str], fp16: bool) -> tuple[tuple[str | None, str] | None, list[str]]:
    """The preferred weight group among the file names of ONE folder, and its files (shards and index included)."""
    groups: dict[tuple[str | None, str], list[str]] = {}
    for name in names:
        g = weight_group(name)
        if g is not None and g[0] in (None, "fp16"):
            groups.setdefault(g, []).append(name)
    for g in _ORDER_FP16 if fp16 else _ORDER_DEFAULT:
        if g in groups:
            return g, sorted(groups[g])
    return None, []


def wanted_files(files: Iterable[str], parts: Sequence[str] | None, fp16: bool) -> list[str]:
    """The files of a repo (``/``-separated paths) that stylecam loads.

    ``parts``: the component folders of a pipeline repo (e.g. :data:`PIPELINE_PARTS`), or None for a model repo (one
    component at the root). Raises ValueError naming the folder when one that needs weights has none (or no config).
    """
    by_folder: dict[str, list[str]] = {}
    for path in files:
        folder, name = _split(path)
        by_folder.setdefault(folder, []).append(name)
    root = by_folder.get("", [])
    chosen = [n for n in root if REPO_DOCS.match(n)]
    if parts is None:
        folders = [""]
    else:
        if "model_index.json" not in root:
            raise ValueError("no model_index.json: not a diffusers pipeline repo")
        chosen.append("model_index.json")
        folders = list(parts)
    for folder in folders:
        names = by_folder.get(folder, [])
        prefix = f"{folder}/" if folder else ""
        configs = [n for n in names if n.endswith(CONFIG_SUFFIXES) and weight_group(n) is None]
        if folder == "":
            configs = [n for n in configs if n == "config.json"]
        if not configs:
            raise ValueError(f"no config in {folder or 'the repo root'}/")
        chosen += [prefix + n for n in configs]
        if folder in WEIGHT_PARTS:
            group, weights = choose_weights(names, fp16)
            if group is None:
                raise ValueError(f"no .safetensors or .bin weights in {folder or 'the repo root'}/")
            chosen += [prefix + n for n in weights]
    return sorted(set(chosen))


# ------------------------------------------------------------------------------------------------------ the cache
def hub_cache() -> Path:
    """The Hugging Face hub cache this process uses (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the default)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_storage(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (a branch, tag or commit), or None."""
    storage = repo_storage(repo_id)
    ref = storage / "refs" / revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else revision
    snap = storage / "snapshots" / commit
    return snap if snap.is_dir() else None


def write_ref(repo_id: str, revision: str, commit: str) -> None:
    """Record ``revision -> commit`` the way huggingface_hub does (``refs/<revision>`` holds the commit hash), so
    offline loads of ``revision`` find the snapshot. Atomic: a reader never sees a half-written ref."""
    if revision == commit:
        return
    ref = repo_storage(repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit, encoding="utf-8")
    os.replace(tmp, ref)


def folder_names(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []


def cached_weights(folder: Path, fp16: bool) -> tuple[str | None, str] | None:
    """``(variant, format)`` of the weights the loader should read in ``folder`` (None: no weights there).

    The variant is ``"fp16"`` when the run is fp16 and fp16 weights are there, or they are the only ones; the format
    is ``safetensors`` where that variant has them, else ``bin`` (see :func:`choose_weights`)."""
    return choose_weights(folder_names(folder), fp16)[0]


def missing_parts(snapshot: Path, parts: Sequence[str] | None) -> list[str]:
    """The component folders of a cached snapshot that cannot load (no config, or no weights where needed)."""
    missing = []
    if parts is not None and not (snapshot / "model_index.json").is_file():
        missing.append("model_index.json")
    for folder in parts if parts is not None else ("",):
        names = folder_names(snapshot / folder)
        configs = [n for n in names if n.endswith(CONFIG_SUFFIXES) and weight_group(n) is None]
        if not configs or (folder in WEIGHT_PARTS and choose_weights(names, True)[0] is None):
            missing.append(f"{folder}/" if folder else "weights")
    return missing


def card_licence(readme: Path) -> dict[str, str | None]:
    """``{"license", "license_name", "license_link"}`` from a model card's YAML header (each None when absent)."""
    meta: Mapping[str, object] = {}
    if readme.is_file():
        try:
            from huggingface_hub.repocard import metadata_load

            meta = metadata_load(readme) or {}
        except Exception:  # noqa: BLE001 - a malformed card only loses its licence line
            meta = {}
    out: dict[str, str | None] = {}
    for key in ("license", "license_name", "license_link"):
        value = meta.get(key)
        out[key] = ", ".join(map(str, value)) if isinstance(value, list) else (str(value) if value else None)
    return out
