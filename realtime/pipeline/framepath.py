"""The device frame path (docs/design.md §3): camera frame in, output frame out, one fixed-shape module.

:class:`FramePath` is a plain ``nn.Module`` whose shapes depend only on the camera, model and output sizes: crop +
resize to the model size (:class:`~realtime.vision.resample.CropResize`, the window and the mirror flag as tensor
inputs), Canny with a fixed number of hysteresis steps (:func:`~realtime.vision.edges.canny_torch`, no host sync),
the frame step (:class:`~realtime.diffusion.stylizer.FrameStep` or an engine runner with its inputs and outputs), and
the cover-resize to the output size (:class:`~realtime.vision.resample.CoverResize`). Its inputs: the frame, one small
``params`` tensor (:data:`PARAM_NAMES`: the window, the mirror flag and the per-frame numbers), and every other
FrameStep input by name (previous latents, noise, prompt embeddings, and whatever FrameStep grows: they are passed
through by name, in :data:`~realtime.diffusion.stylizer.INPUT_NAMES` order).

:class:`DevicePath` is its host side: the frame and ``params`` go up in one copy each (pinned staging buffers and a
copy stream on CUDA; on the CPU the camera's array is used in place), the module runs, and one readback brings the
output frame down (into pinned memory, waited on with an event, on CUDA). Nothing else reads a device value per frame
(tests/test_device_path.py counts). On the CPU the same module runs with torch on the CPU: one frame path, not two.
The CUDA staging is written to the documented API and unverified (no GPU lent to this project yet).

Frames are (H, W, 3) uint8 RGB numpy arrays on the host, (1, H, W, 3) uint8 tensors on the device.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from realtime.diffusion.stylizer import INPUT_NAMES, NUMBER_NAMES
from realtime.geometry import CropWindow, Size
from realtime.vision.edges import HYSTERESIS_STEPS, CannyConfig, canny_torch
from realtime.vision.resample import CoverResize, CropResize

__all__ = ["PARAM_NAMES", "DevicePath", "FramePath", "FrameState"]

#: The ``params`` tensor of :class:`FramePath`, in order: the crop window in frame pixels (of the mirrored frame when
#: mirrored), the mirror flag (1 = mirror), then the FrameStep numbers.
PARAM_NAMES = ("window_x", "window_y", "window_w", "window_h", "mirror", *NUMBER_NAMES)
_HEAD = 5  # window and mirror


class FrameState(Protocol):
    """What :class:`DevicePath` needs of a stylizer (:class:`~realtime.diffusion.stylizer.Stylizer` has it)."""

    runner: Callable[..., Any]
    clock: Any
    input_names: tuple[str, ...]
    number_names: tuple[str, ...]

    def frame_state(self) -> tuple[dict[str, torch.Tensor], tuple[float, ...]]: ...

    def accept(self, in_latent: torch.Tensor, out_latent: torch.Tensor) -> None: ...


class FramePath(nn.Module):
    """Camera frame -> output frame on one device, fixed shapes.

    ``forward(frame, params, **state)``: frame (1, camera.h, camera.w, 3) uint8 RGB; params (len(PARAM_NAMES),)
    float32; state: the other FrameStep inputs by name. Returns ``(image_out, in_latent, out_latent)`` with image_out
    (1, output.h, output.w, 3) uint8 RGB, or ``(image_out, crop)`` without a step (the framed crop, covered to the
    output: bypass and the ``none`` style).
    """

    def __init__(self, camera: Size, model: Size, output: Size, canny: CannyConfig,
                 step: Callable[..., Any] | None = None, *, hysteresis_steps: int = HYSTERESIS_STEPS,
                 input_names: Sequence[str] = INPUT_NAMES, number_names: Sequence[str] = NUMBER_NAMES) -> None:
        super().__init__()
        self.input_names, self.number_names = tuple(input_names), tuple(number_names)
        self.crop = CropResize(camera, model)
        self.cover = CoverResize(model, output)
        self.canny, self.hysteresis_steps = canny, hysteresis_steps
        self.step = step  # an nn.Module (FrameStep) registers as a child; an engine runner is called as it is
        #: None, or a clock timing ``crop``, ``canny`` and ``resize`` (eager only: device stages, no sync; a graph
        #: or an engine built from this module runs without it)
        self.clock: Any = None

    def _stage(self, name: str) -> Any:
        return contextlib.nullcontext() if self.clock is None else self.clock.stage(name, device=True)

    def forward(self, frame: torch.Tensor, params: torch.Tensor, **state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._stage("crop"):
            crop = self.crop(frame, params[0:4], params[4])
        if self.step is None:
            with self._stage("resize"):
                return self.cover(crop), crop
        with self._stage("canny"):
            control = canny_torch(crop, self.canny, max_iters=self.hysteresis_steps, fixed=True)
        nums = params[_HEAD:].to(state["noise"].dtype)
        named = {**state, "image": crop, "control": control}
        named.update({name: nums[i : i + 1] for i, name in enumerate(self.number_names)})
        out, z, z0 = self.step(*(named[name] for name in self.input_names))
        with self._stage("resize"):
            return self.cover(out), z, z0


class _NoClock:
    @staticmethod
    def stage(name: str, *, device: bool = False) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


class DevicePath:
    """The host side of :class:`FramePath`: staging up, the module, one readback.

    camera, model, output: the sizes (fixed for its life); device: where the module runs. ``run(frame, window,
    mirror, stylizer)`` -> the output frame (output.h, output.w, 3) uint8 RGB (a new array, the caller may keep it);
    without a stylizer, the framed crop covered to the output. ``crop(frame, window, mirror)`` -> the model-size crop
    and ``cover(image)`` -> the output frame, for the host-side stages (a stand-in stylizer, the similarity filter).
    """

    def __init__(self, camera: Size, model: Size, output: Size, device: torch.device | str = "cpu",
                 *, slots: int = 2) -> None:
        self.camera, self.model, self.output = camera, model, output
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._path: FramePath | None = None
        self._key: tuple[Any, ...] | None = None
        self._slot = 0
        self.frames = 0
        if self.cuda:  # unverified: written to the CUDA API docs (pinned memory, streams, events)
            def pinned(shape: Sequence[int], dtype: torch.dtype) -> list[torch.Tensor]:
                return [torch.empty(tuple(shape), dtype=dtype, pin_memory=True) for _ in range(slots)]

            def on_device(shape: Sequence[int], dtype: torch.dtype) -> list[torch.Tensor]:
                return [torch.empty(tuple(shape), dtype=dtype, device=self.device) for _ in range(slots)]

            frame_shape, out_shape = (1, camera.height, camera.width, 3), (1, output.height, output.width, 3)
            self._frame_host, self._frame_dev = pinned(frame_shape, torch.uint8), on_device(frame_shape, torch.uint8)
            self._params_host = pinned((len(PARAM_NAMES),), torch.float32)
            self._params_dev = on_device((len(PARAM_NAMES),), torch.float32)
            self._out_host = pinned(out_shape, torch.uint8)
            self._copy_stream = torch.cuda.Stream(self.device)
            self._done = [torch.cuda.Event() for _ in range(slots)]

    def path(self, step: Callable[..., Any] | None, canny: CannyConfig, names: tuple[tuple[str, ...], ...] = ()
             ) -> FramePath:
        """The module for this step, these Canny settings and these (input, number) names (built again when any of
        them changes: a rebuilt step)."""
        key = (id(step), canny, names)
        if self._path is None or self._key != key or self._path.step is not step:
            self._path = FramePath(self.camera, self.model, self.output, canny, step, **dict(
                zip(("input_names", "number_names"), names, strict=False))).to(self.device)
            self._key = key
        return self._path

    # ----------------------------------------------------------------------------------------------- transfers
    def upload(self, frame: np.ndarray, params: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame (H, W, 3) uint8 + params -> device tensors: one copy each (on CUDA from pinned staging buffers,
        on a copy stream the compute stream then waits on; double-buffered)."""
        if frame.shape != (self.camera.height, self.camera.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype}: this path takes {self.camera} uint8 RGB")
        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(frame)).unsqueeze(0), torch.tensor(params, dtype=torch.float32)
        i = self._slot
        self._frame_host[i][0].numpy()[...] = frame
        self._params_host[i].numpy()[:] = params
        compute = torch.cuda.current_stream(self.device)
        self._copy_stream.wait_stream(compute)  # the slot's previous frame is done with its device buffers
        with torch.cuda.stream(self._copy_stream):
            self._frame_dev[i].copy_(self._frame_host[i], non_blocking=True)
            self._params_dev[i].copy_(self._params_host[i], non_blocking=True)
        compute.wait_stream(self._copy_stream)
        return self._frame_dev[i], self._params_dev[i]

    def download(self, image: torch.Tensor) -> np.ndarray:
        """(1, h, w, 3) uint8 on the device -> (h, w, 3) uint8 numpy: the frame's one readback."""
        if not self.cuda:
            return image[0].numpy()
        i = self._slot
        self._slot = (i + 1) % len(self._done)
        host = self._out_host[i] if image.shape == self._out_host[i].shape else torch.empty(
            image.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(image, non_blocking=True)
        self._done[i].record()
        self._done[i].synchronize()
        return host[0].numpy().copy()  # the pinned slot is reused two frames later

    def _params(self, window: CropWindow, mirror: bool, numbers: Sequence[float]) -> list[float]:
        return [window.x, window.y, window.w, window.h, 1.0 if mirror else 0.0, *numbers]

    # --------------------------------------------------------------------------------------------------- frames
    def run(self, frame: np.ndarray, window: CropWindow, mirror: bool, canny: CannyConfig,
            stylizer: FrameState | None = None, *, stages: Any = None) -> np.ndarray:
        """One frame through the whole path (see the class docstring). The stylizer's state is read before and its
        latents handed back after; its ``clock`` (when set) times ``upload``, ``step`` and ``download``; ``stages``
        (a clock, optional) the module's own ``crop``, ``canny`` and ``resize``."""
        clock = getattr(stylizer, "clock", None) or _NoClock()
        step = None if stylizer is None else stylizer.runner
        names = () if stylizer is None else (stylizer.input_names, stylizer.number_names)
        path = self.path(step, canny, names)
        path.clock = stages
        with clock.stage("upload", device=True):
            state, numbers = stylizer.frame_state() if stylizer is not None else ({}, ())
            frame_t, params_t = self.upload(frame, self._params(window, mirror, numbers))
        with torch.inference_mode(), clock.stage("step", device=True):
            outs = path(frame_t, params_t, **state)
        if stylizer is not None:
            stylizer.accept(outs[1], outs[2])
        self.frames += 1
        with clock.stage("download", device=True):
            return self.download(outs[0])

    def crop(self, frame: np.ndarray, window: CropWindow, mirror: bool) -> np.ndarray:
        """The model-size crop (model.h, model.w, 3) uint8, read back (the host-side stages take numpy)."""
        frame_t, params_t = self.upload(frame, self._params(window, mirror, ()))
        with torch.inference_mode():
            crop = self.path(None, CannyConfig()).crop(frame_t, params_t[0:4], params_t[4])
        return self.download(crop)

    def cover(self, image: np.ndarray) -> np.ndarray:
        """A model-size image (model.h, model.w, 3) uint8 -> the output frame, as :meth:`run` covers it."""
        if image.shape != (self.model.height, self.model.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"image {image.shape} {image.dtype}: expected {self.model} uint8 RGB")
        t = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            return self.download(self.path(None, CannyConfig()).cover(t))
