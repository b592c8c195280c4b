"""Crop + resize and cover-resize in torch, with fixed shapes: the device side of :mod:`realtime.geometry`.

The crop window is a tensor *input* (a moving face window never changes a shape, so one compiled graph serves every
frame), the mirror flag too. Each output axis is a fixed number of taps per output pixel (gathered rows or columns,
weighted and summed), computed on the device from the window: no host sync, no data-dependent shape.

The weights reproduce what :func:`realtime.geometry.crop_resize` does with OpenCV, composed into one linear map: a
sub-pixel cut at the window's own scale (``cv2.getRectSubPix``: bilinear, replicated borders, patch side
``round(window side)``), then ``cv2.resize`` with area interpolation when both axes shrink (the overlap of each output
pixel's footprint with the patch pixels: OpenCV's ``INTER_AREA``), else bilinear (half-pixel centres, ``INTER_LINEAR``).
What differs: OpenCV rounds the intermediate patch to uint8 and quantises its bilinear weights to 11 bits; here both
steps stay in float32 and only the output is rounded (tests/test_device_path.py reports the difference on the
astronaut photo: within 2 grey levels). :func:`realtime.geometry.cover_resize` is the same machinery with a constant,
integer-aligned window.

Images are (1, H, W, 3) uint8 RGB tensors (channels last, as the camera delivers them).
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from realtime.geometry import Size, centre_window

__all__ = ["CoverResize", "CropResize", "apply_taps", "axis_taps"]


def axis_taps(start: torch.Tensor, length: torch.Tensor, n_out: int, n_src: int, area: torch.Tensor,
              taps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of crop + resize: ``(index, weight)``, both ``(n_out, taps + 1)``.

    start, length: the window's start and length on this axis, in source pixels (0-d float tensors). n_out: output
    pixels; n_src: source pixels (indices are clamped into ``0..n_src-1``: replicated borders). area: 0-d bool tensor,
    True for area interpolation, False for bilinear. taps: patch pixels per output pixel (at least
    ``ceil(n_src / n_out) + 1`` for area, 2 for bilinear).
    """
    dev = start.device
    patch = torch.clamp(torch.round(length), min=1.0)  # cv2.getRectSubPix's patch side
    first = start + length * 0.5 - 0.5 - (patch - 1.0) * 0.5  # source coordinate of patch pixel 0
    q = torch.floor(first)
    frac = first - q
    s = patch / n_out  # patch pixels per output pixel
    i = torch.arange(n_out, device=dev, dtype=torch.float32)[:, None]
    t = torch.arange(taps, device=dev, dtype=torch.float32)[None, :]
    # area: overlap of [i*s, (i+1)*s) with patch pixel j, divided by s
    lo, hi = i * s, (i + 1.0) * s
    j_area = torch.floor(lo) + t
    w_area = (torch.minimum(hi, j_area + 1.0) - torch.maximum(lo, j_area)).clamp(min=0.0) / s
    w_area = torch.where(j_area < patch, w_area, torch.zeros_like(w_area))
    # bilinear: half-pixel centres, clamped at the patch edges with a zero fraction (as cv2.resize)
    src = (i + 0.5) * s - 0.5
    j0 = torch.floor(src)
    fr = src - j0
    fr = torch.where((j0 < 0) | (j0 >= patch - 1.0), torch.zeros_like(fr), fr)
    j0 = torch.minimum(j0.clamp(min=0.0), patch - 1.0)
    j_lin = j0 + t
    w_lin = torch.where(t == 0, 1.0 - fr, torch.where(t == 1, fr, torch.zeros_like(fr)))
    j = torch.where(area, j_area, j_lin)  # consecutive patch pixels j[:, 0] + t; weights 0 past the patch
    w = torch.where(area, w_area, w_lin)
    # each patch pixel mixes two neighbouring source pixels by the cut's shared sub-pixel fraction: merged, source
    # pixel q + j[:, 0] + t gets w[t] * (1 - frac) + w[t - 1] * frac
    zero = torch.zeros_like(w[:, :1])
    weight = torch.cat([w, zero], dim=1) * (1.0 - frac) + torch.cat([zero, w], dim=1) * frac
    t1 = torch.arange(taps + 1, device=dev, dtype=torch.float32)[None, :]
    src_idx = (q + j[:, :1] + t1).clamp(0.0, n_src - 1.0).to(torch.long)  # clamped: replicated borders
    return src_idx, weight


def _sparse(taps: tuple[torch.Tensor, torch.Tensor], n_src: int) -> torch.Tensor:
    """The (n_out, n_src) resampling matrix of one axis, sparse (duplicate border indices summed)."""
    idx, w = taps
    rows = torch.arange(idx.shape[0], device=idx.device)[:, None].expand_as(idx)
    with warnings.catch_warnings():  # torch marks sparse tensors beta (a UserWarning on first use)
        warnings.simplefilter("ignore")
        m = torch.sparse_coo_tensor(torch.stack([rows.reshape(-1), idx.reshape(-1)]), w.reshape(-1),
                                    (idx.shape[0], n_src)).coalesce()
        return m.to_sparse_csr()


def _gather(x: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor], dim: int) -> torch.Tensor:
    """Sum over taps of ``x`` gathered along ``dim`` (0 or 1 of an HxWxC tensor) times the tap weights."""
    idx, w = taps
    acc = None
    for k in range(idx.shape[1]):  # one gathered block per tap: never (h, T, W, 3) at once
        wk = w[:, k, None, None] if dim == 0 else w[None, :, k, None]
        term = x.index_select(dim, idx[:, k]).to(torch.float32) * wk
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc


def apply_taps(image: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor],
               cols: tuple[torch.Tensor, torch.Tensor], *, sparse: bool | None = None) -> torch.Tensor:
    """(1, H, W, 3) uint8 -> (1, h, w, 3) uint8: rows (h, T) then columns (w, T) of :func:`axis_taps`, rounded.

    Two ways to the same sums: on the CPU (``sparse`` None: by device) a sparse matrix product per axis (~10x faster
    there than gathering), elsewhere a gather per tap (fixed shapes, no sparse kernels: what a CUDA graph or an ONNX
    export takes)."""
    img = image[0]
    h_src, w_src, ch = img.shape
    if sparse is None:
        sparse = img.device.type == "cpu"
    if not sparse:
        return torch.round(_gather(_gather(img, rows, 0), cols, 1)).clamp(0.0, 255.0).to(torch.uint8).unsqueeze(0)
    n_y, n_x = rows[0].shape[0], cols[0].shape[0]
    acc = _sparse(rows, h_src) @ img.reshape(h_src, w_src * ch).to(torch.float32)  # (h, W*C)
    acc = acc.reshape(n_y, w_src, ch).transpose(0, 1).reshape(w_src, n_y * ch)
    out = (_sparse(cols, w_src) @ acc).reshape(n_x, n_y, ch).transpose(0, 1)
    return torch.round(out).clamp(0.0, 255.0).to(torch.uint8).unsqueeze(0)


def _area_taps(n_src: int, n_out: int) -> int:
    return max(2, math.ceil(n_src / n_out) + 1)


class CropResize(nn.Module):
    """Cut a window out of the camera frame and resize it to the model size (what ``crop_resize`` does).

    ``forward(frame, window, mirror)``: frame (1, H, W, 3) uint8 RGB of the camera size; window (4,) float32
    ``x, y, w, h`` in pixels of the (mirrored, when asked) frame; mirror 0-d float32, 1 to mirror the frame left-right
    first. Returns (1, model.height, model.width, 3) uint8 RGB.
    """

    def __init__(self, camera: Size, model: Size) -> None:
        super().__init__()
        self.camera, self.model = camera, model
        self.taps_x = _area_taps(camera.width, model.width)
        self.taps_y = _area_taps(camera.height, model.height)

    def forward(self, frame: torch.Tensor, window: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
        cam, mdl = self.camera, self.model
        x, y, w, h = window[0], window[1], window[2], window[3]
        area = (w > mdl.width) & (h > mdl.height)  # crop_resize: INTER_AREA when both axes shrink
        cols = axis_taps(x, w, mdl.width, cam.width, area, self.taps_x)
        rows = axis_taps(y, h, mdl.height, cam.height, area, self.taps_y)
        flipped = cam.width - 1 - cols[0]
        cols = (torch.where(mirror > 0.5, flipped, cols[0]), cols[1])
        return apply_taps(frame, rows, cols)


class CoverResize(nn.Module):
    """Scale the model-size image to cover the output size, centre-cropped (what ``cover_resize`` does).

    ``forward(image)``: (1, model.height, model.width, 3) uint8 -> (1, output.height, output.width, 3) uint8. The taps
    are fixed (the window is constant) and computed once, as buffers.
    """

    def __init__(self, model: Size, output: Size) -> None:
        super().__init__()
        self.model, self.output = model, output
        self.identity = (model.width, model.height) == (output.width, output.height)
        win = centre_window(model, output.aspect)
        x0, y0 = int(round(win.x)), int(round(win.y))
        x1, y1 = x0 + max(1, int(round(win.w))), y0 + max(1, int(round(win.h)))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(model.width, x1), min(model.height, y1)
        area = torch.tensor((x1 - x0) > output.width)  # cover_resize: INTER_AREA when the cut is wider
        f = torch.tensor
        cols = axis_taps(f(float(x0)), f(float(x1 - x0)), output.width, model.width, area,
                         _area_taps(model.width, output.width))
        rows = axis_taps(f(float(y0)), f(float(y1 - y0)), output.height, model.height, area,
                         _area_taps(model.height, output.height))
        self.register_buffer("col_idx", cols[0], persistent=False)
        self.register_buffer("col_w", cols[1], persistent=False)
        self.register_buffer("row_idx", rows[0], persistent=False)
        self.register_buffer("row_w", rows[1], persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return image
        return apply_taps(image, (self.row_idx, self.row_w), (self.col_idx, self.col_w))
