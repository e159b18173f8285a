"""P(malignant) of a region a reader boxed, from a trained ROI classifier, named by its source.

`box-lesion` outlines a region; whether it looks malignant is a different network's call. The
classifier used is `tiryaki-mass`'s VGG16 ROI classifier (trained on MIAS mass ROIs): boxes are
drawn around masses, which it was trained on. Its ROI is cut exactly as in `tiryaki-mass`
(`mammo.pipelines.tiryaki_prep`: a square `ROI_CONTEXT` x the outline's extent, at least
`ROI_MIN_FRACTION` of the breast's long side, percentile-stretched). The deepmica classifier
was trained on calcification-cluster ROIs of another framing and GLAM's local module on its own
patches, so neither is used for boxes; see README "Box prompts" for the measured AUCs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Finding
from mammo.preprocess.breast import breast_mask, crop_to_breast
from mammo.preprocess.prompt import image_key

ENTRY = "tiryaki-classifier"
SOURCE = "tiryaki-mass ROI classifier (VGG16, MIAS masses)"


class TiryakiRoiScorer:
    """`RoiScorer` of `mammo.pipelines.box_lesion`: the tiryaki-mass ROI classifier (keras; torch
    is already loaded, so the framework order is safe). `load()` builds it; the first call does
    otherwise."""

    source = SOURCE

    def __init__(self) -> None:
        self._net: Any = None
        self._breast_key = ""
        self._breast_box: Any = None
        self.sha256 = ""

    def load(self) -> Any:
        if self._net is None:
            from mammo.models.keras_tiryaki import KerasNet
            from mammo.weights import get_entry, resolve

            entry = get_entry(ENTRY)
            self._net = KerasNet.load(entry.architecture, tuple(entry.input_size), str(resolve(entry)))
            self.sha256 = entry.sha256
        return self._net

    def _breast(self, image: np.ndarray) -> Any:
        """The breast's bounding box, computed once per image (several boxes on one image)."""
        key = image_key(image)
        if key != self._breast_key:
            self._breast_box = crop_to_breast(image, breast_mask(image))[1]
            self._breast_key = key
        return self._breast_box

    def __call__(self, image: np.ndarray, meta: ImageMeta, box: tuple[float, float, float, float],
                 finding: Finding) -> tuple[float, str]:
        """P(malignant) of the ROI around `finding`'s outline (its box when the outline is empty)."""
        from mammo.pipelines.tiryaki_prep import roi_input, roi_window

        net = self.load()
        ys, xs = np.nonzero(finding.mask)
        if ys.size:
            oy, ox = finding.offset
            y0, y1, x0, x1 = oy + ys.min(), oy + ys.max() + 1, ox + xs.min(), ox + xs.max() + 1
        else:
            x0, y0, x1, y1 = box
        ry, rx, side = roi_window((y0 + y1) / 2, (x0 + x1) / 2, max(y1 - y0, x1 - x0), self._breast(image))
        roi = roi_input(image, ry, rx, side, net.input_size[0])
        return float(net(roi[None])[0, 0]), self.source
