"""Every resize of a picture made for viewing is safe for any image shape: no side of 0 px (cv2's
"inv_scale_x > 0 in resize" on a 1x5000 image), no picture larger than `MAX_VIEW_SIDE` (cascade's
1024 px tall panel of a 1x5000 image asked for 20 GB). Each function is called directly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mammo import demo
from mammo.export import make_overlay
from mammo.io import ImageMeta
from mammo.pipelines.base import PatchBox, Result
from mammo.pipelines.cascade import visualization
from mammo.viz import MAX_VIEW_SIDE, downscale_for_view, to_rgb8, view_size

ODD_SHAPES = [(1, 1), (1, 5000), (5000, 1), (3, 3), (64, 64)]


def _image(shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def _mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[: max(1, shape[0] // 2), : max(1, shape[1] // 2)] = True
    return mask


def _fits(picture: np.ndarray, max_side: int) -> bool:
    """uint8 RGB, no empty side, long side at most `max_side`."""
    h, w = picture.shape[:2]
    return picture.dtype == np.uint8 and picture.shape[2] == 3 and min(h, w) >= 1 and max(h, w) <= max_side


@pytest.fixture(autouse=True)
def _no_numpy_warnings():
    """A division by an empty size or a NaN cast would warn: make it fail instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("scale", [1e-6, 0.2, 1.0, 1024.0])
def test_view_size_has_no_empty_side_and_is_capped(shape: tuple[int, int], scale: float) -> None:
    w, h = view_size(shape, scale)
    assert 1 <= w <= MAX_VIEW_SIDE and 1 <= h <= MAX_VIEW_SIDE
    assert view_size(shape, scale, 100) <= (100, 100)
    if scale <= 1.0:
        assert w <= shape[1] and h <= shape[0]  # a shrink never enlarges a side


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_downscale_for_view(shape: tuple[int, int]) -> None:
    rgb = to_rgb8(_image(shape))
    for side in (1, 2, 2048):
        small = downscale_for_view(rgb, side)
        assert _fits(small, max(side, 1)) or small is rgb
        assert max(small.shape[:2]) <= max(side, max(shape)) and min(small.shape[:2]) >= 1


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_make_overlay(shape: tuple[int, int]) -> None:
    masks = {"breast": _mask(shape), "lesion": _mask(shape)}
    for side in (16, 2048):
        overlay = make_overlay(_image(shape), masks, side)
        assert _fits(overlay, side)
        assert overlay.shape[:2] == (min(shape[0], side), min(shape[1], side)) or max(shape) > side


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_cascade_visualization(shape: tuple[int, int]) -> None:
    """Three panels side by side, each 1024 px tall unless that would make it wider than
    MAX_VIEW_SIDE; a 1x5000 image gives 1 x 3*4096, not 1024 x 15 million."""
    labels = np.zeros(shape, np.uint8)
    labels[_mask(shape)] = 2
    panel = visualization(_image(shape), labels, _mask(shape))
    h, w = panel.shape[:2]
    assert panel.dtype == np.uint8 and h >= 1 and w % 3 == 0
    assert h <= 1024 and w // 3 <= MAX_VIEW_SIDE
    if shape == (64, 64):
        assert panel.shape == (1024, 3 * 1024, 3)


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_demo_views(shape: tuple[int, int]) -> None:
    """The page's overlay, heatmaps and patch map (the app's /predict and /compare)."""
    image = _image(shape)
    result = Result(masks={"lesion": _mask(shape)}, probabilities={"lesion": image},
                    saliency={"malignant": image}, patches=[PatchBox(0, 0, 1, 1, 0.5)])
    seconds = {"read": 0.0, "load": 0.0, "run": 0.0}
    pred = demo.Prediction("fake", image, ImageMeta(), result, "odd.png", seconds)
    assert _fits(demo.overlay_view(pred), demo.DISPLAY_SIDE)
    views = demo.map_views(pred)
    assert len(views) == 2
    for picture, _ in views:  # the colour bar adds a panel on the right
        assert picture.dtype == np.uint8 and min(picture.shape[:2]) >= 1
        assert picture.shape[0] <= demo.DISPLAY_SIDE
    patch_map = demo.patch_view(pred)
    assert patch_map is not None and _fits(patch_map, demo.DISPLAY_SIDE)
