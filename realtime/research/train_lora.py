"""LoRA fine-tuning of the UNet (optionally the text encoder) on a folder of captioned images, with peft.

Objective: the standard denoising loss. Images are encoded once with the stylizer's VAE (TAESD by default, the same
latent convention as :class:`realtime.diffusion.stylizer.FrameStep`); each example draws a timestep ``t`` uniformly from
``timesteps`` (inclusive) and noise ``n``; ``x_t = sqrt(abar_t) z + sqrt(1 - abar_t) n``; the UNet predicts, from
``x_t``, ``t`` and the caption's embeddings, the target the scheduler config names: ``n`` (epsilon), the velocity
``sqrt(abar_t) n - sqrt(1 - abar_t) z`` (v_prediction) or ``z`` (sample); the loss is the MSE. The timesteps default
to the range the stylizer uses at inference: ``strength_timestep`` of the lowest and highest strength of the built-in
presets (599-799 for SD's 1000 steps). A one-step model such as SD-Turbo is thus only taught at the noise levels it will
see, and stays one-step; widen the range (``--timesteps 0-999``) for a multi-step model. ControlNet is not used in
training: the LoRA learns the look, ControlNet keeps the structure at inference.

Style strength at inference is the LoRA scale (``--lora FILE:SCALE``). The final file is in the diffusers LoRA format
(``pytorch_lora_weights``-style keys) with ``alpha / rank`` folded into the up-projections, so any loader that assumes
``alpha = rank`` applies it exactly.

Gradient accumulation: each micro-batch's loss is divided by ``grad_accum`` and the optimizer steps every
``grad_accum`` micro-batches, so 2 micro-batches of 1 equal one batch of 2. Randomness (data order, timesteps, noise)
comes from one generator seeded by ``seed`` and drawn per example, so it does not depend on how examples are batched;
its state is saved in checkpoints, so a resumed run continues exactly where the interrupted one was.
"""
from __future__ import annotations

import logging
from typing import Any

from realtime.research.lora_trainer import LoraTrainer
from realtime.research.train_config import TrainConfig, TrainResult, check_outputs, find_checkpoint, train_inputs

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, components: Any = None) -> TrainResult:
    """Check the outputs, build the trainer (resuming if asked), train, write the LoRA."""
    check_outputs(cfg)
    checkpoint = find_checkpoint(cfg.resume) if cfg.resume is not None else None  # before any model is loaded
    train_inputs(cfg, model=components is None)  # data images, validation image and style, model specs
    with LoraTrainer(cfg, components) as trainer:
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
        return trainer.fit()
