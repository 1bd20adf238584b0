"""Pixel-trigger geometry: where a square trigger sits in an image, how DBA splits it into pieces, and the
boolean masks over a dataset's input shape ([C, H, W] images, or flat [D] inputs that are square images)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedloom.errors import ConfigError

#: How DBA splits the square trigger into pieces (Xie, Huang, Chen, Li, ICLR 2020 split a global trigger into
#: local patterns): "triangles" is Snowball's 3-piece split of a 3x3 trigger generalised to any size (below the
#: diagonal, on it, above it); "rows" and "columns" give one piece per row or column of the square.
LAYOUTS = ("triangles", "rows", "columns")


def image_shape(input_shape: tuple[int, ...], owner: str) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's inputs: [C, H, W] as is, a flat [D] read as one square channel (digits 64 = 8x8,
    Fashion-MNIST 784 = 28x28); anything else is not an image."""
    if len(input_shape) == 3:
        return input_shape  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, *input_shape)  # type: ignore[return-value]
    if len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 == input_shape[0]:
        side = math.isqrt(input_shape[0])
        return (1, side, side)
    raise ConfigError(f"{owner} stamps a pixel trigger, but this dataset's inputs have shape "
                      f"{list(input_shape)}, not an image; choose an image dataset or another attack")


def _span(start: int, size: int, extent: int) -> range:
    """Rows (or columns) start .. start+size-1; a negative start counts from the end like a Python index."""
    first = start + extent if start < 0 else start
    return range(first, first + size)


@dataclass(frozen=True)
class Trigger:
    """A size x size square whose top-left corner is at (row, col) (negative: from the bottom / right, so
    -4 with size 3 is Snowball's rows 24..26 of a 28x28 image), on every channel, set to ``value``."""

    size: int
    row: int
    col: int
    value: float

    def check(self, shape: tuple[int, int, int], owner: str) -> None:
        _, height, width = shape
        rows, cols = _span(self.row, self.size, height), _span(self.col, self.size, width)
        if rows.start < 0 or rows.stop > height or cols.start < 0 or cols.stop > width:
            raise ConfigError(f"{owner}: the {self.size}x{self.size} trigger at row {self.row}, col {self.col} "
                              f"covers rows {rows.start}..{rows.stop - 1} and columns {cols.start}..{cols.stop - 1}, "
                              f"outside the {height}x{width} image; change {owner}.size/.row/.col")

    def cells(self, shape: tuple[int, int, int]) -> list[tuple[int, int]]:
        """The trigger's (row, col) pixels, row by row."""
        _, height, width = shape
        return [(r, c) for r in _span(self.row, self.size, height) for c in _span(self.col, self.size, width)]

    def pieces(self, shape: tuple[int, int, int], layout: str) -> list[list[tuple[int, int]]]:
        """The trigger's pixels split into DBA's local patterns (their union is the whole trigger)."""
        _, height, width = shape
        top, left = _span(self.row, self.size, height).start, _span(self.col, self.size, width).start
        groups: dict[int, list[tuple[int, int]]] = {}
        for r, c in self.cells(shape):
            i, j = r - top, c - left
            key = {"triangles": (j > i) - (j < i), "rows": i, "columns": j}[layout]
            groups.setdefault(key, []).append((r, c))
        # triangles: below the diagonal, the diagonal, above it (Snowball's order of its three patterns)
        return [groups[key] for key in sorted(groups)]


def pixel_mask(input_shape: tuple[int, ...], cells: list[tuple[int, int]], owner: str) -> torch.Tensor:
    """A boolean mask of ``input_shape`` that is True on ``cells`` of every channel."""
    shape = image_shape(input_shape, owner)
    mask = torch.zeros(shape, dtype=torch.bool)
    for r, c in cells:
        mask[:, r, c] = True
    return mask.reshape(input_shape)
