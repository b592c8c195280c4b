"""Toy modules for the engines/ tests: small, seeded, shaped like a frame step (uint8 image in and out, a latent, a
per-frame float multiplier), so engines/ is tested without the stylizer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NAMES = ("image", "latent", "scale")
OUTPUT_NAMES = ("image_out", "latent_out", "vec")
SIZE = 16


class ToyStep(nn.Module):
    """image (1,16,16,3) uint8 RGB, latent (1,4,8,8) float, scale (1,) float ->
    image (1,16,16,3) uint8, latent (1,4,8,8) float, vec (1,2) float.

    The uint8 input is cast as the very first op and the uint8 output is the very last (what TensorRT wants of uint8
    I/O); values are rounded and clamped before that cast so every backend gives the same integers."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.proj_in = nn.Linear(4, 8)  # on tokens (3-D): exported as MatMul with a transposed weight
        self.attn_out = nn.Linear(8, 4)
        self.dec = nn.Conv2d(4, 12, 3, padding=1)
        self.head = nn.Linear(4, 2)  # on a 2-D input: exported as Gemm

    def forward(self, image: torch.Tensor, latent: torch.Tensor, scale: torch.Tensor):
        x = image.to(self.enc.weight.dtype)
        x = x.permute(0, 3, 1, 2) / 127.5 - 1
        z = self.norm(self.enc(x)) * scale.view(-1, 1, 1, 1) + latent
        t = z.flatten(2).transpose(1, 2)
        h = self.proj_in(t)
        h = F.scaled_dot_product_attention(h[:, None], h[:, None], h[:, None])[:, 0]
        t = t + self.attn_out(h)
        z_out = t.transpose(1, 2).reshape(z.shape)
        y = F.pixel_shuffle(self.dec(z_out), 2)
        img = ((y.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8)
        return img, z_out, self.head(z_out.mean((2, 3)))


class ToyWithUnused(ToyStep):
    """ToyStep with a fourth input the computation ignores (the exporter drops it from the graph)."""

    def forward(self, image, latent, scale, unused):  # noqa: ARG002
        return super().forward(image, latent, scale)


class Twins(nn.Module):
    """Two Linear layers that start with identical weights (the exporter merges them) and a zero bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight)
            self.a.bias.zero_()

    def forward(self, x):
        return self.a(x) + self.b(x * 2)


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (norm scales too, so no weight is constant-valued) with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def toy(seed: int = 0) -> ToyStep:
    return randomized(ToyStep(), seed)


def toy_inputs(seed: int = 1, scale: float = 0.8) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (1, SIZE, SIZE, 3), generator=g, dtype=torch.uint8),
            torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=g), torch.tensor([scale]))


def lora_set(module: nn.Module, names: tuple[str, ...], seed: int, rank: int = 2):
    """Random LoRA pairs (down, up) for the named Linear/Conv2d weights of ``module``."""
    from realtime.diffusion.lora_math import LoraWeight

    g = torch.Generator().manual_seed(seed)
    params = dict(module.named_parameters())
    out = {}
    for n in names:
        w = params[n]
        out_f, in_f = w.shape[0], w[0].numel()
        down = torch.randn(rank, *w.shape[1:], generator=g) * 0.5 if w.dim() == 4 else \
            torch.randn(rank, in_f, generator=g) * 0.5
        up = torch.randn(out_f, rank, *([1, 1] if w.dim() == 4 else []), generator=g) * 0.5
        out[n] = LoraWeight(down=down, up=up, alpha=1.0)
    return out


def assert_outputs_close(got, want, *, levels: int = 1, rel: float = 1e-3, floor: float = 1e-6) -> None:
    """uint8 images within ``levels``; float outputs within ``rel`` of their scale; same dtypes and shapes."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        if w.dtype == torch.uint8:
            assert (g.int() - w.int()).abs().max().item() <= levels
        else:
            err = (g.float() - w.float()).abs().max().item()
            assert err <= rel * max(w.float().abs().max().item(), floor), err
