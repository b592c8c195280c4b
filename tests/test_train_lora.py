"""LoRA training (realtime.research.lora_dataset, realtime.research.train_lora, realtime.research.lora_trainer, scripts/train_lora.py): captions, the
denoising objective, loss going down, gradient accumulation == a bigger batch, exact resume, the saved file loading with
``--lora`` (scale 0 = no change), validation renders, one-line errors. Offline, CPU, random:tiny at 64x64."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lora_dataset import write_caption_dataset
from realtime.errors import BadInputFile, DeviceUnavailable, InputNotFound, OutputError, UsageError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_lora.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_caption_dataset(tmp_path_factory.mktemp("data") / "style", n=4, size=80)


def config(tmp: Path, data: Path, **kw):
    from realtime.research.train_config import TrainConfig

    base = dict(data=data, out=tmp / "style.safetensors", model="random:tiny", resolution=64, device="cpu",
                lr=1e-2, steps=2, progress=False)
    return TrainConfig(**{**base, **kw})


def trainer(cfg, master):
    from realtime.research.lora_trainer import LoraTrainer

    return LoraTrainer(cfg, copy.deepcopy(master))


def lora_weights(t) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in t.params.items()}


def assert_weights_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


def load_script():
    spec = importlib.util.spec_from_file_location("train_lora_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------- data
def test_captions_from_txt_or_metadata(tmp_path):
    from realtime.research.lora_dataset import load_square, scan_dataset

    a = scan_dataset(write_caption_dataset(tmp_path / "txt", n=3, size=72))
    b = scan_dataset(write_caption_dataset(tmp_path / "jsonl", n=3, size=72, captions="jsonl"))
    assert [(x.path.name, x.caption) for x in a] == [(x.path.name, x.caption) for x in b] == [
        ("astronaut.png", "an astronaut in an orange suit, watercolor style"),
        ("chelsea.png", "a tabby cat, watercolor style"), ("coffee.png", "a cup of coffee on a saucer, watercolor style")]
    sq = load_square(a[0].path, 64)
    assert sq.shape == (64, 64, 3) and sq.dtype == np.uint8

    (tmp_path / "txt" / "chelsea.txt").unlink()
    with pytest.raises(UsageError, match="chelsea.png has no caption.*--default-caption"):
        scan_dataset(tmp_path / "txt")
    items = scan_dataset(tmp_path / "txt", default_caption="a cat")
    assert {x.path.name: x.caption for x in items}["chelsea.png"] == "a cat"
    with (tmp_path / "jsonl" / "metadata.jsonl").open("a") as f:
        f.write("{not json}\n")
    with pytest.raises(BadInputFile, match="line 4"):
        scan_dataset(tmp_path / "jsonl")
    with pytest.raises(InputNotFound):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputFile, match="no images"):
        scan_dataset(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- objective
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_is_the_denoising_mse_for_the_scheduler_target(tmp_path, dataset, _tiny_components_master, prediction_type):
    from realtime.research.train_config import default_timestep_range

    comps = copy.deepcopy(_tiny_components_master)
    comps.scheduler_config = {**comps.scheduler_config, "prediction_type": prediction_type}
    from realtime.research.lora_trainer import LoraTrainer

    t = LoraTrainer(config(tmp_path, dataset), comps)
    assert t.t_range == default_timestep_range() == (599, 799)  # the presets' strengths 0.6 .. 0.8
    z, n, ts, caps = t._draw(3, gen=torch.Generator().manual_seed(5), indices=[0, 1, 2])
    assert ((ts >= 599) & (ts <= 799)).all() and z.shape == (3, 4, 8, 8)
    with torch.no_grad():
        loss = t.loss(z, n, ts, caps)
        abar = comps.alphas_cumprod().float()[ts].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * z + (1 - abar).sqrt() * n
        pred = comps.unet(x_t, ts, encoder_hidden_states=t.embeddings[caps]).sample
    target = n if prediction_type == "epsilon" else abar.sqrt() * n - (1 - abar).sqrt() * z
    assert loss.item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-5)
    # the latents are the stylizer's: FrameStep.encode of the centre-cropped image
    from realtime.research.lora_dataset import load_square
    from realtime.diffusion.stylizer import FrameStep

    img = torch.from_numpy(load_square(t.examples[0].path, 64)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = FrameStep(comps.unet, None, comps.vae, prediction_type).encode(img)
    assert torch.allclose(t.latents[0], ref[0], atol=1e-5)


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset, _tiny_components_master):
    """30 steps, rank 4 with alpha 8 (so alpha/rank folding is exercised); the trainer and its result."""
    tmp = tmp_path_factory.mktemp("trained")
    t = trainer(config(tmp, dataset, steps=30, batch_size=2, alpha=8.0), _tiny_components_master)
    return t, t.fit()


def test_training_lowers_the_loss(trained):
    t, result = trained
    assert result.start_step == 0 and result.step == t.step == 30 and len(result.losses) == 30
    assert result.fixed_loss_after < 0.95 * result.fixed_loss_before  # same noise and timesteps before and after
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.out.is_file() and not list(result.out.parent.glob(".*"))


def test_saved_lora_is_the_trained_adapter_and_loads_with_lora_option(trained, tmp_path, capsys, astronaut, _tiny_components_master):
    from realtime.cli import main as stylecam
    from realtime.config import LoraSpec
    from realtime.diffusion.lora_switch import fuse_loras

    t, result = trained
    fused = copy.deepcopy(_tiny_components_master)
    fuse_loras(fused, [LoraSpec(str(result.out), 1.0)])
    g = torch.Generator().manual_seed(3)
    x, emb, ts = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g), torch.tensor([700])
    t.comps.unet.eval()
    with torch.no_grad():
        with_adapter = t.comps.unet(x, ts, encoder_hidden_states=emb).sample
        from_file = fused.unet(x, ts, encoder_hidden_states=emb).sample
        base = _tiny_components_master.unet(x, ts, encoder_hidden_states=emb).sample
    assert torch.allclose(from_file, with_adapter, atol=1e-5)
    assert (from_file - base).abs().max() > 1e-3

    photo = tmp_path / "in.png"
    Image.fromarray(astronaut[::8, ::8]).save(photo)
    outs = {}
    for name, extra in (("none", []), ("zero", ["--lora", f"{result.out}:0"]), ("one", ["--lora", f"{result.out}:1"])):
        outs[name] = tmp_path / f"{name}.png"
        code = stylecam(["image", str(photo), "-o", str(outs[name]), "--model", "random:tiny", "--size", "64x64", *extra])
        assert code == 0, capsys.readouterr().err
    pix = {k: np.asarray(Image.open(v)).astype(int) for k, v in outs.items()}
    assert np.array_equal(pix["zero"], pix["none"])
    assert np.abs(pix["one"] - pix["none"]).max() > 0


def test_grad_accum_of_two_micro_batches_equals_a_batch_of_two(tmp_path, dataset, _tiny_components_master):
    big = trainer(config(tmp_path, dataset, steps=2, batch_size=2, grad_accum=1), _tiny_components_master)
    acc = trainer(config(tmp_path, dataset, steps=2, batch_size=1, grad_accum=2), _tiny_components_master)
    small = trainer(config(tmp_path, dataset, steps=2, batch_size=1, grad_accum=1), _tiny_components_master)
    start = lora_weights(big)
    assert_weights_close(start, lora_weights(acc), atol=0)  # same seed, same init
    for t in (big, acc, small):
        # Plain SGD: the step is linear in the gradient, so weights compare tightly (Adam's first step is about
        # lr * sign(g), which turns float noise in near-zero gradients into lr-sized differences).
        t.optimizer = torch.optim.SGD(list(t.params.values()), lr=1.0)
        t.train_step()
        t.train_step()
    assert big.losses == pytest.approx(acc.losses, rel=1e-5)
    assert_weights_close(lora_weights(big), lora_weights(acc), atol=1e-6)
    moved = max((lora_weights(big)[k] - start[k]).abs().max().item() for k in start)
    differs = max((lora_weights(big)[k] - lora_weights(small)[k]).abs().max().item() for k in start)
    assert moved > 1e-3 and differs > 1e-4  # the comparison is not vacuous: batch 1 without accumulation differs


def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(tmp_path, dataset, _tiny_components_master):
    from realtime.research.train_lora import train

    full_cfg = config(tmp_path / "a", dataset, steps=4, checkpoint_every=2)
    (tmp_path / "a").mkdir()
    full = train(full_cfg, copy.deepcopy(_tiny_components_master))
    assert [p.name for p in full.checkpoints] == ["checkpoint-2", "checkpoint-4"]

    (tmp_path / "b").mkdir()
    first_cfg = config(tmp_path / "b", dataset, steps=2, checkpoint_every=2)
    first = train(first_cfg, copy.deepcopy(_tiny_components_master))
    ckpt = first.checkpoints[0]
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "pytorch_lora_weights.safetensors", "state.pt",
                                                      "trainable.safetensors"]
    assert torch.load(ckpt / "state.pt", weights_only=True)["step"] == 2

    with pytest.raises(OutputError, match="--overwrite"):  # the first run's LoRA is there
        train(replace(first_cfg, steps=4, resume=first_cfg.workspace), copy.deepcopy(_tiny_components_master))
    from realtime.research.lora_trainer import LoraTrainer

    resumed_cfg = replace(first_cfg, steps=4, resume=first_cfg.workspace, overwrite=True)  # the folder: latest checkpoint
    with LoraTrainer(resumed_cfg, copy.deepcopy(_tiny_components_master)) as t:
        assert t.load_checkpoint(resumed_cfg.resume) == ckpt and t.step == 2
        result = t.fit()
    assert result.start_step == 2 and result.step == 4 and len(result.losses) == 4
    assert result.losses == pytest.approx(full.losses, rel=1e-6)
    assert [p.name for p in result.checkpoints] == ["checkpoint-4"]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "style-training" / "checkpoint-4" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "b" / "style-training" / "checkpoint-4" / "trainable.safetensors"))
    assert_weights_close(a, b, atol=1e-6)
    assert load_file(str(full.out)).keys() == load_file(str(result.out)).keys()

    with pytest.raises(UsageError, match="rank 4 -> 8"):
        LoraTrainer(replace(resumed_cfg, rank=8), copy.deepcopy(_tiny_components_master)).load_checkpoint(ckpt)
    with pytest.raises(UsageError, match="nothing to do"):
        with LoraTrainer(replace(resumed_cfg, steps=2), copy.deepcopy(_tiny_components_master)) as t:
            t.load_checkpoint(ckpt)
            t.fit()


def test_text_encoder_lora_and_bf16_autocast(tmp_path, dataset, _tiny_components_master):
    from safetensors.torch import load_file

    from realtime.config import LoraSpec
    from realtime.diffusion.lora_switch import fuse_loras

    t = trainer(config(tmp_path, dataset, steps=2, train_text_encoder=True, mixed_precision="bf16"), _tiny_components_master)
    assert t.weight_dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in t.params.values())
    assert any(k.startswith("text_encoder.") for k in t.params)
    result = t.fit()
    assert all(np.isfinite(result.losses))
    keys = load_file(str(result.out)).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    comps = copy.deepcopy(_tiny_components_master)
    ids = comps.tokenizer(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    before = comps.text_encoder(ids)[0]
    fuse_loras(comps, [LoraSpec(str(result.out), 1.0)])
    assert (comps.text_encoder(ids)[0] - before).abs().max() > 1e-4


def test_config_errors():
    from realtime.research.train_config import TrainConfig, parse_timesteps

    ok = dict(data=Path("d"), out=Path("o.safetensors"))
    for bad, needle in [(dict(resolution=100), "multiple of 64"), (dict(out=Path("o.bin")), ".safetensors"),
                        (dict(grad_accum=0), "--grad-accum"), (dict(mixed_precision="fp8"), "--mixed-precision"),
                        (dict(timesteps=(800, 600)), "--timesteps"), (dict(validate_every=5), "--validation-image"),
                        (dict(lr=0.0), "--lr")]:
        with pytest.raises(UsageError, match=needle):
            TrainConfig(**{**ok, **bad})
    assert parse_timesteps("499-999") == (499, 999) and parse_timesteps("999") == (999, 999)
    assert parse_timesteps("all") == (0, 999) and parse_timesteps("auto") is None
    with pytest.raises(UsageError):
        parse_timesteps("high")
    from realtime.research.lora_trainer import precision

    with pytest.raises(DeviceUnavailable, match="fp16 needs a CUDA GPU"):
        precision("fp16", torch.device("cpu"))


# ---------------------------------------------------------------------------------------------- the script
def test_script_checkpoints_validation_and_errors(tmp_path, dataset, astronaut, capsys):
    photo = tmp_path / "me.png"
    Image.fromarray(astronaut[::8, ::8]).save(photo)
    out = tmp_path / "style.safetensors"
    args = ["--model", "random:tiny", "--data", str(dataset), "--steps", "4", "--grad-accum", "2", "--rank", "2",
            "--out", str(out), "--resolution", "64", "--device", "cpu", "--lr", "0.01", "--no-progress",
            "--checkpoint-every", "2", "--validate-every", "4", "--validation-image", str(photo)]
    script = load_script()
    assert script.main(args) == 0, capsys.readouterr().err
    work = tmp_path / "style-training"
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint-2", "checkpoint-4", "validation"]
    renders = sorted((work / "validation").iterdir())
    assert [p.name for p in renders] == ["step-000000.png", "step-000004.png"]
    first, last = (np.asarray(Image.open(p)).astype(int) for p in renders)
    assert first.shape == (64, 64, 3) and np.abs(first - last).max() > 0  # rendered with the LoRA as it trains
    saved = json.loads((work / "checkpoint-4" / "config.json").read_text())
    assert saved["rank"] == 2 and saved["alpha"] == 2.0 and saved["grad_accum"] == 2
    capsys.readouterr()

    def one_line(argv, needle):
        code = script.main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if "error" in ln]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err

    one_line(args, "exists: pass --overwrite")
    one_line([*args[:-4], "--out", str(tmp_path / "new.safetensors"), "--work-dir", str(work)], "holds checkpoints of an earlier run")
    one_line([*args, "--overwrite", "--mixed-precision", "fp16"], "fp16 needs a CUDA GPU")
    one_line(["--model", "random:tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x.safetensors")], "not a directory")
    one_line(["--data", str(dataset), "--out", str(tmp_path / "x.safetensors"), "--resume", str(tmp_path)], "no checkpoint there")


@pytest.mark.parametrize("script", ["train_lora.py", "sweep.py"])
def test_help_works(script):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    if script == "train_lora.py":
        for text in ("--grad-accum", "--rank", "--resume", "--timesteps", "v_prediction", "epsilon", "--lora FILE:SCALE"):
            assert text in r.stdout
