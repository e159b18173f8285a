"""Resize-and-pad to a model's input size, keeping the aspect ratio, with the exact inverse.

A mask predicted at the model size (e.g. 512x256) comes back to the original size
(e.g. 4600x2800) aligned with the original pixels: `restore(predict(letterbox(x)), geom)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How an image of `original` (H, W) was scaled by `scale` and placed at (top, left)
    inside a canvas of `size` (H, W); the scaled image is `resized` (H, W)."""

    original: tuple[int, int]
    size: tuple[int, int]
    resized: tuple[int, int]
    top: int
    left: int
    scale: float


def letterbox_geometry(original: tuple[int, int], size: tuple[int, int], align: str = "center") -> Letterbox:
    """The `Letterbox` that fits `original` (H, W) into `size` (H, W) keeping the aspect ratio.

    align: "center" pads evenly on both sides; "top-left" pads only bottom/right (useful when the
        chest wall is on the left after `flip_to_canonical`).
    """
    oh, ow = original
    th, tw = size
    if min(oh, ow, th, tw) <= 0:
        raise ValueError(f"sizes must be positive: original={original}, size={size}")
    scale = min(th / oh, tw / ow)
    rh, rw = min(th, max(1, round(oh * scale))), min(tw, max(1, round(ow * scale)))
    if align == "center":
        top, left = (th - rh) // 2, (tw - rw) // 2
    elif align == "top-left":
        top, left = 0, 0
    else:
        raise ValueError(f"align must be 'center' or 'top-left', not {align!r}")
    return Letterbox((oh, ow), (th, tw), (rh, rw), top, left, scale)


def _interp(shrinking: bool, nearest: bool) -> int:
    if nearest:
        return cv2.INTER_NEAREST
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def letterbox(
    image: np.ndarray, size: tuple[int, int], align: str = "center", pad_value: float = 0.0,
    nearest: bool = False,
) -> tuple[np.ndarray, Letterbox]:
    """Resize `image` (H, W[, C]) to fit `size` (H, W), keeping the aspect ratio, and pad.

    Args:
        image: array (H, W) or (H, W, C), float32 or uint8; bool masks: pass `nearest=True`
            and a uint8 array.
        size: target (H, W).
        align: see `letterbox_geometry`.
        pad_value: value of the padding.
        nearest: nearest-neighbour interpolation (for label maps).

    Returns:
        (array of shape `size` (+C), the `Letterbox` needed by `restore`).
    """
    geom = letterbox_geometry(image.shape[:2], size, align)
    rh, rw = geom.resized
    small = cv2.resize(image, (rw, rh), interpolation=_interp(geom.scale < 1.0, nearest))
    out = np.full(tuple(size) + image.shape[2:], pad_value, dtype=image.dtype)
    out[geom.top:geom.top + rh, geom.left:geom.left + rw] = small.reshape((rh, rw) + image.shape[2:])
    return out, geom


def restore(array: np.ndarray, geom: Letterbox, nearest: bool = False) -> np.ndarray:
    """Inverse of `letterbox`: drop the padding and resize back to `geom.original`.

    Args:
        array: (size_H, size_W[, C]) model-space array (probabilities: float32; labels: uint8
            with `nearest=True`).
        geom: the `Letterbox` returned by `letterbox`.

    Returns:
        array of shape `geom.original` (+C), same dtype.
    """
    if array.shape[:2] != tuple(geom.size):
        raise ValueError(f"array shape {array.shape[:2]} does not match the letterbox size {geom.size}")
    rh, rw = geom.resized
    inner = np.ascontiguousarray(array[geom.top:geom.top + rh, geom.left:geom.left + rw])
    oh, ow = geom.original
    out = cv2.resize(inner, (ow, oh), interpolation=_interp(geom.scale > 1.0, nearest))
    return out.reshape((oh, ow) + array.shape[2:])
