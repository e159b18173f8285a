"""`python -m training.export RUN_DIR --name NAME`: a run's best checkpoint -> weights/ + manifest.

Writes `weights/<NAME>.safetensors` (fp16 when the validation score with fp16 weights is within
`--fp16-tolerance` of fp32, else fp32; the recipe to rebuild the network is in the file's
metadata), then creates or replaces the manifest entry NAME with the sha256, size, config, split,
data, training command and the measured validation metrics. The manifest's header comment stays.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

from mammo.weights import REPO_ROOT, load_manifest, manifest_path, parse_entry, sha256_file
from training.config import TrainConfig, load_config

DATA_NAMES = {"tissue-ddsm": "tissue-ddsm (60 DDSM MLO films, Tiryaki & Kaplanoglu 2022)",
              "cdd-cesm": "CDD-CESM (TCIA), DM and CM images",
              "mias": "mini-MIAS (322 MLO films), image labels only: benign = any B finding, "
                      "malignant = any M finding, normal = 0/0; the lesion circles are not used",
              "ddsm-films": "DDSM films (934 images, 513 cases), case labels: cancer volume = malignant, benign and "
                            "benign_without_callback = benign, normal = 0/0",
              "cdd-cesm-subtracted": "CDD-CESM contrast-subtracted images (791), pathology: Malignant, Benign, Normal"}
LICENCES = {"tissue-ddsm": "GPL-3.0 (trained on GPLv3 data)",
            "cdd-cesm": "research use; trained on TCIA data (TCIA data usage policy)",
            "mias": "research use; trained on mini-MIAS (cite the MIAS database)",
            "mias-outlined": "research use; trained on mini-MIAS and its mass outlines (cite the MIAS database)",
            "ddsm-films": "research use; trained on DDSM (cite the DDSM), CDD-CESM (TCIA data usage policy) "
                          "and mini-MIAS (cite the MIAS database)"}


def data_description(config: TrainConfig) -> str:
    """The training data in words, negatives included."""
    if config.task == "deepmica":
        return (f"mini-MIAS at {config.deepmica_work_mm} mm per pixel: pseudo-masks (the classical detector's "
                f"specks touching the CALC circles of the training split, detector {config.deepmica_pseudo}); "
                "256x256 patches around those circles, and as many from calcification-free (NORM) films")
    text = DATA_NAMES.get(config.dataset, config.dataset)
    if config.task == "glam" and config.glam_sources:  # one network, several labelled sets
        extra = [f"{DATA_NAMES.get(s['dataset'], s['dataset'])} ({s['split']})" for s in config.glam_sources]
        return f"{text} ({config.split}); " + "; ".join(extra) + "; training rows of each split only"
    if config.negative_dataset and config.task == "lesion":
        kinds = (f"lesion-free films as negatives and its films whose every mass is outlined as positives "
                 f"({config.extra_positives_repeat}x each)") if config.extra_positives else "lesion-free films as negatives"
        text += (f"; plus {config.negative_dataset} ({config.negative_split}, training rows): {kinds} "
                 f"({LICENCES.get(config.negative_dataset, 'see its licence')})")
    return text


def _rounded_state(state: dict, fp16: bool) -> dict:
    return {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _command(run_dir: Path, name: str) -> str:
    """The command that made the run (`command.txt`, written by training.train), else the config's."""
    path = run_dir / "command.txt"
    if path.is_file():
        return path.read_text().strip()
    return f"python -m training.train --config training/configs/{name.replace('-', '_')}.yaml"


def export_run(run_dir: Path, name: str, pipeline: str, tolerance: float = 0.002,
               hub_repo: str = "mammo-project/mammo-weights", weights_dir: Path | None = None,
               manifest: Path | None = None, val=None) -> dict[str, Any]:
    """Export `run_dir`'s best.pt as weights entry `name`; returns the new manifest entry.

    `weights_dir`/`manifest` default to the repo's; `val` (a `training.data.Framed`) defaults to
    the config's validation split.
    """
    from safetensors.torch import save_file

    from mammo.models.frameworks import import_torch
    from training.tasks import get_task

    torch = import_torch()
    config: TrainConfig = load_config(run_dir / "config.yaml")
    task = get_task(config)
    best = torch.load(run_dir / "best.pt", weights_only=False)
    classes = list(config.classes)
    model = task.build_model()
    val = val if val is not None else task.load_data()[1]
    scores = {}
    for fp16 in (False, True):
        model.load_state_dict({k: v.float() for k, v in _rounded_state(best["model"], fp16).items()})
        scores[fp16] = task.validate(model, val)
    use_fp16 = scores[False]["score"] - scores[True]["score"] <= tolerance
    chosen = scores[use_fp16]
    target = (weights_dir or REPO_ROOT / "weights") / f"{name}.safetensors"
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(".tmp")
    metadata = {**task.metadata(), "config": json.dumps(config.to_dict()),
                "dtype": "float16" if use_fp16 else "float32"}
    save_file(_rounded_state(best["model"], use_fp16), str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # a file others clone and read
    os.replace(tmp, target)
    metrics = {f"val_{k}": round(float(v), 4) for k, v in chosen.items() if k.startswith(task.metric_prefixes)}
    metrics["val_score_fp32"] = round(float(scores[False]["score"]), 4)
    metrics["epoch"] = int(best["epoch"])
    entry = {
        "name": name, "pipeline": pipeline, "framework": "torch",
        "architecture": task.architecture(),
        "file": f"weights/{target.name}", "sha256": sha256_file(target), "size_bytes": target.stat().st_size,
        "hub": {"repo_id": hub_repo, "filename": target.name, "revision": None},
        "input_size": list(config.input_size), "classes": classes,
        "training": {"data": data_description(config), "split": config.split,
                     "command": _command(run_dir, name)},
        "metrics": metrics, "licence": LICENCES.get(config.dataset, "see the data set's licence"),
    }
    if getattr(config, "encoder_weights", "") == "imagenet":
        from mammo.models.pretrained import source

        # GLAM's pretrained modules are EfficientNet-Lite0 whatever `encoder` says (it is the cascade's key)
        encoder = "tu-tf_efficientnet_lite0" if config.task == "glam" else config.encoder
        src = source(encoder)
        entry["pretrained"] = {"encoder": encoder, "source": src.description, "licence": src.licence}
        if config.task == "glam" and config.glam_encoder_init:
            entry["pretrained"]["source"] += (f"; then the encoder of the segmenter in {config.glam_encoder_init} "
                                              "(the cascade lesion stage, CDD-CESM outlines)")
    parse_entry(entry)  # validate before touching the manifest
    write_entry(entry, manifest)
    return entry


def write_entry(entry: dict[str, Any], path: Path | None = None) -> None:
    """Create or replace `entry` (by name) in the manifest, keeping its header comment."""
    path = path or manifest_path()
    text = path.read_text() if path.exists() else ""
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    entries = (yaml.safe_load(text) or {}).get("entries") or []
    names = [e.get("name") for e in entries]
    if entry["name"] in names:  # replaced where it stands, so the file's order is kept
        entries[names.index(entry["name"])] = entry
    else:
        entries.append(entry)
    body = yaml.safe_dump({"entries": entries}, sort_keys=False, default_flow_style=None, width=100)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + "\n" + body)
    os.replace(tmp, path)
    load_manifest(path)  # the file must still parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help="manifest entry name, e.g. cascade-tissue")
    parser.add_argument("--pipeline", default="cascade")
    parser.add_argument("--fp16-tolerance", type=float, default=0.002,
                        help="largest drop of the validation score accepted for fp16 weights")
    args = parser.parse_args(argv)
    entry = export_run(args.run_dir, args.name, args.pipeline, args.fp16_tolerance)
    print(yaml.safe_dump(entry, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
