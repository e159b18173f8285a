"""`deepmica`: microcalcification masks on 256x256 patches, clusters, P(malignant) per cluster, SHAP.

The method of DeepMiCa (Gerbasi et al., CMPB 2023; github.com/ales-git/DeepMiCa), step by step:

0. Working pixel size: the image is resampled to the pixel side the networks were trained at
   (`work_mm`: the segmenter's weights state it; 0.2 mm, MIAS's, for the shipped ones) by area
   averaging (`to_pixel_size`); every output is mapped back to the input's pixels (`Scale`).
1. Preprocessing (seed: `Step1_Preprocessing`): labels and background off, CLAHE
   (`mammo.preprocess.microcalc.enhance`, tiles sized in mm).
2. Segmentation (seed: `Step2_Segmentation`): the breast is tiled into 256x256 patches, each
   segmented by a UNet (one logit per pixel), the patches stitched back
   (`mammo.preprocess.tiling`). The seed pads the image to a multiple of 256 and tiles without
   overlap; here patches overlap by `OVERLAP` pixels and are crossfaded with linear ramps, so no
   pixel's value comes only from the rim of a patch, where the UNet sees zero padding instead of
   context. Patches that are entirely black (outside the breast after step 1) are not run: the
   seed removes them from its training set (`reduce_patches.py`) and the network has nothing to
   find there. A pixel is calcification where the stitched probability is >= `threshold` (the
   seed's 0.5) inside the breast.
3. Clusters: `mammo.preprocess.microcalc.score_clusters` (>= 3 calcifications within 5 mm; the
   BI-RADS reasoning is there), each with a confidence (the sum of its members' peak
   probabilities); those >= `min_confidence`, at most `max_clusters`, most confident first.
4. Classification (seed: `Step3_Classification/_01_CutROI/cut_ROI.py`, `CustomDataset.py`): per
   cluster, the smallest square around its bounding box (at least `MIN_ROI_MM` a side, the seed's
   64 px at CBIS-DDSM's ~50 µm), kept inside the image, cut from the step-1 image, min-max
   normalised, resized to the classifier's input (224), one logit -> P(malignant)
   (`mammo.pipelines.deepmica_roi`).
5. Explanation, only when asked (`explain=True`; it costs seconds per cluster, see
   `SHAP_SAMPLES`): a SHAP map per ROI from `shap.GradientExplainer` (expected gradients; the seed
   used DeepExplainer on its test set). The reference image is the ROI itself blurred at
   `DETAIL_MM` (microcalcifications are < 1 mm by definition), so the map credits the fine detail
   the tissue around it does not explain; `shap_background` replaces it with a set of ROIs.

Pixel size: the DICOM's PixelSpacing (or ImagerPixelSpacing); else `pixel_mm` given to the
pipeline; else `FIELD_MM` / the image's long side, which is 0.2 mm for a 1024-pixel MIAS film
and ~0.045 mm for a 4500-pixel CBIS-DDSM film (their DICOMs carry no spacing).

Outputs, in the input image's pixels: masks "breast" and "calcification", probability
"calcification" (float32, 0 outside the breast), one `PatchBox` per cluster (its bounding box,
label "cluster k", score P(malignant)), scores {"malignant": the highest cluster's P(malignant)
(0 with no cluster), "benign": 1 - that}, `geometry["clusters"]` (box, roi, count, centroid,
confidence, malignant, and shap_sum when explained), `geometry["work_mm"]`, `["work_shape"]`. With
`explain`: saliency "malignant" / "benign" (each ROI's positive / negative SHAP over its largest
|SHAP|, in [0, 1], pasted into its ROI window; the larger value where windows overlap), and the
artifacts `shap_cluster<k>` (uint8 RGB, the ROI's shape: red pushes towards malignant, blue away).
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import cv2
import numpy as np

from mammo.io.meta import ImageMeta
from mammo.pipelines.base import PatchBox, Result
from mammo.pipelines.registry import PIPELINES
from mammo.pipelines.deepmica_roi import (
    Box,
    blurred_reference,
    cluster_input,
    cluster_window,
    paste_saliency,
    shap_picture,
    shap_to_window,
)
from mammo.preprocess.breast import breast_mask
from mammo.preprocess.microcalc import Cluster, enhance, score_clusters, to_pixel_size
from mammo.preprocess.tiling import OVERLAP, PATCH, Stitcher, black_patches, pad_to_patch, tile_grid

NAME = "deepmica"
ENTRIES = ("deepmica-seg", "deepmica-classifier")
THRESHOLD = 0.5       # the seed's
SEG_CHUNK = 32        # patches cut and stitched at a time (bounds memory on 4000x3000 films)
FIELD_MM = 204.8      # long side of the film when no pixel size is known: 1024 px x 0.2 mm (MIAS)
WORK_MM = 0.2         # the networks' pixel side when their weights do not state it (MIAS's, as shipped)
MIN_CONFIDENCE = 0.0  # clusters below this `cluster_confidence` are not reported
MAX_CLUSTERS = 16     # classified per image, highest confidence first
SHAP_SAMPLES = 32     # per ROI: 12-16 s on 2 busy CPU cores (EfficientNet-Lite0, 224 px); noise ~ 1/sqrt(n)


class Net(Protocol):
    """What the pipeline needs of a network (`mammo.models.torch_deepmica.TorchNet`)."""

    input_size: int | None

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow warnings for large |x|."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float32)))).astype(np.float32)


def segment(net: Net, image: np.ndarray, patch: int = PATCH, overlap: int = OVERLAP,
            chunk: int = SEG_CHUNK) -> tuple[np.ndarray, dict[str, int]]:
    """Tile `image` (float32 (H, W) in [0, 1]), run `net` on the patches that are not black,
    stitch the probabilities.

    Returns:
        (float32 (H, W) probability in [0, 1], 0 where only black patches lie;
        {"patches_run": n, "patches_skipped": m}).
    """
    padded = pad_to_patch(image, patch)
    stitcher = Stitcher(image.shape, patch, overlap)
    grid = tile_grid(image.shape, patch, overlap)
    counts = {"patches_run": 0, "patches_skipped": 0}
    for i in range(0, len(grid), chunk):
        origins = grid[i:i + chunk]
        patches = np.stack([padded[y:y + patch, x:x + patch] for y, x in origins])
        black = black_patches(patches)
        counts["patches_skipped"] += int(black.sum())
        if black.all():
            continue
        logits = net(patches[~black][:, None])[:, 0]
        stitcher.add(sigmoid(logits), [o for o, b in zip(origins, black) if not b])
        counts["patches_run"] += int((~black).sum())
    return stitcher.result(), counts


# --- pixel size, ROIs, SHAP pictures -----------------------------------------------------------

def pixel_size(meta: ImageMeta, shape: tuple[int, int], default: float | None = None) -> tuple[float, str]:
    """(pixel side in mm, where it came from): the DICOM spacing (mean of row and column), else
    `default`, else `FIELD_MM` / the long side (see the module docstring)."""
    if meta.pixel_spacing_mm:
        return float(np.mean(meta.pixel_spacing_mm)), meta.sources.get("pixel_spacing_mm", "meta")
    if default is not None:
        return float(default), "pipeline default"
    return FIELD_MM / max(shape), "image size"


# --- the pipeline ------------------------------------------------------------------------------

class DeepMicaPipeline:
    """UNet on patches -> clusters -> ROI classifier (-> SHAP). See the module docstring.

    Args:
        seg_net: (N, 1, 256, 256) float32 in [0, 1] -> (N, 1, 256, 256) float32 logits.
        classifier: (N, 1, S, S) float32 in [0, 1] -> (N, 1) float32 logits of malignant, with
            `input_size` S; for `explain`, also `explain(x, background, nsamples)` -> SHAP
            values shaped like x (`TorchNet`).
        pixel_mm: pixel side to use when the image does not state it (None: from its size).
        explain: compute the SHAP maps on every `run` (a `run` may override it).
        work_mm: the pixel side the networks were trained at (the image is resampled to it).
        min_confidence: clusters scoring less (`cluster_confidence`) are not reported.
        max_clusters: at most this many clusters, highest confidence first, are reported.
        shap_background: float32 (B, S, S) reference ROIs for SHAP (None: each ROI blurred).
    """

    name = NAME
    description = PIPELINES[NAME].description

    def __init__(self, seg_net: Net, classifier: Net, pixel_mm: float | None = None, explain: bool = False,
                 weights_sha256: str = "", threshold: float = THRESHOLD, overlap: int = OVERLAP,
                 work_mm: float = WORK_MM, min_confidence: float = MIN_CONFIDENCE,
                 max_clusters: int = MAX_CLUSTERS, shap_background: np.ndarray | None = None,
                 shap_samples: int = SHAP_SAMPLES) -> None:
        self.seg_net, self.classifier = seg_net, classifier
        self.pixel_mm, self.explain, self.weights_sha256 = pixel_mm, explain, weights_sha256
        self.threshold, self.overlap, self.work_mm = threshold, overlap, work_mm
        self.min_confidence, self.max_clusters = min_confidence, max_clusters
        self.shap_background, self.shap_samples = shap_background, shap_samples

    def classify(self, enhanced: np.ndarray, windows: list[Box]) -> tuple[np.ndarray, list[float]]:
        """(float32 (N, S, S) ROI inputs, P(malignant) of each) for the ROI `windows`."""
        size = int(self.classifier.input_size or 224)
        rois = np.stack([cluster_input(enhanced, w, size) for w in windows])
        return rois, [float(p) for p in sigmoid(self.classifier(rois[:, None])[:, 0])]

    def shap_values(self, rois: np.ndarray, windows: list[Box], pixel_mm: float) -> list[np.ndarray]:
        """float32 (S, S) SHAP values of each ROI input (`windows` and `pixel_mm`: working pixels)."""
        out = []
        for k, (roi, window) in enumerate(zip(rois, windows)):
            background = self.shap_background if self.shap_background is not None else \
                blurred_reference(roi, window, pixel_mm)[None]
            values = self.classifier.explain(roi[None, None], background[:, None], nsamples=self.shap_samples,
                                             seed=k)
            out.append(values[0, 0])
        return out

    def run(self, image: np.ndarray, meta: ImageMeta, explain: bool | None = None) -> Result:
        """image float32 (H, W) in [0, 1] -> `Result` in the image's pixels (see the module docstring).

        Args:
            explain: compute the SHAP maps (None: the pipeline's `explain`).
        """
        timings: dict[str, float] = {}
        t = time.perf_counter()
        pixel_mm, source = pixel_size(meta, image.shape, self.pixel_mm)
        work = to_pixel_size(image, pixel_mm, self.work_mm)
        scale = Scale(image.shape, work.shape)
        work_mm = pixel_mm * image.shape[0] / work.shape[0]  # exact after rounding the size
        breast = breast_mask(work)
        enhanced = enhance(work, work_mm, breast)
        t = lap(timings, "preprocess", t)
        prob, counts = segment(self.seg_net, enhanced, overlap=self.overlap)
        prob *= breast
        calcification = prob >= self.threshold
        t = lap(timings, "segment", t)
        found = [(c, s) for c, s in score_clusters(calcification, prob, work_mm) if s >= self.min_confidence]
        kept = found[:self.max_clusters]
        windows = [cluster_window(c.box, work.shape, work_mm) for c, _ in kept]
        t = lap(timings, "cluster", t)
        rois, malignant = self.classify(enhanced, windows) if kept else (np.zeros((0, 1, 1)), [])
        t = lap(timings, "classify", t)
        top = max(malignant, default=0.0)
        boxes = [scale.box(c.box) for c, _ in kept]
        result = Result(
            masks={"breast": scale.mask(breast), "calcification": scale.mask(calcification)},
            probabilities={"calcification": scale.map(prob)},
            patches=[PatchBox(*b, score=p, label=f"cluster {k + 1}") for k, (b, p) in enumerate(zip(boxes, malignant))],
            scores={"malignant": top, "benign": 1.0 - top}, timings=timings, pipeline=self.name,
            weights_sha256=self.weights_sha256,
            geometry={"input_shape": tuple(image.shape), "crop_box": (0, 0, *image.shape), "flipped": False,
                      "pixel_mm": pixel_mm, "pixel_mm_source": source, "work_mm": work_mm,
                      "work_shape": tuple(work.shape), "patch": PATCH, "overlap": self.overlap, **counts,
                      "threshold": self.threshold, "min_confidence": self.min_confidence,
                      "clusters_found": len(found),
                      "clusters": [cluster_record(c, s, b, scale.box(w), scale, p)
                                   for (c, s), b, w, p in zip(kept, boxes, windows, malignant)]})
        if self.explain if explain is None else explain:
            self.add_explanations(result, enhanced, rois, windows, work_mm, scale)
            lap(timings, "explain", t)
        return result

    def add_explanations(self, result: Result, enhanced: np.ndarray, rois: np.ndarray, windows: list[Box],
                         work_mm: float, scale: Scale) -> None:
        """SHAP saliency maps, `shap_cluster<k>` pictures and each cluster's `shap_sum`, in the
        input image's pixels (`windows`: working pixels)."""
        shape = result.masks["breast"].shape
        result.saliency = {"malignant": np.zeros(shape, np.float32), "benign": np.zeros(shape, np.float32)}
        for k, (values, window) in enumerate(zip(self.shap_values(rois, windows, work_mm), windows)):
            y0, x0, y1, x1 = box = scale.box(window)
            mapped = shap_to_window(values, box)
            paste_saliency(result.saliency, mapped, box)
            crop = cv2.resize(enhanced[window[0]:window[2], window[1]:window[3]], (x1 - x0, y1 - y0))
            result.artifacts[f"shap_cluster{k + 1}"] = shap_picture(crop, mapped)
            result.geometry["clusters"][k]["shap_sum"] = float(values.sum())


class Scale:
    """Maps working-resolution pixels back to the input image's: (h, w) -> (H, W)."""

    def __init__(self, shape: tuple[int, int], work_shape: tuple[int, int]) -> None:
        self.shape, self.work_shape = tuple(shape), tuple(work_shape)
        self.fy, self.fx = shape[0] / work_shape[0], shape[1] / work_shape[1]

    def box(self, box: Box) -> Box:
        """(y0, x0, y1, x1) end-exclusive, working pixels -> input pixels, inside the image."""
        y0, x0, y1, x1 = box
        h, w = self.shape
        return (min(h - 1, int(y0 * self.fy)), min(w - 1, int(x0 * self.fx)),
                min(h, max(int(y0 * self.fy) + 1, math.ceil(y1 * self.fy))),
                min(w, max(int(x0 * self.fx) + 1, math.ceil(x1 * self.fx))))

    def point(self, row: float, col: float) -> tuple[float, float]:
        """A (row, col) position (pixel centres) in input pixels."""
        return (row + 0.5) * self.fy - 0.5, (col + 0.5) * self.fx - 0.5

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """bool (h, w) -> bool (H, W), nearest neighbour."""
        if self.shape == self.work_shape:
            return mask
        return cv2.resize(mask.astype(np.uint8), self.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)

    def map(self, values: np.ndarray) -> np.ndarray:
        """float32 (h, w) -> float32 (H, W), bilinear."""
        if self.shape == self.work_shape:
            return values
        return cv2.resize(values, self.shape[::-1], interpolation=cv2.INTER_LINEAR)


def lap(timings: dict[str, float], step: str, since: float) -> float:
    """Record the seconds of `step` since `since`; return now (the next step's start)."""
    now = time.perf_counter()
    timings[step] = now - since
    return now


def cluster_record(cluster: Cluster, confidence: float, box: Box, window: Box, scale: Scale,
                   malignant: float) -> dict[str, Any]:
    """One cluster for `geometry["clusters"]` (JSON-ready), box, ROI window and centroid in input pixels."""
    return {"box": list(box), "roi": list(window), "count": cluster.count,
            "centroid": [round(v, 1) for v in scale.point(*cluster.centroid)],
            "confidence": round(confidence, 4), "malignant": malignant}


def build(variant: str = "plain") -> DeepMicaPipeline:
    """Registry builder: the manifest's "deepmica-seg" and "deepmica-classifier" weights
    (bundled or Hub, sha256 checked); `variant` "explain" turns the SHAP maps on.

    Raises:
        WeightsNotFoundError: the weights are not in the manifest (yet): `mammo predict` prints
            it as one line, not a traceback.
    """
    from mammo.weights import WeightsNotFoundError, get_entry

    if variant not in PIPELINES[NAME].variants:
        raise ValueError(f"variant must be one of {PIPELINES[NAME].variants}, not {variant!r}")
    try:
        seg_entry, cls_entry = (get_entry(name) for name in ENTRIES)
    except KeyError as err:
        raise WeightsNotFoundError(f"{err.args[0]} (deepmica has no trained weights yet)") from err
    from mammo.models.torch_deepmica import TorchNet, load_patch_unet, load_roi_classifier
    from mammo.models.torch_weights import safetensors_metadata

    # The segmenter works at the pixel size it was trained at (training.deepmica stores it).
    work_mm = float(safetensors_metadata(seg_entry).get("work_mm", WORK_MM))
    return DeepMicaPipeline(TorchNet(load_patch_unet(seg_entry)), TorchNet(load_roi_classifier(cls_entry)),
                            explain=variant == "explain", work_mm=work_mm,
                            weights_sha256="+".join(e.sha256[:16] for e in (seg_entry, cls_entry)))
