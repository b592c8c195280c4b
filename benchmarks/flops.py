"""FLOPs per frame of each stage, counted with torch's FlopCounterMode on the meta device (no weights, no memory).

This is how the SD-Turbo figures in docs/design.md and README were counted (UNet 804, ControlNet 284, TAESD encode 122
+ decode 141 GFLOP at 512x512; a multiply-add is 2 FLOPs). ``--arch sdxl-turbo`` counts SDXL-Turbo's UNet with the
small SDXL Canny ControlNet and TAESDXL the same way; ``--vae full`` adds the full VAE (SD 2.x's and SDXL's share
one AutoencoderKL architecture). Parameter counts and fp16 weight sizes come along (VRAM for weights alone).

    python benchmarks/flops.py --size 512x512 --json benchmarks/results/flops-512.json
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def count_gflops(fn: Any) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        fn()
    return round(mode.get_total_flops() / 1e9, 1)


def stage_costs(arch: str, width: int, height: int) -> dict[str, Any]:
    """{stage: {"gflop": ..., "params_m": ...}} for one frame of ``arch`` at ``width`` x ``height``."""
    import torch
    from diffusers import AutoencoderKL

    from realtime.diffusion.models import ARCHS, build_random_controlnet, build_random_taesd, build_random_unet

    a = ARCHS[arch]
    with torch.device("meta"):
        unet = build_random_unet(arch)
        cn = build_random_controlnet(arch, unet)
        tiny, full = build_random_taesd(arch), AutoencoderKL(  # SD 2.x / SDXL VAE architecture
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
        z = torch.randn(1, 4, height // 8, width // 8)
        x = torch.randn(1, 3, height, width)
        t = torch.tensor([999.0])
        emb = torch.randn(1, 77, unet.config.cross_attention_dim)
        added = {}
        if unet.config.addition_embed_type == "text_time":
            added = {"added_cond_kwargs": {"text_embeds": torch.randn(1, a["text_2"]["projection_dim"]),
                                           "time_ids": torch.randn(1, 6)}}
        calls = {
            "unet": (unet, lambda: unet(z, t, encoder_hidden_states=emb, **added)),
            "controlnet": (cn, lambda: cn(z, t, encoder_hidden_states=emb, controlnet_cond=x, **added)),
            "taesd_encode": (tiny, lambda: tiny.encode(x)),
            "taesd_decode": (tiny, lambda: tiny.decode(z)),
            "full_vae_encode": (full, lambda: full.encode(x)),
            "full_vae_decode": (full, lambda: full.decode(z)),
        }
        out = {}
        for name, (module, fn) in calls.items():
            params = sum(p.numel() for p in module.parameters())
            out[name] = {"gflop": count_gflops(fn), "params_m": round(params / 1e6, 1)}
    out["frame_taesd"] = {"gflop": round(sum(out[k]["gflop"] for k in ("unet", "controlnet", "taesd_encode",
                                                                        "taesd_decode")), 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="512x512")
    p.add_argument("--arch", action="append", default=None, help="random: architectures (default sd-turbo, sdxl-turbo)")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    result = {"kind": "flops", "size": [width, height], "counter": "torch.utils.flop_counter.FlopCounterMode, meta device",
              "archs": {arch: stage_costs(arch, width, height) for arch in args.arch or ["sd-turbo", "sdxl-turbo"]}}
    text = json.dumps(result, indent=2) + "\n"
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
