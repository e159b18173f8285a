"""`cascade`: ACA-Atrous-ResUNet tissue map, then the lesion mask inside the fibroglandular region.

Stage 1 (weights `cascade-tissue`) labels background/adipose/fibroglandular/pectoral on the whole
image. Stage 2 (weights `cascade-lesion`) segments the lesion inside the bounding box of the
fibroglandular region plus a margin (`region="fgt"`), or inside the whole breast
(`region="breast"`); its probability is pasted back into the full image and is 0 outside the box.

The default region is "breast", chosen by measurement: on the CDD-CESM validation split
(82 images) the per-image lesion Dice is 0.458 with the breast box and 0.381 with the
fibroglandular box (`python -m training.measure_cascade --split val`): stage 1, trained on
screen-film DDSM, misses dense tissue on digital and contrast images, and the lesion with it.

Post-processing (what the seed's cascade implies): lesion probability is 0 outside the breast
(stage 1's breast or the classical breast mask) and inside the pectoral muscle where stage 1 is
sure of it (probability >= 0.97, on views that show the muscle; see `PECTORAL_CONFIDENCE`); each
8-connected component of the lesion mask is a finding, scored by its maximum probability,
and returned as a `PatchBox` (label "lesion") in `Result.patches`, best first. The FROC of
`python -m eval` scores the same components the same way.
"""

from __future__ import annotations

import re
import time

import cv2
import numpy as np

from mammo.datasets.tissue_ddsm import LEVELS, TISSUE_CLASSES
from mammo.io.meta import ImageMeta
from mammo.metrics import candidate_boxes
from mammo.pipelines.base import PatchBox, Result
from mammo.preprocess import crop_to_breast, expand_window
from mammo.preprocess.breast import CropWindow, breast_mask
from mammo.preprocess.framing import breast_window_and_flip, frame, unframe
from mammo.viz import overlay_masks, to_rgb8

REGIONS = ("fgt", "breast")
BREAST_MARGIN = 0.05  # = training/configs/cascade_lesion.yaml crop_margin


def image_type(meta: ImageMeta) -> str:
    """"CM" for a contrast-subtracted CESM image (CDD-CESM names it `_CM_`), else "DM"."""
    return "CM" if re.search(r"(^|[_-])CM([_-]|$)", meta.path.rsplit("/", 1)[-1]) else "DM"


def box_with_margin(mask: np.ndarray, margin: float) -> CropWindow | None:
    """Bounding box of a bool mask grown by `margin` x its size on each side; None when empty."""
    if not mask.any():
        return None
    return expand_window(crop_to_breast(mask, mask)[1], margin)


# Stage 1 learnt the pectoral muscle on DDSM film; on CDD-CESM it also calls some lesions near the
# chest wall "pectoral". Measured on the CDD-CESM validation split (82 images, lesion Dice at 0.5):
# breast restriction alone 0.525; excluding every pectoral pixel 0.495; only on MLO views 0.503;
# only where its probability is >= 0.9 0.507; both MLO and >= 0.97: 0.521. So the muscle is cut
# out only where stage 1 is sure of it, on views that show it.
PECTORAL_CONFIDENCE = 0.97
VIEWS_WITHOUT_PECTORAL = frozenset({"CC", "XCCL", "XCCM", "FB"})


def shows_pectoral(meta: ImageMeta) -> bool:
    """Whether the view can show the pectoral muscle (MLO, ML, LM, unknown: yes; CC views: no)."""
    return (meta.view or "").upper() not in VIEWS_WITHOUT_PECTORAL


def restrict_lesion(lesion: np.ndarray, breast: np.ndarray, pectoral: np.ndarray | None = None) -> np.ndarray:
    """Lesion probability float32 (H, W) set to 0 outside the breast and in the pectoral muscle.

    Args:
        lesion: float32 (H, W) in [0, 1].
        breast: bool (H, W): where the breast is (stage 1's breast or the classical mask: stage 1,
            trained on film, under-segments some contrast-subtracted images).
        pectoral: bool (H, W) pectoral muscle to exclude, or None.
    """
    allowed = breast if pectoral is None else breast & ~pectoral
    return np.where(allowed, lesion, np.float32(0)).astype(np.float32)


def lesion_findings(lesion: np.ndarray, threshold: float) -> list[PatchBox]:
    """One `PatchBox` per 8-connected component of `lesion >= threshold` (its bounding box,
    score = its maximum probability, as `mammo.metrics.detect_candidates` scores FROC
    candidates), highest score first."""
    scores, boxes = candidate_boxes(lesion, threshold)
    found = [PatchBox(int(y0), int(x0), int(y1), int(x1), float(score), "lesion")
             for (y0, x0, y1, x1), score in zip(boxes, scores)]
    return sorted(found, key=lambda b: -(b.score or 0.0))


def tissue_label_image(labels: np.ndarray) -> np.ndarray:
    """uint8 (H, W) in the tissue-ddsm label coding: 64 background, 128 adipose, 192
    fibroglandular, 255 pectoral (one channel: a third of the bytes of a colour map to write)."""
    return np.array(list(LEVELS), np.uint8)[labels]


class CascadePipeline:
    """Two `TorchSegmenter`s and the geometry between them. See the module docstring."""

    name = "cascade"
    description = "Tissue map (ACA-Atrous-ResUNet), then lesion mask inside the fibroglandular region."

    def __init__(self, tissue, lesion, tissue_sha: str, lesion_sha: str, region: str = "breast",
                 margin: float = 0.1, threshold: float = 0.5, tissue_size=(256, 128), lesion_size=(320, 224),
                 postprocess: bool = True, tta: bool = True):
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, not {region!r}")
        self.tissue, self.lesion = tissue, lesion
        self.postprocess, self.tta = postprocess, tta
        self.weights_sha256 = f"{tissue_sha},{lesion_sha}"
        self.region, self.margin, self.threshold = region, margin, threshold
        self.tissue_size, self.lesion_size = tuple(tissue_size), tuple(lesion_size)

    def tissue_probabilities(self, image: np.ndarray, flip: bool) -> np.ndarray:
        """float32 (H, W, 4) tissue class probabilities in the input geometry."""
        x, framing = frame(image, self.tissue_size, None, flip)
        probs = self.predict(self.tissue, x[None])  # (4, h, w)
        return unframe(np.ascontiguousarray(probs.transpose(1, 2, 0)), framing)

    def lesion_probability(self, image: np.ndarray, window: CropWindow, flip: bool, kind: str) -> np.ndarray:
        """float32 (H, W) lesion probability, 0 outside `window`."""
        x, framing = frame(image, self.lesion_size, window, flip)
        planes = np.stack([x, np.full_like(x, 1.0 if kind == "CM" else 0.0)])
        return unframe(self.lesion.predict(planes)[0], framing)

    def predict(self, model, planes: np.ndarray) -> np.ndarray:
        """float32 (C, h, w) -> (K, h, w) probabilities; with `tta`, the mean with the prediction
        on the upside-down input (training flips vertically, never left-right: the chest wall
        stays on the left). Stage 1 only: on the CDD-CESM validation split the flip lowered the
        lesion Dice (0.495 -> 0.487), while it raised the tissue mean Dice (val 0.832 -> 0.841)."""
        probs = model.predict(planes)
        if self.tta:
            probs = 0.5 * (probs + model.predict(np.ascontiguousarray(planes[:, ::-1]))[:, ::-1])
        return np.ascontiguousarray(probs)

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        """image float32 (H, W) in [0, 1] -> masks/probabilities for breast, the three tissues, lesion."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        # The breast box is cut exactly as stage 2 was trained (classical mask, 5% margin); it is
        # also the fallback when stage 1 finds no fibroglandular tissue.
        classical = breast_mask(image)  # also the post-processing's fallback breast
        window, flip = breast_window_and_flip(image, BREAST_MARGIN, classical)
        probs = self.tissue_probabilities(image, flip)
        labels = probs.argmax(axis=2).astype(np.uint8)
        timings["tissue"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.region == "fgt":
            window = box_with_margin(labels == 2, self.margin) or window
        lesion = self.lesion_probability(image, window, flip, image_type(meta))
        if self.postprocess:  # off only to measure what it buys (training.measure_cascade)
            pectoral = probs[:, :, 3] >= PECTORAL_CONFIDENCE if shows_pectoral(meta) else None
            lesion = restrict_lesion(lesion, (labels > 0) | classical, pectoral)
        findings = lesion_findings(lesion, self.threshold)
        timings["lesion"] = time.perf_counter() - t
        masks = {name: labels == v for v, name in enumerate(TISSUE_CLASSES) if v > 0}
        masks["breast"] = labels > 0
        masks["lesion"] = lesion >= self.threshold  # as lesion_findings and the FROC count it
        probabilities = {name: probs[:, :, v] for v, name in enumerate(TISSUE_CLASSES) if v > 0}
        probabilities["breast"] = 1.0 - probs[:, :, 0]
        probabilities["lesion"] = lesion
        result = Result(masks=masks, probabilities=probabilities, patches=findings, timings=timings,
                        pipeline=self.name,
                        weights_sha256=self.weights_sha256,
                        geometry={"input_shape": tuple(image.shape), "flipped": flip,
                                  "crop_box": window.box, "region": self.region, "image_type": image_type(meta)})
        result.artifacts = self.artifacts(image, labels, lesion, masks)
        return result

    def artifacts(self, image, labels, lesion, masks) -> dict[str, np.ndarray]:
        """What the original tool wrote: tissue map, FGT mask, lesion probability, side-by-side view."""
        view = visualization(image, labels, masks["lesion"])
        return {"tissue_seg": tissue_label_image(labels), "fgt_mask": masks["fibroglandular"].astype(np.uint8) * 255,
                "cancer_prob": cv2.convertScaleAbs(lesion, alpha=255.0), "visualization": view}


def visualization(image: np.ndarray, labels: np.ndarray, lesion: np.ndarray, height: int = 1024) -> np.ndarray:
    """RGB panel: original | tissue map | lesion overlay, each `height` px tall."""
    h, w = image.shape
    size = (max(1, round(w * height / h)), height)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    lab = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    les = cv2.resize(lesion.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    tissue = overlay_masks(small, {n: lab == v for v, n in enumerate(TISSUE_CLASSES) if v > 0}, alpha=0.5, outline=False)
    return np.concatenate([to_rgb8(small), tissue, overlay_masks(small, {"lesion": les}, alpha=0.4)], axis=1)


def build(region: str = "breast") -> CascadePipeline:
    """Registry builder: both stages' weights from the manifest (bundled file, else the Hub)."""
    from mammo.models.torch_segmenter import TorchSegmenter
    from mammo.weights import get_entry, resolve

    tissue_entry, lesion_entry = get_entry("cascade-tissue"), get_entry("cascade-lesion")
    tissue = TorchSegmenter(resolve(tissue_entry))
    lesion = TorchSegmenter(resolve(lesion_entry))
    return CascadePipeline(tissue, lesion, tissue_entry.sha256, lesion_entry.sha256, region=region,
                           tissue_size=tissue_entry.input_size, lesion_size=lesion_entry.input_size)
