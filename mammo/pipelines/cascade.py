"""`cascade`: ACA-Atrous-ResUNet tissue map, then the lesion mask inside the breast (default) or
the fibroglandular region (`cascade:fgt`).

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

Outputs: masks for breast, adipose, fibroglandular, pectoral and lesion; the lesion probability
(float32, full size). The tissue labels are decided at the model's resolution and only the uint8
labels come to full size (`mammo.preprocess.framing.unframe_argmax`: the same labels as the argmax
of the restored probabilities, without the 200 MB float map); the four tissue probability maps are
built only on request (`run(..., probabilities=True)`, `mammo predict --probabilities`).
Artifacts as the original tool names them: `tissue_seg`, `cancer_prob`, `visualization` (its FGT
mask is `mask_fibroglandular.png`).
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
from mammo.pipelines.registry import PIPELINES
from mammo.preprocess import crop_to_breast, expand_window
from mammo.preprocess.breast import CropWindow, breast_mask
from mammo.preprocess.framing import Framing, breast_window_and_flip, frame, unframe, unframe_argmax
from mammo.viz import overlay_masks, to_rgb8, view_size

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
    return np.multiply(lesion, allowed, dtype=np.float32)  # one pass, no float64 temporary


def lesion_findings(lesion: np.ndarray, threshold: float, offset: tuple[int, int] = (0, 0)) -> list[PatchBox]:
    """One `PatchBox` per 8-connected component of `lesion >= threshold` (its bounding box,
    score = its maximum probability, as `mammo.metrics.detect_candidates` scores FROC
    candidates), highest score first.

    Args:
        lesion: float32 (h, w) in [0, 1], the image or a crop of it.
        threshold: probability at which a pixel is lesion.
        offset: (row, column) of `lesion`'s first pixel in the image, added to every box.
    """
    dy, dx = offset
    scores, boxes = candidate_boxes(lesion, threshold)
    found = [PatchBox(int(y0) + dy, int(x0) + dx, int(y1) + dy, int(x1) + dx, float(score), "lesion")
             for (y0, x0, y1, x1), score in zip(boxes, scores)]
    return sorted(found, key=lambda b: -(b.score or 0.0))


def tissue_label_image(labels: np.ndarray) -> np.ndarray:
    """uint8 (H, W) labels 0..3 -> uint8 (H, W) in the tissue-ddsm label coding: 64 background,
    128 adipose, 192 fibroglandular, 255 pectoral (one channel: a third of the bytes of a colour
    map to write)."""
    lut = np.zeros(256, np.uint8)
    lut[:len(LEVELS)] = list(LEVELS)
    return cv2.LUT(labels, lut)  # a table look-up: ~10x faster than numpy's fancy indexing


class CascadePipeline:
    """Two `TorchSegmenter`s and the geometry between them. See the module docstring."""

    name = "cascade"
    description = PIPELINES["cascade"].description

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

    def tissue_scores(self, image: np.ndarray, flip: bool) -> tuple[np.ndarray, Framing]:
        """Stage 1 on the whole image: float32 (4, h, w) class probabilities at the model's input
        size (background, adipose, fibroglandular, pectoral), and the `Framing` to restore them."""
        x, framing = frame(image, self.tissue_size, None, flip)
        return self.predict(self.tissue, x[None]), framing

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

    def run(self, image: np.ndarray, meta: ImageMeta, probabilities: bool = False) -> Result:
        """image float32 (H, W) in [0, 1] -> masks for breast, the three tissues and lesion.

        The tissue labels are the argmax of stage 1's probabilities restored to full size, decided
        without building those maps (`unframe_argmax`; the same labels, bar a pixel or so on ties);
        the sure-pectoral mask likewise (probability > `PECTORAL_CONFIDENCE`).

        Args:
            image: float32 (H, W) in [0, 1].
            meta: its `ImageMeta` (view: pectoral exclusion; file name: DM or CM).
            probabilities: also return the four tissue probability maps ("breast" = 1 -
                background, "adipose", "fibroglandular", "pectoral"; float32 (H, W) in [0, 1],
                ~50 MB each on a 4600x2800 image; `mammo predict --probabilities`). By default
                `Result.probabilities` holds only "lesion" (0 outside the stage-2 box and where
                post-processing excludes it), the map the app shows and eval's FROC reads.
        """
        timings: dict[str, float] = {}
        t = time.perf_counter()
        # The breast box is cut exactly as stage 2 was trained (classical mask, 5% margin); it is
        # also the fallback when stage 1 finds no fibroglandular tissue.
        classical = breast_mask(image)  # also the post-processing's fallback breast
        window, flip = breast_window_and_flip(image, BREAST_MARGIN, classical)
        scores, framing = self.tissue_scores(image, flip)
        labels = unframe_argmax(scores, framing)
        timings["tissue"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.region == "fgt":
            window = box_with_margin(labels == 2, self.margin) or window
        lesion = self.lesion_probability(image, window, flip, image_type(meta))
        box = np.s_[window.y0:window.y1, window.x0:window.x1]  # lesion is 0 outside: work inside
        if self.postprocess:  # off only to measure what it buys (training.measure_cascade)
            pectoral = sure_pectoral(scores, framing)[box] if shows_pectoral(meta) else None
            lesion[box] = restrict_lesion(lesion[box], (labels[box] > 0) | classical[box], pectoral)
        findings = lesion_findings(lesion[box], self.threshold, offset=(window.y0, window.x0))
        timings["lesion"] = time.perf_counter() - t
        t = time.perf_counter()
        masks = tissue_masks(labels)
        masks["lesion"] = np.zeros(image.shape, bool)
        masks["lesion"][box] = lesion[box] >= self.threshold  # as lesion_findings and the FROC count it
        maps = {**(tissue_maps(scores, framing) if probabilities else {}), "lesion": lesion}
        result = Result(masks=masks, probabilities=maps, patches=findings, timings=timings,
                        pipeline=self.name, weights_sha256=self.weights_sha256,
                        geometry={"input_shape": tuple(image.shape), "flipped": flip, "crop_box": window.box,
                                  "region": self.region, "image_type": image_type(meta)})
        result.artifacts = artifacts(image, labels, lesion, masks["lesion"])
        timings["outputs"] = time.perf_counter() - t
        return result


def sure_pectoral(scores: np.ndarray, framing: Framing) -> np.ndarray:
    """bool (H, W): stage 1's restored pectoral probability > `PECTORAL_CONFIDENCE`, decided
    without restoring it (argmax of the planes (threshold, probability), see `unframe_argmax`).

    Args:
        scores: float32 (4, h, w) stage-1 probabilities at the model's input size.
        framing: the stage-1 `Framing`.
    """
    planes = np.stack([np.full_like(scores[3], PECTORAL_CONFIDENCE), scores[3]])
    return unframe_argmax(planes, framing).view(bool)


def tissue_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 (H, W) labels 0..3 -> bool (H, W) masks: adipose, fibroglandular, pectoral, breast
    (= any tissue)."""
    masks = {name: labels == v for v, name in enumerate(TISSUE_CLASSES) if v > 0}
    masks["breast"] = labels > 0
    return masks


def tissue_maps(scores: np.ndarray, framing: Framing) -> dict[str, np.ndarray]:
    """Stage 1's probabilities restored to the input: "adipose", "fibroglandular", "pectoral" and
    "breast" (1 - background), each float32 (H, W) in [0, 1]. Built only on request: four
    full-size float maps cost ~0.1 s and ~200 MB on a 4600x2800 image."""
    maps = {name: unframe(np.ascontiguousarray(scores[v]), framing)
            for v, name in enumerate(TISSUE_CLASSES) if v > 0}
    maps["breast"] = 1.0 - unframe(np.ascontiguousarray(scores[0]), framing)
    return maps


def artifacts(image: np.ndarray, labels: np.ndarray, lesion: np.ndarray,
              lesion_mask: np.ndarray) -> dict[str, np.ndarray]:
    """What the original tool wrote: tissue map, lesion probability, side-by-side view.

    (Its FGT mask is not repeated here: `mask_fibroglandular.png` is that mask.)

    Returns:
        "tissue_seg": uint8 (H, W) (`tissue_label_image`), "cancer_prob": uint8 (H, W) = 255 x
        lesion probability, "visualization": uint8 RGB (1024, W', 3) (`visualization`).
    """
    return {"tissue_seg": tissue_label_image(labels), "cancer_prob": cv2.convertScaleAbs(lesion, alpha=255.0),
            "visualization": visualization(image, labels, lesion_mask)}


def visualization(image: np.ndarray, labels: np.ndarray, lesion: np.ndarray,
                  height: int = 1024) -> np.ndarray:
    """RGB panel: original | tissue map | lesion overlay, each `height` px tall (less when that
    would make a panel wider than `MAX_VIEW_SIDE`: a 1x5000 image asked for 20 GB)."""
    size = view_size(image.shape, height / max(1, image.shape[0]))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    lab = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    les = cv2.resize(lesion.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    tissue_classes = {n: lab == v for v, n in enumerate(TISSUE_CLASSES) if v > 0}
    tissue = overlay_masks(small, tissue_classes, alpha=0.5, outline=False)
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
