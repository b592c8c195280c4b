"""The research tools: parameter sweeps and grids, quality metrics, evaluation, CLIP score, LoRA training."""
