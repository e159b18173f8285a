"""`python -m training.tiryaki export CONFIG [--metrics val.json,test.json]`: a run's best weights ->
`weights/<name>.weights.h5` (conv kernels fp16, biases and batch-norm statistics fp32) and its
manifest entry, with the `measure` numbers that concern that network.

fp16 is kept only when `fp16_effect` finds it harmless on the run's validation data: the largest
change of any output probability must stay under `FP16_TOLERANCE`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mammo.weights import REPO_ROOT, parse_entry, sha256_file
from training.export import LICENCES, write_entry
from training.tiryaki.config import TiryakiConfig, load_config

FP16_TOLERANCE = 0.01
CLASSES = {"breast": ["breast"], "mass": ["lesion"], "classifier": ["malignant"]}
METRICS = {"breast": ("breast_dice",), "mass": ("mass_", "image_auc"), "classifier": ("roi_auc", "image_auc")}
DATA = {
    "tissue-ddsm": "tissue-ddsm (60 DDSM MLO films, breast = all but background)",
    "mias": "mini-MIAS films",
    "mias-outlined": "mini-MIAS films whose every mass is outlined (mias_roi outlines) and its lesion-free films",
    "cdd-cesm": "CDD-CESM (TCIA) low-energy DM images and lesion masks",
}
SPLITS = {"tissue-ddsm": "splits/tissue_ddsm.csv", "mias": "splits/mias.csv", "mias-outlined": "splits/mias.csv",
          "cdd-cesm": "splits/cdd_cesm.csv"}


def fp16_copy(source: Path, target: Path) -> None:
    """Copy a Keras `.weights.h5` with every float32 array of 2+ dimensions (kernels) as float16."""
    import h5py

    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(dict(obj.attrs))
                return
            data = obj[()]
            small = isinstance(data, np.ndarray) and data.dtype == np.float32 and data.ndim >= 2
            dst.create_dataset(name, data=data.astype(np.float16) if small else data)

        src.visititems(copy)


def fp16_effect(config: TiryakiConfig, fp32: Path, fp16: Path) -> float:
    """Largest |p_fp32 - p_fp16| of the network's outputs on (up to 16) validation inputs."""
    from mammo.models.keras_tiryaki import KerasNet

    if config.stage == "classifier":
        from training.tiryaki.data import classifier_rois
        from training.tiryaki.run import fixed_rois

        x = fixed_rois(classifier_rois(config, "val"), config.input_size[0])[0]
    else:
        x = np.load(config.path / "cache" / "val.npz")["x"]
    x = x[:16]
    a = KerasNet.load(config.architecture, tuple(config.input_size), str(fp32))(x)
    b = KerasNet.load(config.architecture, tuple(config.input_size), str(fp16))(x)
    return float(np.abs(a - b).max())


def stage_metrics(config: TiryakiConfig, reports: list[dict[str, Any]]) -> dict[str, float]:
    """The `measure` numbers about this stage's network (flattened, see `measure.flat`)."""
    from training.tiryaki.measure import flat

    out: dict[str, float] = {}
    for report in reports:
        for key, value in flat(report).items():
            name = key.split("_", 1)[1]
            if name.startswith(METRICS[config.stage]):
                out[key] = value
    return out


def export(config_file: str | Path, metrics: str = "", weights_dir: Path | None = None,
           manifest: Path | None = None) -> dict[str, Any]:
    """Write the weights file and the manifest entry; returns the entry."""
    from mammo.models.keras_tiryaki import build_from_architecture

    config = load_config(config_file)
    target_dir = weights_dir or REPO_ROOT / "weights"
    target = target_dir / f"{config.name}.weights.h5"
    plain = target.with_name(f"{config.name}.fp32.weights.h5")
    model = build_from_architecture(config.architecture, tuple(config.input_size))
    model.load_weights(str(config.path / "best.weights.h5"))
    model.save_weights(str(plain))  # without the optimizer state the checkpoint also holds
    tmp = target.with_name(f"{config.name}.tmp.weights.h5")
    fp16_copy(plain, tmp)
    effect = fp16_effect(config, plain, tmp)
    if effect >= FP16_TOLERANCE:
        os.replace(plain, tmp)
        print(f"fp16 changes outputs by up to {effect:.4f}: shipping fp32", flush=True)
    else:
        plain.unlink()
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    reports = [json.loads(Path(p).read_text()) for p in metrics.split(",") if p]
    entry = {
        "name": config.name, "pipeline": "tiryaki-mass", "framework": "keras",
        "architecture": config.architecture, "file": f"weights/{target.name}", "sha256": sha256_file(target),
        "size_bytes": target.stat().st_size,
        "hub": {"repo_id": "mammo-project/mammo-weights", "filename": target.name, "revision": None},
        "input_size": list(config.input_size), "classes": CLASSES[config.stage],
        "training": {"data": "; ".join(DATA.get(s.dataset, s.dataset) for s in config.sources),
                     "split": "; ".join(dict.fromkeys(SPLITS.get(s.dataset, "splits/none.csv") for s in config.sources)),
                     "command": f"python -m training.tiryaki train {config_file}"},
        "metrics": {**stage_metrics(config, reports), "fp16_max_output_change": round(effect, 5)},
        "licence": "; ".join(dict.fromkeys(LICENCES.get(s.dataset, "see the data set's licence") for s in config.sources)),
    }
    if config.pretrained and "vgg16" in config.architecture:
        from mammo.models.pretrained import source as pretrained_source

        src = pretrained_source("vgg16")
        entry["pretrained"] = {"encoder": "vgg16", "source": src.description, "licence": src.licence}
    parse_entry(entry)
    write_entry(entry, manifest)
    return entry
