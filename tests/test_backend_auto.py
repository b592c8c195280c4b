"""`--backend auto` is the default: on CUDA it leaves the choice to engines.build_runner (TensorRT > compile + CUDA
graphs > eager, logged with the reason); elsewhere it is eager, and says why."""
from __future__ import annotations

import argparse

import torch
from cli_run import run_cli

from realtime.cli.options import add_model_options
from realtime.config import RunConfig
from realtime.diffusion.engine_select import engine_options, resolve_backend

TINY = ["--model", "random:tiny", "--size", "64x64"]


def test_auto_is_the_default_everywhere():
    p = argparse.ArgumentParser()
    add_model_options(p)
    args = p.parse_args([])
    assert args.backend == "auto" and args.trt_refit is False
    assert RunConfig().backend == "auto"


def test_auto_resolves_per_device_and_says_why():
    assert resolve_backend("auto", torch.device("cuda", 0))[0] == "auto"  # engines.build_runner picks on CUDA
    backend, why = resolve_backend("auto", torch.device("cpu"))
    assert backend == "eager" and "ONNX export" in why and "--backend onnxruntime" in why
    assert resolve_backend("compile", torch.device("cpu")) == ("compile", "requested")


def test_engine_options_refit_only_with_trt_refit_and_no_output_clones():
    assert engine_options(RunConfig(), torch.float16).trt_refittable is False
    opts = engine_options(RunConfig(trt_refit=True), torch.float16)
    assert opts.trt_refittable is True and opts.clone_outputs is False and opts.dtype == "float16"


def test_build_with_auto_on_the_cpu_has_nothing_to_build(capsys, no_model_load):
    code, err = run_cli(capsys, ["build", *TINY, "--device", "cpu"])
    assert code == 2 and "runs eager on cpu: nothing to build" in err and "Traceback" not in err
