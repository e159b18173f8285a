"""The five panels the GLAM authors' tool draws per image, side by side in one picture.

1. the input, with the ground-truth outlines when a segmentation is given (green benign, red
   malignant); 2. the patch map (the selected patches as blue squares); 3. the benign saliency;
4. the malignant saliency; 5. the selected patches themselves, stacked.
"""

from __future__ import annotations

import cv2
import numpy as np

from mammo.pipelines.base import Result
from mammo.viz import draw_boxes, heatmap_overlay, patch_labels, to_rgb8

TRUTH_COLORS = {"benign": (40, 230, 80), "malignant": (255, 40, 40)}
PATCH_COLOR = (40, 120, 255)
TITLE_HEIGHT = 36


def _fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)


def _titled(rgb: np.ndarray, title: str) -> np.ndarray:
    strip = np.full((TITLE_HEIGHT, rgb.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, title, (6, TITLE_HEIGHT - 11), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    return np.concatenate([strip, rgb], axis=0)


def truth_panel(image: np.ndarray, truth: dict[str, np.ndarray]) -> np.ndarray:
    """The input (H, W) with each class's bool (H, W) outline in its colour."""
    rgb = to_rgb8(image)
    thickness = max(2, round(max(image.shape) / 300))
    for name, mask in truth.items():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, TRUTH_COLORS.get(name, (255, 255, 0)), thickness)
    return rgb


def patches_panel(image: np.ndarray, boxes: list[tuple[int, int, int, int]], height: int) -> np.ndarray:
    """The selected patches, each as a square tile, stacked into a column of `height` pixels."""
    if not boxes:
        return np.full((height, height // 4, 3), 255, np.uint8)
    side = height // len(boxes)
    tiles = []
    for y0, x0, y1, x1 in boxes:
        crop = image[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        tile = cv2.resize(to_rgb8(crop), (side, side), interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, 0), (side - 1, side - 1), PATCH_COLOR, 2)
        tiles.append(tile)
    column = np.concatenate(tiles, axis=0)
    return np.pad(column, ((0, height - column.shape[0]), (0, 0), (0, 0)), constant_values=255)


def five_panels(image: np.ndarray, result: Result, truth: dict[str, np.ndarray] | None = None,
                height: int = 1024) -> np.ndarray:
    """The authors' visualisation of one GLAM result: uint8 RGB (height + title strip, W_total, 3).

    Args:
        image: float32 (H, W) in [0, 1], the image `result` was computed on.
        result: a `glam` pipeline result (saliency "benign"/"malignant", patches, scores).
        truth: class -> bool (H, W) ground truth, drawn when given.
    """
    boxes = [(p.y0, p.x0, p.y1, p.x1) for p in result.patches]
    scores = result.scores
    panels = [
        (truth_panel(image, truth or {}), "input" + (" + truth" if truth else "")),
        (draw_boxes(to_rgb8(image), boxes, PATCH_COLOR, labels=patch_labels(result.patches)), "patch map"),
        (heatmap_overlay(image, result.saliency["benign"]), f"benign {scores.get('benign', 0):.2f}"),
        (heatmap_overlay(image, result.saliency["malignant"]), f"malignant {scores.get('malignant', 0):.2f}"),
    ]
    fitted = [_titled(_fit_height(rgb, height), title) for rgb, title in panels]
    fitted.append(_titled(patches_panel(image, boxes, height), "patches"))
    gap = np.full((height + TITLE_HEIGHT, 8, 3), 255, np.uint8)
    out = [fitted[0]]
    for panel in fitted[1:]:
        out += [gap, panel]
    return np.concatenate(out, axis=1)
