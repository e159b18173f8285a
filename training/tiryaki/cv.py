"""`cv`: patient-grouped k-fold cross-validation of the ROI classifier on train + val.

The published classifiers were chosen by cross-validation folds. With MIAS's ~85 located B/M
abnormalities outside the test split, one 16-ROI validation set is too small to pick an epoch (its
AUC swings by +-0.3), so this trains the config's recipe k times, each fold holding out whole
patients, and scores every held-out ROI after every epoch. The out-of-fold AUC per epoch (95%
bootstrap CI over patients) says how good the recipe is and how many epochs to train.

Written to `run_dir/cv/`: fold_<k>.npz after each fold (a rerun skips finished folds, so a crash
loses at most one fold), cv.csv (epoch, auc, ci_low, ci_high) and cv.png.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mammo.datasets.mias import mias_patient_id
from mammo.errors import MammoInputError
from mammo.metrics import roc_auc, with_ci
from mammo.models.keras_unet import set_threads
from training.tiryaki.config import load_config
from training.tiryaki.data import Roi, classifier_rois
from training.tiryaki.run import augmented_rois, build_model, fixed_rois


def patient_of(roi: Roi) -> str:
    """The MIAS patient of a film (mdb001 and mdb002 are patient 1); other sets: the image id."""
    try:
        return mias_patient_id(roi.image_id)
    except MammoInputError:
        return roi.image_id


def folds(rois: list[Roi], k: int, seed: int) -> list[np.ndarray]:
    """k held-out index arrays, whole patients per fold, malignant share balanced (sklearn's
    StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([r.malignant for r in rois])
    groups = [patient_of(r) for r in rois]
    split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [held for _, held in split.split(np.zeros(len(rois)), y, groups)]


def _fold(config: Any, train: list[Roi], held: list[Roi], keras: Any, epochs: int) -> np.ndarray:
    """P(malignant) of the held-out ROIs after each epoch: float32 (epochs, len(held))."""
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="binary_crossentropy")
    size = config.input_size[0]
    batches = augmented_rois(train, size, config.batch_size, config.seed)
    steps = 4 * int(np.ceil(len(train) / config.batch_size))  # as `train`: 4 augmented passes an epoch
    x_held = fixed_rois(held, size)[0]
    scores = []
    for _ in range(epochs):
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
        scores.append(model.predict(x_held, batch_size=config.batch_size, verbose=0)[:, 0])
    return np.stack(scores).astype(np.float32)


def cross_validate(config_file: str | Path, k: int = 5, epochs: int | None = None) -> Path:
    """Run (or finish) the k folds of a classifier config for `epochs` (default: the config's)
    epochs each; returns the cv.csv path."""
    from mammo.models.frameworks import import_keras

    config = load_config(config_file)
    if config.stage != "classifier":
        raise ValueError(f"{config_file}: cv is for the classifier stage, not {config.stage!r}")
    set_threads(config.threads)
    keras = import_keras()
    rois = classifier_rois(config, "train") + classifier_rois(config, "val")
    out = config.path / "cv"
    out.mkdir(parents=True, exist_ok=True)
    held_out = _saved_folds(out, rois, k, config.seed)
    for i, held in enumerate(tqdm(held_out, desc=f"{config.name} cv", unit="fold")):
        path = out / f"fold_{i}.npz"
        if path.is_file():
            continue
        held_set = set(held.tolist())
        train = [r for j, r in enumerate(rois) if j not in held_set]
        scores = _fold(config, train, [rois[j] for j in held], keras, epochs or config.epochs)
        np.savez(path.with_suffix(".tmp.npz"), held=held, scores=scores)
        path.with_suffix(".tmp.npz").replace(path)
    return _summarise(out, rois, k)


def _saved_folds(out: Path, rois: list[Roi], k: int, seed: int) -> list[np.ndarray]:
    """The folds of the first run (folds.npz), so that a resumed run adds folds of the same partition."""
    path = out / "folds.npz"
    if path.is_file():
        saved = np.load(path)
        if int(saved["n"]) == len(rois) and len(saved.files) - 1 == k:
            return [saved[f"fold_{i}"] for i in range(k)]
        raise ValueError(f"{out} holds folds of another run ({int(saved['n'])} ROIs, {len(saved.files) - 1} folds); "
                         f"delete the folder to start again with {len(rois)} ROIs and {k} folds")
    held = folds(rois, k, seed)
    np.savez(path, n=len(rois), **{f"fold_{i}": h for i, h in enumerate(held)})
    return held


def _summarise(out: Path, rois: list[Roi], k: int) -> Path:
    """cv.csv and cv.png from the fold files: out-of-fold AUC per epoch with its 95% CI."""
    parts = [np.load(out / f"fold_{i}.npz") for i in range(k)]
    epochs = min(p["scores"].shape[0] for p in parts)
    y = np.array([r.malignant for r in rois])
    groups = [patient_of(r) for r in rois]
    rows = []
    for e in range(epochs):
        s = np.zeros(len(rois), np.float32)
        for p in parts:
            s[p["held"]] = p["scores"][e]
        stat = with_ci(lambda idx, s=s: roc_auc(y[idx], s[idx]), groups)
        low, high = stat["ci95"] or (None, None)
        rows.append({"epoch": e + 1, "auc": stat["mean"], "ci_low": low, "ci_high": high,
                     "n": len(rois), "n_malignant": int(y.sum())})
    with open(out / "cv.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, out / "cv.png")
    best = max(rows, key=lambda r: r["auc"] if r["auc"] is not None else -1.0)
    print(f"out-of-fold ROI AUC, {len(rois)} ROIs ({int(y.sum())} malignant): best epoch {best['epoch']} "
          f"{best['auc']:.3f} ({best['ci_low']:.3f}-{best['ci_high']:.3f}); last {rows[-1]['auc']:.3f}", flush=True)
    return out / "cv.csv"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(e, [r["auc"] for r in rows], label="out-of-fold AUC")
    ax.fill_between(e, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.25, label="95% CI")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="epoch", ylabel="ROI AUC (benign vs malignant)", ylim=(0, 1))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
