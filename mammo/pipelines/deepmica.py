"""`deepmica`: microcalcification masks on 256x256 patches, clusters, P(malignant) per cluster, SHAP.

The method of DeepMiCa (Gerbasi et al., CMPB 2023; github.com/ales-git/DeepMiCa), step by step:

1. Preprocessing (seed: `Step1_Preprocessing`): labels and background off, CLAHE
   (`mammo.preprocess.microcalc.enhance`, tiles sized in mm).
2. Segmentation (seed: `Step2_Segmentation`): the breast is tiled into 256x256 patches at its
   native resolution, each patch segmented by a UNet (one logit per pixel), the patches stitched
   back. The seed pads the image to a multiple of 256 and tiles without overlap; here patches
   overlap by `OVERLAP` pixels and are blended with linear ramps (`blend_window`), so no pixel's
   value comes only from the rim of a patch, where the UNet sees zero padding instead of
   context. Patches that are entirely black (outside the breast after step 1) are not run: the
   seed removes them from its training set (`reduce_patches.py`) and the network has nothing to
   find there. A pixel is calcification where the stitched probability is >= `THRESHOLD` (the
   seed's 0.5) inside the breast.
3. Clusters: `mammo.preprocess.microcalc.cluster_calcifications` (>= 3 calcifications within 5 mm;
   the BI-RADS reasoning is there), at most `MAX_CLUSTERS`, largest first.
4. Classification (seed: `Step3_Classification/_01_CutROI/cut_ROI.py`, `CustomDataset.py`): per
   cluster, the smallest square around its bounding box (at least `MIN_ROI_MM` a side, the seed's
   64 px at CBIS-DDSM's ~50 µm), kept inside the image, cut from the step-1 image, min-max
   normalised, resized to the classifier's input (224), one logit -> P(malignant).
5. Explanation, only when asked (`explain=True`; it costs seconds per cluster, see
   `SHAP_SAMPLES`): a SHAP map per ROI from `shap.GradientExplainer` (expected gradients; the seed
   used DeepExplainer on its test set). The reference image is the ROI itself blurred at
   `DETAIL_MM` (microcalcifications are < 1 mm by definition), so the map credits the fine detail
   the tissue around it does not explain; `shap_background` replaces it with a set of ROIs.

Pixel size: the DICOM's PixelSpacing (or ImagerPixelSpacing); else `pixel_mm` given to the
pipeline; else `FIELD_MM` / the image's long side, which is 0.2 mm for a 1024-pixel MIAS film
and ~0.045 mm for a 4500-pixel CBIS-DDSM film (their DICOMs carry no spacing); it sets the CLAHE
tiles, the cluster distance and the ROI's smallest side. The UNet runs at the native resolution.

Outputs: masks "breast" and "calcification", probability "calcification" (float32, 0 outside the
breast), one `PatchBox` per cluster (its bounding box, label "cluster k", score P(malignant)),
scores {"malignant": the highest cluster's P(malignant) (0 with no cluster), "benign": 1 - that},
`geometry["clusters"]` (box, roi, count, centroid, malignant, and shap_sum when explained). With
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
from mammo.preprocess.breast import breast_mask
from mammo.preprocess.microcalc import Cluster, cluster_calcifications, enhance

NAME = "deepmica"
ENTRIES = ("deepmica-seg", "deepmica-classifier")
PATCH = 256
# 25% of a patch. Zero padding at a patch's rim changes a UNet's output within a band of its
# border; with a 64-pixel linear crossfade, along each axis at least half of a pixel's weight
# comes from a patch whose edge is >= 32 px away (away from the image's own border), for 1.8x
# the patches of plain tiling (a half-patch overlap: 4x).
OVERLAP = 64
BLACK_LEVEL = 0.0     # a patch whose maximum is <= this is not run (0 outside the breast after enhance)
THRESHOLD = 0.5       # the seed's
SEG_CHUNK = 32        # patches cut and stitched at a time (bounds memory on 4000x3000 films)
FIELD_MM = 204.8      # long side of the film when no pixel size is known: 1024 px x 0.2 mm (MIAS)
MIN_ROI_MM = 3.2      # the seed's smallest ROI side, 64 px, at CBIS-DDSM's ~0.05 mm
MAX_CLUSTERS = 16     # classified per image, largest count first
SHAP_SAMPLES = 32     # per ROI: 12-16 s on 2 busy CPU cores (EfficientNet-Lite0, 224 px); noise ~ 1/sqrt(n)
DETAIL_MM = 1.0       # blur of the SHAP reference: detail below ~1 mm is what the map credits


Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), end-exclusive, input pixels


class Net(Protocol):
    """What the pipeline needs of a network (`mammo.models.torch_deepmica.TorchNet`)."""

    input_size: int | None

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


# --- tiling and stitching (pure numpy) ---------------------------------------------------------

def tile_origins(length: int, patch: int = PATCH, overlap: int = OVERLAP) -> list[int]:
    """Start offsets of patches covering [0, max(length, patch)), consecutive patches overlapping
    by at least `overlap` pixels, evenly spread, the last one ending at the border."""
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be in [0, {patch}), got {overlap}")
    if length <= patch:
        return [0]
    n = math.ceil((length - patch) / (patch - overlap)) + 1
    return [round(i * (length - patch) / (n - 1)) for i in range(n)]


def tile_grid(shape: tuple[int, int], patch: int = PATCH, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """(row, col) top-left corners of the patches covering an image of `shape` (see `tile_origins`)."""
    rows, cols = (tile_origins(n, patch, overlap) for n in shape)
    return [(y, x) for y in rows for x in cols]


def pad_to_patch(image: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """(H, W) -> (max(H, patch), max(W, patch)), zeros added below and to the right (as the seed pads)."""
    h, w = image.shape
    return np.pad(image, ((0, max(0, patch - h)), (0, max(0, patch - w))))


def blend_window(patch: int = PATCH, overlap: int = OVERLAP) -> np.ndarray:
    """float32 (patch, patch) weights: 1 inside, ramping linearly to 0.5 / overlap at the rim over
    `overlap` pixels (all ones when overlap is 0). Two patches `patch - overlap` apart have ramps
    that sum to exactly 1 across their overlap: a crossfade, no seam."""
    if overlap == 0:
        return np.ones((patch, patch), np.float32)
    edge = np.minimum(np.arange(patch), np.arange(patch)[::-1])
    ramp = np.minimum(1.0, (edge + 0.5) / overlap).astype(np.float32)
    return np.outer(ramp, ramp)


def black_patches(patches: np.ndarray, level: float = BLACK_LEVEL) -> np.ndarray:
    """bool (N,): which of (N, P, P) patches have no pixel above `level`."""
    return patches.reshape(len(patches), -1).max(axis=1) <= level


class Stitcher:
    """Weighted average of overlapping patches into one (H, W) float32 map.

    Each patch is weighted by `blend_window`; every pixel is normalised by the weights that
    reached it, so the result is exact whatever the spacing, and 0 where no patch was added.
    """

    def __init__(self, shape: tuple[int, int], patch: int = PATCH, overlap: int = OVERLAP) -> None:
        self.shape, self.patch = tuple(shape), patch
        padded = (max(shape[0], patch), max(shape[1], patch))
        self.total = np.zeros(padded, np.float32)
        self.weight = np.zeros(padded, np.float32)
        self.window = blend_window(patch, overlap)

    def add(self, values: np.ndarray, origins: list[tuple[int, int]]) -> None:
        """values float32 (N, P, P), the patches at `origins` (N (row, col) corners)."""
        p = self.patch
        for v, (y, x) in zip(values, origins):
            self.total[y:y + p, x:x + p] += v * self.window
            self.weight[y:y + p, x:x + p] += self.window

    def result(self) -> np.ndarray:
        """float32 (H, W): the blended map, 0 where no patch was added."""
        out = np.divide(self.total, self.weight, out=np.zeros_like(self.total), where=self.weight > 0)
        return out[:self.shape[0], :self.shape[1]]


def stitch(values: np.ndarray, origins: list[tuple[int, int]], shape: tuple[int, int],
           patch: int = PATCH, overlap: int = OVERLAP) -> np.ndarray:
    """float32 (N, P, P) patches at `origins` -> float32 (H, W) (see `Stitcher`)."""
    stitcher = Stitcher(shape, patch, overlap)
    stitcher.add(values, origins)
    return stitcher.result()


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


def roi_window(box: Box, shape: tuple[int, int], pixel_mm: float, min_mm: float = MIN_ROI_MM) -> Box:
    """The seed's ROI: the square of side max(box height, box width, `min_mm`) centred on `box`
    (y0, x0, y1, x1), moved inside the image; cut to the image where it is larger.

    Returns:
        (y0, x0, y1, x1), end-exclusive, inside `shape`.
    """
    y0, x0, y1, x1 = box
    side = max(y1 - y0, x1 - x0, round(min_mm / pixel_mm))
    out = []
    for lo, hi, size in ((y0, y1, shape[0]), (x0, x1, shape[1])):
        start = 0 if side >= size else int(np.clip(round((lo + hi - side) / 2), 0, size - side))
        out.append((start, min(size, start + side)))
    (ry0, ry1), (rx0, rx1) = out
    return ry0, rx0, ry1, rx1


def roi_input(image: np.ndarray, window: Box, size: int) -> np.ndarray:
    """The classifier's input: `window` of `image`, min-max normalised (as the seed saves its
    ROIs), resized to float32 (size, size) in [0, 1]."""
    y0, x0, y1, x1 = window
    crop = image[y0:y1, x0:x1].astype(np.float32)
    lo, span = float(crop.min()), float(np.ptp(crop))
    crop = (crop - lo) / span if span > 0 else np.zeros_like(crop)
    shrink = crop.shape[0] > size or crop.shape[1] > size
    out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def blurred_reference(roi: np.ndarray, window: Box, pixel_mm: float,
                      detail_mm: float = DETAIL_MM) -> np.ndarray:
    """float32 (S, S): the ROI input without detail below `detail_mm` (Gaussian, sigma in the
    input's pixels: `detail_mm` in image pixels times the resize factor)."""
    side = max(window[2] - window[0], window[3] - window[1])
    sigma = detail_mm / pixel_mm * roi.shape[0] / side
    return cv2.GaussianBlur(roi, (0, 0), sigmaX=max(sigma, 0.5))


def shap_to_window(values: np.ndarray, window: Box) -> np.ndarray:
    """float32 (S, S) SHAP map of the classifier input -> float32 (h, w) of the ROI window, scaled
    so that its sum is unchanged (values stay in logit units per ROI). Area interpolation, because
    it keeps the mean both ways (bilinear does not when shrinking: it samples)."""
    h, w = window[2] - window[0], window[3] - window[1]
    resized = cv2.resize(values.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return resized * np.float32(values.size / resized.size)


def shap_picture(crop: np.ndarray, values: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3): the grey ROI `crop` (float (h, w) in [0, 1]) tinted red where SHAP
    `values` (h, w) push towards malignant, blue where away, opacity |value| / max |value|."""
    scale = float(np.abs(values).max())
    alpha = (np.abs(values) / scale if scale > 0 else np.zeros_like(values))[..., None]
    colour = np.where(values[..., None] > 0, np.float32([1, 0, 0]), np.float32([0, 0, 1]))
    grey = np.repeat(np.clip(crop, 0, 1)[..., None], 3, axis=2)
    return np.round(255 * (grey * (1 - alpha) + colour * alpha)).astype(np.uint8)


def paste_saliency(saliency: dict[str, np.ndarray], values: np.ndarray, window: Box) -> None:
    """Max-paste one ROI's SHAP into full-size "malignant" (positive part) and "benign" (negative
    part) maps, each over the ROI's largest |SHAP|, so in [0, 1]."""
    scale = float(np.abs(values).max())
    if scale == 0:
        return
    y0, x0, y1, x1 = window
    for name, part in (("malignant", values), ("benign", -values)):
        region = saliency[name][y0:y1, x0:x1]
        np.maximum(region, np.clip(part / scale, 0, 1), out=region)


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
        shap_background: float32 (B, S, S) reference ROIs for SHAP (None: each ROI blurred).
    """

    name = NAME
    description = PIPELINES[NAME].description

    def __init__(self, seg_net: Net, classifier: Net, pixel_mm: float | None = None, explain: bool = False,
                 weights_sha256: str = "", threshold: float = THRESHOLD, overlap: int = OVERLAP,
                 shap_background: np.ndarray | None = None, shap_samples: int = SHAP_SAMPLES) -> None:
        self.seg_net, self.classifier = seg_net, classifier
        self.pixel_mm, self.explain, self.weights_sha256 = pixel_mm, explain, weights_sha256
        self.threshold, self.overlap = threshold, overlap
        self.shap_background, self.shap_samples = shap_background, shap_samples

    def classify(self, enhanced: np.ndarray, windows: list[Box]) -> tuple[np.ndarray, list[float]]:
        """(float32 (N, S, S) ROI inputs, P(malignant) of each) for the ROI `windows`."""
        size = int(self.classifier.input_size or 224)
        rois = np.stack([roi_input(enhanced, w, size) for w in windows])
        return rois, [float(p) for p in sigmoid(self.classifier(rois[:, None])[:, 0])]

    def shap_maps(self, rois: np.ndarray, windows: list[Box], pixel_mm: float) -> list[np.ndarray]:
        """float32 (h, w) SHAP map of each ROI, in its window's shape (see `shap_to_window`)."""
        maps = []
        for k, (roi, window) in enumerate(zip(rois, windows)):
            background = self.shap_background if self.shap_background is not None else \
                blurred_reference(roi, window, pixel_mm)[None]
            values = self.classifier.explain(roi[None, None], background[:, None], nsamples=self.shap_samples,
                                             seed=k)
            maps.append(shap_to_window(values[0, 0], window))
        return maps

    def run(self, image: np.ndarray, meta: ImageMeta, explain: bool | None = None) -> Result:
        """image float32 (H, W) in [0, 1] -> `Result` (see the module docstring).

        Args:
            explain: compute the SHAP maps (None: the pipeline's `explain`).
        """
        timings: dict[str, float] = {}
        t = time.perf_counter()
        pixel_mm, source = pixel_size(meta, image.shape, self.pixel_mm)
        breast = breast_mask(image)
        enhanced = enhance(image, pixel_mm, breast)
        t = lap(timings, "preprocess", t)
        prob, counts = segment(self.seg_net, enhanced, overlap=self.overlap)
        prob *= breast
        calcification = prob >= self.threshold
        t = lap(timings, "segment", t)
        found = cluster_calcifications(calcification, pixel_mm)
        clusters = found[:MAX_CLUSTERS]
        windows = [roi_window(c.box, image.shape, pixel_mm) for c in clusters]
        t = lap(timings, "cluster", t)
        rois, malignant = self.classify(enhanced, windows) if clusters else (np.zeros((0, 1, 1)), [])
        t = lap(timings, "classify", t)
        top = max(malignant, default=0.0)
        result = Result(
            masks={"breast": breast, "calcification": calcification}, probabilities={"calcification": prob},
            patches=[PatchBox(*c.box, score=p, label=f"cluster {k + 1}")
                     for k, (c, p) in enumerate(zip(clusters, malignant))],
            scores={"malignant": top, "benign": 1.0 - top}, timings=timings, pipeline=self.name,
            weights_sha256=self.weights_sha256,
            geometry={"input_shape": tuple(image.shape), "crop_box": (0, 0, *image.shape), "flipped": False,
                      "pixel_mm": pixel_mm, "pixel_mm_source": source, "patch": PATCH,
                      "overlap": self.overlap, **counts, "threshold": self.threshold,
                      "clusters_found": len(found),
                      "clusters": [cluster_record(c, w, p) for c, w, p in zip(clusters, windows, malignant)]})
        if self.explain if explain is None else explain:
            self.add_explanations(result, enhanced, rois, windows, pixel_mm)
            lap(timings, "explain", t)
        return result

    def add_explanations(self, result: Result, enhanced: np.ndarray, rois: np.ndarray,
                         windows: list[Box], pixel_mm: float) -> None:
        """SHAP saliency maps, `shap_cluster<k>` pictures and each cluster's `shap_sum`."""
        shape = enhanced.shape
        result.saliency = {"malignant": np.zeros(shape, np.float32), "benign": np.zeros(shape, np.float32)}
        for k, (values, window) in enumerate(zip(self.shap_maps(rois, windows, pixel_mm), windows)):
            y0, x0, y1, x1 = window
            paste_saliency(result.saliency, values, window)
            result.artifacts[f"shap_cluster{k + 1}"] = shap_picture(enhanced[y0:y1, x0:x1], values)
            result.geometry["clusters"][k]["shap_sum"] = float(values.sum())


def lap(timings: dict[str, float], step: str, since: float) -> float:
    """Record the seconds of `step` since `since`; return now (the next step's start)."""
    now = time.perf_counter()
    timings[step] = now - since
    return now


def cluster_record(cluster: Cluster, window: Box, malignant: float) -> dict[str, Any]:
    """One cluster for `geometry["clusters"]` (JSON-ready: lists and numbers)."""
    return {"box": list(cluster.box), "roi": list(window), "count": cluster.count,
            "centroid": [round(v, 1) for v in cluster.centroid], "malignant": malignant}


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

    return DeepMicaPipeline(TorchNet(load_patch_unet(seg_entry)), TorchNet(load_roi_classifier(cls_entry)),
                            explain=variant == "explain",
                            weights_sha256="+".join(e.sha256[:16] for e in (seg_entry, cls_entry)))
