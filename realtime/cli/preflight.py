"""What each ``stylecam`` command checks before any model loads (docs/design.md §7): ``image``, ``live``, ``bench``, ``build``
and ``demo`` (``clip``'s list is :func:`realtime.pipeline.clip.clip_inputs`). The checks themselves are the shared ones of
:mod:`realtime.pipeline.preflight`; the engine backend on a device is :func:`realtime.diffusion.engine_select.check_backend`.
Nothing here logs: the one error line is the first thing a user sees.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from realtime.cli.options import input_files, model_from_args, region_from_args, style_from_args
from realtime.config import ModelConfig, RegionConfig, StyleConfig
from realtime.errors import BackendUnavailable, OutputError, UsageError
from realtime.files import check_input_file, check_output_path
from realtime.pipeline.clip import check_encoder
from realtime.pipeline.preflight import (check_container, check_image, check_region, check_style_models, check_video,
                                         face_model, is_camera)


def region_inputs(args: argparse.Namespace, model: ModelConfig | None) -> tuple[RegionConfig, np.ndarray | None]:
    """``--region`` and ``--background`` checked (:func:`realtime.pipeline.preflight.check_region`): the region and
    the decoded background image (or None)."""
    region = region_from_args(args)
    return region, check_region(region, model.segment_model if model is not None else None)


def image_inputs(args: argparse.Namespace) -> tuple[Path, Path, np.ndarray, StyleConfig, ModelConfig]:
    """``stylecam image``: (input, output, the decoded input, style, model)."""
    from realtime.io.images import image_format

    src = check_input_file(args.input)
    dst = Path(args.output)
    image_format(dst)
    check_output_path(dst, overwrite=args.overwrite, inputs=(src, *input_files(args)))
    style = style_from_args(args)
    model = model_from_args(args)
    frame = check_image(src)
    check_style_models(style, model)
    return src, dst, frame, style, model


def check_video_output(path: Path, codec: str | None, pix_fmt: str, *, overwrite: bool,
                       inputs: tuple[Path, ...] = (), codec_option: bool = True) -> None:
    """A video output: writable, not an input, not existing (unless ``overwrite``), a video container (not an image
    suffix) that holds ``codec`` (``None``: the container's default, as the writer picks it), its encoder exists."""
    check_output_path(path, overwrite=overwrite, inputs=inputs)
    check_encoder(check_container(path, codec, codec_option=codec_option), pix_fmt)


def live_inputs(args: argparse.Namespace, style: StyleConfig, model: ModelConfig | None, outputs: list[str]) -> None:
    """``stylecam live``: a file source decodes, file outputs are writable with their encoder, the face model and
    the models resolve. Cameras, virtual cameras and windows are opened (and so checked) before the models load."""
    spec = str(args.source).strip()  # as realtime.io.sources.open_source reads it
    if not is_camera(spec) and Path(spec).expanduser().exists():
        check_video(Path(spec).expanduser(), what="--source")
    inputs = input_files(args)  # the source among them: no output may be one of them, whatever --overwrite says
    for out in outputs:
        if out not in ("vcam", "window", "none"):
            check_video_output(Path(out).expanduser(), None, "yuv420p", overwrite=args.overwrite, inputs=inputs,
                               codec_option=False)
    if not args.no_face:
        face_model(args.face_model)
    check_style_models(style, model)


def bench_inputs(settings: Any, model: ModelConfig, style: StyleConfig, run: Any, *, json_path: str | None,
                 overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """``stylecam bench``: the models, a file ``--source``, an explicit ``--face-model`` (a default one that does
    not resolve is a skipped stage, as documented), the ``--json`` target (not one of ``inputs``), and every requested
    backend on the device, all before anything is measured."""
    from realtime.diffusion.engine_select import check_backend
    from realtime.diffusion.models import resolve_device

    if style.passthrough:
        raise UsageError("--style none loads no model: there is nothing to benchmark; choose a diffusion style")
    check_style_models(style, model)
    check_region(settings.region, model.segment_model)
    if settings.source is not None and not is_camera(settings.source):
        check_video(settings.source, what="--source")
    if settings.face and settings.face_model is not None:
        face_model(settings.face_model)
    if json_path:
        check_output_path(Path(json_path), overwrite=overwrite, inputs=inputs)
    device = resolve_device(run.device)
    for backend in dict.fromkeys(settings.backends):
        check_backend(backend, device)


def build_inputs(style: StyleConfig, model: ModelConfig, run: Any) -> None:
    """``stylecam build``: the models and the backend on the device."""
    from realtime.diffusion.engine_select import check_backend
    from realtime.diffusion.models import resolve_device

    check_style_models(style, model)
    check_backend(run.backend, resolve_device(run.device))


def hub_reachable(model: ModelConfig) -> None:
    """Online, when a hub model is not cached yet: the hub answers (one quick request per repo), so no network is one
    line now (:func:`realtime.diffusion.pull.probe_repo`), not after the demo clip is made. Offline: nothing to do
    (:func:`check_style_models` already required the cache)."""
    from realtime.diffusion.hubfiles import cached_snapshot, missing_parts
    from realtime.diffusion.models import hub_offline, hub_repos
    from realtime.diffusion.pull import probe_repo

    if hub_offline():
        return
    for what, repo, parts in hub_repos(model):
        snap = cached_snapshot(repo)
        if snap is None or missing_parts(snap, parts):
            probe_repo(repo, what)


def demo_inputs(args: argparse.Namespace, clip_args: argparse.Namespace) -> None:
    """``stylecam demo``: the style and model of the stylized copy (``clip_args``: the ``clip`` command it runs; a hub
    model not cached yet: the hub reachable), the face model (its ``--face-model``, none with ``--no-face``), the
    encoders of the demo clip (libx264 + AAC) and a writable output directory."""
    import av


    style, model = style_from_args(clip_args), model_from_args(clip_args)
    check_style_models(style, model)
    if not style.passthrough:
        hub_reachable(model)
    if not clip_args.no_face:
        face_model(clip_args.face_model)
    check_encoder("libx264", "yuv420p")
    try:
        av.codec.Codec("aac", "w")
    except Exception as e:  # noqa: BLE001 - PyAV raises its own error type for an unknown codec
        raise BackendUnavailable(f"this PyAV has no AAC encoder for the demo clip's sound ({e})") from e
    out = Path(args.out_dir)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"--out-dir {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"--out-dir {out}: {existing} is not writable")
