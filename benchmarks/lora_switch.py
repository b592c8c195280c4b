"""Time in-place LoRA switching (realtime.diffusion.lora_switch.LoraSwitcher) against peft's fuse, side by side.

    python benchmarks/lora_switch.py --model random:sd-turbo --json lora_switch.json

Loads the model's UNet and text encoder once, writes two synthetic LoRA files for it (realtime.bench.switch), then
times on one machine in one run: the first apply (A: includes keeping the base values), B, A again (byte-identical
to the first A: checked), a scale change, no LoRA; and, for reference, what the old path spent on fusing alone:
diffusers' ``load_lora_weights`` + ``fuse_lora`` of A into a fresh copy of a UNet-only synthetic LoRA (diffusers cannot read a q/v-only kohya text-encoder part), against the in-place
apply of the same file (the old live path also loaded the whole model again, not counted here). Reports seconds and the ratio, the bytes of the touched weights and the process RSS.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:sd-turbo")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch

    from realtime.bench.soak import ResourceSampler
    from realtime.bench.switch import synthetic_loras
    from realtime.config import ModelConfig
    from realtime.diffusion.lora_switch import LoraSwitcher
    from realtime.diffusion.models import load_components

    comps = load_components(ModelConfig(args.model), torch.device("cpu"), torch.float32, seed=0)
    out: dict[str, object] = {"model": args.model, "device": "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        a, b = synthetic_loras(comps, Path(tmp))
        (unet_only,) = synthetic_loras(comps, Path(tmp), n=1, seed=5, text_encoder=False)  # peft's loader reads it
        reference = copy.deepcopy(comps)
        switcher = LoraSwitcher.for_components(comps)
        switcher.prepare([a, b, unet_only])  # files read once (the live session does this on a background worker)
        times = {}
        for name, specs in (("first_a", [a]), ("b", [b]), ("a_again", [a]), ("a_scale_0.5", [a.__class__(a.path, 0.5)]),
                            ("none", []), ("unet_only", [unet_only])):
            t0 = time.perf_counter()
            switcher.apply(specs)
            times[name] = time.perf_counter() - t0
            if name == "first_a":
                first = {k: v.clone() for k, v in comps.unet.state_dict().items()}
            if name == "a_again":
                out["a_b_a_identical"] = all(torch.equal(first[k], v) for k, v in comps.unet.state_dict().items())
        out["in_place_s"] = times
        out["touched_mb"] = switcher.base_bytes / 2**20
        from realtime.diffusion.lora_switch import _quiet_libraries

        with _quiet_libraries():
            from diffusers import StableDiffusionPipeline

            pipe = StableDiffusionPipeline(vae=None, text_encoder=reference.text_encoder, tokenizer=reference.tokenizer,
                                           unet=reference.unet, scheduler=None, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
            t0 = time.perf_counter()
            pipe.load_lora_weights(unet_only.path, adapter_name="a")
            pipe.fuse_lora(adapter_names=["a"], lora_scale=1.0)
            pipe.unload_lora_weights()
            out["peft_fuse_s"] = time.perf_counter() - t0
    out["ratio_peft_fuse_over_in_place_unet_only"] = out["peft_fuse_s"] / max(times["unet_only"], 1e-9)
    out["rss_mib"] = ResourceSampler().sample()["rss_mib"]
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
