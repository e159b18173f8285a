"""Sizes of a segmented finding: area and largest diameter, in pixels and, with a pixel
spacing, in millimetres (pure numpy/OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Size:
    """area_px: pixels in the mask; diameter_px: the largest distance between two of its pixel
    centres (maximum Feret diameter, from the convex hull); the `_mm` twins use the pixel
    spacing (None when it is unknown)."""

    area_px: int
    diameter_px: float
    area_mm2: float | None
    diameter_mm: float | None


def largest_diameter(points_yx: np.ndarray) -> float:
    """The largest distance between any two of `points_yx` (float (N, 2)); 0 for fewer than two."""
    if len(points_yx) < 2:
        return 0.0
    hull = cv2.convexHull(points_yx[:, ::-1].astype(np.float32)).reshape(-1, 2)
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max())


def mask_size(mask: np.ndarray, spacing_mm: tuple[float, float] | None) -> Size:
    """Area and largest diameter of bool (H, W) `mask` (all its pixels, connected or not).

    Args:
        spacing_mm: (row, column) pixel spacing in mm, or None (sizes in pixels only). Rows and
            columns are scaled apart, so an anisotropic spacing gives the true diameter.
    """
    ys, xs = np.nonzero(mask)
    area = int(ys.size)
    points = np.stack([ys, xs], axis=1).astype(np.float64)
    diameter_px = largest_diameter(points)
    if spacing_mm is None:
        return Size(area, diameter_px, None, None)
    dy, dx = (float(v) for v in spacing_mm)
    return Size(area, diameter_px, area * dy * dx, largest_diameter(points * [dy, dx]))
