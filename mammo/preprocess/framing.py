"""The model's view of an image: crop box -> canonical flip -> letterbox -> CLAHE -> median.

`frame` turns (part of) a mammogram into a model input; `unframe` maps a model output back onto
the original pixels. Training and inference both use these two functions, so what a model sees
at inference is what it saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mammo.preprocess.breast import (
    CropWindow,
    breast_mask,
    chest_wall_side,
    crop_to_breast,
    expand_window,
    uncrop,
)
from mammo.preprocess.contrast import clahe, median_filter
from mammo.preprocess.geometry import Letterbox, letterbox, restore

# Side of the output tiles `unframe_argmax` decides at once (pixels of the original image): 128 was
# the fastest of 64/128/256 on the example DICOMs (~800 tiles, a fifth of them on a label boundary).
ARGMAX_TILE = 128


@dataclass(frozen=True)
class Framing:
    """How `frame` placed the crop `window` of the original image into the model input."""

    window: CropWindow
    flipped: bool
    letterbox: Letterbox


def breast_window_and_flip(image: np.ndarray, margin: float,
                           mask: np.ndarray | None = None) -> tuple[CropWindow, bool]:
    """The breast's bounding box grown by `margin` x its size, and whether the chest wall is on
    the right (so `frame` must flip). Training and the pipelines both call this, so a crop seen
    at inference is cut as in training.

    Args:
        image: float32 (H, W) in [0, 1].
        margin: fraction of the box's height/width added on each side.
        mask: bool (H, W) `breast_mask(image)` when the caller has it already (else computed).
    """
    mask = breast_mask(image) if mask is None else mask
    window = expand_window(crop_to_breast(image, mask)[1], margin)
    return window, chest_wall_side(image, mask) == "right"


def frame(
    image: np.ndarray, size: tuple[int, int], window: CropWindow | None = None, flip: bool = False,
    clip_limit: float = 2.0, median_ksize: int = 3,
) -> tuple[np.ndarray, Framing]:
    """Crop, flip, resize-and-pad to `size`, then CLAHE and median filter.

    Contrast is enhanced after resizing: at model size it costs ~1 ms instead of ~0.3 s on a
    4600x2800 DICOM, and training (960x480 films) and inference (full-field DICOM) then see the
    same tile scale.

    Args:
        image: float32 (H, W) in [0, 1].
        size: model input (h, w).
        window: region of `image` to use (None: all of it).
        flip: mirror left-right after cropping (to put the chest wall on the left).
        clip_limit: CLAHE clip limit (0 disables CLAHE).
        median_ksize: median filter kernel (1 disables it).

    Returns:
        (float32 (h, w) in [0, 1], the `Framing` for `unframe`/`frame_mask`).
    """
    h, w = image.shape
    window = window or CropWindow(0, h, 0, w, (h, w))
    crop = np.asarray(image[window.y0:window.y1, window.x0:window.x1], np.float32)
    crop = mirror(crop) if flip else np.ascontiguousarray(crop)
    boxed, geom = letterbox(crop, size, align="center")
    if clip_limit > 0:
        boxed = clahe(boxed, clip_limit)
    if median_ksize > 1:
        boxed = median_filter(boxed, median_ksize)
    return boxed, Framing(window, flip, geom)


def frame_mask(labels: np.ndarray, framing: Framing) -> np.ndarray:
    """A label map (H, W) of the original image put through the same crop/flip/letterbox (nearest)."""
    w = framing.window
    crop = labels[w.y0:w.y1, w.x0:w.x1]
    if framing.flipped:
        crop = crop[:, ::-1]
    boxed, _ = letterbox(np.ascontiguousarray(crop, dtype=np.uint8), framing.letterbox.size, nearest=True)
    return boxed


def unframe(output: np.ndarray, framing: Framing, nearest: bool = False, fill: float = 0) -> np.ndarray:
    """Model output (h, w) or (h, w, C) -> the original image's (H, W[, C]); `fill` outside the window."""
    crop = restore(output, framing.letterbox, nearest=nearest)
    if framing.flipped:
        crop = mirror(crop)
    return uncrop(crop, framing.window, fill=fill)


def mirror(array: np.ndarray) -> np.ndarray:
    """A contiguous left-right mirrored copy of (H, W[, C]); cv2.flip for a 2-D array (the same
    values, ~2x faster than numpy's strided copy on a 4600x2800 float32 image)."""
    if array.ndim == 2 and array.dtype in (np.uint8, np.float32):
        return cv2.flip(array, 1)
    return np.ascontiguousarray(array[:, ::-1])


def unframe_argmax(scores: np.ndarray, framing: Framing, tile: int = ARGMAX_TILE) -> np.ndarray:
    """Per-pixel argmax of the model's scores as `unframe` would restore them, without building
    the restored (H, W, K) float map (200 MB for 4 classes on a 4600x2800 image).

    Bilinear interpolation is a convex combination of the 2x2 model pixels around a point, so
    where all of them share their argmax the restored argmax is that label: output tiles whose
    model pixels agree are filled with it, and only tiles crossing a label boundary are
    interpolated (float32, with cv2.resize's weights). Outside the framing window the label is 0.
    For a threshold, pass the two planes (threshold, p): the label is 1 where p > threshold.

    Args:
        scores: float32 (K, h, w), the model's output at its input size (`framing.letterbox.size`).
        framing: what `frame` returned for that input.
        tile: output tile side in pixels (speed only; the labels do not depend on it).

    Returns:
        uint8 (H, W) labels in 0..K-1, the original image's shape.
    """
    geom = framing.letterbox
    if scores.shape[1:] != tuple(geom.size):
        raise ValueError(f"scores shape {scores.shape[1:]} does not match the letterbox size {geom.size}")
    rh, rw = geom.resized
    inner = np.ascontiguousarray(scores[:, geom.top:geom.top + rh, geom.left:geom.left + rw], np.float32)
    if geom.scale > 1.0:  # `restore` shrinks with INTER_AREA here: small images, do it in full
        crop = restore(np.ascontiguousarray(scores.transpose(1, 2, 0)), geom)
        labels = crop.reshape(crop.shape[:2] + (-1,)).argmax(axis=2).astype(np.uint8)
    else:
        labels = _upsampled_argmax(inner, geom.original, tile)
    if framing.flipped:
        labels = mirror(labels)
    return uncrop(labels, framing.window, fill=0)


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize's INTER_LINEAR taps along one axis (upscaling `src` -> `dst` samples): for each
    output sample, the two source indices (int64 (dst,)) and the second one's weight (float32)."""
    scale = 1.0 / (dst / src)  # as cv2 computes it (inverse of the inverse scale)
    pos = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    weight = pos - first
    low, high = first < 0, first >= src - 1
    first[low], weight[low] = 0, 0
    first[high], weight[high] = src - 1, 0
    return first, np.minimum(first + 1, src - 1), weight.astype(np.float32)


def _tap_matrix(first: np.ndarray, second: np.ndarray, weight: np.ndarray,
                start: int, stop: int) -> tuple[int, np.ndarray]:
    """Outputs start:stop of one axis as (first source index, float32 (n_out, n_src) weights)."""
    lo = int(first[start:stop].min())
    n_src = int(second[start:stop].max()) - lo + 1
    rows = np.arange(stop - start)
    m = np.zeros((stop - start, n_src), np.float32)
    np.add.at(m, (rows, first[start:stop] - lo), 1 - weight[start:stop])
    np.add.at(m, (rows, second[start:stop] - lo), weight[start:stop])
    return lo, m


def _upsampled_argmax(inner: np.ndarray, shape: tuple[int, int], tile: int) -> np.ndarray:
    """argmax over K of cv2.resize(inner (K, rh, rw) -> `shape`, INTER_LINEAR), tile by tile."""
    labels_small = inner.argmax(axis=0).astype(np.uint8)
    (h, w), (_, rh, rw) = shape, inner.shape
    ys, xs = _linear_taps(rh, h), _linear_taps(rw, w)
    row_tiles = [(a, *_tap_matrix(*ys, a, min(a + tile, h))) for a in range(0, h, tile)]
    col_tiles = [(b, *_tap_matrix(*xs, b, min(b + tile, w))) for b in range(0, w, tile)]
    out = np.empty(shape, np.uint8)
    for a, y_lo, wy in row_tiles:
        for b, x_lo, wx in col_tiles:
            block = labels_small[y_lo:y_lo + wy.shape[1], x_lo:x_lo + wx.shape[1]]
            target = out[a:a + wy.shape[0], b:b + wx.shape[0]]
            if block.min() == block.max():
                target[...] = block.flat[0]
            else:  # horizontal pass first, then vertical, as cv2.resize does
                sub = inner[:, y_lo:y_lo + wy.shape[1], x_lo:x_lo + wx.shape[1]]
                target[...] = _first_argmax(np.matmul(wy, np.matmul(sub, wx.T)))
    return out


def _first_argmax(planes: np.ndarray) -> np.ndarray:
    """uint8 argmax over axis 0 of (K, h, w), first index on ties (as np.argmax); for small K
    several times faster than np.argmax(axis=0), which walks the planes with a stride."""
    best, labels = planes[0], np.zeros(planes.shape[1:], np.uint8)
    for k in range(1, planes.shape[0]):
        better = planes[k] > best
        labels[better] = k
        best = np.where(better, planes[k], best)
    return labels
