"""mammo.metrics: Dice/IoU conventions and the accumulator."""

from __future__ import annotations

import numpy as np
import pytest

from mammo.metrics import SegmentationMeter, dice_iou, per_class_dice_iou


def test_dice_iou_values() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5] = True          # 50 px
    b[:, :5] = True       # 50 px, overlap 25
    d, i = dice_iou(a, b)
    assert d == pytest.approx(0.5) and i == pytest.approx(25 / 75)
    assert dice_iou(a, a) == (1.0, 1.0)
    assert dice_iou(a, ~a) == (0.0, 0.0)


def test_empty_conventions() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice_iou(empty, empty) == (1.0, 1.0)   # stated: nothing to find, nothing found
    assert dice_iou(full, empty) == (0.0, 0.0)
    assert dice_iou(empty, full) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_iou(empty, np.zeros((4, 5), bool))


def test_per_class_and_meter_means_over_images() -> None:
    truth = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 1], [2, 1]])
    scores = per_class_dice_iou(pred, truth, {"a": 1, "b": 2})
    assert scores["a"][0] == pytest.approx(2 / 3) and scores["b"][0] == pytest.approx(2 / 3)
    meter = SegmentationMeter()
    meter.add("lesion", np.ones((2, 2), bool), np.ones((2, 2), bool))   # 1.0
    meter.add("lesion", np.zeros((2, 2), bool), np.ones((2, 2), bool))  # 0.0
    summary = meter.summary()
    assert summary["lesion"] == {"dice": 0.5, "iou": 0.5, "n": 2}
    assert meter.mean_dice() == 0.5
