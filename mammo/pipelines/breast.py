"""`breast`: the classical breast mask and crop. No learning, no weights.

Honest baseline and the first step of every learned pipeline: threshold + largest component
(`mammo.preprocess.breast_mask`), the crop window around it, and the chest-wall side.
"""

from __future__ import annotations

import time

import numpy as np

from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Result
from mammo.pipelines.registry import PIPELINES
from mammo.preprocess import breast_mask, chest_wall_side, crop_to_breast


class BreastPipeline:
    """Breast mask and crop box for one mammogram."""

    name = "breast"
    description = PIPELINES["breast"].description
    weights_sha256 = ""

    def __init__(self, margin: int = 0) -> None:
        self.margin = margin

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        """Args: image float32 (H, W) in [0, 1], brighter = denser; meta from `read_image`.

        Returns:
            `Result` with `masks["breast"]` (bool (H, W)) and geometry: input_shape, crop_box
            (y0, x0, y1, x1), chest_wall ("left"/"right"), breast_fraction.
        """
        if image.ndim != 2:
            raise ValueError(f"expected a (H, W) image, got shape {image.shape}")
        t0 = time.perf_counter()
        mask = breast_mask(image)
        _, window = crop_to_breast(image, mask, self.margin)
        side = chest_wall_side(image, mask)
        seconds = time.perf_counter() - t0
        return Result(
            masks={"breast": mask},
            timings={"breast_mask": seconds},
            geometry={
                "input_shape": tuple(image.shape),
                "crop_box": window.box,
                "chest_wall": side,
                "breast_fraction": float(mask.mean()),
            },
            pipeline=self.name,
        )


def build() -> BreastPipeline:
    """Registry builder for `breast`."""
    return BreastPipeline()
