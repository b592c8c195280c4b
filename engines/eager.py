"""The eager backend: the module itself, called without autograd; the baseline other backends are checked against."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engines.base import Backend, BuildContext, Runner, TensorSpec, convert_input, register_backend, run_module
from engines.errors import RefitUnsupported

if TYPE_CHECKING:  # pragma: no cover
    import torch


def copy_weights(module: Any, new_state: Mapping[str, "torch.Tensor"]) -> None:
    """Copy full new weights into ``module``'s parameters/buffers in place (addresses unchanged, so compiled code and
    captured CUDA graphs see them). Unknown names or shapes raise :class:`RefitUnsupported`."""
    import torch

    targets = dict(module.named_parameters())
    targets.update(module.named_buffers())
    for name, value in new_state.items():
        if name not in targets:
            raise RefitUnsupported(f"the module has no parameter or buffer named {name!r}")
        if tuple(targets[name].shape) != tuple(value.shape):
            raise RefitUnsupported(f"{name}: new shape {tuple(value.shape)} differs from {tuple(targets[name].shape)}")
    with torch.no_grad():
        for name, value in new_state.items():
            if value is not targets[name]:  # the caller may have written the module's own tensor in place already
                targets[name].copy_(value)


class EagerRunner(Runner):
    backend = "eager"

    def __init__(self, module: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 device: "torch.device") -> None:
        super().__init__(inputs, outputs, device)
        self.module = module

    def _run(self, inputs: Sequence["torch.Tensor"]) -> tuple["torch.Tensor", ...]:
        xs = [convert_input(x, s, self.device) for x, s in zip(inputs, self.inputs, strict=True)]
        return run_module(self.module, xs)

    def refit(self, new_state: Mapping[str, "torch.Tensor"]) -> None:
        copy_weights(self.module, new_state)

    def close(self) -> None:
        self.module = None
        super().close()


class EagerBackend(Backend):
    name = "eager"

    def is_available(self, device: "torch.device") -> tuple[bool, str]:
        return True, ""

    def build(self, ctx: BuildContext) -> Runner:
        return EagerRunner(ctx.module, ctx.input_specs, ctx.output_specs, ctx.device)


register_backend(EagerBackend())
