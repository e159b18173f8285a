"""ROIs around microcalcification clusters and their SHAP pictures, for the `deepmica` pipeline.

Boxes and windows are (y0, x0, y1, x1), end-exclusive, in the pixels of the image they index;
ROI inputs are float32 (S, S) in [0, 1]; SHAP values are float32 in logit units (> 0: towards
malignant).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_ROI_MM = 3.2      # the seed's smallest ROI side, 64 px, at CBIS-DDSM's ~0.05 mm
DETAIL_MM = 1.0       # blur of the SHAP reference: detail below ~1 mm is what the map credits

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive


def cluster_window(box: Box, shape: tuple[int, int], pixel_mm: float, min_mm: float = MIN_ROI_MM) -> Box:
    """The seed's ROI: the square of side max(box height, box width, `min_mm`) centred on `box`
    (y0, x0, y1, x1), moved inside the image; cut to the image where it is larger.

    Returns:
        (y0, x0, y1, x1), end-exclusive, inside `shape`.
    """
    y0, x0, y1, x1 = box
    side = max(y1 - y0, x1 - x0, round(min_mm / pixel_mm))
    out = []
    for lo, hi, size in ((y0, y1, shape[0]), (x0, x1, shape[1])):
        start = 0 if side >= size else int(np.clip(round((lo + hi - side) / 2), 0, size - side))
        out.append((start, min(size, start + side)))
    (ry0, ry1), (rx0, rx1) = out
    return ry0, rx0, ry1, rx1


def cluster_input(image: np.ndarray, window: Box, size: int) -> np.ndarray:
    """The classifier's input: `window` of `image`, min-max normalised (as the seed saves its
    ROIs), resized to float32 (size, size) in [0, 1]."""
    y0, x0, y1, x1 = window
    crop = image[y0:y1, x0:x1].astype(np.float32)
    lo, span = float(crop.min()), float(np.ptp(crop))
    crop = (crop - lo) / span if span > 0 else np.zeros_like(crop)
    shrink = crop.shape[0] > size or crop.shape[1] > size
    out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def blurred_reference(roi: np.ndarray, window: Box, pixel_mm: float,
                      detail_mm: float = DETAIL_MM) -> np.ndarray:
    """float32 (S, S): the ROI input without detail below `detail_mm` (Gaussian, sigma in the
    input's pixels: `detail_mm` in image pixels times the resize factor)."""
    side = max(window[2] - window[0], window[3] - window[1])
    sigma = detail_mm / pixel_mm * roi.shape[0] / side
    return cv2.GaussianBlur(roi, (0, 0), sigmaX=max(sigma, 0.5))


def shap_to_window(values: np.ndarray, window: Box) -> np.ndarray:
    """float32 (S, S) SHAP map of the classifier input -> float32 (h, w) of the ROI window, scaled
    so that its sum is unchanged (values stay in logit units per ROI). Area interpolation, because
    it keeps the mean both ways (bilinear does not when shrinking: it samples)."""
    h, w = window[2] - window[0], window[3] - window[1]
    resized = cv2.resize(values.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return resized * np.float32(values.size / resized.size)


def shap_picture(crop: np.ndarray, values: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3): the grey ROI `crop` (float (h, w) in [0, 1]) tinted red where SHAP
    `values` (h, w) push towards malignant, blue where away, opacity |value| / max |value|."""
    scale = float(np.abs(values).max())
    alpha = (np.abs(values) / scale if scale > 0 else np.zeros_like(values))[..., None]
    colour = np.where(values[..., None] > 0, np.float32([1, 0, 0]), np.float32([0, 0, 1]))
    grey = np.repeat(np.clip(crop, 0, 1)[..., None], 3, axis=2)
    return np.round(255 * (grey * (1 - alpha) + colour * alpha)).astype(np.uint8)


def paste_saliency(saliency: dict[str, np.ndarray], values: np.ndarray, window: Box) -> None:
    """Max-paste one ROI's SHAP into full-size "malignant" (positive part) and "benign" (negative
    part) maps, each over the ROI's largest |SHAP|, so in [0, 1]."""
    scale = float(np.abs(values).max())
    if scale == 0:
        return
    y0, x0, y1, x1 = window
    for name, part in (("malignant", values), ("benign", -values)):
        region = saliency[name][y0:y1, x0:x1]
        np.maximum(region, np.clip(part / scale, 0, 1), out=region)
