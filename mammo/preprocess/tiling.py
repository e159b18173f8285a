"""Overlapping square tiles of an image and their weighted stitching (pure numpy).

A network that sees (P, P) patches cannot see a whole mammogram at full resolution; it is run on
tiles that overlap by `OVERLAP` pixels, and the tiles' outputs are crossfaded back with linear
ramps (`blend_window`), so no pixel's value comes only from the rim of a patch, where a
convolutional network sees zero padding instead of context. Used by the `deepmica` pipeline and
its training (`training.deepmica`). Images are (H, W) float32; origins are (row, col) top-left
corners in pixels.
"""

from __future__ import annotations

import math

import numpy as np

PATCH = 256
# 25% of a patch. Zero padding at a patch's rim changes a UNet's output within a band of its
# border; with a 64-pixel linear crossfade, along each axis at least half of a pixel's weight
# comes from a patch whose edge is >= 32 px away (away from the image's own border), for 1.8x
# the patches of plain tiling (a half-patch overlap: 4x).
OVERLAP = 64
BLACK_LEVEL = 0.0     # a patch whose maximum is <= this is not run (0 outside the breast after enhance)


def tile_origins(length: int, patch: int = PATCH, overlap: int = OVERLAP) -> list[int]:
    """Start offsets of patches covering [0, max(length, patch)), consecutive patches overlapping
    by at least `overlap` pixels, evenly spread, the last one ending at the border."""
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in [0, {patch}), got {overlap}")
    if length <= patch:
        return [0]
    n = math.ceil((length - patch) / (patch - overlap)) + 1
    return [round(i * (length - patch) / (n - 1)) for i in range(n)]


def tile_grid(shape: tuple[int, int], patch: int = PATCH, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """(row, col) top-left corners of the patches covering an image of `shape` (see `tile_origins`)."""
    rows, cols = (tile_origins(n, patch, overlap) for n in shape)
    return [(y, x) for y in rows for x in cols]


def pad_to_patch(image: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """(H, W) -> (max(H, patch), max(W, patch)), zeros added below and to the right (as the seed pads)."""
    h, w = image.shape
    return np.pad(image, ((0, max(0, patch - h)), (0, max(0, patch - w))))


def blend_window(patch: int = PATCH, overlap: int = OVERLAP) -> np.ndarray:
    """float32 (patch, patch) weights: 1 inside, ramping linearly to 0.5 / overlap at the rim over
    `overlap` pixels (all ones when overlap is 0). Two patches `patch - overlap` apart have ramps
    that sum to exactly 1 across their overlap: a crossfade, no seam."""
    if overlap == 0:
        return np.ones((patch, patch), np.float32)
    edge = np.minimum(np.arange(patch), np.arange(patch)[::-1])
    ramp = np.minimum(1.0, (edge + 0.5) / overlap).astype(np.float32)
    return np.outer(ramp, ramp)


def black_patches(patches: np.ndarray, level: float = BLACK_LEVEL) -> np.ndarray:
    """bool (N,): which of (N, P, P) patches have no pixel above `level`."""
    return patches.reshape(len(patches), -1).max(axis=1) <= level


class Stitcher:
    """Weighted average of overlapping patches into one (H, W) float32 map.

    Each patch is weighted by `blend_window`; every pixel is normalised by the weights that
    reached it, so the result is exact whatever the spacing, and 0 where no patch was added.
    """

    def __init__(self, shape: tuple[int, int], patch: int = PATCH, overlap: int = OVERLAP) -> None:
        self.shape, self.patch = tuple(shape), patch
        padded = (max(shape[0], patch), max(shape[1], patch))
        self.total = np.zeros(padded, np.float32)
        self.weight = np.zeros(padded, np.float32)
        self.window = blend_window(patch, overlap)

    def add(self, values: np.ndarray, origins: list[tuple[int, int]]) -> None:
        """values float32 (N, P, P), the patches at `origins` (N (row, col) corners)."""
        p = self.patch
        for v, (y, x) in zip(values, origins):
            self.total[y:y + p, x:x + p] += v * self.window
            self.weight[y:y + p, x:x + p] += self.window

    def result(self) -> np.ndarray:
        """float32 (H, W): the blended map, 0 where no patch was added."""
        out = np.divide(self.total, self.weight, out=np.zeros_like(self.total), where=self.weight > 0)
        return out[:self.shape[0], :self.shape[1]]


def stitch(values: np.ndarray, origins: list[tuple[int, int]], shape: tuple[int, int],
           patch: int = PATCH, overlap: int = OVERLAP) -> np.ndarray:
    """float32 (N, P, P) patches at `origins` -> float32 (H, W) (see `Stitcher`)."""
    stitcher = Stitcher(shape, patch, overlap)
    stitcher.add(values, origins)
    return stitcher.result()
