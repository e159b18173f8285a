"""`python -m training.tiryaki measure --split val|test`: the whole `tiryaki-mass` pipeline against
the issue's targets, on the fixed patient-level splits, with 95% patient-bootstrap CIs.

- breast_dice: U-net5L breast mask vs the tissue-ddsm breast (all but background), per image.
- mass_dice_detected: per outlined MIAS mass that the pipeline detects (a kept mass touches it),
  Dice of the mass outline and the kept masses touching it; films whose every mass is outlined.
- mass_sensitivity_at_1fp: FROC sensitivity at 1 false-positive mass per film, over those films
  and the lesion-free films (kept masses scored by their detection score).
- mass_dice_cdd_dm: per-image lesion Dice on CDD-CESM low-energy (DM) images.
- roi_auc_mass / roi_auc_all: the classifier on MIAS ROIs cut at the Info.txt circles (masses;
  every located B/M abnormality).
- image_auc_malignant: the pipeline's image score on every MIAS film of the split (normal films
  count as not malignant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.datasets.mias import mias_patient_id
from mammo.io.meta import ImageMeta
from mammo.metrics import ImageDetections, dice_iou, froc_sensitivities, match_detections, roc_auc, with_ci
from mammo.pipelines.tiryaki import MASS_THRESHOLD
from training.tiryaki.config import load_config
from training.tiryaki.data import OUTLINED, classifier_rois

CONFIGS = {stage: f"training/configs/tiryaki_{stage}.yaml" for stage in ("breast", "mass", "classifier")}
MASS_CLASSES = ("CIRC", "SPIC", "MISC")


def pipeline_from(source: str) -> Any:
    """The pipeline from the manifest's weights ("manifest") or the runs' best epochs ("runs")."""
    if source == "manifest":
        from mammo.pipelines import get_pipeline

        return get_pipeline("tiryaki-mass")
    from mammo.pipelines.tiryaki import TiryakiPipeline
    from training.tiryaki.run import run_net

    return TiryakiPipeline(*(run_net(CONFIGS[s]) for s in ("breast", "mass", "classifier")))


def _ci(values: list[float], groups: list[str]) -> dict[str, Any]:
    arr = np.asarray(values, float)
    return {**with_ci(lambda idx: float(arr[idx].mean()) if idx.size else None, groups), "n": len(values)}


def _auc(labels: list[int], scores: list[float], groups: list[str]) -> dict[str, Any]:
    y, s = np.asarray(labels), np.asarray(scores, float)
    return {**with_ci(lambda idx: roc_auc(y[idx], s[idx]), groups), "n": len(labels), "n_positive": int(y.sum())}


def breast_dice(pipe: Any, split: str, data: Path) -> dict[str, Any]:
    ds = load_dataset("tissue-ddsm", data / "tissue_ddsm", split=split)
    dice, groups = [], []
    for sample in tqdm(ds, desc=f"breast {split}", leave=False):
        dice.append(dice_iou(pipe.breast(sample.image), sample.masks["breast"])[0])
        groups.append(sample.patient_id)
    return _ci(dice, groups)


def detected_mass_dice(kept: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice of each true mass (8-connected component of `truth`) that a kept mass touches, against
    the kept masses touching it."""
    import cv2

    n, labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    _, pred = cv2.connectedComponents(kept.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        lesion = labels == k
        touching = np.unique(pred[lesion & (pred > 0)])
        if touching.size:
            out.append(dice_iou(np.isin(pred, touching), lesion)[0])
    return out


def mias_films(pipe: Any, split: str, data: Path) -> dict[str, Any]:
    """Mass Dice, FROC sensitivity and image AUC on the MIAS films of `split`."""
    ds = load_dataset("mias-outlined", data / "mias", split=split)
    dets: list[ImageDetections] = []
    det_groups, dice, dice_groups, labels, scores, groups = [], [], [], [], [], []
    for sample in tqdm(ds, desc=f"MIAS {split}", leave=False):
        result = pipe.run(sample.image, sample.meta)
        labels.append(int(sample.labels["malignant"] or 0))
        scores.append(result.scores["malignant"])
        groups.append(sample.patient_id)
        if sample.extra.get("mask_shape") not in OUTLINED:
            continue
        truth = sample.masks.get("lesion", np.zeros(sample.image.shape, bool))
        kept = result.masks["lesion"]
        dets.append(match_detections(np.where(kept, result.probabilities["lesion"], 0.0), truth, MASS_THRESHOLD))
        det_groups.append(sample.patient_id)
        found = detected_mass_dice(kept, truth)
        dice += found
        dice_groups += [sample.patient_id] * len(found)
    n_masses = sum(d.n_lesions for d in dets)

    def sens(idx: np.ndarray) -> float | None:
        chosen = [dets[i] for i in idx]
        return froc_sensitivities(chosen, [1.0])[1.0] if sum(d.n_lesions for d in chosen) else None

    return {"mass_dice_detected": {**_ci(dice, dice_groups), "n_masses": n_masses},
            "mass_sensitivity_at_1fp": {**with_ci(sens, det_groups), "n_films": len(dets), "n_masses": n_masses},
            "image_auc_malignant": _auc(labels, scores, groups)}


def cdd_dm_dice(pipe: Any, split: str, data: Path) -> dict[str, Any]:
    ds = load_dataset("cdd-cesm", data / "cdd_cesm", split=split)
    dice, groups = [], []
    for index, ref in enumerate(tqdm(ds.refs, desc=f"CDD-CESM DM {split}", leave=False)):
        if ref.info.get("image_type") != "DM":
            continue
        sample = ds[index]
        if not sample.masks["lesion"].any():
            continue
        result = pipe.run(sample.image, sample.meta)
        dice.append(dice_iou(result.masks["lesion"], sample.masks["lesion"])[0])
        groups.append(sample.patient_id)
    return _ci(dice, groups)


def roi_aucs(pipe: Any, split: str) -> dict[str, Any]:
    """Classifier AUC on the split's MIAS ROIs, cut as in training (no augmentation)."""
    from training.tiryaki.run import fixed_rois

    config = load_config(CONFIGS["classifier"])
    rois = classifier_rois(config, split)
    x, y = fixed_rois(rois, pipe.classifier.input_size[0])
    scores = pipe.classifier(x)[:, 0].tolist()
    labels = [int(v) for v in y[:, 0]]
    groups = [mias_patient_id(r.image_id) for r in rois]
    masses = [i for i, r in enumerate(rois) if r.cls in MASS_CLASSES]
    return {"roi_auc_mass": _auc([labels[i] for i in masses], [scores[i] for i in masses], [groups[i] for i in masses]),
            "roi_auc_all": _auc(labels, scores, groups)}


def measure(split: str, data: str | Path = "../shared/data", source: str = "runs") -> dict[str, Any]:
    """Every number above for `split`, as {"split", "source", "metrics": {name: {mean, ci95, n...}}}."""
    data = Path(data)
    pipe = pipeline_from(source)
    pipe.run(np.zeros((64, 48), np.float32), ImageMeta())  # trace the networks once
    metrics = {"breast_dice": breast_dice(pipe, split, data), **mias_films(pipe, split, data),
               "mass_dice_cdd_dm": cdd_dm_dice(pipe, split, data), **roi_aucs(pipe, split)}
    return {"split": split, "source": source, "metrics": metrics}


def flat(report: dict[str, Any]) -> dict[str, float]:
    """`<split>_<metric>` (and `_ci_low`/`_ci_high`) -> rounded numbers, for the manifest."""
    out = {}
    for name, value in report["metrics"].items():
        if value.get("mean") is None:
            continue
        key = f"{report['split']}_{name}"
        out[key] = round(value["mean"], 4)
        if value.get("ci95"):
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = (round(v, 4) for v in value["ci95"])
    return out
