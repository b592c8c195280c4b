"""Every input checked before any model loads (GUIDE 6.12): the shared checks and what each command runs first.

A user who mistyped a file name learns it at once, in one line on stderr, with exit code 2, and nothing is written:
input images open and decode, videos have a video stream whose first frame decodes, LoRA files exist and carry a
readable safetensors header, style files parse and validate, model specs resolve, the face model resolves when
framing is on, outputs are writable, not the input and do not exist (unless ``--overwrite``), and the encoder and
container of a video output exist. Only then do the commands load their models.

Nothing here imports torch or diffusers (bench and build, which check engine backends on a device, excepted), and
nothing logs: the one error line is the first thing a user sees. Each ``*_inputs`` function is one command's list.
"""
from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import LoraSpec, ModelConfig, StyleConfig
from realtime.errors import BackendUnavailable, InputError, LoraError, ModelNotFound, OutputError, UsageError
from realtime.geometry import Size

#: safetensors refuses headers larger than this (100 MB).
MAX_SAFETENSORS_HEADER = 100_000_000


# ------------------------------------------------------------------------------------------------------- files
def check_image(path: str | os.PathLike[str], what: str = "input") -> np.ndarray:
    """An image that exists and decodes -> (H, W, 3) uint8 RGB (:func:`realtime.io.images.read_image`)."""
    from realtime.io.images import read_image
    from realtime.files import check_input_file

    return read_image(check_input_file(path, what))


def check_video(path: str | os.PathLike[str], *, start: float | None = None, end: float | None = None,
                what: str = "input") -> Size:
    """A video that exists, has a video stream and whose first frame (of the ``start``..``end`` range) decodes ->
    its display size (rotation applied). Errors are those of :class:`~realtime.io.videofile.FileSource`."""
    from realtime.io.videofile import FileSource
    from realtime.files import check_input_file

    with FileSource(check_input_file(path, what), queue_size=1, start=start, end=end) as source:
        return source.size


class _NamedBuffer(io.BytesIO):
    """An in-memory file with a name: PyAV guesses the container format from it, and nothing touches the disk."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def check_container(path: Path, codec: str, *, codec_option: bool = True) -> None:
    """The container that ``path``'s suffix names exists and can hold ``codec`` video (checked in memory).
    ``codec_option``: the command has ``--codec`` (the error suggests it)."""
    import av

    try:
        container = av.open(_NamedBuffer(path.name), mode="w")
    except ValueError as e:
        raise UsageError(f"cannot tell the container format from {path.name!r}: use .mp4, .mkv, .mov or .webm") from e
    try:
        container.add_stream(codec, rate=25)
    except ValueError as e:
        other = ", or another --codec" if codec_option else ""
        raise UsageError(f"output {path.name}: the {container.format.name} container cannot hold {codec} video "
                         f"(use .mp4, .mkv or .mov{other})") from e
    finally:
        container.close()


def check_video_output(path: Path, codec: str, pix_fmt: str, *, overwrite: bool, inputs: tuple[Path, ...] = (),
                       codec_option: bool = True) -> None:
    """A video output: writable, not an input, not existing (unless ``overwrite``), its encoder and container exist."""
    from realtime.pipeline.clip import check_encoder
    from realtime.files import check_output_path

    check_output_path(path, overwrite=overwrite, inputs=inputs)
    check_encoder(codec, pix_fmt)
    check_container(path, codec, codec_option=codec_option)


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


def check_lora(spec: LoraSpec, allow_pickle: bool = False) -> Path | None:
    """A LoRA that is here: its path, after its header is read. A hub or URL LoRA not yet cached: ``None`` (it is
    downloaded when the models load, as before). Missing, a pickle without ``allow_pickle``, corrupt, or holding no
    LoRA weights: the one-line error."""
    from realtime.diffusion.lora import local_lora

    path = local_lora(spec, allow_pickle)
    if path is not None and path.suffix.lower() == ".safetensors":
        keys = [k for k in read_safetensors_header(path) if k != "__metadata__"]
        if not any("lora" in k.lower() for k in keys):  # the rule of realtime.diffusion.lora's loader
            raise LoraError(f"LoRA {path} holds no LoRA weights (no 'lora' keys)")
    return path


def check_loras(specs: Iterable[LoraSpec], allow_pickle: bool = False) -> None:
    for spec in dict.fromkeys(specs):
        check_lora(spec, allow_pickle)


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


def check_model(model: ModelConfig) -> None:
    """Every spec of ``model``: the model, its ControlNet and a VAE given as a spec (not ``taesd``/``full``); while
    offline, every hub repo they need is in the Hugging Face cache (file-system look-ups only)."""
    from realtime.diffusion.models import check_models_available

    check_model_spec(model.model, "--model", model.allow_pickle)
    if model.controlnet_spec is not None:
        check_model_spec(model.controlnet_spec, "--controlnet", model.allow_pickle)
    if model.vae_spec not in ("taesd", "full"):
        check_model_spec(model.vae_spec, "--vae", model.allow_pickle)
    check_models_available(model)


def check_style_models(style: StyleConfig, model: ModelConfig | None) -> None:
    """What a diffusion style needs before it loads: its model specs and its LoRAs (none for pass-through)."""
    if style.passthrough or model is None:
        return
    check_model(model)
    check_loras(style.loras, model.allow_pickle)


def face_model(explicit: str | os.PathLike[str] | None) -> Path:
    """The face model (:func:`realtime.vision.face.resolve_face_model`); its one-line error also names ``--no-face``."""
    from realtime.vision.face import resolve_face_model

    try:
        return resolve_face_model(explicit)
    except ModelNotFound as e:
        raise ModelNotFound(f"{e} (or --no-face to turn face framing off)") from e


def check_backend(name: str, device: Any) -> None:
    """A requested engine backend that can run on ``device`` (``eager``/``auto`` always can): else
    :class:`~engines.BackendUnavailable`, never a silent fallback (GUIDE 6.4)."""
    if name in ("eager", "auto"):
        return
    from engines import BackendUnavailable as EngineBackendUnavailable
    from engines import get_backend

    ok, why = get_backend(name).is_available(device)
    if not ok:
        raise EngineBackendUnavailable(why)


# ---------------------------------------------------------------------------------------------------- commands
def image_inputs(args: argparse.Namespace) -> tuple[Path, Path, np.ndarray, StyleConfig, ModelConfig]:
    """``stylecam image``: (input, output, the decoded input, style, model)."""
    from realtime.io.images import image_format
    from realtime.cli.options import model_from_args, style_from_args
    from realtime.files import check_input_file, check_output_path

    src = check_input_file(args.input)
    dst = Path(args.output)
    image_format(dst)
    check_output_path(dst, overwrite=args.overwrite, inputs=(src,))
    style = style_from_args(args)
    model = model_from_args(args)
    frame = check_image(src)
    check_style_models(style, model)
    return src, dst, frame, style, model


def clip_inputs(pairs: Sequence[tuple[Path, Path]], opts: Any, style: StyleConfig, model: ModelConfig, *,
                batch: bool) -> tuple[list[tuple[Path, Path, Size]], list[tuple[Path, InputError]]]:
    """``stylecam clip`` (after :func:`realtime.pipeline.clip.plan_outputs`): each input probed in its range, each output
    checked, the face model and the models. One input: its error is raised. A batch: the files that pass with their
    display sizes, and those that fail with their errors (each reported on its own line, the others go on)."""
    from realtime.files import check_input_file, check_output_path

    good: list[tuple[Path, Path, Size]] = []
    failed: list[tuple[Path, InputError]] = []
    for src, dst in pairs:  # the encoder itself is checked once, before (clip.check_encoder)
        try:
            check_input_file(src)
            check_output_path(dst, overwrite=opts.overwrite, inputs=(src,))
            check_container(dst, opts.codec)
            good.append((src, dst, check_video(src, start=opts.start, end=opts.end)))
        except InputError as e:
            if not batch:
                raise
            failed.append((src, e))
    if opts.face:
        face_model(opts.face_model)
    check_style_models(style, model)
    return good, failed


def _is_camera(spec: str) -> bool:
    text = str(spec).strip()
    return text.isdigit() or text.startswith("/dev/")


def live_inputs(args: argparse.Namespace, style: StyleConfig, model: ModelConfig | None, outputs: list[str]) -> None:
    """``stylecam live``: a file source decodes, file outputs are writable with their encoder, the face model and
    the models resolve. Cameras, virtual cameras and windows are opened (and so checked) before the models load."""
    source = None
    if not _is_camera(args.source) and Path(args.source).expanduser().exists():
        source = Path(args.source).expanduser()
        check_video(source, what="--source")
    for spec in outputs:
        if spec not in ("vcam", "window", "none"):
            check_video_output(Path(spec).expanduser(), "libx264", "yuv420p", overwrite=args.overwrite,
                               inputs=(source,) if source is not None else (), codec_option=False)
    if not args.no_face:
        face_model(args.face_model)
    check_style_models(style, model)


def bench_inputs(settings: Any, model: ModelConfig, style: StyleConfig, run: Any, *, json_path: str | None,
                 overwrite: bool) -> None:
    """``stylecam bench``: the models, a file ``--source``, an explicit ``--face-model`` (a default one that does
    not resolve is a skipped stage, as documented), the ``--json`` target, and every requested backend on the
    device, all before anything is measured."""
    from realtime.diffusion.models import resolve_device
    from realtime.files import check_output_path

    if style.passthrough:
        raise UsageError("--style none loads no model: there is nothing to benchmark; choose a diffusion style")
    check_style_models(style, model)
    if settings.source is not None and not _is_camera(settings.source):
        check_video(settings.source, what="--source")
    if settings.face and settings.face_model is not None:
        face_model(settings.face_model)
    if json_path:
        check_output_path(Path(json_path), overwrite=overwrite)
    device = resolve_device(run.device)
    for backend in dict.fromkeys(settings.backends):
        check_backend(backend, device)


def build_inputs(style: StyleConfig, model: ModelConfig, run: Any) -> None:
    """``stylecam build``: the models and the backend on the device."""
    from realtime.diffusion.models import resolve_device

    check_style_models(style, model)
    check_backend(run.backend, resolve_device(run.device))


def demo_inputs(args: argparse.Namespace, clip_args: argparse.Namespace) -> None:
    """``stylecam demo``: the style and model of the stylized copy (``clip_args``: the ``clip`` command it runs),
    the face model, the encoders of the demo clip (libx264 + AAC) and a writable output directory."""
    import av

    from realtime.pipeline.clip import check_encoder
    from realtime.cli.options import model_from_args, style_from_args

    check_style_models(style_from_args(clip_args), model_from_args(clip_args))
    face_model(None)
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


def sweep_inputs(job: Any) -> None:
    """``scripts/sweep.py``: every input image decodes, the outputs may be written, every model and LoRA resolves."""
    from realtime.research.sweep import check_out_dir

    for p in job.inputs:
        check_image(p)
    check_out_dir(job)
    for s in job.settings:
        check_model(s.model)
    check_loras((lora for s in job.settings for lora in s.style.loras), allow_pickle=any(s.model.allow_pickle for s in job.settings))


def train_inputs(cfg: Any, *, model: bool = True) -> None:
    """``scripts/train_lora.py``: the data set (captions found, every image decodes), the validation image and
    style, and (``model``) the base model and VAE specs."""
    from realtime.config import load_style
    from realtime.research.lora_dataset import scan_dataset

    for item in scan_dataset(Path(cfg.data), cfg.default_caption):
        check_image(item.path, "training image")
    if cfg.validation_image is not None:
        check_image(cfg.validation_image, "--validation-image")
        load_style(cfg.validation_style)
    if model:
        check_model(ModelConfig(cfg.model, controlnet="auto" if cfg.validation_image is not None else "none",
                                vae=cfg.vae, allow_pickle=cfg.allow_pickle))


def evaluate_inputs(mode: str, input_path: Path, output_path: Path, *, face: bool, face_model_path: Path | None) -> None:
    """``scripts/evaluate.py``: both files decode (a clip: its first frame) and an explicit face model exists."""
    from realtime.research.evaluation import load_image

    for what, path in (("input", input_path), ("output", output_path)):
        if mode == "images":
            load_image(path)
        else:
            check_video(path, what=what)
    if face and face_model_path is not None and not Path(face_model_path).is_file():
        raise ModelNotFound(f"--face-model {face_model_path}: no such file")
