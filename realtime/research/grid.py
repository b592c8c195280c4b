"""Labelled comparison grids (the sweep's contact sheet): cells in rows, each image under a white band holding its title.

Images are HxWx3 uint8 RGB numpy arrays. Every cell has the same image area (``cell``): images are scaled to cover it
(nearest-neighbour when enlarging by a whole factor, so tiny 64x64 outputs stay crisp) and centre-cropped. Labels are
drawn with OpenCV's Hershey font (no font files needed), black on white, one line per string; a line too wide for the
cell is drawn smaller, then cut with ``..``.

Layout: ``columns`` cells per row, ``rows = ceil(n / columns)``; each cell is ``band + cell.height`` tall, the band on
top. The grid is ``columns * cell.width`` by ``rows * (band + cell.height)`` pixels; unused cells are white.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from realtime.errors import UsageError
from realtime.geometry import Size

FONT_SCALE = 0.42
MIN_FONT_SCALE = 0.3
LINE_GAP = 5
MARGIN = 4
BACKGROUND = 255
INK = (0, 0, 0)


@dataclass(frozen=True)
class GridLayout:
    """Where the cells go: ``columns`` x ``rows`` cells of ``cell`` pixels, each under a ``band``-pixel label band."""

    cell: Size
    columns: int
    rows: int
    band: int

    def __post_init__(self) -> None:
        if self.columns < 1 or self.rows < 1 or self.band < 0:
            raise UsageError(f"grid layout {self.columns}x{self.rows} cells, band {self.band}: need >= 1 cell, band >= 0")

    @property
    def size(self) -> Size:
        return Size(self.columns * self.cell.width, self.rows * (self.band + self.cell.height))

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left (x, y) of cell ``i``'s label band (the image is ``band`` pixels below it)."""
        r, c = divmod(i, self.columns)
        return c * self.cell.width, r * (self.band + self.cell.height)


def line_height(scale: float = FONT_SCALE) -> int:
    import cv2

    (_, h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return h + base + LINE_GAP


def band_height(max_lines: int) -> int:
    """Height of a label band holding ``max_lines`` lines (0 lines -> no band)."""
    return 0 if max_lines <= 0 else max_lines * line_height() + 2 * MARGIN


def cell_size(image_size: Size, min_width: int = 256) -> Size:
    """The cell for images of ``image_size``: enlarged by the smallest whole factor that reaches ``min_width``."""
    factor = max(1, math.ceil(min_width / image_size.width))
    return Size(image_size.width * factor, image_size.height * factor)


def plan_layout(n: int, image_size: Size, max_lines: int, *, columns: int | None = None, min_width: int = 256) -> GridLayout:
    """Layout for ``n`` cells of ``image_size`` images; ``columns`` defaults to ``min(n, 6)``."""
    if n < 1:
        raise UsageError("a grid needs at least one image")
    if columns is not None and columns < 1:
        raise UsageError(f"--grid-columns {columns}: must be at least 1")
    cols = min(n, columns or 6)
    return GridLayout(cell_size(image_size, min_width), cols, math.ceil(n / cols), band_height(max_lines))


def fit_image(image: np.ndarray, cell: Size) -> np.ndarray:
    """Scale ``image`` to cover ``cell`` (whole-factor enlargements by pixel repetition) and centre-crop."""
    from realtime.geometry import cover_resize

    h, w = image.shape[:2]
    if cell.width % w == 0 and cell.height % h == 0 and cell.width // w == cell.height // h:
        f = cell.width // w
        return image if f == 1 else np.repeat(np.repeat(image, f, axis=0), f, axis=1)
    return cover_resize(image, cell)


def draw_text(canvas: np.ndarray, text: str, x: int, y: int, width: int) -> None:
    """Draw one line with its top-left at (x, y) within ``width`` pixels (smaller font, then ``..``, if needed)."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = FONT_SCALE
    w = cv2.getTextSize(text, font, scale, 1)[0][0]
    if w > width:
        scale = max(MIN_FONT_SCALE, FONT_SCALE * width / w)
    while text and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    (_, th), _ = cv2.getTextSize("Ag", font, FONT_SCALE, 1)
    cv2.putText(canvas, text, (x, y + th), font, scale, INK, 1, cv2.LINE_AA)


def make_grid(
    images: Sequence[np.ndarray], labels: Sequence[Sequence[str]], *, columns: int | None = None, min_width: int = 256
) -> np.ndarray:
    """Lay ``images`` (HxWx3 uint8 RGB, any sizes; the first one's size sets the cell) out in rows, each titled by
    its ``labels`` lines. Returns the grid, HxWx3 uint8 RGB, of :func:`plan_layout`'s size."""
    if len(images) != len(labels):
        raise UsageError(f"make_grid: {len(images)} images but {len(labels)} labels")
    if not images:
        raise UsageError("a grid needs at least one image")
    first = images[0]
    layout = plan_layout(len(images), Size(first.shape[1], first.shape[0]), max(len(x) for x in labels),
                         columns=columns, min_width=min_width)
    total = layout.size
    canvas = np.full((total.height, total.width, 3), BACKGROUND, dtype=np.uint8)
    step = line_height()
    for i, (image, lines) in enumerate(zip(images, labels, strict=True)):
        x, y = layout.origin(i)
        for j, text in enumerate(lines):
            draw_text(canvas, str(text), x + MARGIN, y + MARGIN + j * step, layout.cell.width - 2 * MARGIN)
        canvas[y + layout.band : y + layout.band + layout.cell.height, x : x + layout.cell.width] = fit_image(image, layout.cell)
    return canvas
