"""Preprocessing: breast mask/crop on real mammograms, orientation, contrast, exact resize inverse."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mammo.preprocess import (
    adaptive_clahe,
    adaptive_clip_limit,
    breast_mask,
    chest_wall_side,
    clahe,
    crop_to_breast,
    flip_to_canonical,
    letterbox,
    median_filter,
    restore,
    uncrop,
    unflip,
)


def _synthetic_breast(h: int = 400, w: int = 240, side: str = "left") -> np.ndarray:
    """A half-ellipse 'breast' against the `side` edge, plus a bright label away from it."""
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if side == "left" else w - 1
    inside = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - cx) / (0.6 * w)) ** 2 <= 1
    img = np.where(inside, 0.55 + 0.1 * np.sin(yy / 7.0), 0.02).astype(np.float32)
    lx = w - 40 if side == "left" else 10
    img[10:30, lx:lx + 25] = 1.0  # a marker letter, not breast
    return img


def test_breast_mask_drops_label_and_keeps_breast() -> None:
    img = _synthetic_breast()
    mask = breast_mask(img)
    assert mask.dtype == bool and mask.shape == img.shape
    assert not mask[10:30, 200:225].any(), "the label outside the breast must be removed"
    truth = img > 0.3
    truth[10:30, 200:225] = False
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.97


@pytest.mark.parametrize("side", ["left", "right"])
def test_chest_wall_side_and_flip_roundtrip(side: str) -> None:
    img = _synthetic_breast(side=side)
    assert chest_wall_side(img) == side
    canon, flipped = flip_to_canonical(img)
    assert flipped == (side == "right")
    assert chest_wall_side(canon) == "left"
    np.testing.assert_array_equal(unflip(canon, flipped), img)


def test_crop_uncrop_roundtrip() -> None:
    img = _synthetic_breast()
    mask = breast_mask(img)
    crop, win = crop_to_breast(img, mask, margin=5)
    assert crop.shape == (win.y1 - win.y0, win.x1 - win.x0)
    back = uncrop(crop, win)
    assert back.shape == img.shape
    np.testing.assert_array_equal(back[mask], img[mask])
    with pytest.raises(ValueError, match="does not match"):
        uncrop(crop[:-1], win)


def test_real_dicoms_breast_mask_side_matches_laterality(cbis_dicoms) -> None:
    """CBIS-DDSM: L images have the chest wall on the left, R on the right; masks are plausible."""
    for path in cbis_dicoms:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array.astype(np.float32)
        img = (raw - raw.min()) / (raw.max() - raw.min())
        mask = breast_mask(img)
        assert 0.1 < mask.mean() < 0.5, (path, mask.mean())
        expected = {"L": "left", "R": "right"}[ds.Laterality]
        assert chest_wall_side(img, mask) == expected, path
        # the mask holds the bright tissue, not the dark background
        assert img[mask].mean() > 3 * img[~mask].mean()


def test_clahe_and_adaptive() -> None:
    rng = np.random.default_rng(0)
    flat = (0.45 + 0.05 * rng.random((256, 256))).astype(np.float32)
    wide = rng.random((256, 256)).astype(np.float32)
    assert adaptive_clip_limit(flat) > adaptive_clip_limit(wide)
    out = clahe(flat, 2.0)
    assert out.dtype == np.float32 and out.shape == flat.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > flat.std(), "CLAHE must stretch a low-contrast image"
    enhanced, limit = adaptive_clahe(flat)
    assert enhanced.shape == flat.shape and 1.0 <= limit <= 4.0
    with pytest.raises(ValueError):
        clahe(flat, 0)


def test_median_filter_removes_salt() -> None:
    img = np.full((64, 64), 0.5, np.float32)
    img[10, 10] = 1.0
    for k in (3, 7):
        out = median_filter(img, k)
        assert out[10, 10] == pytest.approx(0.5, abs=1 / 255)
    with pytest.raises(ValueError):
        median_filter(img, 4)


@pytest.mark.parametrize("align", ["center", "top-left"])
def test_letterbox_restore_full_size(align: str) -> None:
    """A mask predicted at 512x256 comes back to 4600x2800 aligned with the original."""
    h, w = 4600, 2800
    truth = np.zeros((h, w), np.uint8)
    truth[1000:3000, 400:1600] = 1
    small, geom = letterbox(truth, (512, 256), align=align, nearest=True)
    assert small.shape == (512, 256)
    back = restore(small, geom, nearest=True)
    assert back.shape == (h, w)
    inter = np.logical_and(back, truth).sum()
    dice = 2 * inter / (back.sum() + truth.sum())
    assert dice > 0.99
    ys, xs = np.nonzero(back)
    assert abs(ys.min() - 1000) < 12 and abs(xs.min() - 400) < 12  # < 1.5 model pixels off


def test_letterbox_float_and_channels() -> None:
    img = np.random.default_rng(1).random((300, 200, 3)).astype(np.float32)
    boxed, geom = letterbox(img, (128, 128))
    assert boxed.shape == (128, 128, 3)
    assert geom.resized[0] == 128 and geom.left > 0
    back = restore(boxed, geom)
    assert back.shape == img.shape
    with pytest.raises(ValueError, match="does not match"):
        restore(boxed[:-1], geom)


def test_breast_mask_matches_tissue_ddsm_labels() -> None:
    """Breast = every labelled tissue class; measured: mean Dice 0.979, min 0.926 (60 images)."""
    from conftest import require_data

    from mammo.datasets import load_dataset

    dices = []
    for sample in load_dataset("tissue-ddsm", require_data("tissue_ddsm")):
        mask, truth = breast_mask(sample.image), sample.masks["breast"]
        dices.append(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))
    print(f"tissue-ddsm breast Dice mean {np.mean(dices):.4f} min {np.min(dices):.4f}")
    assert np.mean(dices) > 0.97 and np.min(dices) > 0.9


def test_chest_wall_side_agrees_with_cdd_cesm_names() -> None:
    """Digital mammograms with a black background: measured 507 of 519 agree with the file name."""
    from conftest import require_data

    from mammo.io import read_image

    files = sorted((require_data("cdd_cesm") / "images").glob("*.jpg"))
    agree = 0
    for path in files:
        image, meta = read_image(path)
        agree += chest_wall_side(image) == {"L": "left", "R": "right"}[meta.laterality]
    print(f"chest-wall side agrees with the file name on {agree}/{len(files)}")
    assert agree / len(files) > 0.96
