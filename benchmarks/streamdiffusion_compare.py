"""stylecam's frame step side by side with StreamDiffusion's own pipeline class, on the same weights.

    pip install streamdiffusion==0.1.1 --no-deps          # pure Python; never install torchvision beside it
    python benchmarks/streamdiffusion_compare.py --model random:sd-turbo --size 512x512 --frames 100 --json out.json

Same weights for both (one load; StreamDiffusion gets a deep copy of the modules, so that nothing one side does to its
modules -- the compile backend's channels_last, a fused LoRA -- changes the other's), same size and dtype, img2img
with one step, no ControlNet for the pair; then stylecam with the Canny ControlNet on. The same backend class on both
sides (``--backend``): ``eager`` (PyTorch as is on both) or ``compile`` (stylecam's compile backend: torch.compile + a
CUDA graph; StreamDiffusion's UNet and TAESD encoder/decoder through ``torch.compile``, mode ``reduce-overhead`` on
CUDA, i.e. with inductor's CUDA graphs). TensorRT is not compared: StreamDiffusion builds its engines with its own
tools (polygraphy, cuda-python), which this script does not bring. The same device-resident input and output on both
sides: a (1, H, W, 3) uint8 RGB image on the device in, a (1, H, W, 3) uint8 image on the device out (StreamDiffusion's
float conversions are inside its timed call). The three are called in rotation (A B C, B C A, C A B, ...) so that drift
in clocks or load hits all of them alike. Each call is timed to its end (CUDA events and one synchronisation on CUDA,
``perf_counter`` on the CPU).

- StreamDiffusion: ``StreamDiffusion(pipe, t_index_list=[i], cfg_type="none")`` over a diffusers
  ``StableDiffusionPipeline`` built from our components, ``stream.prepare(prompt, num_inference_steps=50,
  guidance_scale=1)``, then ``stream(image)`` with the (1, 3, H, W) float image in [0, 1] made from the uint8 input on
  the device; its decoded (1, 3, H, W) image in [-1, 1] comes back to (1, H, W, 3) uint8 on the device. ``i`` is the index of its LCM timestep list whose
  timestep is nearest ours. On a machine without CUDA, ``StreamDiffusion.__call__`` cannot run (it creates
  ``torch.cuda.Event`` unconditionally); there the script calls the same methods ``__call__`` calls, in the same order
  (``image_processor.preprocess``, ``encode_image``, ``predict_x0_batch``, ``decode_image``), minus its CUDA timing.
  ``streamdiffusion.image_utils`` (which imports torchvision) is never imported.
- stylecam: the stylizer's runner (``--backend``) on its inputs (a (1, H, W, 3) uint8 image already on the device,
  uint8 image out plus the two latents), ControlNet off (``--controlnet none`` + control scale 0) and on.

Writes a result document of kind ``streamdiffusion-compare`` (the ``stylecam bench`` schema) with a ``comparison``
section: both fps, the ratio, and stylecam with ControlNet.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import shlex
import sys
import time
from typing import Any, Callable

log = logging.getLogger("benchmarks.streamdiffusion_compare")

INSTALL = "pip install streamdiffusion==0.1.1 --no-deps"


def _import_streamdiffusion() -> Any:
    from realtime.errors import BackendUnavailable

    try:
        from streamdiffusion import StreamDiffusion  # the package's __init__ imports only its pipeline module
    except ImportError as e:
        raise BackendUnavailable(f"streamdiffusion is not importable ({e}): {INSTALL}") from e
    return StreamDiffusion


def build_stream(comps: Any, prompt: str, size: Any, dtype: Any, our_timestep: int) -> tuple[Any, dict[str, Any]]:
    """StreamDiffusion over a StableDiffusionPipeline made of ``comps`` (no copies), prepared for 1-step img2img."""
    from diffusers import EulerDiscreteScheduler, LCMScheduler, StableDiffusionPipeline

    StreamDiffusion = _import_streamdiffusion()
    pipe = StableDiffusionPipeline(
        vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=comps.unet,
        scheduler=EulerDiscreteScheduler.from_config(comps.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    steps = 50
    lcm = LCMScheduler.from_config(pipe.scheduler.config)
    lcm.set_timesteps(steps)
    ts = [int(t) for t in lcm.timesteps]
    index = min(range(len(ts)), key=lambda i: abs(ts[i] - our_timestep))
    stream = StreamDiffusion(pipe, t_index_list=[index], torch_dtype=dtype, width=size.width, height=size.height,
                             cfg_type="none")
    stream.prepare(prompt, num_inference_steps=steps, guidance_scale=1.0)
    info = {"t_index_list": [index], "num_inference_steps": steps, "streamdiffusion_timestep": ts[index],
            "cfg_type": "none", "vae": type(stream.vae).__name__}
    return stream, info


def stream_call(stream: Any, device: Any) -> Callable[[Any], Any]:
    """``stream(x)`` on CUDA; elsewhere the same steps as ``StreamDiffusion.__call__`` without its CUDA events."""
    import torch

    if device.type == "cuda":
        return stream

    def call(x: Any) -> Any:
        with torch.no_grad():
            x = stream.image_processor.preprocess(x, stream.height, stream.width).to(device=stream.device, dtype=stream.dtype)
            x_t_latent = stream.encode_image(x)
            x_0_pred_out = stream.predict_x0_batch(x_t_latent)
            return stream.decode_image(x_0_pred_out).detach().clone()

    return call


def timed(fn: Callable[[], Any], device: Any) -> tuple[float, Any]:
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end), out
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


BACKENDS = ("eager", "compile")


def compile_stream(stream: Any, device: Any) -> None:
    """StreamDiffusion's side of ``--backend compile``: its UNet and TAESD encoder/decoder through torch.compile
    (``reduce-overhead`` on CUDA: inductor's CUDA graphs; the default mode on the CPU)."""
    import torch

    mode = "reduce-overhead" if device.type == "cuda" else "default"
    stream.unet = torch.compile(stream.unet, mode=mode, dynamic=False)
    stream.vae.encoder = torch.compile(stream.vae.encoder, mode=mode, dynamic=False)
    stream.vae.decoder = torch.compile(stream.vae.decoder, mode=mode, dynamic=False)


def uint8_io(call: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """StreamDiffusion's call with stylecam's I/O: (1, H, W, 3) uint8 on the device in and out."""
    import torch

    def run(x_u8: Any, dtype: Any) -> Any:
        x = x_u8.permute(0, 3, 1, 2).to(dtype) / 255.0
        y = call(x)
        return ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    return run


def _stylizer(comps: Any, model: Any, style: Any, run: Any, device: Any, dtype: Any) -> Any:
    from realtime.diffusion.stylizer import Stylizer

    factory = None
    if run.backend != "eager":
        from realtime.diffusion.engine_select import runner_factory

        factory = runner_factory(model, style, run, comps, device, dtype)
    return Stylizer(comps, style, run.size, device=device, dtype=dtype, seed=run.seed, runner_factory=factory)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from realtime import __version__
    from realtime.bench.environment import environment
    from realtime.bench.modes import MemoryProbe, model_inputs, synthetic_frames
    from realtime.bench.schema import KINDS, SCHEMA_VERSION, validate
    from realtime.bench.stats import stage_entry, summarize
    from realtime.config import ModelConfig, RunConfig, load_style, override_style
    from realtime.vision.edges import EdgeDetector
    from realtime.errors import UsageError
    from realtime.geometry import Size, parse_size
    from realtime.diffusion.models import load_components, resolve_device, resolve_dtype
    from realtime.pipeline.processor import canny_config
    from realtime.diffusion.stylizer import strength_timestep

    size = parse_size(args.size, model=True)
    if args.backend not in BACKENDS:
        raise UsageError(f"--backend {args.backend}: compare on the same backend class on both sides: "
                         f"{' or '.join(BACKENDS)} (StreamDiffusion's TensorRT needs its own engine tools)")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    style = override_style(load_style(args.style), strength=args.strength)
    run = RunConfig(size=size, seed=args.seed, device=args.device, dtype=args.dtype, backend=args.backend,
                    cache_dir=args.cache_dir)
    model_cn = ModelConfig(args.model)
    model_plain = ModelConfig(args.model, controlnet="none")
    env = environment(device)
    comps = load_components(model_cn, device, dtype, seed=args.seed)
    if comps.controlnet is None:
        raise UsageError(f"--model {args.model}: no ControlNet to compare with")
    comps_plain = dataclasses.replace(comps, controlnet=None, sources={**comps.sources, "controlnet": "none"})
    style_plain = dataclasses.replace(style, control_scale=0.0)
    ours = _stylizer(comps_plain, model_plain, style_plain, run, device, dtype)
    ours_cn = _stylizer(comps, model_cn, style, run, device, dtype)
    t_ours = strength_timestep(style.strength, len(comps.alphas_cumprod()))
    theirs = copy.deepcopy(comps)  # the same weights; never the same module objects (see the module docstring)
    theirs.text_encoder.to(device=device, dtype=dtype)  # stylecam keeps its encoder on the CPU on a GPU run
    stream, info = build_stream(theirs, style.prompt, size, dtype, t_ours)
    assert stream.unet is not comps.unet and stream.vae is not comps.vae
    if args.backend == "compile":
        compile_stream(stream, device)

    with EdgeDetector(canny_config(style)) as edges:
        image, control = model_inputs(synthetic_frames(Size(1280, 720), 1)[0], size, edges)
    in_plain, in_cn = ours.step_inputs(image, control), ours_cn.step_inputs(image, control)
    x_u8 = in_plain[0]  # the same (1, H, W, 3) uint8 image on the device for both sides
    sd_call = uint8_io(stream_call(stream, device))
    systems: dict[str, Callable[[], Any]] = {
        "streamdiffusion": lambda: sd_call(x_u8, dtype),
        "stylecam": lambda: ours.runner(*in_plain),
        "stylecam_controlnet": lambda: ours_cn.runner(*in_cn),
    }
    memory: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Any] = {}
    with torch.inference_mode():
        for name, fn in systems.items():  # warm-up, one system at a time: its own peak memory
            probe = MemoryProbe(device)
            probe.start()
            for _ in range(max(1, args.warmup)):
                _, outputs[name] = timed(fn, device)
            memory[name] = probe.report()
        times: dict[str, list[float]] = {k: [] for k in systems}
        names = list(systems)
        for i in range(args.frames):
            for k in range(len(names)):
                name = names[(i + k) % len(names)]
                ms, _ = timed(systems[name], device)
                times[name].append(ms)
            log.info("frame %d/%d: %s", i + 1, args.frames, ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in times.items()))

    sd_img = outputs["streamdiffusion"][0]
    ours_img = outputs["stylecam"][0][0]
    diff = float(np.abs(sd_img.cpu().numpy().astype(np.int16) - ours_img.cpu().numpy().astype(np.int16)).mean())
    fps = {k: 1000.0 * len(v) / sum(v) for k, v in times.items()}
    labels = {"streamdiffusion": "StreamDiffusion img2img, 1 step, no ControlNet",
              "stylecam": "stylecam frame step, no ControlNet", "stylecam_controlnet": "stylecam frame step, Canny ControlNet"}
    backend_used = {"streamdiffusion": args.backend, "stylecam": str(getattr(ours.runner, "backend", "eager")),
                    "stylecam_controlnet": str(getattr(ours_cn.runner, "backend", "eager"))}
    runs = []
    for name, ms in times.items():
        frame = summarize(ms)
        runs.append({
            "mode": "step", "system": "streamdiffusion" if name == "streamdiffusion" else "stylecam",
            "label": labels[name], "size": {"width": size.width, "height": size.height},
            "backend": args.backend, "backend_used": backend_used[name],
            "backend_reason": None, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "batch": 1,
            "warmup": max(1, args.warmup), "frames": len(ms), "frame": frame, "fps": fps[name],
            "fps_p50": 1000.0 / frame["p50_ms"] if frame["p50_ms"] > 0 else 0.0,
            "stages": [stage_entry("step", ms, timer="cuda_event" if device.type == "cuda" else "perf_counter")],
            "memory": memory[name], "live": None,
            "notes": ["peak memory from this system's warm-up calls alone"],
        })
    sd_how = ("StreamDiffusion.__call__" if device.type == "cuda" else
              "the steps of StreamDiffusion.__call__ (preprocess, encode_image, predict_x0_batch, decode_image) without "
              "its CUDA events, which a machine without CUDA cannot create")
    doc = {
        "schema_version": SCHEMA_VERSION, "kind": KINDS[1], "label": args.label,
        "tool": {"name": "benchmarks/streamdiffusion_compare.py", "version": __version__},
        "command": shlex.join(["python", "benchmarks/streamdiffusion_compare.py", *sys.argv[1:]]),
        "settings": {
            "modes": ["step"], "sizes": [{"width": size.width, "height": size.height}], "backends": [args.backend],
            "batch": 1, "frames": args.frames, "warmup": max(1, args.warmup), "source": "synthetic",
            "model": {"model": args.model, "controlnet": model_cn.controlnet_spec or "none", "vae": model_cn.vae_spec},
            "style": {"name": style.name, "strength": style.strength, "control_scale": style.control_scale,
                      "guidance": 1.0, "prompt": style.prompt},
            "device": args.device, "dtype": str(dtype).replace("torch.", ""), "seed": args.seed,
            "order": "rotating: " + ", ".join(names),
        },
        "environment": env,
        "runs": runs,
        "comparison": {
            "size": str(size), "streamdiffusion_fps": fps["streamdiffusion"], "stylecam_fps": fps["stylecam"],
            "ratio_stylecam_to_streamdiffusion": fps["stylecam"] / fps["streamdiffusion"],
            "stylecam_controlnet_fps": fps["stylecam_controlnet"], "same_weights": True,
            "stylecam_timestep": t_ours, "streamdiffusion_call": sd_how,
            "output_mean_abs_diff_uint8": diff, **info,
        },
        "notes": [
            *args.note,
            *(["measured on the CPU: no GPU figures (GPU memory fields are null)"] if device.type == "cpu" else []),
            "both sides take the same (1,H,W,3) uint8 image on the device and return a (1,H,W,3) uint8 image on the "
            "device (StreamDiffusion's float conversions are inside its timed call; stylecam also returns two latents)",
            f"same backend class on both sides: {args.backend}; StreamDiffusion runs on a deep copy of the modules",
            "output_mean_abs_diff_uint8: StreamDiffusion's output vs stylecam's (no ControlNet), same noise level; they "
            "differ by the fixed noise draw and StreamDiffusion's LCM boundary scalings",
        ],
    }
    validate(doc)
    ours.close()
    ours_cn.close()
    return doc


def main(argv: list[str] | None = None) -> int:
    from realtime.cli.console import run_main, setup_logging

    p = argparse.ArgumentParser(description="stylecam vs StreamDiffusion on the same weights (1-step img2img, TAESD).")
    p.add_argument("--model", default="random:sd-turbo", help="model spec (default random:sd-turbo: real architecture, random weights)")
    p.add_argument("--size", default="512x512", help="model size WxH (default 512x512)")
    p.add_argument("--frames", type=int, default=50, help="timed calls per system (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls per system (default 5)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--backend", default="eager", choices=BACKENDS, help="the backend class of both sides: eager, or compile (stylecam's compile backend; torch.compile of StreamDiffusion's UNet and TAESD)")
    p.add_argument("--cache-dir", default=None, help="engine cache directory")
    p.add_argument("--style", default="anime")
    p.add_argument("--strength", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default=None)
    p.add_argument("--note", action="append", default=[], metavar="TEXT", help="a note stored in the result (repeatable)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result document here (atomically)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    setup_logging(debug=args.debug, quiet=args.quiet)

    def go() -> int:
        from pathlib import Path

        from realtime.bench.schema import write_json_atomic
        from realtime.files import check_output_path

        from realtime.errors import UsageError

        if args.frames < 1 or args.warmup < 0:
            raise UsageError(f"--frames {args.frames} / --warmup {args.warmup}: need frames >= 1 and warmup >= 0")
        if args.json:
            check_output_path(Path(args.json), overwrite=args.overwrite)
        doc = compare(args)
        c = doc["comparison"]
        sys.stdout.write(
            f"{c['size']} {doc['runs'][0]['dtype']} on {doc['environment']['gpu']['name'] if doc['environment']['gpu'] else 'cpu'}: "
            f"StreamDiffusion {c['streamdiffusion_fps']:.3g} fps, stylecam {c['stylecam_fps']:.3g} fps "
            f"(x{c['ratio_stylecam_to_streamdiffusion']:.2f}), stylecam + ControlNet {c['stylecam_controlnet_fps']:.3g} fps\n"
        )
        if args.json:
            write_json_atomic(args.json, doc, overwrite=args.overwrite)
        return 0

    return run_main(go, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
