"""The three commands of the original tool: train, evaluate, infer — all driven by one config."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.io import read_image
from mammo.models.keras_unet import KerasUNet, build_unet, compile_unet, custom_objects, set_threads
from mammo.pipelines.cesm_unet import CesmUnetPipeline
from mammo.pipelines.cesm_unet_config import architecture, has_data, load_config
from training.cesm_unet.callbacks import epoch_change_infer, metrics_logger, read_rows, time_budget
from training.cesm_unet.data import Augmenter, KerasFramed, list_images, load_section

WEIGHTS_FILE, MODEL_FILE = "best.weights.h5", "best.keras"


def _setup(config_file: str | Path) -> tuple[dict, Any]:
    """Parse the config, limit threads, seed, and return (config, keras)."""
    from mammo.models.frameworks import import_keras

    config = load_config(config_file)
    set_threads(config["train"]["threads"])
    keras = import_keras()
    keras.utils.set_random_seed(config["train"]["seed"])
    return config, keras


def _mini_test(config: dict, val: KerasFramed) -> tuple[np.ndarray, np.ndarray | None]:
    """The epoch-change images: the first `num_infer_images` of [infer] images_dir, else of the
    validation data (with their true masks)."""
    n = config["train"]["num_infer_images"]
    folder = config["infer"]["images_dir"]
    if folder is None or not Path(folder).is_dir():
        return val.x[:n], val.y[:n, ..., 0]
    m = config["model"]
    from mammo.pipelines.cesm_unet import image_type_of, prepare_input

    xs = []
    for path in list_images(folder)[:n]:
        image, _ = read_image(path)
        xs.append(prepare_input(image, image_type_of(path.name), (m["image_height"], m["image_width"]),
                                m["image_channels"], config["train"]["crop_margin"])[0])
    return np.stack(xs), None


def _callbacks(keras, config: dict, val: KerasFramed) -> list:
    t, model_dir = config["train"], Path(config["train"]["model_dir"])
    target = model_dir / (WEIGHTS_FILE if t["save_weights_only"] else MODEL_FILE)
    backup = model_dir / "backup"
    resuming = backup.is_dir() and any(backup.iterdir())
    if resuming:
        print(f"resuming from {backup} (BackupAndRestore)", flush=True)
    # A resumed run must not overwrite the best checkpoint with a worse epoch.
    logged = [r["val_loss"] for r in read_rows(Path(t["eval_dir"])) if "val_loss" in r] if resuming else []
    callbacks = [
        # First, so that a resumed run restores the weights, optimizer and epoch before the
        # others run. Kept after a time-budget stop (train() deletes it when the run is over).
        keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=t["patience"], verbose=1),
        keras.callbacks.ModelCheckpoint(str(target), monitor="val_loss", save_best_only=True,
                                        save_weights_only=t["save_weights_only"], verbose=1,
                                        initial_value_threshold=min(logged) if logged else None),
        metrics_logger(keras, Path(t["eval_dir"]), config["model"]["metrics"], resume=resuming),
    ]
    if t["time_budget_min"]:
        callbacks.append(time_budget(keras, t["time_budget_min"]))
    if t["learning_rate_reducer"]:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=t["reducer_factor"],
                                                           patience=t["reducer_patience"], verbose=1))
    if t["epoch_change_infer"]:
        images, truth = _mini_test(config, val)
        callbacks.append(epoch_change_infer(keras, images, truth, Path(t["epoch_change_infer_dir"])))
    return callbacks


def train(config_file: str | Path) -> Path:
    """Train as the config says; returns the best checkpoint (`model_dir/best.weights.h5` or `.keras`).
    Validation data: [eval] when it names data, else the [train] source's "val" split."""
    config, keras = _setup(config_file)
    t = config["train"]
    model_dir = Path(t["model_dir"])
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_file, model_dir / "train_eval_infer.config")  # the recipe beside the weights
    cache = model_dir / "cache"
    train_data = load_section(t, config, cache, "train")
    val_section = config["eval"] if has_data(config["eval"]) else {**t, "split": "val"}
    val = load_section(val_section, config, cache, "val")
    print(f"train {len(train_data)} images, validation {len(val)} images", flush=True)
    model = build_unet(**architecture(config))
    if config["model"]["show_summary"]:
        model.summary()
    m = config["model"]
    compile_unet(model, m["learning_rate"], m["loss"], m["metrics"])
    augmenter = Augmenter(train_data, t["batch_size"], t["seed"], m["generator"])
    callbacks = _callbacks(keras, config, val)
    model.fit(augmenter.endless(), steps_per_epoch=len(augmenter), epochs=t["epochs"],
              validation_data=(val.x, val.y), validation_batch_size=t["batch_size"],
              callbacks=callbacks, verbose=2)
    if not any(getattr(cb, "spent", False) for cb in callbacks):  # finished: no resume left to do
        shutil.rmtree(model_dir / "backup", ignore_errors=True)
    else:
        print(f"stopped by the time budget; run the same command again to resume from {model_dir / 'backup'}",
              flush=True)
    return model_dir / (WEIGHTS_FILE if t["save_weights_only"] else MODEL_FILE)


def load_model(config: dict):
    """The best model of `model_dir` (weights into a fresh UNet, or the whole `.keras` model)."""
    from mammo.models.frameworks import import_keras

    model_dir = Path(config["train"]["model_dir"])
    if (model_dir / WEIGHTS_FILE).is_file():
        model = build_unet(**architecture(config))
        model.load_weights(str(model_dir / WEIGHTS_FILE))
        return model
    return import_keras().models.load_model(str(model_dir / MODEL_FILE), custom_objects=custom_objects())


def evaluate(config_file: str | Path, section: str = "eval") -> dict[str, float]:
    """Loss and dice_coef of the best model on [eval] (or [test]) data, written like the original to
    `eval_dir/evaluation.csv` (rows `loss,<value>` and `dice_coef,<value>`); the per-image Dice at
    model resolution goes to `evaluation_per_image.csv`."""
    from mammo.metrics import dice_iou

    config, _ = _setup(config_file)
    data_section = config[section] if has_data(config[section]) else {**config["train"], "split": "val"}
    data = load_section(data_section, config)
    model = load_model(config)
    m = config["model"]
    compile_unet(model, m["learning_rate"], m["loss"], m["metrics"])
    batch = config["train"]["batch_size"]
    values = model.evaluate(data.x, data.y, batch_size=batch, return_dict=True, verbose=0)
    eval_dir = Path(config["train"]["eval_dir"])
    eval_dir.mkdir(parents=True, exist_ok=True)
    with (eval_dir / "evaluation.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([[k, round(float(v), 4)] for k, v in values.items()])
    probs = np.asarray(model.predict(data.x, batch_size=batch, verbose=0))[..., 0]
    with (eval_dir / "evaluation_per_image.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "image_type", "dice"])
        for i, image_id in enumerate(data.ids):
            dice = dice_iou(probs[i] > 0.5, data.y[i, ..., 0] > 0.5)[0]
            writer.writerow([image_id, data.types[i], round(dice, 4)])
    return {k: float(v) for k, v in values.items()}


def infer(config_file: str | Path) -> list[Path]:
    """Masks (0/255 PNG, the input's size) for every image of [infer] images_dir -> output_dir,
    through the same `CesmUnetPipeline` the app uses; also `<stem>_prob.png` and timings.json."""
    config, _ = _setup(config_file)
    folder, out = config["infer"]["images_dir"], Path(config["infer"]["output_dir"])
    if folder is None:
        raise ValueError(f"{config_file}: [infer] images_dir: required for infer")
    pipe = CesmUnetPipeline(KerasUNet(load_model(config)), config)
    out.mkdir(parents=True, exist_ok=True)
    written, seconds = [], {}
    for path in list_images(folder):
        image, meta = read_image(path)
        t0 = time.perf_counter()
        result = pipe.run(image, meta)
        seconds[path.name] = round(time.perf_counter() - t0, 4)
        target = out / f"{path.stem}.png"
        cv2.imwrite(str(target), result.masks["lesion"].astype(np.uint8) * 255)
        cv2.imwrite(str(out / f"{path.stem}_prob.png"),
                    np.clip(result.probabilities["lesion"] * 255 + 0.5, 0, 255).astype(np.uint8))
        written.append(target)
    (out / "timings.json").write_text(json.dumps(seconds, indent=1))
    return written
