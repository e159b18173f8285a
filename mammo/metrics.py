"""Metrics shared by training, `eval/` and the app: segmentation, classification, bootstrap, detection.

Conventions (stated once, used everywhere):
- Segmentation, per image, per class. Dice = 2|P∩T| / (|P|+|T|), IoU = |P∩T| / |P∪T|.
- Empty prediction and empty truth: Dice = IoU = 1 (the model correctly found nothing).
  Empty truth and a non-empty prediction (or the reverse): 0.
- Dataset segmentation numbers are the mean over images of the per-image values (not pooled pixels).
  The headline mean of a class (`summarise_masks`, `SegmentationMeter(ignore_empty=True)`, as
  MONAI's `ignore_empty=True`) is over the images whose reference holds the class: counting the
  empty/empty 1s would let a model that finds nothing score high on a set of mostly normal images.
  Images with an empty reference are summarised apart: how many, the share with any predicted pixel
  (false-positive image rate) and their mean predicted area (fraction of the image's pixels).
- Classification: labels are 0/1, a positive call is `score >= threshold`. A number that is undefined
  for the data (AUC with one class present, sensitivity without positives, specificity without
  negatives) is None, never 0.5 or NaN. NaN scores are an error (ValueError), not silently negative.
- Detection: candidates are the 8-connected components of `prob >= threshold`, scored by their max
  probability; lesions are the 8-connected components of the truth mask. A candidate hits a lesion
  when they share at least one pixel (so one candidate may hit several lesions); a candidate that
  hits none is a false positive. FROC: FP per image vs fraction of lesions hit, swept over the
  candidate scores.
- Confidence intervals: cluster bootstrap over patients (all images of a drawn patient go in
  together), seeded (`np.random.default_rng(seed)`, same seed -> same numbers), percentile interval.
  Resamples where the statistic is undefined (None/NaN) are skipped and counted out.

sklearn and cv2 are imported inside the functions that need them: importing sklearn.metrics takes
about 1 s, and this module is imported by light code that only needs Dice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

FROC_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two bool masks of the same shape (any number of dims)."""
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")
    p, t = pred.astype(bool), truth.astype(bool)
    inter = int(np.count_nonzero(p & t))
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / (total - inter)


def per_class_dice_iou(pred_labels: np.ndarray, true_labels: np.ndarray,
                       classes: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Dice and IoU per class of two integer label maps (H, W); `classes` maps name -> label value."""
    return {name: dice_iou(pred_labels == v, true_labels == v) for name, v in classes.items()}


@dataclass(frozen=True)
class MaskScore:
    """One image's segmentation of one class: Dice and IoU in [0, 1] (1.0 when both masks are
    empty), and the reference's and prediction's pixels as a fraction of the image's, in [0, 1].
    reference_area None = unknown (an older predictions.csv): the image counts as having a
    reference, as every image did before. pred_area NaN = unknown."""

    dice: float
    iou: float
    reference_area: float | None
    pred_area: float

    @property
    def reference_empty(self) -> bool:
        return self.reference_area == 0.0


def mask_score(pred: np.ndarray, truth: np.ndarray) -> MaskScore:
    """Dice, IoU and areas of a bool prediction against a bool reference of the same shape."""
    dice, iou = dice_iou(pred, truth)
    size = max(1, int(np.asarray(truth).size))
    return MaskScore(dice, iou, int(np.count_nonzero(truth)) / size, int(np.count_nonzero(pred)) / size)


def split_by_reference(scores: Sequence[MaskScore]) -> tuple[np.ndarray, np.ndarray]:
    """(with_reference, empty_reference): int64 positions in `scores` of the images whose reference
    holds the class (or is unknown), and of those whose reference is empty."""
    empty = np.array([s.reference_empty for s in scores], dtype=bool)
    return np.flatnonzero(~empty), np.flatnonzero(empty)


def summarise_masks(scores: Sequence[MaskScore]) -> dict[str, float | int | None]:
    """One class's dataset numbers (no CIs): "dice", "iou" (means over the images with a reference,
    None when none), "n_images" (their count), "empty_reference_images" (count of the others),
    "empty_reference_fp_rate" (share of those with any predicted pixel) and
    "empty_reference_mean_pred_area" (their mean predicted fraction of the image; None when none)."""
    ref, empty = ([scores[i] for i in idx] for idx in split_by_reference(scores))

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {"dice": mean([s.dice for s in ref]), "iou": mean([s.iou for s in ref]), "n_images": len(ref),
            "empty_reference_images": len(empty),
            "empty_reference_fp_rate": mean([float(s.pred_area > 0) for s in empty]),
            "empty_reference_mean_pred_area": mean([s.pred_area for s in empty])}


class SegmentationMeter:
    """Accumulates per-image `MaskScore`s per class (metric function + accumulator, as in MONAI).

    ignore_empty=False (default, kept for training's model selection) averages over every image, an
    empty/empty image counting 1; True averages over the images with a reference, as eval reports.
    """

    def __init__(self, ignore_empty: bool = False) -> None:
        self.ignore_empty = ignore_empty
        self.scores: dict[str, list[MaskScore]] = defaultdict(list)

    def add(self, name: str, pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
        """Score one image's bool mask (H, W) of class `name` against its reference; returns (dice, iou)."""
        score = mask_score(pred, truth)
        self.scores[name].append(score)
        return score.dice, score.iou

    def summary(self) -> dict[str, dict[str, float]]:
        """{class: {"dice": mean, "iou": mean, "n": images averaged}}; NaN means when none."""
        out = {}
        for name, scores in self.scores.items():
            kept = [scores[i] for i in split_by_reference(scores)[0]] if self.ignore_empty else scores
            dice, iou = (float(np.mean([getattr(s, k) for s in kept])) if kept else float("nan")
                         for k in ("dice", "iou"))
            out[name] = {"dice": dice, "iou": iou, "n": len(kept)}
        return out

    def empty_reference(self) -> dict[str, dict[str, float | int | None]]:
        """{class: the "empty_reference_*" numbers of `summarise_masks`}."""
        return {name: {k: v for k, v in summarise_masks(scores).items() if k.startswith("empty_reference")}
                for name, scores in self.scores.items()}

    def mean_dice(self, names: list[str] | None = None) -> float:
        """Mean over classes (`names`, default all) of the per-class mean Dice."""
        summary = self.summary()
        keys = names if names is not None else list(summary)
        return float(np.mean([summary[k]["dice"] for k in keys])) if keys else float("nan")


# --- classification -------------------------------------------------------------------------

def _check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N,) 0/1 labels and (N,) float scores; returns them as bool and float64 arrays."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels and scores must be 1-D of the same length: {y.shape}, {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y.astype(bool), s


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of int 0/1 `labels` (N,) and float `scores` (N,); higher = positive.

    None when only one class is present (AUC undefined). Ties count 1/2 (sklearn's roc_auc_score).
    NaN scores raise ValueError.
    """
    y, s = _check_binary(labels, scores)
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, s))


def sensitivity_specificity(labels: np.ndarray, scores: np.ndarray,
                            threshold: float) -> tuple[float | None, float | None]:
    """(sensitivity, specificity) of the calls `scores >= threshold`; labels int 0/1 (N,), scores float (N,).

    Sensitivity = TP/(TP+FN), None when there are no positives; specificity = TN/(TN+FP), None when
    there are no negatives. NaN scores raise ValueError.
    """
    y, s = _check_binary(labels, scores)
    called = s >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = int((called & y).sum()) / n_pos if n_pos else None
    spec = int((~called & ~y).sum()) / n_neg if n_neg else None
    return sens, spec


# --- patient bootstrap ----------------------------------------------------------------------

def _valid(value: float | None) -> bool:
    return value is not None and not np.isnan(value)


def bootstrap(groups: Sequence[str], statistic: Callable[[np.ndarray], float | None],
              n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Cluster bootstrap over groups (patients) of a statistic of N images.

    `groups` (N,) gives each image's patient. Each resample draws G = (number of distinct groups)
    groups with replacement from `np.random.default_rng(seed)` and calls `statistic(idx)`, where
    `idx` is an int64 array of the positions (0..N-1) of all images of the drawn groups, group after
    group in draw order, repeated when a group is drawn more than once. Returns a float64 array
    (<= n_resamples,) of the values that were not None/NaN (e.g. a one-class resample for AUC).
    """
    # Images of one patient are correlated; resampling patients, not images, keeps the CI honest.
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    if inverse.size == 0:
        raise ValueError("bootstrap needs at least one image")
    order = np.argsort(inverse, kind="stable")          # positions, grouped by group
    counts = np.bincount(inverse)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        drawn = rng.integers(0, counts.size, size=counts.size)
        lens = counts[drawn]
        # Vectorised concatenation of order[starts[g]:starts[g]+counts[g]] for g in drawn.
        ends = np.cumsum(lens)
        offsets = np.arange(ends[-1]) - np.repeat(ends - lens, lens)
        idx = order[np.repeat(starts[drawn], lens) + offsets]
        value = statistic(idx)
        if _valid(value):
            values.append(float(value))
    return np.asarray(values, dtype=np.float64)


def with_ci(statistic: Callable[[np.ndarray], float | None], groups: Sequence[str],
            n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Point value and patient-bootstrap percentile interval of `statistic` over N images.

    Returns {"mean": statistic(all N indices) or None if undefined, "ci95": [low, high] or None,
    "n_resamples": valid resamples}. The key is "ci95" whatever `level` is. ci95 is None when the
    point value is undefined or fewer than 2 resamples were valid; when the point value is undefined
    the bootstrap is not run and n_resamples is 0.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    value = statistic(np.arange(len(groups)))
    if not _valid(value):
        return {"mean": None, "ci95": None, "n_resamples": 0}
    values = bootstrap(groups, statistic, n_resamples=n_resamples, seed=seed)
    ci = None
    if values.size >= 2:
        tail = (1.0 - level) / 2.0 * 100.0
        ci = [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]
    return {"mean": float(value), "ci95": ci, "n_resamples": int(values.size)}


def roc_band(labels: np.ndarray, scores: np.ndarray, groups: Sequence[str], n_resamples: int = 1000,
             seed: int = 0, grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """95% ROC band by patient bootstrap (vertical averaging); labels 0/1 (N,), scores float (N,).

    For each resample with both classes, TPR is interpolated linearly at the FPR `grid` (default
    np.linspace(0, 1, 101)); at an FPR where the curve is vertical the upper TPR is taken. Returns
    (grid, low, high) float64 arrays of the grid's shape, low/high = 2.5/97.5 percentiles per grid
    point. Raises ValueError when no resample has both classes.
    """
    y, s = _check_binary(labels, scores)
    if len(groups) != y.size:
        raise ValueError(f"{len(groups)} groups for {y.size} labels")
    from sklearn.metrics import roc_curve
    fpr_grid = np.linspace(0.0, 1.0, 101) if grid is None else np.asarray(grid, dtype=np.float64)
    curves: list[np.ndarray] = []

    def tpr_on_grid(idx: np.ndarray) -> float | None:
        yi = y[idx]
        if yi.all() or not yi.any():
            return None
        fpr, tpr, _ = roc_curve(yi, s[idx])
        # fpr is non-decreasing with repeats on vertical steps; np.interp then uses the last
        # (highest) TPR at a repeated FPR, the curve's upper corner.
        curves.append(np.interp(fpr_grid, fpr, tpr))
        return 0.0

    bootstrap(groups, tpr_on_grid, n_resamples=n_resamples, seed=seed)
    if not curves:
        raise ValueError("no bootstrap resample has both classes; ROC band undefined")
    stacked = np.vstack(curves)
    return fpr_grid, np.percentile(stacked, 2.5, axis=0), np.percentile(stacked, 97.5, axis=0)


# --- lesion detection -----------------------------------------------------------------------

@dataclass(eq=False)   # identity equality: field-wise == on arrays would be ambiguous
class ImageDetections:
    """Candidates of one image and which true lesions they hit. Treat as immutable once built.

    scores: float (K,), one score per candidate. hits: K frozensets of 0-based lesion indices
    (lesion i = connected component i+1 of the truth); empty = false positive. n_lesions: number of
    true lesions in the image (may be 0).
    """

    scores: np.ndarray
    hits: list[frozenset[int]]
    n_lesions: int
    # Per-image summaries computed once, so a bootstrap's thousands of FROC curves only concatenate.
    _fp_scores: np.ndarray = field(init=False, repr=False, compare=False)
    _lesion_scores: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.hits) != self.scores.size:
            raise ValueError(f"{len(self.hits)} hit sets for {self.scores.size} scores")
        if np.isnan(self.scores).any():
            raise ValueError("candidate scores contain NaN")
        is_fp = np.array([not h for h in self.hits], dtype=bool)
        self._fp_scores = self.scores[is_fp]
        # A lesion is found from the threshold of its best-scoring hitting candidate down.
        best = np.full(self.n_lesions, -np.inf)
        for score, hit in zip(self.scores, self.hits):
            for j in hit:
                if not 0 <= j < self.n_lesions:
                    raise ValueError(f"hit lesion index {j} outside 0..{self.n_lesions - 1}")
                best[j] = max(best[j], score)
        self._lesion_scores = best


def _components_with_stats(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, int32 labels (H, W), int32 stats (count, 5)) of the 8-connected components of a
    bool mask; 0 = background, stats row k-1 = cv2's (x, y, w, h, area) of component k."""
    import cv2
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8,
                                                            ltype=cv2.CV_32S)
    return n - 1, labels, stats[1:]


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """(count, int32 labels (H, W)) of the 8-connected components of a bool mask; 0 = background."""
    n, labels, _ = _components_with_stats(mask)
    return n, labels


def _candidates(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, scores, stats) of `detect_candidates`, plus each candidate's cv2 stats row."""
    p = np.asarray(prob)
    if p.ndim != 2:
        raise ValueError(f"prob must be 2-D (H, W), got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):  # bool (or int) masks; float maps are used as they are
        p = p.astype(np.float64)
    k, labels, stats = _components_with_stats(p >= threshold)
    scores = np.full(k, -np.inf)
    inside = labels > 0
    np.maximum.at(scores, labels[inside] - 1, p[inside])
    return labels, scores, stats


def detect_candidates(prob: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Lesion candidates of a probability map: 8-connected components of `prob >= threshold`.

    prob: float (H, W) in [0, 1], or a bool mask (True = 1.0, False = 0.0). Returns (labels int32
    (H, W), 0 = background, 1..K = candidates; scores float64 (K,), scores[k-1] = max prob in k).
    """
    labels, scores, _ = _candidates(prob, threshold)
    return labels, scores


def candidate_regions(prob: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of `detect_candidates` with their extent: (labels int32 (H, W), scores float64
    (K,), boxes int (K, 4) as (y0, x0, y1, x1) end-exclusive, areas int (K,) in pixels), indexed
    by candidate label - 1."""
    labels, scores, stats = _candidates(prob, threshold)
    x, y, w, h, area = (stats[:, i].astype(int) for i in range(5))
    boxes = np.stack([y, x, y + h, x + w], axis=1) if scores.size else np.zeros((0, 4), int)
    return labels, scores, boxes, area


def candidate_boxes(prob: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The candidates of `detect_candidates` as boxes: (scores float64 (K,), boxes int (K, 4) as
    (y0, x0, y1, x1), end-exclusive, in the order of the candidate labels)."""
    _, scores, boxes, _ = candidate_regions(prob, threshold)
    return scores, boxes


def match_detections(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> ImageDetections:
    """Candidates of `prob` (float or bool (H, W), see detect_candidates) against a bool truth (H, W).

    Lesions are the 8-connected components of `truth`; a candidate hits a lesion when they share at
    least one pixel.
    """
    t = np.asarray(truth).astype(bool)
    if np.shape(prob) != t.shape:
        raise ValueError(f"shapes differ: prob {np.shape(prob)}, truth {t.shape}")
    cand, scores = detect_candidates(prob, threshold)
    n_lesions, lesions = _components(t)
    both = (cand > 0) & (lesions > 0)
    hits: list[set[int]] = [set() for _ in range(scores.size)]
    for c, les in np.unique(np.stack([cand[both], lesions[both]]), axis=1).T:
        hits[c - 1].add(int(les) - 1)
    return ImageDetections(scores, [frozenset(h) for h in hits], n_lesions)


def froc_curve(detections: Sequence[ImageDetections]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC curve of a set of images: (fp_per_image, sensitivity, thresholds), float64 (M+1,).

    Thresholds are the distinct candidate scores, high to low, after a first point (0, 0, +inf).
    At threshold t the candidates with score >= t are kept; FP/image = kept candidates hitting no
    lesion / number of images; sensitivity = lesions hit by at least one kept candidate / all
    lesions. Both are non-decreasing. Raises ValueError when there are no lesions at all.
    """
    n_lesions = sum(d.n_lesions for d in detections)
    if n_lesions == 0:
        raise ValueError("FROC undefined: no true lesions in these images")
    fp = np.sort(np.concatenate([d._fp_scores for d in detections]))
    found = np.sort(np.concatenate([d._lesion_scores for d in detections]))
    thresholds = np.unique(np.concatenate([d.scores for d in detections]))[::-1]
    # count(x >= t) over a sorted array = size - searchsorted(t, side="left"): O((K+L) log K), no loop.
    fp_count = fp.size - np.searchsorted(fp, thresholds, side="left")
    hit_count = found.size - np.searchsorted(found, thresholds, side="left")
    return (np.concatenate(([0.0], fp_count / len(detections))),
            np.concatenate(([0.0], hit_count / n_lesions)),
            np.concatenate(([np.inf], thresholds)))


def froc_sensitivities(detections: Sequence[ImageDetections],
                       fp_rates: Sequence[float] = FROC_RATES) -> dict[float, float]:
    """{rate: sensitivity} read off the FROC curve at each FP/image `rate`.

    The curve is a step function: the value is the highest sensitivity of a curve point with
    fp_per_image <= rate (1e-9 tolerance). There is no extrapolation: when the curve stops at fewer
    FP/image than `rate` (all candidates kept), the last point's sensitivity is used. Raises
    ValueError when there are no lesions (see froc_curve) or a rate is negative.
    """
    fp, sens, _ = froc_curve(detections)
    best = np.maximum.accumulate(sens)   # already non-decreasing; guard so "highest" holds anyway
    out: dict[float, float] = {}
    for rate in fp_rates:
        if rate < 0:
            raise ValueError(f"FP rate must be >= 0, got {rate}")
        last = int(np.searchsorted(fp, float(rate) + 1e-9, side="right")) - 1
        out[float(rate)] = float(best[last])
    return out
