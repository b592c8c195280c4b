"""A LoRA file's keys -> the model weights it changes, with their factors (:mod:`realtime.diffusion.lora_math`).

The key layouts are diffusers' business, not ours: kohya / A1111 keys (``lora_unet_...``, ``lora_te_...``) go through
``StableDiffusionPipeline.lora_state_dict`` (diffusers' ``_convert_non_diffusers_lora_to_diffusers``), then diffusers'
``convert_unet_state_dict_to_peft`` / ``convert_state_dict_to_peft``, exactly what ``load_lora_weights`` does before
peft injects layers; the result names each layer ``<component>.<module>.lora_A/lora_B.weight``. LyCORIS files (LoHa
``hada_*``, LoKr ``lokr_*``, kohya layout) use the same module names: each module's name is converted by passing a
placeholder ``lora_down``/``lora_up`` pair through the same diffusers conversion.

:func:`read_layers` returns ``{"unet.<param>" | "text_encoder.<param>": factors}`` for the parameters the file
touches, checked against the model's parameter shapes; anything that does not fit is one :class:`LoraError` line.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from realtime.diffusion.lora import _quiet_libraries, foreign_architecture
from realtime.diffusion.lora_math import LohaWeight, LokrWeight, LoraWeight, WeightDelta
from realtime.errors import LoraError

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")  # text_encoder_2: the SDXL family's second one
_LYCORIS = ("hada_", "lokr_")
_UNSUPPORTED = {"hada_t1": "Tucker-decomposed LoHa", "hada_t2": "Tucker-decomposed LoHa",
                "lokr_t2": "Tucker-decomposed LoKr", "dora_scale": "DoRA"}


def _peft_keys(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """diffusers' conversion: any LoRA layout -> ``{"<component>.<module>.lora_A|lora_B.weight": tensor}`` and the
    alphas ``{"<component>.<module>": alpha}``."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft

    alpha_keys = {k: v for k, v in sd.items() if k.endswith(".alpha") and not k.startswith(("lora_unet_", "lora_te"))}
    with _quiet_libraries():
        converted, network_alphas = StableDiffusionPipeline.lora_state_dict({k: v for k, v in sd.items()
                                                                             if k not in alpha_keys})
    out: dict[str, Any] = {}
    for comp in COMPONENTS:
        part = {k[len(comp) + 1:]: v for k, v in converted.items() if k.startswith(comp + ".")}
        if not part:
            continue
        if comp == "unet":
            peft = part if any(".lora_A." in k for k in part) else convert_unet_state_dict_to_peft(part)
        else:
            peft = _text_encoder_to_peft(part)
        out.update({f"{comp}.{k}": v for k, v in peft.items()})
    alphas: dict[str, float] = {k[: -len(".alpha")]: float(v) for k, v in alpha_keys.items()}
    for key, value in (network_alphas or {}).items():  # "<comp>.<diffusers name of the down weight>.alpha"
        comp, _, rest = key.partition(".")
        probe = {f"{comp}.{rest[: -len('.alpha')]}": torch.zeros(1)}
        probe[next(iter(probe)).replace(".down.", ".up.")] = torch.zeros(1)
        for k in _convert_probe(probe):
            if k.endswith(".lora_A.weight"):
                alphas[k[: -len(".lora_A.weight")]] = float(value)
    left = sorted(set(converted) - {k for k in converted if k.startswith(tuple(c + "." for c in COMPONENTS))})
    if left:
        raise LoraError(f"its keys are for no part of this model (e.g. {left[0]}){_made_for(left)}")
    return out, alphas


def _convert_probe(probe: dict[str, Any]) -> list[str]:
    """The peft names diffusers gives already-converted (diffusers-format) keys."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    comp = next(iter(probe)).split(".", 1)[0]
    part = {k[len(comp) + 1:]: v for k, v in probe.items()}
    peft = convert_unet_state_dict_to_peft(part) if comp == "unet" else _text_encoder_to_peft(part)
    return [f"{comp}.{k}" for k in peft]


def _text_encoder_to_peft(part: dict[str, Any]) -> dict[str, Any]:
    """diffusers' text-encoder conversion (as ``load_lora_into_text_encoder``: to the diffusers format, then to peft),
    told the old diffusers layout (``to_q_lora.down``) that its inference misses when a file has no ``to_out_lora``
    key (a kohya file with q/v projections only)."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.state_dict_utils import StateDictType

    if any(".lora_A." in k for k in part):
        return part
    old = any("_lora.down." in k or "_lora.up." in k for k in part)
    new = convert_state_dict_to_diffusers(part, original_type=StateDictType.DIFFUSERS_OLD if old else None)
    return convert_state_dict_to_peft(new, original_type=StateDictType.DIFFUSERS)


def _lycoris_modules(prefixes: list[str]) -> dict[str, str]:
    """kohya-layout module prefix (``lora_unet_down_blocks_0_..._to_q``) -> ``<component>.<module>`` by diffusers'
    conversion of a placeholder LoRA pair per prefix (the placeholder's value tells which prefix it was)."""
    probe: dict[str, Any] = {}
    for i, p in enumerate(prefixes):
        probe[f"{p}.lora_down.weight"] = torch.tensor([float(i)])
        probe[f"{p}.lora_up.weight"] = torch.tensor([float(i)])
    peft, _ = _peft_keys(probe)
    return {prefixes[int(v.item())]: k[: -len(".lora_A.weight")] for k, v in peft.items() if k.endswith(".lora_A.weight")}


def _lycoris_layers(sd: dict[str, Any]) -> dict[str, WeightDelta]:
    by_prefix: dict[str, dict[str, Any]] = {}
    for k, v in sd.items():
        prefix, _, leaf = k.partition(".")
        by_prefix.setdefault(prefix, {})[leaf] = v
    names = _lycoris_modules(sorted(by_prefix))
    out: dict[str, WeightDelta] = {}
    for prefix, leaves in by_prefix.items():
        alpha = float(leaves["alpha"]) if "alpha" in leaves else None
        g = leaves.get
        try:
            if "hada_w1_a" in leaves:
                f: WeightDelta = LohaWeight(leaves["hada_w1_a"], leaves["hada_w1_b"], leaves["hada_w2_a"],
                                            leaves["hada_w2_b"], alpha)
            else:
                f = LokrWeight(g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b"), g("lokr_w2"), g("lokr_w2_a"),
                               g("lokr_w2_b"), alpha)
        except KeyError as e:
            raise LoraError(f"its LoHa layer {prefix} lacks {e.args[0]}") from None
        out[names[prefix]] = f
    return out


def _made_for(keys: Any, family: str = "sd") -> str:
    reason = foreign_architecture(keys, family)
    return f" ({reason})" if reason else " (made for another architecture?)"


def file_layers(sd: dict[str, Any], family: str = "sd") -> dict[str, WeightDelta]:
    """A LoRA state dict -> ``{"<component>.<module>": factors}`` (module names, not yet checked against a model of
    ``family``: ``sd`` or ``sdxl``)."""
    for key in sd:
        for marker, what in _UNSUPPORTED.items():
            if key.endswith(marker) or f".{marker}" in key:
                raise LoraError(f"it is a {what} file ({key}), which stylecam does not apply")
    reason = foreign_architecture(sd, family)
    if reason:
        raise LoraError(reason)
    lycoris = {k: v for k, v in sd.items() if any(f".{m}" in k for m in _LYCORIS)}
    alphas_of_lycoris = {k.split(".")[0] + ".alpha" for k in lycoris}
    lycoris.update({k: sd[k] for k in alphas_of_lycoris if k in sd})
    rest = {k: v for k, v in sd.items() if k not in lycoris}
    out: dict[str, WeightDelta] = _lycoris_layers(lycoris) if lycoris else {}
    if rest:
        try:
            peft, alphas = _peft_keys(rest)
        except LoraError:
            raise
        except Exception as e:  # noqa: BLE001 - diffusers raises ValueError/KeyError for layouts it cannot read
            raise LoraError(f"its keys are in no LoRA layout diffusers reads (diffusers, peft, kohya; "
                            f"{type(e).__name__}){_made_for(sd, family)}") from e
        for key, down in peft.items():
            if not key.endswith(".lora_A.weight"):
                continue
            module = key[: -len(".lora_A.weight")]
            up = peft.get(module + ".lora_B.weight")
            if up is None:
                raise LoraError(f"its layer {module} has a lora_A weight but no lora_B")
            out[module] = LoraWeight(down, up, alphas.get(module))
    if not out:
        raise LoraError(f"none of its {len(sd)} weights is a LoRA layer diffusers reads{_made_for(sd, family)}")
    return out


def _resolve(module: str, names: Mapping[str, Any]) -> str | None:
    """``<component>.<module>`` -> the model's ``<component>.<module>.weight`` (``text_model.`` prefix tolerated)."""
    comp, _, rest = module.partition(".")
    for cand in (rest, rest.removeprefix("text_model."), f"text_model.{rest}"):
        if f"{comp}.{cand}.weight" in names:
            return f"{comp}.{cand}.weight"
    return None


def _on_meta(f: WeightDelta) -> WeightDelta:
    """The same factors on the meta device (shape checks without computing anything)."""
    fields = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in vars(f).items()}
    return type(f)(**fields)


def read_layers(path: Path, sd: dict[str, Any], params: Mapping[str, torch.Tensor]) -> dict[str, WeightDelta]:
    """The file's layers keyed by the model parameter they change (``params``: ``<component>.<name>`` -> tensor),
    each checked to fit its parameter's shape; else one :class:`LoraError` line naming the file."""
    family = "sdxl" if "unet.add_embedding.linear_1.weight" in params else "sd"  # SDXL's text_time embedding
    try:
        layers = file_layers(sd, family)
        out: dict[str, WeightDelta] = {}
        missing = []
        for module, f in layers.items():
            name = _resolve(module, params)
            if name is None:
                missing.append(module)
            else:
                out[name] = f
        if missing:
            raise LoraError(f"{len(missing)} layer(s) it names are not in this model (e.g. {missing[0]})"
                            f"{_made_for(sd, family)}")
        misfits = []
        for name, f in out.items():
            try:
                _on_meta(f).delta(tuple(params[name].shape))  # shapes only: no arithmetic
            except (LoraError, RuntimeError):
                misfits.append(name)
        if misfits:
            f = out[misfits[0]]
            shown = [list(t.shape) for t in vars(f).values() if isinstance(t, torch.Tensor)]
            raise LoraError(f"{len(misfits)} of its weights have shapes that fit no layer (e.g. "
                            f"{misfits[0].removesuffix('.weight')}: factors {shown} in the file, a weight "
                            f"{list(params[misfits[0]].shape)} in the model){_made_for(sd, family)}")
    except LoraError as e:
        raise LoraError(f"LoRA {path} does not fit this model: {e}") from e
    return out
