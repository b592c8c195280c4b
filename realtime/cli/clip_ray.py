"""``stylecam clip IN... -o DIR --ray [ADDRESS]``: the resumable batch on a Ray cluster (docs/design.md §2, clips).

What runs where: :mod:`realtime.pipeline.ray_clip` (workers, scheduling, joins), :mod:`realtime.pipeline.manifest`
(what is done). This module turns the command line into those: the Ray options (checked before anything, the missing
extra a one-line error), the settings recorded per output, the skip / redo decision, and the lines the user reads.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from realtime.cli.console import one_line
from realtime.cli.options import input_files, run_from_args
from realtime.config import ModelConfig, RunConfig, StyleConfig
from realtime.errors import InputError, UsageError
from realtime.geometry import Size
from realtime.pipeline.clip import ClipOptions, clip_inputs
from realtime.pipeline.manifest import InputStamp, Manifest, settings_of
from realtime.pipeline.preflight import check_video

log = logging.getLogger(__name__)

_RAY_ONLY = (("workers", "--workers"), ("segment_seconds", "--segment-seconds"))
_VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")


def ray_options_from_args(args: argparse.Namespace) -> Any | None:
    """The Ray options of the command line (``None`` without ``--ray``); the extra is imported here, so a missing
    one is a one-line error before any file is read or model loaded."""
    if args.ray is None:
        for name, flag in _RAY_ONLY:
            if getattr(args, name) is not None:
                raise UsageError(f"{flag} needs --ray")
        return None
    address = args.ray.strip() or None
    if address is not None and (Path(address).is_file() or address.lower().endswith(_VIDEO_SUFFIXES)):
        raise UsageError(f"--ray {address}: that is an input, not a Ray address (put --ray after the inputs, or "
                         "write --ray=ADDRESS)")
    from realtime.pipeline.ray_clip import RayOptions, check_reachable, import_ray

    import_ray()
    if address is not None:
        check_reachable(address)  # a wrong address: one line now, not minutes of Ray's retries later
    return RayOptions(address=address, workers=args.workers, segment_seconds=args.segment_seconds,
                      warmup_frames=args.warmup_frames)


def clip_run_config(args: argparse.Namespace, opts: ClipOptions, style: StyleConfig, first: Size) -> RunConfig | None:
    """Where the stylizer runs; ``None`` for no model (the ``none`` style at ``--size auto``, as live: frames cropped
    straight to each output size). ``--size auto``: from ``--output-size``, else ``first``, the first input's display
    size."""
    if style.passthrough and args.size == "auto":
        return None
    return run_from_args(args, opts.output_size or first)


def _first_size(pairs: list[tuple[Path, Path]], opts: ClipOptions) -> Size:
    """The display size of the batch's first readable input (every run of the batch sizes its model from the same
    file, whatever is skipped); 512x512 when none is readable (each is then reported as failed)."""
    for src, _ in pairs:
        try:
            return check_video(src, start=opts.start, end=opts.end)
        except InputError:
            continue
    return Size(512, 512)


def batch_settings(opts: ClipOptions, style: StyleConfig, model: ModelConfig, run: RunConfig | None,
                   ray_options: Any) -> dict[str, Any]:
    """What an output depends on: a change in any of it redoes the output on a re-run."""
    from importlib import metadata

    try:
        version = metadata.version("stylecam")
    except metadata.PackageNotFoundError:
        version = "unknown"
    clip = {k: getattr(opts, k) for k in ("start", "end", "output_size", "codec", "crf", "pix_fmt", "face", "face_model")}
    loras = {}
    for lora in style.loras:  # a local LoRA file's content: by size and modification time
        p = Path(lora.path).expanduser()
        if p.is_file():
            st = p.stat()
            loras[lora.path] = [st.st_size, st.st_mtime_ns]
    segments = {"seconds": ray_options.segment_seconds, "warmup": ray_options.warmup_frames}
    return settings_of(stylecam=version, model=model, style=style, lora_files=loras, run=run, clip=clip,
                       segments=segments if ray_options.segment_seconds is not None else None)


def _plan(manifest: Manifest, pairs: list[tuple[Path, Path]], settings: dict[str, Any]
          ) -> tuple[list[tuple[Path, Path]], set[Path], dict[Path, InputStamp]]:
    """(what to do, outputs of ours to replace, the input stamps); done outputs are logged and left out."""
    todo, replace, stamps = [], set(), {}
    for src, dst in pairs:
        if src.is_file():
            status, stamp = manifest.status(src, dst, settings)
            if status == "done":
                log.info("%s: done before (same input and settings), skipped", dst)
                continue
            if status == "changed":
                replace.add(dst)
            stamps[dst.resolve()] = stamp
        todo.append((src, dst))
    return todo, replace, stamps


def run_ray(args: argparse.Namespace, opts: ClipOptions, style: StyleConfig, model: ModelConfig,
            pairs: list[tuple[Path, Path]], ray_options: Any) -> int:
    """The batch on Ray: skip what the manifest says is done, check the rest (exit 2 before any model loads for a
    single bad input; in a batch each bad file is reported and the others go on), then the workers. 0 when every
    file is written (or was before), 1 when any failed."""
    from realtime.pipeline.ray_clip import file_jobs, run_ray_batch

    manifest = Manifest(pairs[0][1].parent)
    run = clip_run_config(args, opts, style, _first_size(pairs, opts))
    settings = batch_settings(opts, style, model, run, ray_options)
    todo, replace, stamps = _plan(manifest, pairs, settings)
    skipped = len(pairs) - len(todo)
    failed: list[Path] = []
    written = 0
    if todo:
        checked, bad = clip_inputs(todo, opts, style, model, batch=len(pairs) > 1, inputs=input_files(args),
                                   replace=replace)
        for src, e in bad:
            failed.append(src)
            log.error("%s failed: %s", src, one_line(e))
        if checked:
            def done(job: Any, frames: int, seconds: float) -> None:
                nonlocal written
                manifest.record(job.src, job.dst, stamps[job.dst], settings, frames)
                written += 1
                joined = f", {len(job.segments)} segments joined" if job.segments else ""
                bad = f", {job.bad_frames} undecodable frame(s) replaced by the previous one" if job.bad_frames else ""
                log.info("done: %s -> %s (%d frames%s%s)", job.src.name, job.dst, frames, joined, bad)

            def fail(job: Any, e: BaseException) -> None:
                src = getattr(job, "src", job)
                failed.append(src)
                log.error("%s failed: %s", src, one_line(e))

            jobs, unplanned = file_jobs(checked, opts, ray_options, replace)
            for src, e in unplanned:
                fail(src, e)
            run_ray_batch(jobs, opts, style, model, run, ray_options, device=args.device, progress=not args.quiet,
                          worker_logs=bool(args.debug or args.verbose), on_done=done, on_fail=fail)
    log.info("%d of %d file(s) written to %s, %d done before%s", written, len(pairs), pairs[0][1].parent, skipped,
             f"; failed: {', '.join(p.name for p in failed)}" if failed else "")
    return 1 if failed else 0
