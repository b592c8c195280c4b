"""Memory diet: the text encoder stays off the GPU (prompts are encoded off the frame path), and the torch copies of the
modules an ONNX engine replaced leave the GPU after the build. CPU checks here; the GPU figures are gpu-marked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.config import ModelConfig, RunConfig, load_style
from realtime.diffusion.family import text_encoder_placement
from realtime.geometry import Size

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU)")


def test_text_encoder_stays_on_the_cpu_in_fp32_when_the_run_is_on_a_gpu():
    assert text_encoder_placement(torch.device("cuda", 0), torch.float16) == (torch.device("cpu"), torch.float32)
    assert text_encoder_placement(torch.device("mps"), torch.float16) == (torch.device("cpu"), torch.float32)
    assert text_encoder_placement(torch.device("cpu"), torch.bfloat16) == (torch.device("cpu"), torch.bfloat16)


def test_prompt_embeddings_reach_the_run_dtype_from_a_cpu_fp32_encoder(tiny_components):
    """The stylizer encodes on the encoder's own device and dtype, then moves the embeddings (here: fp32 -> bf16)."""
    from realtime.diffusion.stylizer import Stylizer

    enc = tiny_components.text_encoder
    assert next(enc.parameters()).dtype == torch.float32
    for name in ("unet", "controlnet", "vae"):
        getattr(tiny_components, name).to(torch.bfloat16)
    s = Stylizer(tiny_components, load_style("anime"), Size(64, 64), device=torch.device("cpu"), dtype=torch.bfloat16)
    emb = s.encode_prompt("a cat")
    assert emb.dtype == torch.bfloat16 and next(enc.parameters()).dtype == torch.float32
    out = s(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    assert out.shape == (64, 64, 3)
    s.close()


@pytest.mark.gpu
@CUDA
def test_gpu_memory_after_the_diet(tmp_path):
    """random:tiny on CUDA: text encoder on the CPU; with an ONNX engine (onnxruntime-gpu) the torch modules leave the
    GPU and the allocator holds less than the modules' own size."""
    from realtime.diffusion.build import build_stylizer

    run = RunConfig(size=Size(64, 64), device="cuda", dtype="fp16", backend="auto", cache_dir=str(tmp_path))
    s = build_stylizer(ModelConfig("random:tiny"), load_style("anime"), run)
    assert next(s.components.text_encoder.parameters()).device.type == "cpu"
    s(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    s.close()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed: the module release is checked with the compile backend above")
    run = RunConfig(size=Size(64, 64), device="cuda", dtype="fp16", backend="onnxruntime", cache_dir=str(tmp_path))
    s = build_stylizer(ModelConfig("random:tiny"), load_style("anime"), run)
    unet = s.components.unet
    assert s.runner.module_released and next(unet.parameters()).device.type == "cpu"
    torch.cuda.synchronize()
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    assert torch.cuda.memory_allocated() < weights
    s.close()
