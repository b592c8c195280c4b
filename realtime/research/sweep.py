"""Parameter sweeps: run the stylizer over a grid of settings for one or more images, write every output, a labelled
comparison grid per input and the settings of every output as JSON and CSV (:mod:`realtime.cli.sweep` is the command
line, ``scripts/sweep.py`` its entry point).

Axes (any combination; the grid is their cartesian product, in this order): model, style preset, LoRA scale (applied to
every LoRA given with ``--lora``), ControlNet scale, guidance, strength. With no axis and no ``--style`` the grid is the
five seed experiments, one preset each (:data:`DEFAULT_PRESETS`): anime (strong ControlNet, strong style), anime-soft
(weaker ControlNet), soft-render, cel-shaded and vibrant.

Each model is loaded once. LoRA sets are switched in place exactly as the app does
(:class:`~realtime.diffusion.lora_switch.LoraSwitcher`: base + sum of scaled deltas from the kept base values of the
touched weights), so a new LoRA scale never lands on top of a previous one.

Files under ``out_dir``: ``<input-stem>/<NN>_<slug>.png`` (the stylized image at the input's size, or
``output_size``), ``<input-stem>_grid.png`` (input first, as the model sees it, then each output at the model size
with its settings as the title), ``settings.json`` and ``settings.csv`` (one row per output; paths relative to
``out_dir``). Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import (DEFAULT_MODEL, DEFAULT_STYLE, LoraSpec, ModelConfig, StyleConfig, check_model_options, load_style,
                             override_style)
from realtime.errors import OutputError, UsageError
from realtime.files import atomic_output, check_input_file, check_not_input
from realtime.geometry import Size
from realtime.pipeline.preflight import check_image, check_loras, check_model

log = logging.getLogger(__name__)

DEFAULT_PRESETS = ("anime", "anime-soft", "soft-render", "cel-shaded", "vibrant")
#: axis name -> (command-line option, short tag used in file names)
AXES = {
    "model": ("--models", ""),
    "style": ("--styles", ""),
    "lora_scale": ("--lora-scales", "lora"),
    "control_scale": ("--control-scales", "cs"),
    "guidance": ("--guidances", "g"),
    "strength": ("--strengths", "s"),
}
RECORD_FIELDS = (
    "index", "input", "output", "style", "model", "controlnet", "vae", "lora_scale", "loras", "control_scale",
    "guidance", "strength", "timestep", "prompt", "negative_prompt", "canny_low", "canny_high", "model_size",
    "output_size", "seed",
)


# ------------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class SweepAxes:
    """The values of each axis; an empty tuple means the axis is not swept."""

    models: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    lora_scales: tuple[float, ...] = ()
    control_scales: tuple[float, ...] = ()
    guidances: tuple[float, ...] = ()
    strengths: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("lora_scales", "control_scales", "guidances", "strengths"):
            for v in getattr(self, name):
                if not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise UsageError(f"--{name.replace('_', '-')}: {v!r} is not a finite number")
        for name in ("models", "styles"):
            if any(not str(v).strip() for v in getattr(self, name)):
                raise UsageError(f"--{name}: empty name in the list")

    @property
    def given(self) -> tuple[str, ...]:
        """Names of the swept axes (keys of :data:`AXES`)."""
        names = {"model": self.models, "style": self.styles, "lora_scale": self.lora_scales,
                 "control_scale": self.control_scales, "guidance": self.guidances, "strength": self.strengths}
        return tuple(k for k, v in names.items() if v)


@dataclass(frozen=True)
class SweepSetting:
    """One cell of the grid: a model, a fully resolved style, and the axis values that made it."""

    index: int
    model: ModelConfig
    style: StyleConfig
    axis_values: tuple[tuple[str, Any], ...] = ()
    lora_scale: float | None = None

    @property
    def slug(self) -> str:
        """``<style>[-<tag><value>...]`` for the swept numeric axes (and the model when swept), file-name safe."""
        parts = [self.style.name]
        for name, value in self.axis_values:
            if name == "style":
                continue
            tag = AXES[name][1]
            text = _model_tag(value) if name == "model" else f"{value:g}"
            parts.append(f"{tag}{text}")
        return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_") or "setting"

    @property
    def file_name(self) -> str:
        return f"{self.index:02d}_{self.slug}.png"

    def label(self, show_model: bool = False) -> list[str]:
        """The grid title: number and style, (model), LoRA scale(s) and ControlNet scale, guidance and strength."""
        s = self.style
        lines = [f"#{self.index:02d} {s.name}"]
        if show_model:
            lines.append(_model_tag(self.model.model))
        lora = f"lora {_lora_text(s.loras)}  " if s.loras else ""
        lines.append(f"{lora}ctrl {s.control_scale:g}")
        lines.append(f"cfg {s.guidance:g}  strength {s.strength:g}")
        return lines

    def record(self) -> dict[str, Any]:
        """The settings of this cell (without the input/output columns)."""
        from realtime.diffusion.stylizer import strength_timestep

        s = self.style
        return {
            "index": self.index, "style": s.name, "model": self.model.model,
            "controlnet": self.model.controlnet_spec or "none", "vae": self.model.vae_spec,
            "lora_scale": self.lora_scale, "loras": ";".join(str(x) for x in s.loras), "control_scale": s.control_scale,
            "guidance": s.guidance, "strength": s.strength, "timestep": strength_timestep(s.strength),
            "prompt": s.prompt, "negative_prompt": s.negative_prompt, "canny_low": s.canny_low, "canny_high": s.canny_high,
        }


def _model_tag(spec: str) -> str:
    return spec.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _lora_text(loras: Sequence[LoraSpec]) -> str:
    scales = sorted({x.scale for x in loras})
    return ",".join(f"{v:g}" for v in scales)


def parse_list(text: str | None, what: str, kind: type = float) -> tuple[Any, ...]:
    """``"0,0.5,1"`` -> ``(0.0, 0.5, 1.0)``; ``None`` -> ``()``. A bad item is a one-line :class:`UsageError`."""
    if text is None:
        return ()
    items = [x.strip() for x in text.split(",")]
    if not items or any(not x for x in items):
        raise UsageError(f"{what} {text!r}: expected a comma-separated list, for example 0,0.5,1")
    if kind is str:
        return tuple(items)
    try:
        return tuple(kind(x) for x in items)
    except ValueError:
        raise UsageError(f"{what} {text!r}: every item must be a number") from None


@dataclass(frozen=True)
class SweepBase:
    """The stylizer options every cell shares (the sweep's ``--style``, ``--model``, ``--lora``, ``--prompt``, ...);
    each axis value overrides them for its cell.

    style, model: ``None`` = not given (the grid's default). lora: ``PATH[:SCALE]`` texts. overrides: the other style
    options as :func:`realtime.config.override_style` keywords (``None`` = not given; ``strength``, ``control_scale``
    and ``guidance`` among them).
    """

    style: str | None = None
    model: str | None = None
    controlnet: str = "auto"
    vae: str = "auto"
    allow_pickle: bool = False
    lora: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)


def _cell_style(base: SweepBase, name: str, model: str, lora: Sequence[str], numbers: Mapping[str, Any]) -> StyleConfig:
    """The style of one cell: preset ``name`` with the shared overrides, its LoRAs and its axis values."""
    style = load_style(name)
    overrides = {**base.overrides, "loras": tuple(LoraSpec.parse(x) for x in lora)}
    overrides.update({k: v for k, v in numbers.items() if v is not None})
    check_model_options(style, model, base.controlnet, base.vae)
    return override_style(style, **overrides)


def plan_sweep(base: SweepBase, axes: SweepAxes) -> list[SweepSetting]:
    """The grid's settings, in order (model, style, LoRA scale, ControlNet scale, guidance, strength).

    ``base`` carries the shared stylizer options: they apply to every cell, and each axis value overrides them for its
    cell. Giving an option and its axis together (``--strength`` and ``--strengths``) is an error.
    """
    shared = {"style": base.style, "model": base.model, **{k: base.overrides.get(k) for k in ("control_scale", "guidance", "strength")}}
    for name, single in (("lora_scale", None), ("control_scale", "control_scale"), ("guidance", "guidance"),
                         ("strength", "strength"), ("style", "style"), ("model", "model")):
        if single and name in axes.given and shared.get(single) is not None:
            raise UsageError(f"--{single.replace('_', '-')} and {AXES[name][0]}: give one")
    cli_loras = tuple(LoraSpec.parse(x) for x in base.lora)
    if axes.lora_scales and not cli_loras:
        raise UsageError("--lora-scales needs at least one --lora PATH to scale")
    if "none" in axes.styles or base.style == "none":
        raise UsageError("style 'none' is pass-through: the grid already shows the input first")
    styles = axes.styles or ((base.style,) if base.style else (DEFAULT_PRESETS if not axes.given else (DEFAULT_STYLE,)))
    models = axes.models or (base.model or DEFAULT_MODEL,)
    dims: list[tuple[str, tuple[Any, ...]]] = [
        ("model", models), ("style", styles), ("lora_scale", axes.lora_scales or (None,)),
        ("control_scale", axes.control_scales or (None,)), ("guidance", axes.guidances or (None,)),
        ("strength", axes.strengths or (None,)),
    ]
    swept = set(axes.given) | ({"style"} if len(styles) > 1 else set())
    settings = []
    for i, combo in enumerate(itertools.product(*(values for _, values in dims)), start=1):
        values = dict(zip((name for name, _ in dims), combo, strict=True))
        lora: Sequence[str] = base.lora
        if values["lora_scale"] is not None:  # written out and parsed again, as a --lora PATH:SCALE would be
            lora = [str(replace(x, scale=values["lora_scale"])) for x in cli_loras]
        model = ModelConfig(model=values["model"], controlnet=base.controlnet, vae=base.vae, allow_pickle=base.allow_pickle)
        numbers = {name: values[name] for name in ("control_scale", "guidance", "strength")}
        style = _cell_style(base, values["style"], values["model"], lora, numbers)
        shown = tuple((k, v) for k, v in values.items() if k in swept and v is not None)
        lora_scale = values["lora_scale"] if values["lora_scale"] is not None else (cli_loras[0].scale if len({x.scale for x in cli_loras}) == 1 else None)
        settings.append(SweepSetting(i, model, style, shown, lora_scale))
    return settings


@dataclass(frozen=True)
class SweepJob:
    """What to run: inputs, settings, where to write, and the run settings shared by every cell.

    ``size`` is the model resolution (``None`` = auto from each input's output size, as ``stylecam image``);
    ``output_size`` the size of the written outputs (``None`` = each input's size); ``columns`` the grid's cells per
    row (default ``min(cells, 6)``); ``cell_width`` the smallest width a grid cell is enlarged to.
    """

    inputs: tuple[Path, ...]
    out_dir: Path
    settings: tuple[SweepSetting, ...]
    size: Size | None = None
    output_size: Size | None = None
    seed: int = 0
    seed_blend: tuple[int, float] | None = None  # --seed-blend SEED:T (the noise slerped towards SEED's)
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False
    columns: int | None = None
    cell_width: int = 256
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("--input: give at least one image")
        if not self.settings:
            raise UsageError("the sweep has no settings")
        stems = [Path(p).stem for p in self.inputs]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise UsageError(f"--input: several inputs are named {dupes[0]!r}; outputs go to <out-dir>/<name>/, rename one")
        if self.columns is not None and self.columns < 1:
            raise UsageError(f"--grid-columns {self.columns}: must be at least 1")
        if not 16 <= self.cell_width <= 4096:
            raise UsageError(f"--cell-width {self.cell_width}: must be in 16..4096")


@dataclass
class SweepReport:
    """What a sweep wrote: one record per output, the grid per input, the settings files."""

    records: list[dict[str, Any]] = field(default_factory=list)
    grids: dict[str, Path] = field(default_factory=dict)
    settings_json: Path | None = None
    settings_csv: Path | None = None


# ------------------------------------------------------------------------------------------------------ running
def output_paths(job: SweepJob) -> list[Path]:
    """Every file the job writes (outputs, grids, settings), for the up-front overwrite check."""
    paths = [job.out_dir / Path(p).stem / s.file_name for p in job.inputs for s in job.settings]
    paths += [job.out_dir / f"{Path(p).stem}_grid.png" for p in job.inputs]
    return paths + [job.out_dir / "settings.json", job.out_dir / "settings.csv"]


def check_out_dir(job: SweepJob) -> None:
    """The outputs may be written: ``--out-dir`` is not a file, no output is an input image (even with
    ``--overwrite``), no output exists unless ``--overwrite``."""
    if job.out_dir.exists() and not job.out_dir.is_dir():
        raise OutputError(f"--out-dir {job.out_dir} is a file: give a directory")
    for path in output_paths(job):
        check_not_input(path, job.inputs)
    existing = [p for p in output_paths(job) if p.exists()]
    if existing and not job.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"output {existing[0]} exists{more}: pass --overwrite to replace")


def sweep_inputs(job: Any) -> None:
    """Before any model loads: every input image decodes, the outputs may be written, every model and LoRA resolves."""
    for p in job.inputs:
        check_image(p)
    check_out_dir(job)
    for s in job.settings:
        check_model(s.model)
        if s.style.controls != ("canny",):  # the sweep's models carry the Canny ControlNet only
            raise UsageError(f"style {s.style.name}: controls {','.join(s.style.controls)}: stylecam sweep runs the "
                             "canny control only; use stylecam image --control for the others")
    check_loras((lora for s in job.settings for lora in s.style.loras), allow_pickle=any(s.model.allow_pickle for s in job.settings))


def _prepare_out_dir(job: SweepJob) -> None:
    check_out_dir(job)
    try:
        for p in job.inputs:
            (job.out_dir / Path(p).stem).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {job.out_dir}: {e.strerror or e}") from e


class _ModelSlot:
    """One loaded model and its :class:`~realtime.diffusion.lora_switch.LoraSwitcher` (the app's one LoRA mechanism:
    each LoRA set is written in place from the kept base values of the weights LoRAs touch)."""

    def __init__(self, model: ModelConfig, device: Any, dtype: Any, seed: int) -> None:
        from realtime.diffusion.lora_switch import LoraSwitcher
        from realtime.diffusion.models import load_components

        self.model = model
        self.comps = load_components(model, device, dtype, seed=seed)
        self.loras = LoraSwitcher.for_components(self.comps, allow_pickle=model.allow_pickle)

    def use_loras(self, loras: tuple[LoraSpec, ...]) -> Any:
        if loras != self.loras.current:
            self.loras.apply(loras)
        return self.comps


def run_sweep(job: SweepJob) -> SweepReport:
    """Run every setting on every input and write outputs, grids and settings files (see the module docstring)."""
    from tqdm import tqdm

    from realtime.vision.edges import EdgeDetector
    from realtime.geometry import auto_model_size
    from realtime.research.grid import make_grid
    from realtime.io.images import read_image, write_image
    from realtime.diffusion.models import resolve_device, resolve_dtype
    from realtime.pipeline.processor import FrameProcessor, canny_config
    from realtime.diffusion.stylizer import Stylizer

    frames = [read_image(check_input_file(p)) for p in job.inputs]
    _prepare_out_dir(job)
    device = resolve_device(job.device)
    dtype = resolve_dtype(job.dtype, device)
    if device.type == "cpu":
        log.warning("running on the CPU: expect seconds per image at real model sizes")
    out_sizes = [job.output_size or Size(f.shape[1], f.shape[0]) for f in frames]
    model_sizes = [job.size or auto_model_size(o) for o in out_sizes]
    crops: dict[int, np.ndarray] = {}
    results: dict[tuple[int, int], np.ndarray] = {}
    records: dict[tuple[int, int], dict[str, Any]] = {}
    by_model: dict[str, list[SweepSetting]] = {}
    for s in job.settings:
        by_model.setdefault(s.model.model, []).append(s)
    show_model = any(name == "model" for s in job.settings for name, _ in s.axis_values)
    bar = tqdm(total=len(job.settings) * len(frames), desc="sweep", unit="image", disable=not job.progress)
    try:
        for settings in by_model.values():
            first_seen: dict[tuple[LoraSpec, ...], int] = {}
            for s in settings:
                first_seen.setdefault(s.style.loras, len(first_seen))
            ordered = sorted(settings, key=lambda s: (first_seen[s.style.loras], s.index))  # each LoRA set fused once
            slot = _ModelSlot(settings[0].model, device, dtype, job.seed)
            for s in ordered:
                comps = slot.use_loras(s.style.loras)
                for k, (path, frame) in enumerate(zip(job.inputs, frames, strict=True)):
                    size = model_sizes[k]
                    stylizer = Stylizer(comps, s.style, size, device=device, dtype=dtype, seed=job.seed)
                    if job.seed_blend is not None:
                        stylizer.set_seed(job.seed, blend=job.seed_blend)
                    with FrameProcessor(size, out_sizes[k], stylizer=stylizer, edges=EdgeDetector(canny_config(s.style))) as proc:
                        crop = proc.prepare(frame)
                        stylized = proc.stylize(crop)
                        out = proc.finish(stylized, frame)
                    crops[k] = crop
                    results[(k, s.index)] = stylized
                    dst = job.out_dir / Path(path).stem / s.file_name
                    write_image(dst, out)
                    rec = {**s.record(), "input": str(path), "output": dst.relative_to(job.out_dir).as_posix(),
                           "model_size": str(size), "output_size": str(out_sizes[k]), "seed": job.seed}
                    records[(k, s.index)] = {f: rec.get(f) for f in RECORD_FIELDS}
                    log.info("wrote %s (%s)", dst, ", ".join(s.label(show_model)[1:]))
                    bar.update(1)
            del slot
    finally:
        bar.close()

    report = SweepReport()
    for k, path in enumerate(job.inputs):
        images = [crops[k]] + [results[(k, s.index)] for s in job.settings]
        labels = [["input", Path(path).name, f"model size {model_sizes[k]}"]] + [s.label(show_model) for s in job.settings]
        grid = make_grid(images, labels, columns=job.columns, min_width=job.cell_width)
        dst = job.out_dir / f"{Path(path).stem}_grid.png"
        write_image(dst, grid)
        report.grids[str(path)] = dst
        log.info("wrote %s (%dx%d)", dst, grid.shape[1], grid.shape[0])
    report.records = [records[(k, s.index)] for k in range(len(job.inputs)) for s in job.settings]
    report.settings_json, report.settings_csv = write_settings(job, report)
    return report


def write_settings(job: SweepJob, report: SweepReport) -> tuple[Path, Path]:
    """``settings.json`` (axes, grids and one record per output) and ``settings.csv`` (the records), atomically."""
    axes = {name: [dict(s.axis_values).get(name) for s in job.settings] for name in AXES}
    doc = {
        "out_dir": str(job.out_dir),
        "swept": [name for name, values in axes.items() if any(v is not None for v in values)],
        "grids": {inp: p.relative_to(job.out_dir).as_posix() for inp, p in report.grids.items()},
        "outputs": report.records,
    }
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
    writer.writeheader()
    for rec in report.records:
        writer.writerow({k: "" if v is None else v for k, v in rec.items()})
    paths = (job.out_dir / "settings.json", job.out_dir / "settings.csv")
    for path, text in zip(paths, (json.dumps(doc, indent=2) + "\n", buf.getvalue()), strict=True):
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths
