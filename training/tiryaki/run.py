"""`train`: one `tiryaki-mass` network from its YAML config, with Keras's crash-safe resume.

The run folder gets: config.yaml (the recipe), best.weights.h5 (best validation epoch),
train_losses/train_metrics CSV + PNG curves (every epoch), backup/ (BackupAndRestore: running the
same command again after a crash or a time-budget stop resumes there), cache/ (framed data).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mammo.models.keras_tiryaki import KerasNet, build_from_architecture
from mammo.models.keras_unet import custom_objects, set_threads
from mammo.pipelines.tiryaki_prep import roi_input, roi_window
from training.cesm_unet.callbacks import metrics_logger, read_rows, time_budget
from training.cesm_unet.data import Augmenter, KerasFramed
from training.tiryaki.config import TiryakiConfig, load_config
from training.tiryaki.data import Roi, breast_data, cached, mass_data, classifier_rois

BEST = "best.weights.h5"


def run_net(config_file: str | Path) -> KerasNet:
    """The best network of a finished (or running) run, for inference."""
    config = load_config(config_file)
    return KerasNet.load(config.architecture, tuple(config.input_size), str(config.path / BEST))


def build_model(config: TiryakiConfig) -> Any:
    """The network to train: pretrained VGG16 parts and frozen layers as the config says."""
    return build_from_architecture(config.architecture, tuple(config.input_size), pretrained=config.pretrained,
                                   frozen_until=config.frozen_until or None)


def augmented_rois(rois: list[Roi], size: int, batch: int, seed: int):
    """Endless (x, y, weight) batches of ROIs: centre shifted by up to 10% of the side, side
    scaled by 0.85-1.25, random flips and quarter turns (a mass has no orientation); weights
    balance benign and malignant."""
    share = float(np.mean([r.malignant for r in rois]))
    weight = {0: 0.5 / (1.0 - share), 1: 0.5 / share}
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(rois))
        for start in range(0, len(order), batch):
            xs, ys = [], []
            for i in order[start:start + batch]:
                r = rois[i]
                y0, x0, side = roi_window(r.cy, r.cx, r.extent * rng.uniform(0.85, 1.25), r.box)
                y0 += int(rng.uniform(-0.1, 0.1) * side)
                x0 += int(rng.uniform(-0.1, 0.1) * side)
                x = roi_input(r.image, y0, x0, side, size)
                x = np.rot90(x, rng.integers(4))
                xs.append(x[:, ::-1] if rng.random() < 0.5 else x)
                ys.append(r.malignant)
            yield (np.ascontiguousarray(np.stack(xs)), np.array(ys, np.float32)[:, None],
                   np.array([weight[y] for y in ys], np.float32))


def fixed_rois(rois: list[Roi], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ROIs as the pipeline cuts them (no augmentation): x (N, s, s, 1), y (N, 1)."""
    xs = [roi_input(r.image, *roi_window(r.cy, r.cx, r.extent, r.box), size) for r in rois]
    return np.stack(xs), np.array([r.malignant for r in rois], np.float32)[:, None]


def _segmentation_data(config: TiryakiConfig) -> tuple[KerasFramed, KerasFramed]:
    key = repr((config.stage, config.input_size, [vars(s) for s in config.sources], config.breast_run))
    if config.stage == "breast":
        return tuple(cached(config, part, key, lambda p=part: breast_data(config, p)) for part in ("train", "val"))
    net = run_net(config.breast_run)
    key += str(Path(load_config(config.breast_run).path / BEST).stat().st_mtime_ns)
    return tuple(cached(config, part, key, lambda p=part: mass_data(config, p, net)) for part in ("train", "val"))


def _callbacks(keras: Any, config: TiryakiConfig, monitor: str, mode: str) -> list[Any]:
    backup = config.path / "backup"
    resuming = backup.is_dir() and any(backup.iterdir())
    if resuming:
        print(f"resuming from {backup}", flush=True)
    logged = [r[monitor] for r in read_rows(config.path) if monitor in r] if resuming else []
    best = (min(logged) if mode == "min" else max(logged)) if logged else None
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience, verbose=1),
        keras.callbacks.ModelCheckpoint(str(config.path / BEST), monitor=monitor, mode=mode, save_best_only=True,
                                        save_weights_only=True, verbose=1, initial_value_threshold=best),
        metrics_logger(keras, config.path, ["dice_coef", "auc"], resume=resuming),
    ]
    if config.time_budget_min:
        callbacks.append(time_budget(keras, config.time_budget_min))
    return callbacks


def train(config_file: str | Path) -> Path:
    """Train as the config says; returns the best weights file."""
    from mammo.models.frameworks import import_keras

    config = load_config(config_file)
    set_threads(config.threads)
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    config.path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, config.path / "config.yaml")
    model = build_model(config)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if config.stage == "classifier":
        train_rois, val_rois = classifier_rois(config, "train"), classifier_rois(config, "val")
        size = config.input_size[0]
        batches = augmented_rois(train_rois, size, config.batch_size, config.seed)
        steps, validation = 4 * int(np.ceil(len(train_rois) / config.batch_size)), fixed_rois(val_rois, size)
        share = float(np.mean([r.malignant for r in train_rois]))
        model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
        monitor, mode = "val_auc", "max"
        print(f"train {len(train_rois)} ROIs ({share:.0%} malignant), validation {len(val_rois)}", flush=True)
    else:
        train_data, val_data = _segmentation_data(config)
        augmenter = Augmenter(train_data, config.batch_size, config.seed, True)
        batches, steps, validation = augmenter.endless(), len(augmenter), (val_data.x, val_data.y)
        objects = custom_objects()
        model.compile(optimizer=optimizer, loss=objects["bce_dice_loss"], metrics=[objects["dice_coef"]])
        monitor, mode = "val_loss", "min"
        print(f"train {len(train_data)} images, validation {len(val_data)}", flush=True)
    callbacks = _callbacks(keras, config, monitor, mode)
    model.fit(batches, steps_per_epoch=steps, epochs=config.epochs, validation_data=validation,
              validation_batch_size=config.batch_size, callbacks=callbacks, verbose=2)
    if not any(getattr(cb, "spent", False) for cb in callbacks):
        shutil.rmtree(config.path / "backup", ignore_errors=True)
    else:
        print(f"time budget spent: run the same command again to resume from {config.path / 'backup'}", flush=True)
    return config.path / BEST
