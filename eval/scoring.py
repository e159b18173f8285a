"""predictions.csv (+ masks/, probabilities/) and the dataset's references -> metrics.json, report.html.

Runs without a model: `python -m eval score --predictions DIR/predictions.csv --dataset KIND:PATH`.
Per-image Dice/IoU are recomputed from `masks/` against the dataset when both are there, else taken
from the CSV; lesion detection (FROC) needs `probabilities/` and the dataset's lesion masks;
classification needs the `*_pred` and `*_label` columns. What cannot be computed is left out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.table import (
    Row,
    format_value,
    metric_classes,
    read_png_mask,
    read_rows,
    safe_name,
    to_float,
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
        "dice": "Dice and IoU per image, then the mean over images. Both masks empty: 1; one empty and "
                "the other not: 0. Images without a reference mask for a class do not count for it.",
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
    """Per-image values gathered for scoring (parallel lists; `groups` are patient ids)."""

    seg: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # class -> dice/iou/patient
    seg_ids: dict[str, list[str]] = field(default_factory=dict)
    detections: dict[str, list[M.ImageDetections]] = field(default_factory=dict)
    det_groups: dict[str, list[str]] = field(default_factory=dict)


def score(predictions: str | Path, dataset: str | None, *, split: str | None = None,
          limit: int | None = None, rows: list[Row] | None = None, n_resamples: int = 1000,
          seed: int = 0, froc_threshold: float = FROC_THRESHOLD, report: bool = True,
          quiet: bool = False) -> dict[str, Any]:
    """Compute metrics.json (and report.html) beside `predictions`; returns the metrics dict.

    Args:
        predictions: the predictions.csv; masks/ and probabilities/ are looked for beside it.
        dataset: "KIND:PATH" of the references, or None (then only the CSV's columns count).
        rows: the rows when the caller has them (the runner); then the CSV's Dice values are used
            as they are and the dataset is read only for detection and the gallery.
    """
    from eval.runner import open_dataset, write_json

    path = Path(predictions)
    out = path.parent
    recompute = rows is None
    rows = read_rows(path) if rows is None else rows
    loader = open_dataset(dataset, split, limit) if dataset else None
    evidence = gather(rows, loader, out, recompute, froc_threshold, quiet)
    if recompute and loader is not None and evidence.seg:
        write_rows(path, rows)  # the recomputed Dice/IoU columns
    result = summarise(rows, evidence, n_resamples, seed)
    ok = [r for r in rows if not r.get("error")]
    seconds = [s for s in (to_float(r.get("seconds", "")) for r in ok) if s is not None]
    metrics = {
        "pipeline": _first(rows, "pipeline"), "dataset": dataset, "split": split,
        "n_images": len(rows), "n_errors": len(rows) - len(ok),
        "seconds_per_image": round(float(np.mean(seconds)), 4) if seconds else None,
        "weights_sha256": _first(rows, "weights_sha256"),
        "conventions": conventions(n_resamples, seed, froc_threshold), **result,
    }
    write_json(out / "metrics.json", metrics)
    if report:
        from eval.report_data import build_report

        build_report(out, metrics, rows, evidence, loader, n_resamples, seed)
    return metrics


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
                dice, iou = M.dice_iou(read_png_mask(pred_path), truth)
                row[f"dice_{name}"], row[f"iou_{name}"] = format_value(dice), format_value(iou)
            prob_path = out / "probabilities" / f"{safe_name(row['image_index'])}_{name}.png"
            if prob_path.is_file():
                prob = read_png_mask(prob_path, binary=False)
                evidence.detections.setdefault(name, []).append(M.match_detections(prob, truth, froc_threshold))
                evidence.det_groups.setdefault(name, []).append(row["patient_id"] or row["image_index"])
    for name in metric_classes(ok):
        for row in ok:
            dice, iou = to_float(row.get(f"dice_{name}", "")), to_float(row.get(f"iou_{name}", ""))
            if dice is None or iou is None:
                continue
            values = evidence.seg.setdefault(name, {"dice": [], "iou": [], "patient": []})
            values["dice"].append(dice)
            values["iou"].append(iou)
            values["patient"].append(row["patient_id"] or row["image_index"])
            evidence.seg_ids.setdefault(name, []).append(row["image_index"])
    return evidence


def _files(out: Path, sub: str, row: Row) -> bool:
    return any((out / sub).glob(f"{safe_name(row['image_index'])}_*.png")) if (out / sub).is_dir() else False


def summarise(rows: list[Row], evidence: Evidence, n_resamples: int, seed: int) -> dict[str, Any]:
    """The "segmentation", "classification" and "detection" parts of metrics.json (absent when empty)."""
    out: dict[str, Any] = {}
    seg = {name: segmentation_entry(v, n_resamples, seed) for name, v in evidence.seg.items()}
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


def segmentation_entry(values: dict[str, list[float]], n_resamples: int, seed: int) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for metric in ("dice", "iou"):
        data = np.asarray(values[metric])
        entry[metric] = _estimate(lambda idx, d=data: float(d[idx].mean()), values["patient"], n_resamples, seed)
    entry["n"] = len(values["dice"])
    return entry


def _estimate(statistic, groups: list[str], n_resamples: int, seed: int) -> dict[str, Any]:
    est = M.with_ci(statistic, groups, n_resamples=n_resamples, seed=seed)
    mean, ci = est["mean"], est["ci95"]
    return {"mean": None if mean is None else round(float(mean), 4),
            "ci95": None if ci is None else [round(float(x), 4) for x in ci]}


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
    started = time.perf_counter()
    froc = {}
    for rate in M.FROC_RATES:
        def stat(idx: np.ndarray, rate: float = rate) -> float | None:
            picked = [dets[i] for i in idx]
            if sum(d.n_lesions for d in picked) == 0:
                return None
            return M.froc_sensitivities(picked, (rate,))[rate]
        froc[f"{rate:g}"] = _estimate(stat, groups, n_resamples, seed)
    entry["froc"] = froc
    entry["bootstrap_seconds"] = round(time.perf_counter() - started, 2)
    return entry
