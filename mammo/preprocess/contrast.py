"""Contrast enhancement and denoising: CLAHE, adaptive CLAHE, median filter.

Inputs and outputs are float32 (H, W) in [0, 1]. Work is done in uint16 so 16-bit DICOM
contrast is not thrown away by an 8-bit round trip.
"""

from __future__ import annotations

import cv2
import numpy as np

_U16 = 65535.0


def _to_u16(image: np.ndarray) -> np.ndarray:
    return np.clip(image * _U16 + 0.5, 0, _U16).astype(np.uint16)


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV).

    Args:
        image: float32 (H, W) in [0, 1].
        clip_limit: OpenCV clip limit (contrast cap per tile; 1 = almost no change).
        tile_grid: (rows, cols) of tiles.

    Returns:
        float32 (H, W) in [0, 1].
    """
    if clip_limit <= 0:
        raise ValueError(f"clip_limit must be > 0, got {clip_limit}")
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid[1]), int(tile_grid[0])))
    return op.apply(_to_u16(image)).astype(np.float32) / _U16


def adaptive_clip_limit(
    image: np.ndarray, mask: np.ndarray | None = None, low: float = 1.0, high: float = 4.0
) -> float:
    """Pick a CLAHE clip limit from the histogram of the breast.

    Low-contrast breasts (a narrow histogram: fatty or washed-out film) get a high clip limit,
    high-contrast ones a low limit, so they come out alike. The spread is the 5-95 percentile
    range of the pixels inside `mask` (all non-zero pixels when None); a spread of 0.5 or more
    maps to `low`, a spread of 0.1 or less to `high`, linearly in between.

    Returns:
        The clip limit, in [low, high].
    """
    values = image[mask] if mask is not None else image[image > 0]
    if values.size < 16:
        return low
    p5, p95 = np.percentile(values, [5, 95])
    t = np.clip((0.5 - (p95 - p5)) / 0.4, 0.0, 1.0)
    return float(low + t * (high - low))


def adaptive_clahe(
    image: np.ndarray, mask: np.ndarray | None = None, tile_grid: tuple[int, int] = (8, 8)
) -> tuple[np.ndarray, float]:
    """CLAHE with the clip limit chosen by `adaptive_clip_limit`.

    Returns:
        (float32 (H, W) in [0, 1], the clip limit used).
    """
    limit = adaptive_clip_limit(image, mask)
    return clahe(image, limit, tile_grid), limit


def median_filter(image: np.ndarray, ksize: int = 3) -> np.ndarray:
    """Median filter with an odd square kernel; float32 (H, W) in [0, 1] in and out.

    OpenCV's median accepts uint16 only for kernels of 3 or 5; larger kernels run in uint8.
    """
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be a positive odd number, got {ksize}")
    if ksize == 1:
        return image.astype(np.float32, copy=True)
    if ksize <= 5:
        return cv2.medianBlur(_to_u16(image), ksize).astype(np.float32) / _U16
    u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.medianBlur(u8, ksize).astype(np.float32) / 255.0


def standardize_in_mask(image: np.ndarray, mask: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Stretch the `low`-`high` percentile range of the pixels inside `mask` to [0, 1]; 0 outside.

    Why: scanners and film digitisers map the same tissue to different grey levels, and the film
    around the breast (labels, redaction boxes, grey or black background) says which scanner made
    the image. A classifier trained on several sources must not learn either; only the breast and
    its relative contrast are kept.

    Args:
        image: float32 (H, W) in [0, 1].
        mask: bool (H, W), True inside the breast; an empty mask returns zeros.

    Returns:
        float32 (H, W) in [0, 1].
    """
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    out = np.zeros(image.shape, np.float32)
    if not mask.any():
        return out
    lo, hi = np.percentile(image[mask], (low, high))
    scale = 1.0 / max(float(hi - lo), 1e-6)
    out[mask] = np.clip((image[mask] - lo) * scale, 0.0, 1.0)
    return out
