"""Every input checked before any model loads (docs/design.md §7): the shared checks the commands run first.

A user who mistyped a file name learns it at once, in one line on stderr, with exit code 2, and nothing is written:
input images open and decode, videos have a video stream whose first frame decodes, LoRA files exist and carry a
readable safetensors header, style files parse and validate, model specs resolve, the face model resolves when
framing is on, outputs are writable, not the input and do not exist (unless ``--overwrite``), and the encoder and
container of a video output exist. Only then do the commands load their models.

Nothing here imports torch or diffusers, and nothing logs: the one error line is the first thing a user sees. Each
command's own list is next to it: :func:`realtime.pipeline.clip.clip_inputs`, :mod:`realtime.cli.preflight` (image,
live, bench, build, demo), :func:`realtime.research.sweep.sweep_inputs`, :func:`realtime.research.train_config.train_inputs`
and :mod:`realtime.cli.evaluate`; the engine backend check is :func:`realtime.diffusion.engine_select.check_backend`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import LoraSpec, ModelConfig, RegionConfig, StyleConfig
from realtime.errors import LoraError, ModelNotFound
from realtime.files import check_input_file
from realtime.geometry import Size

#: safetensors refuses headers larger than this (100 MB).
MAX_SAFETENSORS_HEADER = 100_000_000


# ------------------------------------------------------------------------------------------------------- files
def check_image(path: str | os.PathLike[str], what: str = "input") -> np.ndarray:
    """An image that exists and decodes -> (H, W, 3) uint8 RGB (:func:`realtime.io.images.read_image`)."""
    from realtime.io.images import read_image

    return read_image(check_input_file(path, what))


def check_video(path: str | os.PathLike[str], *, start: float | None = None, end: float | None = None,
                what: str = "input") -> Size:
    """A video that exists, has a video stream and whose first frame (of the ``start``..``end`` range) decodes ->
    its display size (rotation applied). Errors are those of :class:`~realtime.io.videofile.FileSource`."""
    from realtime.io.videofile import FileSource

    with FileSource(check_input_file(path, what), queue_size=1, start=start, end=end) as source:
        return source.size


def check_container(path: Path, codec: str | None, *, codec_option: bool = True) -> str:
    """The container that ``path``'s suffix names exists, is a video format (not ``.png``/``.gif``) and can hold
    ``codec`` video (``None``: the container's default); returns the encoder it will be written with. One rule with
    the writer: :func:`realtime.io.videowriter.video_codec_for`."""
    from realtime.io.videowriter import video_codec_for

    return video_codec_for(path, codec, codec_option=codec_option)


# ------------------------------------------------------------------------------------------------------- LoRAs
def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file (8-byte little-endian length, then JSON), without reading any
    tensor; :class:`LoraError` when it is missing, not JSON, or its tensors lie past the end of the file."""
    def bad(why: str) -> LoraError:
        return LoraError(f"LoRA {path} is not a readable safetensors file ({why})")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes: too short for a header")
            n = int.from_bytes(head, "little")
            if n < 2 or n > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise bad(f"header length {n} does not fit a {size}-byte file: corrupt or truncated")
            raw = f.read(n)
    except OSError as e:
        raise LoraError(f"LoRA {path} cannot be read ({e.strerror or e})") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad("its header is not JSON") from e
    if not isinstance(header, dict):
        raise bad("its header is not a table")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)
                and isinstance(info.get("dtype"), str) and isinstance(info.get("shape"), list)):
            raise bad(f"tensor {name!r} has a malformed entry")
        if not 0 <= offsets[0] <= offsets[1] <= data:
            raise bad(f"tensor {name!r} lies past the end of the file: truncated")
    return header


def check_lora(spec: LoraSpec, allow_pickle: bool = False, family: str | None = "sd") -> Path | None:
    """A LoRA that is here: its path, after its header is read. A hub or URL LoRA not yet cached: ``None`` (it is
    downloaded when the models load, as before). Missing, a pickle without ``allow_pickle``, corrupt, holding no
    LoRA weights, or made for another model family than ``family`` (``sd`` or ``sdxl``, a
    :class:`~realtime.diffusion.family.Family`'s name; None: not known yet, checked when it loads) as its keys tell
    (SDXL on SD, SD 1.x/2.x on SDXL): the one-line error."""
    from realtime.diffusion.lora import foreign_architecture, local_lora

    path = local_lora(spec, allow_pickle)
    if path is not None and path.suffix.lower() == ".safetensors":
        keys = [k for k in read_safetensors_header(path) if k != "__metadata__"]
        if not any("lora" in k.lower() for k in keys):  # the rule of realtime.diffusion.lora's loader
            raise LoraError(f"LoRA {path} holds no LoRA weights (no 'lora' keys)")
        reason = foreign_architecture(keys, family) if family is not None else None  # before any model loads
        if reason:
            raise LoraError(f"LoRA {path} does not fit this model: {reason}")
    return path


def check_loras(specs: Iterable[LoraSpec], allow_pickle: bool = False, family: str | None = "sd") -> None:
    for spec in dict.fromkeys(specs):
        check_lora(spec, allow_pickle, family)


# ------------------------------------------------------------------------------------------------------ models
def check_model_spec(spec: str, what: str = "--model", allow_pickle: bool = False) -> str:
    """A model spec that resolves: ``random:<arch>`` with a known arch, an existing file (not a pickle unless
    allowed) or directory, or a hub id. Returns its kind (:func:`realtime.diffusion.models.spec_kind`).

    Whether a hub id is in the cache while offline: :func:`check_model` (``models.check_models_available``)."""
    from realtime.diffusion.models import check_not_pickle, random_arch, spec_kind

    try:
        kind = spec_kind(spec)
        if kind == "random":
            random_arch(spec)
    except ModelNotFound as e:
        raise ModelNotFound(str(e) if what == "--model" else f"{what}: {e}") from e
    if kind == "file":
        check_not_pickle(Path(spec).expanduser(), allow_pickle, what.lstrip("-"))
    return kind


def check_model(model: ModelConfig, controls: tuple[str, ...] = ("canny",)) -> None:
    """Every spec of ``model``: the model, the ControlNet of each of ``controls`` and a VAE given as a spec (not
    ``taesd``/``full``); while offline, every hub repo they need is in the Hugging Face cache (file-system look-ups
    only)."""
    from realtime.diffusion.models import check_models_available

    check_model_spec(model.model, "--model", model.allow_pickle)
    for control, spec in model.controlnet_specs(controls).items():
        check_model_spec(spec, "--controlnet" if control == "canny" else f"--{control}-controlnet", model.allow_pickle)
    if model.vae_spec not in ("taesd", "full"):
        check_model_spec(model.vae_spec, "--vae", model.allow_pickle)
    check_models_available(model, controls)


def check_style_models(style: StyleConfig, model: ModelConfig | None) -> None:
    """What a diffusion style needs before it loads: its model specs and its LoRAs (none for pass-through)."""
    if style.passthrough or model is None:
        return
    from realtime.diffusion.models import model_family

    check_model(model, style.controls)
    check_control_models(style, model)
    family = model_family(model.model)
    check_loras(style.loras, model.allow_pickle, family.name if family is not None else None)


def check_control_models(style: StyleConfig, model: ModelConfig) -> None:
    """The detectors of the style's controls resolve: the pose landmarker bundle (:func:`realtime.vision.pose.resolve_pose_model`;
    not cached while offline is the one-line error) and the depth model spec (a known ``random:`` architecture, or a
    spec that :func:`check_model_spec` accepts; its cache while offline is :func:`check_model`'s)."""
    if "pose" in style.controls:
        from realtime.vision.pose import resolve_pose_model

        try:
            resolve_pose_model(model.pose_model)
        except ModelNotFound as e:
            raise ModelNotFound(f"{e} (or leave pose out of --control)") from e
    if "depth" in style.controls:
        spec = model.depth_model_spec
        if spec.startswith("random:"):
            from realtime.vision.depth import DEPTH_ARCHS

            if spec.split(":", 1)[1] not in DEPTH_ARCHS:
                raise ModelNotFound(f"--depth-model {spec}: no such random depth architecture; choose one of "
                                    f"{', '.join('random:' + a for a in DEPTH_ARCHS)}")
        else:
            check_model_spec(spec, "--depth-model", model.allow_pickle)


def check_region(region: RegionConfig, segment_model: str | None) -> np.ndarray | None:
    """``--region`` other than ``all``: the segmentation model resolves; ``--background FILE``: the file exists and
    decodes as an image. Returns the decoded background (H, W, 3) uint8 RGB, or None."""
    if not region.active:
        return None
    from realtime.vision.segment import resolve_segment_model

    try:
        resolve_segment_model(segment_model)
    except ModelNotFound as e:
        raise ModelNotFound(f"{e} (or --region all)") from e
    if region.background_file is None:
        return None
    return check_image(region.background_file, "--background image")


def face_model(explicit: str | os.PathLike[str] | None) -> Path:
    """The face model (:func:`realtime.vision.face.resolve_face_model`); its one-line error also names ``--no-face``."""
    from realtime.vision.face import resolve_face_model

    try:
        return resolve_face_model(explicit)
    except ModelNotFound as e:
        raise ModelNotFound(f"{e} (or --no-face to turn face framing off)") from e


def is_camera(spec: str) -> bool:
    """A ``--source`` that names a camera (an index or a ``/dev/`` path), not a video file."""
    text = str(spec).strip()
    return text.isdigit() or text.startswith("/dev/")
