"""predictions.csv (+ masks/, probabilities/) and the dataset's references -> metrics.json.

Runs without a model: `python -m eval score --predictions DIR/predictions.csv --dataset KIND:PATH`.
Per-image Dice/IoU/areas are recomputed from `masks/` against the dataset when both are there, else
taken from the CSV; lesion detection (FROC) needs `probabilities/` and the dataset's lesion masks;
classification needs the `*_pred` and `*_label` columns. What cannot be computed is left out.
Imports only the bottom modules (`eval.dataset`, `eval.table`); `eval.runner` calls this, then
`eval.report_data`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.dataset import open_dataset
from eval.table import (
    Row,
    metric_classes,
    read_png_mask,
    read_rows,
    row_score,
    safe_name,
    score_cells,
    to_float,
    write_json,
    write_rows,
)
from mammo import metrics as M
from mammo.calibration import reliability
from mammo.datasets import DatasetLoader

LABELS = ("malignant", "benign")
THRESHOLD = 0.5
FROC_THRESHOLD = 0.5


def conventions(n_resamples: int, seed: int, froc_threshold: float) -> dict[str, str]:
    """The rules behind every number, written into metrics.json."""
    return {
        "dice": "Dice and IoU per image (predictions.csv): both masks empty: 1; one empty and the other "
                "not: 0. The Dice/IoU of a class is the mean over the images whose reference holds the "
                "class (n_images); images whose reference is empty are left out of it and its CI, and "
                "summarised apart: empty_reference_images (their count), empty_reference_fp_rate (the "
                "share with any predicted pixel) and empty_reference_mean_pred_area (their mean predicted "
                "area, fraction of the image's pixels). Images without a reference mask for a class do "
                "not count for it at all; reference_unknown_images (rows of an older predictions.csv "
                "scored without the dataset) are counted as holding the class.",
        "bootstrap": f"95% percentile intervals from {n_resamples} bootstrap resamples over patients (all "
                     f"images of a drawn patient together), seed {seed}.",
        "classification": f"AUC from scikit-learn; undefined (null) when the labels hold one class. "
                          f"Sensitivity and specificity at score >= {THRESHOLD}.",
        "detection": f"Candidates: 8-connected components of the probability map >= {froc_threshold}, scored "
                     "by their maximum probability. A candidate hits a lesion (8-connected component of "
                     "the reference mask) when they share a pixel; one that hits none is a false positive. "
                     "Sensitivity at r: the highest sensitivity with at most r false positives per image.",
    }


@dataclass
class Evidence:
    """Per-image values gathered for scoring, per class (parallel lists)."""

    seg: dict[str, list[M.MaskScore]] = field(default_factory=dict)
    seg_groups: dict[str, list[str]] = field(default_factory=dict)  # patient ids
    seg_ids: dict[str, list[str]] = field(default_factory=dict)     # image ids
    detections: dict[str, list[M.ImageDetections]] = field(default_factory=dict)
    det_groups: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ScoredRun:
    """What scoring found, for the report: metrics.json's dict and the inputs behind it."""

    metrics: dict[str, Any]
    rows: list[Row]
    evidence: Evidence
    loader: DatasetLoader | None
    n_resamples: int
    seed: int


def score(predictions: str | Path, dataset: str | None, **kwargs: Any) -> dict[str, Any]:
    """`score_run`'s metrics dict (metrics.json only; `eval.runner.rescore` also writes report.html)."""
    return score_run(predictions, dataset, **kwargs).metrics


def score_run(predictions: str | Path, dataset: str | None, *, split: str | None = None,
              limit: int | None = None, rows: list[Row] | None = None, n_resamples: int = 1000,
              seed: int = 0, froc_threshold: float = FROC_THRESHOLD, quiet: bool = False) -> ScoredRun:
    """Compute metrics.json beside `predictions` and write it.

    Args:
        predictions: the predictions.csv; masks/ and probabilities/ are looked for beside it.
        dataset: "KIND:PATH" of the references, or None (then only the CSV's columns count).
        rows: the rows when the caller has them (the runner); then the CSV's Dice values are used
            as they are and the dataset is read only for detection and the gallery.
    """
    path = Path(predictions)
    out = path.parent
    recompute = rows is None
    rows = read_rows(path) if rows is None else rows
    loader = open_dataset(dataset, split, limit) if dataset else None
    evidence = gather(rows, loader, out, recompute, froc_threshold, quiet)
    if recompute and loader is not None and evidence.seg:
        write_rows(path, rows)  # the recomputed Dice/IoU columns
    started = time.perf_counter()
    result = summarise(rows, evidence, n_resamples, seed)
    # A timing, not a metric: kept out of the metric sections (the report shows it with the run facts).
    timings = {"bootstrap_seconds": round(time.perf_counter() - started, 2)}
    ok = [r for r in rows if not r.get("error")]
    seconds = [s for s in (to_float(r.get("seconds", "")) for r in ok) if s is not None]
    metrics = {
        "pipeline": _first(rows, "pipeline"), "dataset": dataset, "split": split,
        "n_images": len(rows), "n_errors": len(rows) - len(ok),
        "seconds_per_image": round(float(np.mean(seconds)), 4) if seconds else None,
        "weights_sha256": _first(rows, "weights_sha256"),
        "conventions": conventions(n_resamples, seed, froc_threshold), **result, "timings": timings,
    }
    write_json(out / "metrics.json", metrics)
    return ScoredRun(metrics, rows, evidence, loader, n_resamples, seed)


def _first(rows: list[Row], key: str) -> str:
    return next((r[key] for r in rows if r.get(key)), "")


def gather(rows: list[Row], loader: DatasetLoader | None, out: Path, recompute: bool,
           froc_threshold: float, quiet: bool) -> Evidence:
    """Per-image Dice/IoU (recomputed from masks/ when `recompute`) and detections from probabilities/."""
    from tqdm import tqdm

    evidence = Evidence()
    ok = [r for r in rows if not r.get("error")]
    need = [r for r in ok if loader is not None and r["image_index"] in loader.ids
            and (_files(out, "probabilities", r) or (recompute and _files(out, "masks", r)))]
    for row in tqdm(need, desc="scoring", unit="img", disable=quiet or not need):
        sample = loader[row["image_index"]]
        for name, truth in sample.masks.items():
            pred_path = out / "masks" / f"{safe_name(row['image_index'])}_{name}.png"
            if recompute and pred_path.is_file():
                row.update(score_cells(name, M.mask_score(read_png_mask(pred_path), truth)))
            prob_path = out / "probabilities" / f"{safe_name(row['image_index'])}_{name}.png"
            if prob_path.is_file():
                prob = read_png_mask(prob_path, binary=False)
                evidence.detections.setdefault(name, []).append(M.match_detections(prob, truth, froc_threshold))
                evidence.det_groups.setdefault(name, []).append(row["patient_id"] or row["image_index"])
    for name in metric_classes(ok):
        for row in ok:
            mask = row_score(row, name)
            if mask is None:
                continue
            evidence.seg.setdefault(name, []).append(mask)
            evidence.seg_groups.setdefault(name, []).append(row["patient_id"] or row["image_index"])
            evidence.seg_ids.setdefault(name, []).append(row["image_index"])
    return evidence


def _files(out: Path, sub: str, row: Row) -> bool:
    return any((out / sub).glob(f"{safe_name(row['image_index'])}_*.png")) if (out / sub).is_dir() else False


def summarise(rows: list[Row], evidence: Evidence, n_resamples: int, seed: int) -> dict[str, Any]:
    """The "segmentation", "classification" and "detection" parts of metrics.json (absent when empty)."""
    out: dict[str, Any] = {}
    seg = {name: segmentation_entry(v, evidence.seg_groups[name], n_resamples, seed)
           for name, v in evidence.seg.items()}
    if seg:
        out["segmentation"] = seg
    cls = {}
    for label in LABELS:
        pairs = label_pairs(rows, label)
        if pairs is not None:
            cls[label] = classification_entry(*pairs, n_resamples, seed)
    if cls:
        out["classification"] = cls
    det = {name: detection_entry(d, evidence.det_groups[name], n_resamples, seed)
           for name, d in evidence.detections.items()}
    if det:
        out["detection"] = det
    return out


def segmentation_entry(scores: list[M.MaskScore], groups: list[str], n_resamples: int,
                       seed: int) -> dict[str, Any]:
    """One class's "segmentation" entry from its per-image scores and their patients (parallel).

    dice, iou: means with CIs over the images whose reference holds the class (n_images); the
    others are left out of both (the bootstrap draws only their patients) and summarised apart.
    """
    ref, empty = M.split_by_reference(scores)
    entry: dict[str, Any] = {}
    for metric in ("dice", "iou"):
        values = np.array([getattr(scores[i], metric) for i in ref], dtype=np.float64)
        entry[metric] = _mean_estimate(values, [groups[i] for i in ref], n_resamples, seed)
        if not ref.size:
            entry[metric]["undefined"] = "no image's reference holds this class"
    entry["n_images"] = int(ref.size)
    unknown = sum(scores[i].reference_area is None for i in ref)
    if unknown:  # rows of an older predictions.csv scored without the dataset: counted as before
        entry["reference_unknown_images"] = unknown
    entry["empty_reference_images"] = int(empty.size)
    if empty.size:  # else absent: a rate over no image is not 0
        area = np.array([scores[i].pred_area for i in empty], dtype=np.float64)
        empty_groups = [groups[i] for i in empty]
        entry["empty_reference_fp_rate"] = _mean_estimate((area > 0).astype(np.float64), empty_groups,
                                                          n_resamples, seed)
        entry["empty_reference_mean_pred_area"] = _mean_estimate(area, empty_groups, n_resamples, seed,
                                                                 significant=True)
    return entry


def _mean_estimate(values: np.ndarray, groups: list[str], n_resamples: int, seed: int,
                   significant: bool = False) -> dict[str, Any]:
    """Mean of float `values` (N,) with its patient-bootstrap CI; None (no CI) when N is 0."""
    if not values.size:
        return {"mean": None, "ci95": None}
    return _estimate(lambda idx: float(values[idx].mean()), groups, n_resamples, seed, significant)


def _round(value: float, significant: bool) -> float:
    # Areas are small fractions (a lesion is ~1e-3 of a film): 4 decimals would round them to 0.
    return float(f"{value:.4g}") if significant else round(float(value), 4)


def _estimate(statistic, groups: list[str], n_resamples: int, seed: int,
              significant: bool = False) -> dict[str, Any]:
    est = M.with_ci(statistic, groups, n_resamples=n_resamples, seed=seed)
    mean, ci = est["mean"], est["ci95"]
    return {"mean": None if mean is None else _round(mean, significant),
            "ci95": None if ci is None else [_round(x, significant) for x in ci]}


def label_pairs(rows: list[Row], label: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(labels int (n,), scores float (n,), patients) of rows with both a prediction and a label."""
    picked = [(to_float(r.get(f"{label}_label", "")), to_float(r.get(f"{label}_pred", "")),
               r["patient_id"] or r["image_index"]) for r in rows if not r.get("error")]
    picked = [p for p in picked if p[0] is not None and p[1] is not None]
    if not picked:
        return None
    return (np.array([int(p[0]) for p in picked]), np.array([p[1] for p in picked], float),
            [p[2] for p in picked])


def classification_entry(labels: np.ndarray, scores: np.ndarray, groups: list[str], n_resamples: int,
                         seed: int) -> dict[str, Any]:
    n_pos = int(labels.sum())
    entry: dict[str, Any] = {"threshold": THRESHOLD, "n": len(labels), "n_pos": n_pos,
                             "n_neg": len(labels) - n_pos}
    auc = _estimate(lambda i: M.roc_auc(labels[i], scores[i]), groups, n_resamples, seed)
    if auc["mean"] is None:
        auc["undefined"] = (f"only one class among the {len(labels)} labels ({n_pos} positive, "
                            f"{len(labels) - n_pos} negative)")
    entry["auc"] = auc
    for k, key in enumerate(("sensitivity", "specificity")):
        entry[key] = _estimate(lambda i, k=k: M.sensitivity_specificity(labels[i], scores[i], THRESHOLD)[k],
                               groups, n_resamples, seed)
    # Are the scores probabilities? Expected calibration error (10 equal-width bins) with its CI,
    # and the reliability diagram's bins (report.html draws them).
    bins = reliability(np.clip(scores, 0, 1), labels)
    entry["calibration"] = {"ece": _estimate(lambda i: reliability(np.clip(scores[i], 0, 1), labels[i])["ece"],
                                             groups, n_resamples, seed),
                            "reliability": {k: [None if v != v else round(v, 4) for v in bins[k]]
                                            if k != "count" else bins[k]
                                            for k in ("bin_edges", "mean_score", "fraction_positive", "count")}}
    return entry


def detection_entry(dets: list[M.ImageDetections], groups: list[str], n_resamples: int,
                    seed: int) -> dict[str, Any]:
    n_lesions = sum(d.n_lesions for d in dets)
    entry: dict[str, Any] = {"n_lesions": n_lesions, "n_images": len(dets)}
    if n_lesions == 0:
        entry["froc"] = None
        entry["undefined"] = "no reference lesion in these images"
        return entry
    froc = {}
    for rate in M.FROC_RATES:
        def stat(idx: np.ndarray, rate: float = rate) -> float | None:
            picked = [dets[i] for i in idx]
            if sum(d.n_lesions for d in picked) == 0:
                return None
            return M.froc_sensitivities(picked, (rate,))[rate]
        froc[f"{rate:g}"] = _estimate(stat, groups, n_resamples, seed)
    entry["froc"] = froc
    return entry
