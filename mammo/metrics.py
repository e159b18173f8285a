"""Segmentation metrics shared by training, `eval/` and the app: plain functions + an accumulator.

Conventions (stated once, used everywhere):
- Per image, per class. Dice = 2|P∩T| / (|P|+|T|), IoU = |P∩T| / |P∪T|.
- Empty prediction and empty truth: Dice = IoU = 1 (the model correctly found nothing).
  Empty truth and a non-empty prediction (or the reverse): 0.
- Dataset numbers are the mean over images of the per-image values (not pooled pixels).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool masks of the same shape (any number of dims)."""
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")
    p, t = pred.astype(bool), truth.astype(bool)
    inter = int(np.count_nonzero(p & t))
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / (total - inter)


def per_class_dice_iou(pred_labels: np.ndarray, true_labels: np.ndarray,
                       classes: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Dice and IoU per class of two integer label maps (H, W); `classes` maps name -> label value."""
    return {name: dice_iou(pred_labels == v, true_labels == v) for name, v in classes.items()}


class SegmentationMeter:
    """Accumulates per-image Dice/IoU per class; `summary()` gives the means over images."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"dice": [], "iou": []})

    def add(self, name: str, pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
        """Score one image's mask for class `name`; returns (dice, iou)."""
        d, i = dice_iou(pred, truth)
        self.values[name]["dice"].append(d)
        self.values[name]["iou"].append(i)
        return d, i

    def summary(self) -> dict[str, dict[str, float]]:
        """{class: {"dice": mean, "iou": mean, "n": images}}."""
        return {name: {"dice": float(np.mean(v["dice"])), "iou": float(np.mean(v["iou"])),
                       "n": len(v["dice"])} for name, v in self.values.items()}

    def mean_dice(self, names: list[str] | None = None) -> float:
        """Mean over classes (`names`, default all) of the per-class mean Dice."""
        summary = self.summary()
        keys = names if names is not None else list(summary)
        return float(np.mean([summary[k]["dice"] for k in keys])) if keys else float("nan")
