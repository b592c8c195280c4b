"""``stylecam models pull`` (download ahead of time) and ``stylecam models list`` (what is cached, under which licence).

Both use the normal Hugging Face cache (``HF_HOME``; ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` respected). Heavy imports
(huggingface_hub, torch, tqdm) happen inside :func:`run`, so registering the command keeps ``stylecam --help`` fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from realtime.cli.options import AddGlobal, Subparsers
from realtime.config import DEFAULT_MODEL, DTYPE_CHOICES

log = logging.getLogger(__name__)

PULL_DTYPE_HELP = (
    "which weights to fetch: fp16 fetches a repo's fp16 variant where it has one (about half the bytes); fp32 and "
    "bf16 fetch the default (fp32) files. auto (default): fp16 when torch sees a CUDA GPU (or Apple MPS) here, else "
    "fp32; pass --dtype fp16 when pulling on one machine for a GPU machine"
)


def add_parser(subparsers: Subparsers, add_global: AddGlobal) -> None:
    """Register ``stylecam models`` (``pull`` and ``list``)."""
    p = subparsers.add_parser("models", help="download models ahead of time, list the cached ones",
                              description="Download the models stylecam loads ahead of time (pull) and list what the "
                                          "Hugging Face cache holds (list).")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(p))
    sub.required = True

    pull = sub.add_parser("pull", help="download a model set into the Hugging Face cache",
                          description="Download what stylecam loads of a model set (default: the default set) into "
                                      "the Hugging Face cache, showing the total size first and one progress bar. "
                                      "Files already cached are skipped; run it again after an interruption.")
    pull.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id of the main model (default {DEFAULT_MODEL}); "
                                                             "local paths and random: specs need no download")
    pull.add_argument("--controlnet", default="auto", help="ControlNet hub id, 'none', or auto (the default one)")
    pull.add_argument("--vae", default="auto", help="'taesd' (default), 'full' (the main model's vae/ too) or a hub id")
    pull.add_argument("--control", default="canny", metavar="LIST", help="the controls whose ControlNets to fetch, any of canny,pose,depth (depth also fetches the depth model); default canny")
    pull.add_argument("--pose-controlnet", default="auto", help="OpenPose ControlNet hub id (auto: the default one)")
    pull.add_argument("--depth-controlnet", default="auto", help="depth ControlNet hub id (auto: the default one)")
    pull.add_argument("--depth-model", default="auto", help="depth network hub id (auto: depth-anything/Depth-Anything-V2-Small-hf)")
    pull.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=PULL_DTYPE_HELP)
    add_global(pull)
    pull.set_defaults(func=run)

    lst = sub.add_parser("list", help="list the cached models (works offline)",
                         description="List the models in the Hugging Face cache: id, revision, size, path and the "
                                     "licence from the model card where it names one. Works offline.")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    add_global(lst)
    lst.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.debug:
        # huggingface_hub sets its own logger's level (and adds a handler) when imported, after the CLI quietened it:
        # its retry warnings ("Trying to resume download...") would interleave with the progress bar.
        from huggingface_hub.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    if args.models_command == "list":
        return _list(args)
    return _pull(args)


# ------------------------------------------------------------------------------------------------------------ pull
def _pull_dtype(spec: str) -> tuple[bool, str]:
    """``(fp16, why)`` for ``--dtype``."""
    if spec != "auto":
        return spec == "fp16", f"--dtype {spec}"
    import torch

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if torch.cuda.is_available() or mps:
        return True, "--dtype auto: a GPU is visible here, so fp16"
    return False, "--dtype auto: no GPU visible to torch here, so fp32 (pass --dtype fp16 to pull for a GPU machine)"


def _targets(args: argparse.Namespace, family: Any = None) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """The hub repos to pull, merged per repo (the main model's vae/ joins its other folders); bad specs raise.
    ``family``: the main model's (:class:`~realtime.diffusion.family.Family`) when the cache cannot tell it yet."""
    from realtime.config import ModelConfig
    from realtime.diffusion.models import hub_repos, spec_kind

    from realtime.config import check_controls

    controls = check_controls(getattr(args, "control", "canny"))
    cfg = ModelConfig(args.model, args.controlnet, args.vae, pose_controlnet=getattr(args, "pose_controlnet", "auto"),
                      depth_controlnet=getattr(args, "depth_controlnet", "auto"),
                      depth_model=getattr(args, "depth_model", "auto"))
    depth = (cfg.depth_model_spec,) if "depth" in controls else ()
    for spec in (cfg.model, cfg.vae_spec, *cfg.controlnet_specs(controls).values(), *depth):
        if spec and spec not in ("taesd", "full") and spec_kind(spec) != "hub":
            log.info("%s: local or random, nothing to pull", spec)
    merged: dict[str, tuple[str, str, tuple[str, ...] | None]] = {}
    for what, repo, parts in hub_repos(cfg, controls, family=family):
        if repo in merged and parts is not None and merged[repo][2] is not None:
            old = merged[repo]
            merged[repo] = (old[0], repo, tuple(dict.fromkeys(old[2] + parts)))  # type: ignore[operator]
        else:
            merged.setdefault(repo, (what, repo, parts))
    return list(merged.values())


def _family_targets(args: argparse.Namespace, targets: list[tuple[str, str, tuple[str, ...] | None]],
                    ) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """A hub model not cached yet: its family from the hub's file list (a ``text_encoder_2/`` means SDXL: its second
    text encoder, SDXL ControlNet and TAESDXL are pulled too), then the targets again."""
    from realtime.diffusion.family import family_of_files
    from realtime.diffusion.models import model_family, spec_kind
    from realtime.diffusion.pull import model_info

    if spec_kind(args.model) != "hub" or model_family(args.model) is not None:
        return targets
    info = model_info(args.model, "model")
    return _targets(args, family_of_files(s.rfilename for s in info.siblings or []))


def _all_cached(targets: list[tuple[str, str, tuple[str, ...] | None]]) -> bool:
    from realtime.diffusion.hubfiles import cached_snapshot, missing_parts

    snaps = [(cached_snapshot(repo), parts) for _, repo, parts in targets]
    return all(snap is not None and not missing_parts(snap, parts) for snap, parts in snaps)


def _pull(args: argparse.Namespace) -> int:
    from realtime.errors import ModelNotFound
    from realtime.diffusion.models import hub_offline

    targets = _targets(args)  # bad specs: one line, exit 2, before anything else
    if not targets:
        log.info("nothing to download")
        return 0
    if hub_offline():
        raise ModelNotFound("stylecam models pull needs the Hugging Face hub, but HF_HUB_OFFLINE is set: unset it "
                            "on a connected machine (models already cached load offline; see `stylecam models list`)")
    from realtime.diffusion.pull import download, human_size, model_info, plan_repo, transport_errors

    for what, repo, _ in targets:  # network and ids first: a failure is one line within seconds
        try:
            model_info(repo, what)
        except ModelNotFound as e:
            if not isinstance(e.__cause__, transport_errors()) or not _all_cached(targets):
                raise
            log.warning("%s; the cached copies are complete, so they stay as they are", e)
            return 0
    targets = _family_targets(args, targets)
    fp16, why = _pull_dtype(args.dtype)
    log.info("%s", why)
    plans = [plan_repo(what, repo, parts, fp16) for what, repo, parts in targets]
    sizes = [n for p in plans for n in p.to_fetch.values()]
    total = None if None in sizes else sum(n for n in sizes if n is not None)
    all_sizes = [n for p in plans for n in p.files.values()]
    full = None if None in all_sizes else sum(n for n in all_sizes if n is not None)
    for p in plans:
        log.info("%s %s@%s: %d files%s", p.what, p.repo_id, p.commit[:12], len(p.files),
                 "" if not p.to_fetch else f", {len(p.to_fetch)} to download")
    log.info("total size %s; to download %s in %d files (%s already cached)", human_size(full), human_size(total),
             len(sizes), human_size(None if full is None or total is None else full - total))
    download(plans, progress=not args.quiet)
    from realtime.diffusion.hubfiles import cached_snapshot

    for p in plans:
        log.info("cached %s at %s", p.repo_id, cached_snapshot(p.repo_id, p.revision))
    return 0


# ------------------------------------------------------------------------------------------------------------ list
def collect_cached() -> list[dict[str, Any]]:
    """One entry per cached model revision (plain data, JSON-ready). No network."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from realtime.diffusion.hubfiles import PIPELINE_PARTS, card_licence, hub_cache, missing_parts

    try:
        info = scan_cache_dir(hub_cache())
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            snap = rev.snapshot_path
            names = {f.file_name for f in rev.files}
            parts = PIPELINE_PARTS if (snap / "model_index.json").is_file() else None
            lic = card_licence(snap / "README.md")
            rows.append({
                "id": repo.repo_id, "revision": ",".join(sorted(rev.refs)) or None, "commit": rev.commit_hash,
                "size": rev.size_on_disk, "path": str(snap), "files": len(rev.files),
                "fp16": any(".fp16." in n for n in names),
                "complete": not missing_parts(snap, parts), **lic,
            })
    return rows


def _list(args: argparse.Namespace) -> int:
    from realtime.diffusion.hubfiles import hub_cache
    from realtime.diffusion.pull import human_size

    rows = collect_cached()
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        sys.stdout.write(f"no models cached in {hub_cache()} (`stylecam models pull` downloads the default set)\n")
        return 0
    for r in rows:
        rev = f"{r['revision'] or 'no ref'}@{r['commit'][:12]}"
        lic = r["license_name"] or r["license"] or "licence not stated in the model card"
        if r["license_link"]:
            lic += f" <{r['license_link']}>"
        tags = (" fp16" if r["fp16"] else "") + ("" if r["complete"] else " (incomplete for stylecam: pull it again)")
        sys.stdout.write(f"{r['id']}  {rev}  {human_size(r['size'])}{tags}\n    licence: {lic}\n    path: {r['path']}\n")
    return 0
