"""What the three `tiryaki-mass` networks see: pure numpy framing shared by the pipeline and
`training.tiryaki`, so that training and inference cut, scale and normalise alike.

1. Breast: the whole mammogram letterboxed to the U-net5L size (CLAHE + median, `frame`).
2. Mass: the breast only (pixels outside the breast mask set to 0: labels, markers and film
   edges are the "background noise" the method removes), cropped to the breast's bounding box
   plus a margin ("blank regions removed"), chest wall turned to the left, letterboxed square.
3. ROI: a square around each mass, `ROI_CONTEXT` x the mass's extent (at least
   `ROI_MIN_FRACTION` of the breast box's long side), resized to the classifier size and
   contrast-stretched between its 1st and 99th percentiles.
"""

from __future__ import annotations

import cv2
import numpy as np

from mammo.preprocess.breast import CropWindow, chest_wall_side, crop_to_breast, expand_window
from mammo.preprocess.framing import Framing, frame

BREAST_MARGIN = 0.03
ROI_CONTEXT = 1.6
ROI_MIN_FRACTION = 0.08
ROI_PERCENTILES = (1.0, 99.0)


def breast_input(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Framing]:
    """float32 (H, W) in [0, 1] -> (float32 (h, w, 1) in [0, 1], framing) for U-net5L."""
    x, framing = frame(image, size)
    return x[..., None], framing


def clean_mask(binary: np.ndarray) -> np.ndarray:
    """bool (h, w) -> its largest 8-connected component with holes filled (bool (h, w)); the
    breast is one object, so specks on labels or film edges are dropped."""
    u8 = binary.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(u8, connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, bool)
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(largest, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(largest)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def mass_window(image: np.ndarray, breast: np.ndarray) -> tuple[CropWindow, bool]:
    """The breast's bounding box plus `BREAST_MARGIN`, and whether to flip (chest wall right)."""
    window = expand_window(crop_to_breast(image, breast)[1], BREAST_MARGIN)
    return window, chest_wall_side(image, breast) == "right"


def mass_input(image: np.ndarray, breast: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Framing]:
    """float32 (H, W) in [0, 1] + bool breast (H, W) -> (float32 (h, w, 1) in [0, 1], framing):
    the breast alone, cropped, chest wall left, letterboxed to `size` (the U-net++ input)."""
    window, flip = mass_window(image, breast)
    rows, cols = slice(window.y0, window.y1), slice(window.x0, window.x1)
    crop = (image[rows, cols] * breast[rows, cols]).astype(np.float32)
    x, local = frame(crop, size, None, flip)
    return x[..., None], Framing(window, flip, local.letterbox)


def roi_window(cy: float, cx: float, extent: float, breast_box: CropWindow) -> tuple[int, int, int]:
    """(y0, x0, side) of the square ROI around a mass centred at (cy, cx) whose larger extent is
    `extent` pixels; may reach past the image (`roi_input` pads with 0)."""
    long_side = max(breast_box.y1 - breast_box.y0, breast_box.x1 - breast_box.x0)
    side = int(round(max(ROI_CONTEXT * extent, ROI_MIN_FRACTION * long_side, 16)))
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def roi_input(image: np.ndarray, y0: int, x0: int, side: int, size: int) -> np.ndarray:
    """The square image[y0:y0+side, x0:x0+side] (0 outside the image), resized to (size, size),
    stretched so its `ROI_PERCENTILES` map to 0 and 1: float32 (size, size, 1) in [0, 1]."""
    h, w = image.shape
    patch = np.zeros((side, side), np.float32)
    ya, xa, yb, xb = max(0, y0), max(0, x0), min(h, y0 + side), min(w, x0 + side)
    if ya < yb and xa < xb:
        patch[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    small = cv2.resize(patch, (size, size), interpolation=interp)
    lo, hi = np.percentile(small, ROI_PERCENTILES)
    out = np.clip((small - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return out.astype(np.float32)[..., None]
