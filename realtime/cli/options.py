"""Command-line options shared by ``image``, ``live``, ``clip``, ``bench`` and ``build``, and their translation into
the frozen configs (preset first, command-line values override it)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from realtime.cli.console import EXIT_USAGE, printable
from realtime.config import (BACKEND_CHOICES, DEFAULT_DEPTH_MODEL, DEFAULT_MODEL, DEFAULT_STYLE, DEVICE_CHOICES,
                             DTYPE_CHOICES, PROMPT_BLENDS, REGION_CHOICES, LoraSpec, ModelConfig, RegionConfig,
                             RunConfig, StyleConfig, check_controls, check_model_options, check_seed_blend,
                             load_style, override_style, parse_control_scales, scale_overrides)
from realtime.errors import UsageError
from realtime.geometry import Size, auto_model_size, parse_size

#: The shape every command module registers itself with: ``add_parser(subparsers, add_global)``, where ``subparsers``
#: is ``stylecam``'s :class:`Subparsers` and ``add_global`` adds ``--debug``, ``-v`` and ``-q`` to a command's parser.
Subparsers = argparse._SubParsersAction
AddGlobal = Callable[[argparse.ArgumentParser], None]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2: ``stylecam`` and its commands' parsers."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {printable(message)}\n")  # one line whatever the user typed
        sys.exit(EXIT_USAGE)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        # argparse drops a lone "--" given as an option's value (``--seed=--``) and stores [] untyped: take it as the
        # literal value instead, converted and checked like any other.
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def add_global_options(p: argparse.ArgumentParser) -> None:
    """``--debug``, ``-v`` and ``-q``: the :data:`AddGlobal` that ``stylecam`` gives every command."""
    p.add_argument("--debug", action="store_true", help="tracebacks and library logs")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def add_style_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("style (override the preset's values)")
    g.add_argument("--style", default=DEFAULT_STYLE, help=f"preset name (see `stylecam styles`) or a .toml file (default {DEFAULT_STYLE}; 'none' = pass-through, no model)")
    g.add_argument("--prompt", action="append", default=None, metavar="TEXT", help="prompt text; give it several times for a weighted mix of prompts (their embeddings interpolated; weights from --prompt-weight, default equal)")
    g.add_argument("--prompt-weight", action="append", type=float, default=None, metavar="W", help="weight of the --prompt in the same position (give one per --prompt; normalised to sum 1)")
    g.add_argument("--prompt-blend", choices=PROMPT_BLENDS, default=None, help="how a prompt mix is interpolated: slerp (default) or linear")
    g.add_argument("--negative-prompt", help="negative prompt (used when --guidance > 1)")
    g.add_argument("--strength", type=float, help="how far from the input, in (0, 1]: the one step's noise level")
    g.add_argument("--control", default=None, metavar="LIST", help="the ControlNets to run, any of canny,pose,depth (default: the preset's, canny)")
    g.add_argument("--control-scale", default=None, metavar="X|NAME=X,...", help="ControlNet residual scales: a number (the Canny scale) or e.g. canny=1.0,depth=0.5; 0 = that control has no effect")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale; 1 (SD-Turbo's default) = one UNet pass")
    g.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]", help="LoRA file (diffusers or kohya .safetensors, a hub file owner/repo/file.safetensors, or a URL) with an optional scale; repeatable")
    g.add_argument("--canny-low", type=int, help="Canny low threshold (with --canny-high; default automatic from the image median)")
    g.add_argument("--canny-high", type=int, help="Canny high threshold")


def add_temporal_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("temporal consistency")
    g.add_argument("--blend", type=float, help="latent blending: weight of the current frame in (0, 1]; 1 = off")
    g.add_argument("--no-blend", action="store_true", help="turn latent blending off (same as --blend 1)")
    g.add_argument("--motion-threshold", type=float, help="latent change at which a moving region stops blending")
    g.add_argument("--no-motion-adaptive", action="store_true", help="blend everywhere with the same weight")
    g.add_argument("--similarity-filter", action="store_true", default=None, help="skip the stylizer when the input barely changed")
    g.add_argument("--similarity-threshold", type=float, help="cosine similarity at or above which a frame is skipped")
    g.add_argument("--max-skips", type=int, help="at most this many skipped frames in a row")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and device")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id, local directory or .safetensors file, or random:sd-turbo / random:tiny / random:sdxl-turbo / random:tiny-xl (random weights, no download); stabilityai/sdxl-turbo runs the SDXL family; default {DEFAULT_MODEL}")
    g.add_argument("--controlnet", default="auto", help="ControlNet spec, or 'none' (default: thibaud/controlnet-sd21-canny-diffusers, for an SDXL model diffusers/controlnet-canny-sdxl-1.0-small; the same random architecture for random: models)")
    g.add_argument("--pose-controlnet", default="auto", help="OpenPose ControlNet spec for --control pose (default thibaud/controlnet-sd21-openpose-diffusers)")
    g.add_argument("--depth-controlnet", default="auto", help="depth ControlNet spec for --control depth (default thibaud/controlnet-sd21-depth-diffusers)")
    g.add_argument("--vae", default="auto", help="'taesd' (fast, default), 'full' (the model's own VAE, slower) or a spec")
    g.add_argument("--allow-pickle", action="store_true", help="allow loading full pickle checkpoints (.ckpt/.pt/.pth/.pkl, single-file models), which can run code: only for files you trust (.bin weights load through torch's weights-only loader without it)")
    g.add_argument("--seed", type=int, default=0, help="seed of the fixed noise (and of random: weights)")
    g.add_argument("--seed-blend", default=None, metavar="SEED:T", help="seed blending: the fixed noise is slerp(noise(--seed), noise(SEED), T), T in [0, 1]")
    g.add_argument("--size", default="auto", help="model resolution WxH, multiples of 64 (default auto: near 512x512 in the output's aspect ratio)")
    g.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (auto: CUDA, then MPS, then CPU)")
    g.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: fp16 on GPUs, fp32 on the CPU")
    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="engine backend: auto (default: on CUDA TensorRT when installed, else torch.compile + CUDA graphs; eager on the CPU; it logs what it chose and why), eager, compile, onnxruntime, tensorrt")
    g.add_argument("--trt-refit", action="store_true", help="build TensorRT engines refittable (LoRA changes by refit instead of a rebuild; off by default: TensorRT 11.3 documents a REFIT bias issue)")
    g.add_argument("--cache-dir", default=None, help="engine cache directory (default $STYLECAM_CACHE, else the user cache directory)")


def add_vision_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pose, depth and regions")
    g.add_argument("--pose-model", default=None, help="MediaPipe pose landmarker .task for --control pose (default $STYLECAM_POSE_MODEL, the cache, then the official download)")
    g.add_argument("--depth-model", default="auto", help=f"depth network for --control depth: hub id or directory (default {DEFAULT_DEPTH_MODEL}; the same random architecture for random: models)")
    g.add_argument("--region", default="all", choices=REGION_CHOICES, help="what gets stylized: all (default), the person, or the background (MediaPipe selfie segmentation)")
    g.add_argument("--background", default="keep", metavar="keep|blur|FILE", help="with --region person, what the background shows: keep the camera's pixels (default), blur them, or an image file")
    g.add_argument("--segment-model", default=None, help="MediaPipe selfie segmentation .tflite for --region (default $STYLECAM_SEGMENT_MODEL, the cache, then the official download)")


def add_common_options(p: argparse.ArgumentParser, *, temporal: bool = False, vision: bool = True) -> None:
    """The style, model and (``vision``) pose/depth/region options; ``temporal`` adds the temporal ones."""
    add_style_options(p)
    if temporal:
        add_temporal_options(p)
    add_model_options(p)
    if vision:
        add_vision_options(p)


def region_from_args(args: argparse.Namespace) -> RegionConfig:
    """``--region`` and ``--background`` (commands without them: ``all``)."""
    return RegionConfig(region=getattr(args, "region", "all"), background=getattr(args, "background", "keep"))


#: temporal options whose value goes straight to the TemporalConfig field of the same name
_TEMPORAL_VALUES = ("motion_threshold", "similarity_filter", "similarity_threshold", "max_skips")


def temporal_options(args: argparse.Namespace) -> dict[str, object]:
    """The :class:`~realtime.config.TemporalConfig` fields given on the command line (``--blend``/``--no-blend``,
    ``--no-motion-adaptive``, ...); commands without the temporal options give none. The one mapping of these options:
    the style overrides and the live session (which keeps them when the style changes) both use it."""
    no_blend, blend = getattr(args, "no_blend", False), getattr(args, "blend", None)
    if no_blend and blend is not None:
        raise UsageError("--blend and --no-blend: give one")
    out: dict[str, object] = {}
    if no_blend or blend is not None:
        out["blend"] = 1.0 if no_blend else blend
    if getattr(args, "no_motion_adaptive", False):
        out["motion_adaptive"] = False
    for name in _TEMPORAL_VALUES:
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    return out


def style_overrides(args: argparse.Namespace, *, loras: bool = True) -> dict[str, object]:
    """The style options as :func:`~realtime.config.override_style` keywords (``None``: not given); ``loras=False``
    leaves ``--lora`` out (the sweep scales them per cell)."""
    o: dict[str, object] = {
        **prompt_overrides(args),
        "negative_prompt": args.negative_prompt,
        "strength": args.strength,
        "guidance": args.guidance,
        "controls": check_controls(args.control) if getattr(args, "control", None) is not None else None,
        **scale_overrides(control_scales_given(args)),
    }
    if loras:
        o["loras"] = tuple(LoraSpec.parse(x) for x in args.lora)
    o.update(canny_low=args.canny_low, canny_high=args.canny_high)
    o.update({f"temporal_{k}": v for k, v in temporal_options(args).items()})
    return o


def prompt_overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--prompt`` (once or several times), ``--prompt-weight`` (one per prompt) and ``--prompt-blend`` as style
    overrides: one prompt is ``prompt``; several are a ``prompt_mix`` (the first also names ``prompt``)."""
    prompts = list(getattr(args, "prompt", None) or [])
    weights = list(getattr(args, "prompt_weight", None) or [])
    if weights and len(weights) != len(prompts):
        raise UsageError(f"--prompt-weight given {len(weights)} time(s) for {len(prompts)} --prompt(s): give one "
                         "weight per prompt, in the same order")
    out: dict[str, object] = {"prompt": prompts[0] if prompts else None,
                              "prompt_blend": getattr(args, "prompt_blend", None)}
    if len(prompts) > 1 or weights:
        out["prompt_mix"] = tuple(zip(prompts, weights or [1.0] * len(prompts), strict=True))
    return out


def seed_blend_arg(text: str | None) -> tuple[int, float] | None:
    """``--seed-blend SEED:T`` -> ``(SEED, T)`` (checked), None when not given."""
    if text is None:
        return None
    seed, sep, t = text.partition(":")
    try:
        value = (int(seed), float(t)) if sep else None
    except ValueError:
        value = None
    if value is None:
        raise UsageError(f"--seed-blend {text!r}: expected SEED:T, e.g. 7:0.5")
    return check_seed_blend(value, "--seed-blend")


def control_scales_given(args: argparse.Namespace) -> dict[str, float]:
    """``--control-scale`` parsed ({control: scale}; empty when not given)."""
    text = getattr(args, "control_scale", None)
    return {} if text is None else parse_control_scales(text)


def style_from_args(args: argparse.Namespace) -> StyleConfig:
    style = load_style(args.style)
    overrides = style_overrides(args)
    check_model_options(style, args.model, args.controlnet, args.vae)
    style = override_style(style, **overrides)
    scale_overrides(control_scales_given(args), style.controls)  # a scale for a control that is not enabled
    return style


def model_from_args(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(model=args.model, controlnet=args.controlnet, vae=args.vae, allow_pickle=args.allow_pickle,
                       pose_controlnet=getattr(args, "pose_controlnet", "auto"),
                       depth_controlnet=getattr(args, "depth_controlnet", "auto"),
                       depth_model=getattr(args, "depth_model", "auto"), pose_model=getattr(args, "pose_model", None),
                       segment_model=getattr(args, "segment_model", None))


def model_size(args: argparse.Namespace, output: Size) -> Size:
    return auto_model_size(output) if args.size == "auto" else parse_size(args.size, model=True)


def run_from_args(args: argparse.Namespace, output: Size) -> RunConfig:
    return RunConfig(size=model_size(args, output), seed=args.seed, device=args.device, dtype=args.dtype,
                     backend=args.backend, cache_dir=args.cache_dir,
                     seed_blend=seed_blend_arg(getattr(args, "seed_blend", None)),
                     trt_refit=getattr(args, "trt_refit", False))


def output_size_arg(text: str | None) -> Size | None:
    return None if text in (None, "auto") else parse_size(text, what="--output-size")


#: argparse destinations that name files a command reads (a missing attribute or a non-path value is skipped)
_INPUT_OPTIONS = ("input", "inputs", "source", "face_model", "style", "control_file", "model", "controlnet", "vae",
                  "pose_controlnet", "depth_controlnet", "depth_model", "pose_model", "segment_model", "background",
                  "validation_image", "resume")


def input_files(args: argparse.Namespace) -> tuple[Path, ...]:
    """Every local file the command line names as something to read: inputs, ``--source``, ``--face-model``, a style
    file, ``--control-file``, local model files, local ``--lora`` files. Outputs are checked against all of them
    (:func:`realtime.files.check_not_input`): no flag lets an output replace one of these."""
    values: list[object] = []
    for name in _INPUT_OPTIONS:
        value = getattr(args, name, None)
        values.extend(value if isinstance(value, (list, tuple)) else [value])
    values.extend(LoraSpec.parse(x).path for x in (getattr(args, "lora", None) or ()) if isinstance(x, str))
    found: list[Path] = []
    for value in values:
        if isinstance(value, (str, Path)) and str(value).strip():
            path = Path(str(value).strip()).expanduser()
            if path.is_file():
                found.append(path)
    return tuple(found)
