"""GLAM on several labelled sources: the breast-only input, the source-aware config and augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from mammo.io.meta import ImageMeta
from mammo.pipelines.glam import prepare_input
from mammo.preprocess.contrast import standardize_in_mask
from training.config import TrainConfig


def film_like(seed: int = 0) -> np.ndarray:
    """float32 (400, 300): a bright half-disc breast on the left, a film label in the far corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:400, :300]
    image = np.where((yy - 200) ** 2 + xx ** 2 < 180 ** 2, 0.35 + 0.3 * rng.random((400, 300)), 0.02)
    image[20:50, 240:290] = 1.0  # a label: outside the breast
    return image.astype(np.float32)


def test_standardize_in_mask_stretches_inside_and_zeroes_outside():
    image = np.linspace(0.2, 0.6, 100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    out = standardize_in_mask(image, mask)
    assert out.dtype == np.float32 and np.all(out[~mask] == 0)
    assert out[mask].min() == 0.0 and out[mask].max() == 1.0
    assert np.all(np.diff(out[0, :5]) > 0)  # order kept
    assert not standardize_in_mask(image, np.zeros_like(mask)).any()
    with pytest.raises(ValueError, match="shape"):
        standardize_in_mask(image, mask[:5])


def test_breast_only_input_hides_what_lies_outside_the_breast():
    image = film_like()
    plain, inside, _ = prepare_input(image, ImageMeta(), (256, 160), "plain")
    only, inside2, _ = prepare_input(image, ImageMeta(), (256, 160), "breast_only")
    assert np.array_equal(inside, inside2) and inside.any() and (~inside).any()
    assert np.all(only[~inside] == 0) and plain[~inside].max() > 0
    # the same breast with another grey curve (another scanner) gives nearly the same input
    other, _, _ = prepare_input(np.clip(image * 0.7 + 0.2, 0, 1).astype(np.float32), ImageMeta(), (256, 160),
                                "breast_only")
    assert float(np.abs(other - only)[inside].mean()) < 0.05
    with pytest.raises(ValueError, match="input mode"):
        prepare_input(image, ImageMeta(), (256, 160), "whole")


def test_glam_config_checks_input_mode():
    from mammo.models.torch_glam import GlamConfig, check_config

    check_config(GlamConfig(input_mode="breast_only"))
    with pytest.raises(ValueError, match="input_mode"):
        check_config(GlamConfig(input_mode="nope"))


@pytest.mark.parametrize("changes, problem", [
    ({"glam_input_mode": "whole"}, "glam_input_mode"),
    ({"glam_select": "benign"}, "glam_select"),
    ({"glam_sources": [{"dataset": "mias"}]}, "glam_sources"),
])
def test_train_config_refuses_bad_glam_fields(changes, problem):
    with pytest.raises(ValueError, match=problem):
        TrainConfig(task="glam", **changes)


def test_strong_augmentation_keeps_shape_and_range():
    from training.glam_task import build_augment

    augment = build_augment(TrainConfig(task="glam", augment="strong"))
    image = film_like(1)
    out = augment(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.float32
    assert float(out.min()) >= -0.2 and float(out.max()) <= 1.2
