"""Classical microcalcification detection and clustering (pseudo-labels for the deepmica pipeline).

DeepMiCa (Gerbasi et al. 2023) trains a patch U-Net on pixel-level microcalcification masks. Our
data has none: MIAS only circles calcification clusters. `pseudo_mask` makes training targets by
running a classical detector (white top-hat + local robust threshold + size filter) and keeping
its detections inside the annotated circles.

Conventions, for every function here:
- images are float32 (H, W) in [0, 1], brighter = denser (as `mammo.io.read_image` returns them);
- masks are bool (H, W); coordinates are (row, col) pixels, boxes (y0, x0, y1, x1) end-exclusive;
- every physical size is in millimetres (areas in mm²) and `pixel_mm` is the pixel side in mm
  (0.2 for mini-MIAS, 0.05-0.1 for digital mammograms), so one parameter set serves all of them.
All functions are pure: they never change their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from mammo.preprocess.breast import breast_mask
from mammo.preprocess.contrast import clahe

# MAD -> standard deviation for Gaussian noise.
_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class Cluster:
    """A group of calcifications.

    box: (y0, x0, y1, x1) end-exclusive, pixels, tight around the members.
    count: number of calcifications (connected components) in the group.
    centroid: (row, col) in pixels, mean of the members' centroids.
    labels: ids of the members in the label image `label_calcifications` returns.
    mask: bool (y1 - y0, x1 - x0), the members' pixels inside `box`.
    """

    box: tuple[int, int, int, int]
    count: int
    centroid: tuple[float, float]
    labels: tuple[int, ...]
    mask: np.ndarray

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The members as a bool mask of the whole image, shape (H, W)."""
        out = np.zeros(shape, dtype=bool)
        y0, x0, y1, x1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out


def _odd(n: float, minimum: int = 3) -> int:
    """The odd integer nearest to n, at least `minimum`."""
    k = max(minimum, round(n))
    return k if k % 2 else k + 1


def enhance(image: np.ndarray, pixel_mm: float, breast: np.ndarray | None = None,
            clip_limit: float = 2.0, tile_mm: float = 25.0) -> np.ndarray:
    """DeepMiCa-style preprocessing: labels/artefacts off, then CLAHE with tiles sized in mm.

    Everything outside the breast (labels, markers, film edges; see `breast_mask`) is set to 0,
    so it cannot take contrast from the breast in CLAHE nor give detections later. This is the
    network's input view; the detector's MIAS scores are the same on raw and enhanced films.

    Args:
        image: float32 (H, W) in [0, 1], brighter = denser.
        pixel_mm: pixel side in mm.
        breast: bool (H, W) breast mask; computed with `breast_mask` when None.
        clip_limit: CLAHE clip limit (see `mammo.preprocess.contrast.clahe`).
        tile_mm: CLAHE tile side in mm: 25 mm (8x8 tiles on a MIAS film) follows density
            changes yet is large next to a cluster (≤ ~10 mm), so CLAHE does not flatten it.

    Returns:
        float32 (H, W) in [0, 1], 0 outside the breast.
    """
    if pixel_mm <= 0:
        raise ValueError(f"pixel_mm must be > 0, got {pixel_mm}")
    if breast is None:
        breast = breast_mask(image)
    h, w = image.shape
    tiles = (max(1, round(h * pixel_mm / tile_mm)), max(1, round(w * pixel_mm / tile_mm)))
    out = clahe(np.where(breast, image, 0.0).astype(np.float32), clip_limit, tiles)
    out[~breast] = 0.0
    return out


def white_tophat(image: np.ndarray, pixel_mm: float, size_mm: float = 1.5) -> np.ndarray:
    """Image minus its opening by a disc of diameter `size_mm`: bright details smaller than it.

    Returns float32 (H, W) >= 0, in the image's intensity units.
    """
    d = _odd(size_mm / pixel_mm)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    return cv2.morphologyEx(image.astype(np.float32), cv2.MORPH_TOPHAT, kernel)


def _block_stats(values: np.ndarray, inside: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block median and MAD of `values` over `inside` pixels, bilinearly resized to (H, W).

    Blocks with too few inside pixels take the whole-image values, so the breast edge and tiny
    breasts still get a sensible background level.
    """
    h, w = values.shape
    ph, pw = -h % block, -w % block
    v = np.pad(np.where(inside, values, np.nan), ((0, ph), (0, pw)), constant_values=np.nan)
    nby, nbx = v.shape[0] // block, v.shape[1] // block
    blocks = v.reshape(nby, block, nbx, block).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)
    counts = np.isfinite(blocks).sum(axis=-1)
    enough = counts >= max(16, block * block // 4)
    inner = values[inside]
    g_med = float(np.median(inner)) if inner.size else 0.0
    g_mad = float(np.median(np.abs(inner - g_med))) if inner.size else 0.0
    med = np.full((nby, nbx), g_med, dtype=np.float32)
    mad = np.full((nby, nbx), g_mad, dtype=np.float32)
    if enough.any():
        sel = blocks[enough]
        m = np.nanmedian(sel, axis=-1)
        med[enough] = m
        mad[enough] = np.nanmedian(np.abs(sel - m[:, None]), axis=-1)
    size = (v.shape[1], v.shape[0])
    med_full = cv2.resize(med, size, interpolation=cv2.INTER_LINEAR)[:h, :w]
    mad_full = cv2.resize(mad, size, interpolation=cv2.INTER_LINEAR)[:h, :w]
    return med_full, mad_full


def detect_microcalcifications(
    image: np.ndarray,
    breast: np.ndarray | None,
    pixel_mm: float,
    tophat_mm: float = 1.5,
    k: float = 5.0,
    k_low: float = 3.0,
    rel_peak: float = 0.5,
    min_contrast: float = 0.06,
    block_mm: float = 8.0,
    min_area_mm2: float = 0.01,
    min_pixels: int = 2,
    max_diameter_mm: float = 1.5,
    edge_mm: float = 2.0,
) -> np.ndarray:
    """Bright specks 0.1-1.5 mm across: white top-hat, local robust threshold, size filter.

    The top-hat keeps bright details narrower than `tophat_mm`; a pixel is a seed where the
    response exceeds its local background by `k` robust standard deviations (median + k * 1.4826
    * MAD over `block_mm` blocks of breast) and by `min_contrast` absolute; seeds grow into
    neighbours above `k_low` and above `rel_peak` times the brightest response within
    `tophat_mm` (hysteresis at half maximum: a speck keeps its rim, neighbours stay apart).
    Components are kept when their area is >= max(min_area_mm2, min_pixels pixels) and their
    bounding box is at most `max_diameter_mm` on its longest side (masses, vessels and the
    pectoral edge are larger).

    Defaults were tuned on the MIAS train split only (200 µm, 8-bit film, input from `enhance`;
    12 CALC films with 16 circles, 117 calcification-free films), scored by clusters from
    `cluster_calcifications`: 10/16 circles hit at 0.5 false clusters per NORM film.
    Lower min_contrast finds more at more cost: 0.04 hits 12/16 at 3.1 per NORM film (40-film
    sample); k, not min_contrast, binds where the local texture is strong.

    Args:
        image: float32 (H, W) in [0, 1], raw or from `enhance`.
        breast: bool (H, W), where to look; `breast_mask(image)` when None.
        pixel_mm: pixel side in mm.
        tophat_mm: diameter of the top-hat disc in mm (larger than any microcalcification).
        k, k_low: seed and grow thresholds, in robust standard deviations of the local response.
        rel_peak: grown pixels must reach this fraction of the local peak response.
        min_contrast: minimum top-hat response of a seed, in the image's [0, 1] units (0.06 is
            ~15 grey levels of 8-bit film after `enhance`); it sets the operating point where the
            local MAD is small (fatty, dark or 8-bit-quantised regions), which it often is.
        block_mm: side of the blocks the local background statistics are taken over, in mm.
        min_area_mm2, min_pixels: smallest kept speck, in mm² and in pixels; both, because the
            mm² floor (0.01, a 0.1 mm speck) binds at 50 µm and the pixel floor at 200 µm, where
            single pixels were mostly grain on MIAS (same hits, fewer false clusters than 1).
        max_diameter_mm: largest kept bounding-box side, in mm.
        edge_mm: band inside the breast border that is ignored (skin line, film-edge glare).

    Returns:
        bool (H, W): True on detected microcalcification pixels.
    """
    if pixel_mm <= 0:
        raise ValueError(f"pixel_mm must be > 0, got {pixel_mm}")
    if breast is None:
        breast = breast_mask(image)
    inside = breast.astype(np.uint8)
    edge = round(edge_mm / pixel_mm)
    if edge > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge + 1, 2 * edge + 1))
        inside = cv2.erode(inside, disc, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    inside = inside.astype(bool)
    if not inside.any():
        return np.zeros(image.shape, dtype=bool)
    response = white_tophat(image, pixel_mm, tophat_mm)
    med, mad = _block_stats(response, inside, max(4, round(block_mm / pixel_mm)))
    sigma = _MAD_TO_STD * mad
    seeds = inside & (response > med + k * sigma) & (response > min_contrast)
    # Growth stops at half the local peak, so neighbouring specks stay apart instead of
    # merging through their faint surroundings into one blob the size filter would drop.
    # The peak is looked for within the top-hat disc: nothing wider has a response.
    d = _odd(tophat_mm / pixel_mm)
    peak = cv2.dilate(response, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)))
    grow = inside & (response > med + k_low * sigma) & (response >= rel_peak * peak)
    return _size_filter(_hysteresis(seeds & grow, grow), pixel_mm, min_area_mm2, min_pixels,
                        max_diameter_mm)


def _hysteresis(seeds: np.ndarray, grow: np.ndarray) -> np.ndarray:
    """The 8-connected components of `grow` that contain a seed pixel."""
    n, labels = cv2.connectedComponents(grow.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    return keep[labels]


def _size_filter(mask: np.ndarray, pixel_mm: float, min_area_mm2: float, min_pixels: int,
                 max_diameter_mm: float) -> np.ndarray:
    """Keep the 8-connected components of `mask` within the area and diameter limits."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA]
    side = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) * pixel_mm
    min_px = max(float(min_pixels), min_area_mm2 / pixel_mm**2)
    keep = (area >= min_px) & (side <= max_diameter_mm)
    keep[0] = False
    return keep[labels]


def label_calcifications(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a detection mask: (int32 (H, W) labels, 0 = none; their count)."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return labels, n - 1


def cluster_calcifications(mask: np.ndarray, pixel_mm: float, distance_mm: float = 5.0,
                           min_count: int = 3) -> list[Cluster]:
    """Group calcifications by single linkage on their centroids.

    Two calcifications are linked when their centroids are within `distance_mm`; a cluster is a
    connected group of at least `min_count`. Defaults: BI-RADS calls ≥3 (older texts; ≥5 in the
    5th edition's "grouped") calcifications within ~1 cm a cluster. Three calcifications in 1 cm²
    are on average ~3 mm from their nearest neighbour (0.5 / sqrt(density) for a uniform spread),
    so 5 mm links such a group with margin while specks further apart stay alone; chaining lets
    a larger (segmental) group grow beyond 1 cm, which is what we want to find. min_count=3
    because MIAS at 200 µm resolves only the larger calcifications of a cluster: on the MIAS
    train split, 5 hit 4/16 annotated clusters where 3 hit 10/16, and 7 mm instead of 5 mm
    added false clusters without hits.

    Args:
        mask: bool (H, W) detections (e.g. from `detect_microcalcifications`).
        pixel_mm: pixel side in mm.
        distance_mm: linkage distance between centroids, in mm.
        min_count: fewest members of a reported cluster.

    Returns:
        Clusters, largest count first (ties: top-left first).
    """
    labels, n = label_calcifications(mask)
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    centroids = np.asarray(ndimage.center_of_mass(mask, labels, ids), dtype=np.float64).reshape(n, 2)
    pairs = cKDTree(centroids * pixel_mm).query_pairs(distance_mm, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    slices = ndimage.find_objects(labels)
    clusters = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if members.size < min_count:
            continue
        clusters.append(_make_cluster(labels, ids[members], [slices[i] for i in members],
                                      centroids[members]))
    clusters.sort(key=lambda c: (-c.count, c.box[0], c.box[1]))
    return clusters


def _make_cluster(labels: np.ndarray, member_ids: np.ndarray, slices: list[tuple[slice, slice]],
                  centroids: np.ndarray) -> Cluster:
    """A Cluster from its members' label ids, bounding slices and centroids."""
    y0 = min(s[0].start for s in slices)
    x0 = min(s[1].start for s in slices)
    y1 = max(s[0].stop for s in slices)
    x1 = max(s[1].stop for s in slices)
    crop = np.isin(labels[y0:y1, x0:x1], member_ids)
    cy, cx = centroids.mean(axis=0)
    return Cluster((int(y0), int(x0), int(y1), int(x1)), int(member_ids.size), (float(cy), float(cx)),
                   tuple(int(i) for i in member_ids), crop)


def circles_mask(shape: tuple[int, int], circles: list[tuple[float, float, float]]) -> np.ndarray:
    """bool (H, W), True inside any circle (row, col, radius), all in pixels."""
    canvas = np.zeros(shape, dtype=np.uint8)
    for row, col, radius in circles:
        cv2.circle(canvas, (round(col), round(row)), max(0, round(radius)), 1, thickness=-1)
    return canvas.astype(bool)


def pseudo_mask(image: np.ndarray, circles: list[tuple[float, float, float]], pixel_mm: float,
                breast: np.ndarray | None = None, **detector: float) -> np.ndarray:
    """Training target: microcalcification detections inside the annotated circles.

    The detector runs on the whole image (its local statistics need the surroundings); the
    specks that touch a circle are kept, whole even where they cross its edge.

    Args:
        image: float32 (H, W) in [0, 1].
        circles: (row, col, radius) in pixels, e.g. MIAS CALC rows (row = H - Y).
        pixel_mm: pixel side in mm.
        breast: bool (H, W) breast mask; computed when None.
        **detector: keyword arguments for `detect_microcalcifications`.

    Returns:
        bool (H, W): True on pseudo-labelled microcalcification pixels.
    """
    detections = detect_microcalcifications(image, breast, pixel_mm, **detector)
    region = circles_mask(image.shape, circles)
    labels, _ = label_calcifications(detections)
    touching = np.unique(labels[region & detections])
    return np.isin(labels, touching[touching > 0])


def to_pixel_size(image: np.ndarray, pixel_mm: float, work_mm: float, tolerance: float = 0.05) -> np.ndarray:
    """Resample a float32 (H, W) image from `pixel_mm` to `work_mm` pixels (same units and range).

    Shrinking averages pixel areas (`INTER_AREA`), which keeps a speck's integrated brightness:
    a 0.3 mm calcification at 50 µm becomes a 1.5-pixel, dimmer speck at 0.2 mm, as on MIAS film.
    Within `tolerance` (relative) of `work_mm` the image is returned unchanged.
    """
    scale = pixel_mm / work_mm
    if abs(scale - 1.0) <= tolerance:
        return image
    h, w = image.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image.astype(np.float32), size, interpolation=method)


def cluster_confidence(cluster: Cluster, labels: np.ndarray, prob: np.ndarray) -> float:
    """A cluster's detection score: the sum over its members of their peak probability.

    It grows with both the number of calcifications and how sure the segmenter is of each
    (a cluster of 3 certain specks scores ~3, of 6 uncertain ones ~3 too), so one threshold on it
    trades sensitivity against false clusters (the FROC of `training.deepmica measure`).

    Args:
        cluster: from `cluster_calcifications` on a mask whose labels are `labels`.
        labels: int (H, W) from `label_calcifications` of that mask.
        prob: float32 (H, W) probability map the mask was thresholded from.
    """
    return float(np.sum(ndimage.maximum(prob, labels, index=list(cluster.labels))))


def score_clusters(mask: np.ndarray, prob: np.ndarray | None, pixel_mm: float) -> list[tuple[Cluster, float]]:
    """The clusters of a detection mask (`cluster_calcifications`) with a detection score each,
    highest first: `cluster_confidence` on `prob`, or the member count when there is no
    probability map (the classical detector's clusters)."""
    clusters = cluster_calcifications(mask, pixel_mm)
    if prob is None or not clusters:
        scored = [(c, float(c.count)) for c in clusters]
    else:
        labels, n = label_calcifications(mask)
        # One pass over the image for every calcification's peak (per cluster it would be one each).
        peaks = np.concatenate([[0.0], ndimage.maximum(prob, labels, index=np.arange(1, n + 1))])
        scored = [(c, float(peaks[list(c.labels)].sum())) for c in clusters]
    return sorted(scored, key=lambda cs: -cs[1])
