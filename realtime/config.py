"""Frozen configuration: style presets, temporal settings, model specs, and the stylizer's run settings.

Presets live as TOML files in ``realtime/styles/`` (shipped in the package); ``--style path/to/mine.toml`` loads a
user's own. Command-line options override preset values through :func:`dataclasses.replace`.
Every dataclass validates itself in ``__post_init__``: errors name the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from realtime.errors import InputNotFound, UsageError
from realtime.geometry import Size
from realtime.styles.controls import (CONTROL_TYPES, check_controls, parse_control_scales,  # noqa: F401 (re-exported)
                                     scale_overrides)
from realtime.styles.mixes import (PROMPT_BLENDS, check_prompt_mix, mix_from_toml,  # noqa: F401 (re-exported)
                                   prompt_mix, seed_blend_parts)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_MODEL = "stabilityai/sd-turbo"
DEFAULT_CONTROLNET = "thibaud/controlnet-sd21-canny-diffusers"
#: Each control's default ControlNet for hub/local models (SD 2.1 family, matching SD-Turbo).
DEFAULT_CONTROLNETS = {
    "canny": DEFAULT_CONTROLNET,
    "pose": "thibaud/controlnet-sd21-openpose-diffusers",
    "depth": "thibaud/controlnet-sd21-depth-diffusers",
}
#: The depth network of the depth control (Apache-2.0; transformers' DepthAnythingForDepthEstimation).
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
DEFAULT_VAE = "taesd"
TAESD_REPO = "madebyollin/taesd"
DEFAULT_STYLE = "anime"
PASSTHROUGH_STYLE = "none"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
#: engine backends (``engines`` registers them; ``auto`` picks the fastest available and says which)
BACKEND_CHOICES = ("auto", "eager", "compile", "onnxruntime", "tensorrt")


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters (a style file's 200 000-character
    string or a deeply nested table must not become the message), and never failing (Python refuses ``repr`` of
    integers over 4300 digits)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<an integer of about {value.bit_length() * 0.30103:.0f} digits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__}, {len(text)} characters)"


def _check_range(owner: str, name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # a TOML string must not reach a comparison
        raise UsageError(f"{owner}.{name}={shown(value)}: must be a number in {interval}")
    ok = (lo < value if lo_open else lo <= value) and value <= hi and math.isfinite(value)
    if not ok:
        raise UsageError(f"{owner}.{name}={shown(value)}: must be in {interval}")


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` when it is an integer in 0..2**63-1 (bools are not seeds), else a :class:`UsageError` naming ``what``
    (``--seed`` on the command line, ``seed`` for the stylizer and the live controls). The one seed check."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UsageError(f"{what} {shown(seed)}: must be a non-negative integer")
    return seed


def check_seed_blend(value: Any, what: str = "seed blend") -> tuple[int, float]:
    seed, t = seed_blend_parts(value, what)  # ``(seed, t)``, t in [0, 1]
    return check_seed(seed, what), t


def _check_type(owner: str, name: str, value: Any, kind: type | tuple[type, ...], allowed: str) -> None:
    """``value`` is of ``kind`` (bools are not numbers), else a :class:`UsageError` naming field, value and type."""
    bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if bad_bool or not isinstance(value, kind):
        raise UsageError(f"{owner}.{name}={shown(value)}: must be {allowed}")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA: a local ``.safetensors`` file, a hub file ``owner/repo/file.safetensors``, or an https URL, with a scale."""

    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise UsageError(f"lora.path={shown(self.path)}: must be a non-empty file name, hub file or URL")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not abs(self.scale) <= 10:  # NaN, inf, 10**400 too
            raise UsageError(f"lora {shown(self.path)} scale={shown(self.scale)}: must be a number in [-10, 10]")
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """``PATH[:SCALE]``: the scale is the text after the LAST colon only when it parses as a number, so Windows
        paths keep their drive colon (``C:\\loras\\a.safetensors`` has scale 1)."""
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                scale = float(tail)
            except ValueError:
                return cls(text, 1.0)
            return cls(head, scale)  # a number out of range is an error, not part of the path
        return cls(text, 1.0)

    def __str__(self) -> str:
        return f"{self.path}:{self.scale:g}"


@dataclass(frozen=True)
class TemporalConfig:
    """Frame-to-frame consistency (docs/design.md §4).

    - ``blend``: weight ``a`` of the current frame in ``z_in = a*z + (1-a)*z_prev``; 1 disables latent blending.
    - ``motion_adaptive``: ``a`` rises towards 1 where the input latent moved by more than ``motion_threshold`` (mean
      absolute latent change per latent pixel), so moving parts do not ghost and still parts do not flicker.
    - ``similarity_filter``: skip the stylizer when the input barely changed (cosine similarity of the downscaled input
      at or above ``similarity_threshold``), reusing the previous output, at most ``max_skips`` frames in a row.
    """

    blend: float = 0.6
    motion_adaptive: bool = True
    motion_threshold: float = 0.25
    similarity_filter: bool = False
    similarity_threshold: float = 0.985
    max_skips: int = 10

    def __post_init__(self) -> None:
        for name in ("motion_adaptive", "similarity_filter"):
            _check_type("temporal", name, getattr(self, name), bool, "true or false")
        _check_range("temporal", "blend", self.blend, 0.0, 1.0, lo_open=True)
        _check_range("temporal", "motion_threshold", self.motion_threshold, 0.0, 100.0, lo_open=True)
        _check_range("temporal", "similarity_threshold", self.similarity_threshold, 0.0, 1.0)
        if isinstance(self.max_skips, bool) or not isinstance(self.max_skips, int) or not 0 <= self.max_skips <= 1000:
            raise UsageError(f"temporal.max_skips={shown(self.max_skips)}: must be an integer in [0, 1000]")

    @property
    def motion_gain(self) -> float:
        """``1 / motion_threshold`` when motion-adaptive blending is on, else 0 (the FrameStep input)."""
        return 1.0 / self.motion_threshold if self.motion_adaptive else 0.0


@dataclass(frozen=True)
class StyleConfig:
    """A style preset: what the stylizer draws and how strongly. ``passthrough`` (the ``none`` preset) loads no model."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 0.7
    control_scale: float = 0.8  # the Canny ControlNet's scale
    guidance: float = 1.0
    loras: tuple[LoraSpec, ...] = ()
    controls: tuple[str, ...] = ("canny",)  # the ControlNets that run, any subset of CONTROL_TYPES (in that order)
    pose_scale: float = 0.8
    depth_scale: float = 0.8
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    canny_low: int | None = None
    canny_high: int | None = None
    description: str = ""
    passthrough: bool = False
    prompt_mix: tuple[tuple[str, float], ...] = ()  # (text, weight) pairs; empty: prompt alone (styles/mixes.py)
    prompt_blend: str = "slerp"  # how the mix is interpolated: slerp (default) or linear
    transition_frames: int = 0  # frames a prompt change blends over (0: it jumps)

    def __post_init__(self) -> None:
        owner = f"style[{self.name}]"
        check_prompt_mix(owner, self)
        for name in ("prompt", "negative_prompt", "description"):
            _check_type(owner, name, getattr(self, name), str, "a string")
        _check_type(owner, "passthrough", self.passthrough, bool, "true or false")
        for name in ("canny_low", "canny_high"):
            if getattr(self, name) is not None:
                _check_type(owner, name, getattr(self, name), int, "an integer in [0, 255]")
        _check_range(f"style[{self.name}]", "strength", self.strength, 0.0, 1.0, lo_open=True)
        _check_range(f"style[{self.name}]", "control_scale", self.control_scale, 0.0, 5.0)
        for name in ("pose_scale", "depth_scale"):
            _check_range(owner, name, getattr(self, name), 0.0, 5.0)
        object.__setattr__(self, "controls", check_controls(self.controls, f"{owner}.controls"))
        _check_range(f"style[{self.name}]", "guidance", self.guidance, 1.0, 30.0)
        if (self.canny_low is None) != (self.canny_high is None):
            raise UsageError(f"style[{self.name}]: give both canny_low and canny_high, or neither (automatic)")
        if self.canny_low is not None and not 0 <= self.canny_low <= self.canny_high <= 255:  # type: ignore[operator]
            raise UsageError(
                f"style[{self.name}] canny thresholds {shown(self.canny_low)}/{shown(self.canny_high)}: need 0 <= low <= high <= 255"
            )
        if not self.passthrough and not self.prompt.strip():
            raise UsageError(f"style[{self.name}].prompt: empty (a diffusion style needs a prompt)")

    def scale_of(self, control: str) -> float:
        """The conditioning scale of ``control`` (one of :data:`CONTROL_TYPES`): ``control_scale`` for Canny."""
        return float(getattr(self, "control_scale" if control == "canny" else f"{control}_scale"))

    @property
    def uses_cfg(self) -> bool:
        """Guidance above 1 runs classifier-free guidance (two UNet passes, batch doubled)."""
        return self.guidance > 1.0


@dataclass(frozen=True)
class ModelConfig:
    """Model specs (docs/design.md §5): hub id, local directory or single ``.safetensors`` file, or ``random:<arch>``.

    ``controlnet`` and ``vae`` default to ``auto``: the project defaults for a hub/local model, the same random
    architecture for a ``random:`` model. ``controlnet="none"`` runs without ControlNet; ``vae`` is ``taesd`` (TAESD,
    the fast default), ``full`` (the model's own VAE, ~2.7x the cost of the rest of the frame) or a spec.
    """

    model: str = DEFAULT_MODEL
    controlnet: str = "auto"
    vae: str = "auto"
    allow_pickle: bool = False
    pose_controlnet: str = "auto"
    depth_controlnet: str = "auto"
    depth_model: str = "auto"
    pose_model: str | None = None     # the pose landmarker bundle (None: $STYLECAM_POSE_MODEL, the cache, the download)
    segment_model: str | None = None  # the selfie segmentation model (None: $STYLECAM_SEGMENT_MODEL, the cache, ...)

    def __post_init__(self) -> None:
        for name in ("model", "controlnet", "vae", "pose_controlnet", "depth_controlnet", "depth_model"):
            if not str(getattr(self, name)).strip():
                raise UsageError(f"--{name}: empty model spec")
        if self.model.lower() == "none":
            raise UsageError("--model none: a model is required (use --style none for pass-through)")

    @property
    def is_random(self) -> bool:
        return self.model.startswith("random:")

    @property
    def controlnet_spec(self) -> str | None:
        """The resolved ControlNet spec, or None for no ControlNet."""
        spec = self.controlnet
        if spec == "auto":
            return self.model if self.is_random else DEFAULT_CONTROLNET
        return None if spec.lower() == "none" else spec

    @property
    def depth_model_spec(self) -> str:
        """The depth network of the depth control: ``auto`` is :data:`DEFAULT_DEPTH_MODEL`, or the same random
        architecture for a ``random:`` model (``random:sd-turbo``: the real V2-Small architecture)."""
        if self.depth_model != "auto":
            return self.depth_model
        return self.model if self.is_random else DEFAULT_DEPTH_MODEL

    def controlnet_specs(self, controls: tuple[str, ...] = ("canny",)) -> dict[str, str]:
        """{control: ControlNet spec} for each of ``controls`` that has one (``auto``: :data:`DEFAULT_CONTROLNETS`,
        or the same random architecture for a ``random:`` model; ``none``: that control is left out)."""
        out: dict[str, str] = {}
        for control in controls:
            if control == "canny":
                spec = self.controlnet_spec
            else:
                given = getattr(self, f"{control}_controlnet")
                spec = (self.model if self.is_random else DEFAULT_CONTROLNETS[control]) if given == "auto" else given
                spec = None if spec.lower() == "none" else spec
            if spec is not None:
                out[control] = spec
        return out

    @property
    def vae_spec(self) -> str:
        spec = self.vae
        if spec in ("auto", "taesd"):
            return self.model if (self.is_random and spec == "auto") else "taesd"
        return spec


REGION_CHOICES = ("all", "person", "background")


@dataclass(frozen=True)
class RegionConfig:
    """What gets stylized (``region``: all, the person, or the background) and what the rest shows (``background``:
    ``keep`` the camera's own pixels, ``blur`` them, or an image FILE; only with ``region=person``: the rest is then
    the background). The person mask is smoothed over time (``smoothing``: weight of the previous mask, 0 = none) and
    feathered (a Gaussian of ``feather`` pixels at the model size) before compositing (docs/design.md §3)."""

    region: str = "all"
    background: str = "keep"
    smoothing: float = 0.5
    feather: float = 3.0
    blur: float = 12.0  # sigma in pixels of --background blur at the model size

    def __post_init__(self) -> None:
        if self.region not in REGION_CHOICES:
            raise UsageError(f"--region {shown(self.region)}: expected one of {', '.join(REGION_CHOICES)}")
        if not isinstance(self.background, str) or not self.background.strip():
            raise UsageError(f"--background {shown(self.background)}: expected keep, blur or an image file")
        if self.background != "keep" and self.region != "person":
            raise UsageError(f"--background {shown(self.background, 80)} needs --region person (the rest of the "
                             f"picture is the background only then); with --region {self.region} it would do nothing")
        _check_range("region", "smoothing", self.smoothing, 0.0, 0.99)
        _check_range("region", "feather", self.feather, 0.0, 64.0)
        _check_range("region", "blur", self.blur, 0.5, 128.0)

    @property
    def active(self) -> bool:
        """Whether a mask is needed (anything but ``region=all``)."""
        return self.region != "all"

    @property
    def background_file(self) -> str | None:
        """The background image's path, when ``background`` is a file (not ``keep`` or ``blur``)."""
        return None if self.background in ("keep", "blur") else self.background


@dataclass(frozen=True)
class RunConfig:
    """Where and how the stylizer runs: model resolution, seed, device, dtype, engine backend."""

    size: Size = Size(512, 512)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    cache_dir: str | None = None  # engine cache: --cache-dir, else $STYLECAM_CACHE, else the user cache directory
    #: ``(other_seed, t)``: the fixed noise is slerp(noise(seed), noise(other_seed), t) (``--seed-blend SEED:T``).
    seed_blend: tuple[int, float] | None = None
    trt_refit: bool = False  # --trt-refit: refittable TensorRT engines (LoRA changes by refit)

    def __post_init__(self) -> None:
        from realtime.geometry import check_model_size

        check_model_size(self.size)
        check_seed(self.seed, "--seed")
        if self.seed_blend is not None:
            check_seed_blend(self.seed_blend, "--seed-blend")
        base = self.device.split(":")[0]
        if base not in DEVICE_CHOICES or (":" in self.device and base != "cuda"):
            raise UsageError(f"--device {shown(self.device)}: expected one of auto, cpu, cuda, cuda:N, mps")
        if self.dtype not in DTYPE_CHOICES:
            raise UsageError(f"--dtype {shown(self.dtype)}: expected one of {', '.join(DTYPE_CHOICES)}")


# --------------------------------------------------------------------------------------------------------- presets
_STYLE_KEYS = {f.name for f in dataclasses.fields(StyleConfig)} - {"name", "loras", "temporal"}
_TEMPORAL_KEYS = {f.name for f in dataclasses.fields(TemporalConfig)}


def builtin_style_names() -> list[str]:
    """Names of the presets shipped in ``realtime/styles``, default first."""
    names = sorted(p.name[:-5] for p in resources.files("realtime.styles").iterdir() if p.name.endswith(".toml"))
    return sorted(names, key=lambda n: (n != DEFAULT_STYLE, n == PASSTHROUGH_STYLE, n))


def style_from_dict(name: str, data: dict[str, Any], *, source: str = "") -> StyleConfig:
    """Build a :class:`StyleConfig` from parsed TOML; unknown keys are errors (typos must not pass silently)."""
    where = source or name
    data = dict(data)
    temporal = data.pop("temporal", {})
    loras = data.pop("lora", [])
    if "prompt_mix" in data:
        data["prompt_mix"] = mix_from_toml(where, data["prompt_mix"])
        if not data.get("prompt") and data["prompt_mix"]:
            data["prompt"] = data["prompt_mix"][0][0]  # the first prompt of the mix names the style's prompt
    unknown = set(data) - _STYLE_KEYS
    if unknown:
        raise UsageError(f"style {where}: unknown key(s) {_keys_shown(unknown)}; allowed: {', '.join(sorted(_STYLE_KEYS))}")
    if not isinstance(temporal, dict):
        raise UsageError(f"style {where}: temporal={shown(temporal)}: must be a [temporal] table")
    if set(temporal) - _TEMPORAL_KEYS:
        raise UsageError(f"style {where}: [temporal] has unknown key(s) {_keys_shown(set(temporal) - _TEMPORAL_KEYS)}; "
                         f"allowed: {', '.join(sorted(_TEMPORAL_KEYS))}")
    if not isinstance(loras, list) or any(not isinstance(x, dict) or "path" not in x for x in loras):
        raise UsageError(f"style {where}: each [[lora]] needs a path (and optionally a scale)")
    if any(set(x) - {"path", "scale"} for x in loras):
        raise UsageError(f"style {where}: a [[lora]] allows only path and scale")
    try:
        return StyleConfig(
            name=name,
            temporal=TemporalConfig(**temporal),
            loras=tuple(LoraSpec(x["path"], x.get("scale", 1.0)) for x in loras),
            **data,
        )
    except UsageError as e:
        if not source:
            raise
        raise UsageError(f"style file {where}: {e}") from e
    except TypeError as e:
        raise UsageError(f"style {where}: {e}") from e


def _keys_shown(keys: set[str]) -> str:
    """Unknown keys for a message: at most five, each cut short."""
    names = sorted(keys)
    return ", ".join(shown(k, 40) for k in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, an embedded NUL: not a file
        return False


def load_style(name_or_path: str) -> StyleConfig:
    """A built-in preset by name, or a user's TOML file by path."""
    if name_or_path.endswith(".toml") or _is_file(Path(name_or_path)):
        path = Path(name_or_path)
        if not _is_file(path):
            raise InputNotFound(f"style file not found: {shown(str(path), 200)}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"style file {path}: not valid TOML ({e})") from e
        except (ValueError, RecursionError) as e:  # an integer over Python's 4300 digits, nesting too deep
            raise UsageError(f"style file {path}: not a style TOML file ({type(e).__name__}: "
                             f"{'nested too deeply' if isinstance(e, RecursionError) else str(e)[:80]})") from e
        return style_from_dict(path.stem, data, source=str(path))
    names = builtin_style_names()
    if name_or_path not in names:
        raise UsageError(f"unknown style {shown(name_or_path)}: choose one of {', '.join(names)} or a .toml file")
    text = resources.files("realtime.styles").joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
    return style_from_dict(name_or_path, tomllib.loads(text))


def override_style(style: StyleConfig, **overrides: Any) -> StyleConfig:
    """Apply command-line overrides (``None`` = not given). ``temporal_*`` keys go to the temporal section; ``loras``
    given on the command line are added to the preset's. Diffusion options with a pass-through style are an error."""
    given = {k: v for k, v in overrides.items() if v is not None and v != ()}
    if style.passthrough and given:
        raise UsageError(
            f"--style {style.name} loads no model: {', '.join('--' + k.replace('_', '-') for k in sorted(given))} "
            "cannot be used with it"
        )
    temporal = {k[len("temporal_"):]: v for k, v in given.items() if k.startswith("temporal_")}
    plain = {k: v for k, v in given.items() if not k.startswith("temporal_")}
    if "loras" in plain:
        plain["loras"] = style.loras + tuple(plain["loras"])
    if temporal:
        plain["temporal"] = dataclasses.replace(style.temporal, **temporal)
    return dataclasses.replace(style, **plain) if plain else style


def check_model_options(style: StyleConfig, model: str, controlnet: str, vae: str) -> None:
    """A pass-through style loads no model: ``model``, ``controlnet`` or ``vae`` away from their defaults (``--model``,
    ``--controlnet``, ``--vae`` given) is a :class:`UsageError` naming them."""
    given = [f"--{k}" for k, value, default in (("model", model, DEFAULT_MODEL), ("controlnet", controlnet, "auto"),
                                                ("vae", vae, "auto")) if value != default]
    if style.passthrough and given:
        raise UsageError(f"--style none loads no model: {', '.join(given)} cannot be used with it")
