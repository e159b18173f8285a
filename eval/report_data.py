"""Gather what report.html shows (ROC curves with bands, Dice values, FROC curves, a gallery) and write it.

Sits above `eval.scoring` (it reads a `ScoredRun`) and `eval.report` (the layout); `eval.runner`
calls it. Dice values and the gallery are those of the images whose reference holds the class, as
the headline Dice is: the empty/empty 1s would fill the box plot and the "best" row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eval.report import FrocCurve, GalleryCase, ReportData, RocCurve, make_case_picture, write_report
from eval.scoring import LABELS, Evidence, ScoredRun, label_pairs
from eval.table import Row, read_png_mask, safe_name
from mammo import metrics as M
from mammo.datasets import DatasetLoader

GALLERY_SIZE = 4  # worst and best cases each


def build_report(out: Path, scored: ScoredRun) -> Path:
    """Write `out/report.html` for a scored run; returns its path."""
    metrics, rows, evidence, loader = scored.metrics, scored.rows, scored.evidence, scored.loader
    title = f"{metrics['pipeline'] or 'predictions'} on {metrics['dataset'] or 'saved predictions'}"
    if metrics.get("split"):
        title += f" ({metrics['split']} split)"
    roc = []
    for label in LABELS:
        pairs = label_pairs(rows, label)
        entry = metrics.get("classification", {}).get(label)
        if pairs is not None and entry is not None:
            roc.append(roc_curve(label, *pairs, entry, scored.n_resamples, scored.seed))
    froc = [froc_curve(name, dets, metrics["detection"][name])
            for name, dets in evidence.detections.items()
            if metrics.get("detection", {}).get(name, {}).get("froc")]
    worst, best = gallery(out, rows, evidence, loader)
    data = ReportData(
        title=title, metrics=metrics,
        dice={name: np.array([s.dice for s in reference_scores(evidence, name)[0]]) for name in evidence.seg},
        roc=[r for r in roc if r is not None], froc=froc, worst=worst, best=best,
        errors=[(r["image_index"], r["error"]) for r in rows if r.get("error")])
    return write_report(out / "report.html", data)


def roc_curve(label: str, labels: np.ndarray, scores: np.ndarray, groups: list[str], entry: dict[str, Any],
              n_resamples: int, seed: int) -> RocCurve | None:
    """The ROC curve of one label with its patient-bootstrap band; None when one class only."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    if entry["auc"]["mean"] is None:
        return None
    fpr, tpr, _ = sk_roc_curve(labels, scores)
    try:
        grid, low, high = M.roc_band(labels, scores, groups, n_resamples=n_resamples, seed=seed)
    except ValueError:  # no resample held both classes: draw the curve without a band
        grid = low = high = None
    return RocCurve(label=label, fpr=fpr, tpr=tpr, auc=entry["auc"]["mean"], auc_ci=entry["auc"]["ci95"],
                    band_fpr=grid, band_low=low, band_high=high, n_pos=entry["n_pos"], n_neg=entry["n_neg"])


def froc_curve(name: str, dets: list[M.ImageDetections], entry: dict[str, Any]) -> FrocCurve:
    fp, sens, _ = M.froc_curve(dets)
    return FrocCurve(cls=name, fp_per_image=fp, sensitivity=sens, at_rates=entry["froc"],
                     n_lesions=entry["n_lesions"], n_images=entry["n_images"])


def gallery(out: Path, rows: list[Row], evidence: Evidence,
            loader: DatasetLoader | None) -> tuple[list[GalleryCase], list[GalleryCase]]:
    """The worst and best images by Dice of the main class (lesion when scored, else the first)."""
    if loader is None or not evidence.seg or not (out / "masks").is_dir():
        return [], []
    name = "lesion" if "lesion" in evidence.seg else next(iter(evidence.seg))
    scores, ids = reference_scores(evidence, name)
    ranked = sorted(zip([s.dice for s in scores], ids))
    size = min(GALLERY_SIZE, len(ranked) // 2) or len(ranked)
    worst = [case(out, loader, image_id, name, dice) for dice, image_id in ranked[:size]]
    best = [case(out, loader, image_id, name, dice) for dice, image_id in reversed(ranked[-size:])]
    return [c for c in worst if c is not None], [c for c in best if c is not None]


def reference_scores(evidence: Evidence, name: str) -> tuple[list[M.MaskScore], list[str]]:
    """(scores, image ids) of class `name` on the images whose reference holds it."""
    ref, _ = M.split_by_reference(evidence.seg[name])
    return [evidence.seg[name][i] for i in ref], [evidence.seg_ids[name][i] for i in ref]


def case(out: Path, loader: DatasetLoader, image_id: str, name: str, dice: float) -> GalleryCase | None:
    """One gallery picture: the image, the reference outline and the predicted mask."""
    path = out / "masks" / f"{safe_name(image_id)}_{name}.png"
    if not path.is_file() or image_id not in loader.ids:
        return None
    sample = loader[image_id]
    picture = make_case_picture(sample.image, sample.masks.get(name), read_png_mask(path))
    return GalleryCase(image_id=image_id, cls=name, dice=dice, rgb=picture)
