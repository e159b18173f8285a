"""DeepMiCa's ROI classifier on MIAS calcification clusters: benign (0) / malignant (1).

ROIs: one per located MIAS CALC circle, cut as the pipeline cuts a predicted cluster
(`cluster_window` of the pseudo-mask's specks in the circle, or of the circle's bounding box when
the detector found none there) from the enhanced film at the working pixel size.

Training follows the seed's first stage (`Step3_Classification/_03_FeatureExtraction`): the
packaged ImageNet backbone frozen, the head (Linear -> ReLU -> Dropout -> Linear) trained with BCE;
the seed's fine-tuning stage is left out: 16 training ROIs cannot fit 3.4 M backbone weights.
Each epoch sees every training ROI `augment` times, with its window jittered (shift, size 0.8-1.3x)
and flipped or turned. The epoch count is fixed in advance (no selection on 3 validation ROIs).

`python -m training.deepmica roi --config training/configs/deepmica_seg.yaml` writes
runs/deepmica-classifier/{model.pt, roi.json, cv.json}: val and test AUC with counts, and the
out-of-fold AUC of a patient-grouped k-fold over train + val (more ROIs per estimate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mammo.metrics import roc_auc, with_ci
from mammo.models.frameworks import import_torch
from mammo.pipelines.deepmica_roi import cluster_input, cluster_window
from mammo.preprocess.microcalc import circles_mask, label_calcifications
from training.config import TrainConfig
from training.deepmica.data import Film, load_films

ROI_SIZE = 224


def circle_box(film: Film, k: int) -> tuple[int, int, int, int]:
    """Bounding box of the pseudo-mask specks touching circle k, else of the circle itself."""
    r, c, rad = film.circles[k]
    region = circles_mask(film.enhanced.shape, [film.circles[k]])
    labels, _ = label_calcifications(film.pseudo)
    ids = np.unique(labels[region & film.pseudo])
    ys, xs = np.nonzero(np.isin(labels, ids[ids > 0]))
    if ys.size:
        return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
    return int(r - rad), int(c - rad), int(r + rad) + 1, int(c + rad) + 1


def roi_records(films: list[Film]) -> list[dict[str, Any]]:
    """One record per located circle with a B/M label: film, box, label (1 = malignant), patient."""
    return [{"film": f, "box": circle_box(f, k), "label": int(p == "M"), "patient": f.patient_id,
             "id": f"{f.image_id}#{k}"}
            for f in films for k, p in enumerate(f.pathology) if p in ("B", "M")]


def roi_tensor(record: dict[str, Any], pixel_mm: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """float32 (224, 224) input of a record; with `rng`, the window jittered, flipped and turned."""
    film, (y0, x0, y1, x1) = record["film"], record["box"]
    if rng is not None:
        h, w = y1 - y0, x1 - x0
        grow = rng.uniform(0.8, 1.3)
        dy, dx = rng.uniform(-0.15, 0.15, size=2) * max(h, w, 8)
        cy, cx, half = (y0 + y1) / 2 + dy, (x0 + x1) / 2 + dx, max(h, w) * grow / 2
        y0, x0, y1, x1 = int(cy - half), int(cx - half), int(cy + half) + 1, int(cx + half) + 1
    window = cluster_window((y0, x0, y1, x1), film.enhanced.shape, pixel_mm)
    x = cluster_input(film.enhanced, window, ROI_SIZE)
    if rng is not None:
        x = np.rot90(x, int(rng.integers(4)))
        x = x[:, ::-1] if rng.random() < 0.5 else x
    return np.ascontiguousarray(x, np.float32)


def train_head(records: list[dict[str, Any]], config: TrainConfig, epochs: int = 30, augment: int = 8,
               seed: int = 0):
    """The classifier with the packaged ImageNet backbone frozen and its head trained on `records`."""
    torch = import_torch()  # the frameworks guard: torch before tensorflow

    from mammo.models.torch_deepmica import build_roi_classifier

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_roi_classifier("efficientnet-lite0", pretrained=True, input_size=ROI_SIZE)
    model.backbone.requires_grad_(False)
    opt = torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=1e-4)
    labels = np.array([r["label"] for r in records], np.float32)
    pos_weight = torch.tensor((labels == 0).sum() / max(1.0, labels.sum()))
    for _ in range(epochs):
        model.backbone.eval()  # frozen: batch-norm statistics stay ImageNet's
        model.head.train()
        order = np.repeat(np.arange(len(records)), augment)
        rng.shuffle(order)
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            x = torch.from_numpy(np.stack([roi_tensor(records[j], config.deepmica_work_mm, rng) for j in idx])[:, None])
            y = torch.from_numpy(labels[idx])[:, None]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y, pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def predict(model, records: list[dict[str, Any]], pixel_mm: float) -> np.ndarray:
    """P(malignant) of each record's un-jittered ROI."""
    torch = import_torch()  # the frameworks guard: torch before tensorflow

    if not records:
        return np.zeros(0)
    x = torch.from_numpy(np.stack([roi_tensor(r, pixel_mm) for r in records])[:, None])
    with torch.inference_mode():
        return torch.sigmoid(model(x)[:, 0]).numpy()


def auc_summary(records: list[dict[str, Any]], scores: np.ndarray) -> dict[str, Any]:
    """AUC with its patient-bootstrap CI and the counts."""
    y = np.array([r["label"] for r in records])
    groups = [r["patient"] for r in records]
    out = with_ci(lambda idx: roc_auc(y[idx], scores[idx]), groups) if len(y) else {"mean": None, "ci95": None}
    return {**out, "n": int(len(y)), "n_malignant": int(y.sum()),
            "scores": {r["id"]: round(float(s), 4) for r, s in zip(records, scores)}}


def cross_validate(records: list[dict[str, Any]], config: TrainConfig, folds: int, **train: Any) -> dict[str, Any]:
    """Out-of-fold P(malignant) from a patient-grouped stratified k-fold, and its AUC."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([r["label"] for r in records])
    oof = np.zeros(len(records))
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    for train_idx, test_idx in split.split(np.zeros(len(y)), y, [r["patient"] for r in records]):
        model = train_head([records[i] for i in train_idx], config, **train)
        oof[test_idx] = predict(model, [records[i] for i in test_idx], config.deepmica_work_mm)
    return {**auc_summary(records, oof), "folds": folds}


def run(config: TrainConfig, out: Path, epochs: int = 30, folds: int = 4) -> dict[str, Any]:
    """Train on the training split, score val and test, cross-validate over train + val; write `out`."""
    torch = import_torch()  # the frameworks guard: torch before tensorflow

    out.mkdir(parents=True, exist_ok=True)
    parts = {s: roi_records([f for f in load_films(config, s, normal_limit=0) if f.circles])
             for s in ("train", "val", "test")}
    model = train_head(parts["train"], config, epochs=epochs)
    torch.save({"model": model.state_dict(), "epochs": epochs}, out / "model.pt")
    report = {s: auc_summary(parts[s], predict(model, parts[s], config.deepmica_work_mm)) for s in ("val", "test")}
    report["train_rois"] = {"n": len(parts["train"]), "n_malignant": sum(r["label"] for r in parts["train"])}
    report["epochs"] = epochs
    (out / "roi.json").write_text(json.dumps(report, indent=2))
    cv = cross_validate(parts["train"] + parts["val"], config, folds, epochs=epochs)
    (out / "cv.json").write_text(json.dumps(cv, indent=2))
    report["cv_train_val"] = cv
    return report
