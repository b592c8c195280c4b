"""What a LoRA training run is (:class:`TrainConfig`), what it did (:class:`TrainResult`), and what is checked before any
model loads (outputs, the checkpoint to resume, the data set). The objective and the loop: :mod:`realtime.research.train_lora`
and :mod:`realtime.research.lora_trainer`; the command line: :mod:`realtime.cli.train_lora`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from realtime.config import DEFAULT_MODEL, DEFAULT_STYLE, ModelConfig, load_style
from realtime.errors import InputNotFound, OutputError, UsageError
from realtime.files import check_output_path
from realtime.pipeline.preflight import check_image, check_model
from realtime.research.lora_dataset import scan_dataset

log = logging.getLogger(__name__)

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PRECISIONS = ("no", "fp16", "bf16")
#: training settings a resumed run must share with its checkpoint
RESUME_KEYS = ("model", "vae", "rank", "alpha", "train_text_encoder", "resolution", "model_seed")


def default_timestep_range() -> tuple[int, int]:
    """``(t_lo, t_hi)`` spanned by the built-in presets' strengths (what the stylizer uses at inference)."""
    from realtime.config import builtin_style_names, load_style
    from realtime.diffusion.stylizer import strength_timestep

    strengths = [s.strength for s in map(load_style, builtin_style_names()) if not s.passthrough]
    return strength_timestep(min(strengths)), strength_timestep(max(strengths))


def parse_timesteps(text: str | None, num_train_timesteps: int = 1000) -> tuple[int, int] | None:
    """``"LO-HI"``, ``"T"`` or ``"all"`` -> an inclusive range; ``None``/``"auto"`` -> None (the default range)."""
    if text is None or text == "auto":
        return None
    if text == "all":
        return 0, num_train_timesteps - 1
    lo, sep, hi = text.partition("-")
    try:
        rng = (int(lo), int(hi) if sep else int(lo))
    except ValueError:
        raise UsageError(f"--timesteps {text!r}: expected LO-HI (e.g. 599-799), one timestep, or 'all'") from None
    return rng


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see ``scripts/train_lora.py --help`` for each field's meaning."""

    data: Path
    out: Path
    model: str = DEFAULT_MODEL
    vae: str = "auto"
    steps: int = 1000
    grad_accum: int = 1
    batch_size: int = 1
    rank: int = 4
    alpha: float | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    lora_dropout: float = 0.0
    resolution: int = 512
    mixed_precision: str = "no"
    seed: int = 0
    model_seed: int = 0
    timesteps: tuple[int, int] | None = None
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0
    validate_every: int = 0
    validation_image: Path | None = None
    validation_style: str = DEFAULT_STYLE
    validation_prompt: str | None = None
    work_dir: Path | None = None
    resume: Path | None = None
    default_caption: str | None = None
    device: str = "auto"
    allow_pickle: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "grad_accum", "batch_size", "rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"--{name.replace('_', '-')} {v!r}: must be a positive integer")
        for name in ("checkpoint_every", "validate_every", "seed", "model_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"--{name.replace('_', '-')} {v!r}: must be a non-negative integer (0 = off)")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise UsageError(f"--alpha {self.alpha!r}: must be a positive number (default: the rank)")
        if not (math.isfinite(self.lr) and 0 < self.lr < 1):
            raise UsageError(f"--lr {self.lr!r}: must be in (0, 1)")
        if not (math.isfinite(self.weight_decay) and 0 <= self.weight_decay < 1):
            raise UsageError(f"--weight-decay {self.weight_decay!r}: must be in [0, 1)")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise UsageError(f"--max-grad-norm {self.max_grad_norm!r}: must be positive (0 is written as 'none')")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout {self.lora_dropout!r}: must be in [0, 1)")
        if self.resolution % 64 or not 64 <= self.resolution <= 2048:
            raise UsageError(f"--resolution {self.resolution}: must be a multiple of 64 in 64..2048")
        if self.mixed_precision not in PRECISIONS:
            raise UsageError(f"--mixed-precision {self.mixed_precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.timesteps is not None:
            lo, hi = self.timesteps
            if not 0 <= lo <= hi <= 999:
                raise UsageError(f"--timesteps {lo}-{hi}: need 0 <= LO <= HI <= 999")
        if self.validate_every and self.validation_image is None:
            raise UsageError("--validate-every needs --validation-image IMG")
        if Path(self.out).suffix.lower() != ".safetensors":
            raise UsageError(f"--out {self.out}: the LoRA is written as .safetensors; name the file *.safetensors")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    @property
    def workspace(self) -> Path:
        """Checkpoints and validation images: ``work_dir``, default ``<out-stem>-training/`` beside ``out``."""
        return Path(self.work_dir) if self.work_dir is not None else Path(self.out).with_name(Path(self.out).stem + "-training")

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (written beside checkpoints; checked on resume)."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        d["alpha"] = self.lora_alpha
        return d


@dataclass
class TrainResult:
    """What a run did: steps (global, including those before a resume), per-step loss, files written."""

    start_step: int
    step: int
    losses: list[float] = field(default_factory=list)  # mean micro-batch loss per optimizer step, from step 1
    fixed_loss_before: float | None = None
    fixed_loss_after: float | None = None
    out: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    validations: list[Path] = field(default_factory=list)


def check_outputs(cfg: TrainConfig) -> None:
    """Refuse to clobber: the final file, or checkpoints of another run (unless --overwrite or --resume)."""
    out = Path(cfg.out)
    data = [p for p in Path(cfg.data).rglob("*") if p.is_file()] if Path(cfg.data).is_dir() else [Path(cfg.data)]
    check_output_path(out, overwrite=cfg.overwrite, inputs=(*data, cfg.validation_image, cfg.model, cfg.resume))
    ws = cfg.workspace
    if ws.exists() and not ws.is_dir():
        raise OutputError(f"--work-dir {ws} is a file: give a directory")
    old = sorted(ws.glob("checkpoint-*")) if ws.is_dir() else []
    if old and cfg.resume is None and not cfg.overwrite:
        raise OutputError(f"{ws} holds checkpoints of an earlier run ({old[0].name}): pass --resume {ws}, --overwrite, or another --work-dir")


def find_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a checkpoint directory, else its latest ``checkpoint-<step>`` subdirectory."""
    path = Path(path)
    if (path / "state.pt").is_file():
        return path
    if path.is_dir():
        found = [(int(p.name.split("-", 1)[1]), p) for p in path.glob("checkpoint-*")
                 if p.name.split("-", 1)[1].isdigit() and (p / "state.pt").is_file()]
        if found:
            return max(found)[1]
    raise InputNotFound(f"--resume {path}: no checkpoint there (a checkpoint-<step> directory with state.pt, or a folder of them)")


def train_inputs(cfg: Any, *, model: bool = True) -> None:
    """``scripts/train_lora.py``: the data set (captions found, every image decodes), the validation image and
    style, and (``model``) the base model and VAE specs."""
    for item in scan_dataset(Path(cfg.data), cfg.default_caption):
        check_image(item.path, "training image")
    if cfg.validation_image is not None:
        check_image(cfg.validation_image, "--validation-image")
        load_style(cfg.validation_style)
    if model:
        check_model(ModelConfig(cfg.model, controlnet="auto" if cfg.validation_image is not None else "none",
                                vae=cfg.vae, allow_pickle=cfg.allow_pickle))
