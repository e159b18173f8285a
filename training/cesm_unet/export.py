"""`python -m training.cesm_unet.export CONFIG [--metrics eval_out/metrics.json ...]`: the best
weights of a `cesm-unet` run -> `weights/cesm-unet.weights.h5` + `weights/cesm-unet.config` and the
manifest entry.

The config's text is also stored inside the `.weights.h5` (HDF5 root attribute `mammo_config`), so
the manifest's sha256 covers it; `mammo.pipelines.cesm_unet.build` refuses a config file beside
the weights that differs from it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mammo.pipelines.cesm_unet import CONFIG_ATTR, NAME
from mammo.pipelines.cesm_unet_config import architecture, load_config
from mammo.weights import REPO_ROOT, parse_entry, sha256_file
from training.export import DATA_NAMES, LICENCES, write_entry


def store_config(weights: Path, config_text: str) -> None:
    """Write the config text into the `.weights.h5` file's root attributes."""
    import h5py

    with h5py.File(weights, "a") as handle:
        handle.attrs[CONFIG_ATTR] = config_text


def pipeline_metrics(paths: list[Path]) -> dict[str, float]:
    """`pipeline_<split>_dice_lesion` (per-image Dice in the original geometry) from the
    metrics.json of `python -m eval --pipeline cesm-unet` runs."""
    metrics: dict[str, float] = {}
    for path in paths:
        data = json.loads(path.read_text())
        dice = data["segmentation"]["lesion"]["dice"]["mean"]
        metrics[f"pipeline_{data.get('split') or 'all'}_dice_lesion"] = round(float(dice), 4)
    return metrics


def copy_weights(config_file: Path, target_dir: Path) -> Path:
    """The run's best weights (+ the config stored inside) -> `target_dir/cesm-unet.weights.h5`,
    and the config -> `target_dir/cesm-unet.config`; returns the weights path."""
    from mammo.models.keras_unet import build_unet

    config = load_config(config_file)
    source = Path(config["train"]["model_dir"]) / "best.weights.h5"
    target = target_dir / f"{NAME}.weights.h5"
    tmp = target.with_name(f"{NAME}.tmp.weights.h5")
    # Through an uncompiled model: the checkpoint also holds Adam's two moments (3x the size).
    model = build_unet(**architecture(config))
    model.load_weights(str(source))
    model.save_weights(str(tmp))
    text = Path(config_file).read_text()
    store_config(tmp, text)
    os.chmod(tmp, 0o644)  # a file others clone and read
    os.replace(tmp, target)
    (target_dir / f"{NAME}.config").write_text(text)
    return target


def export(config_file: Path, metrics: dict[str, float], weights_dir: Path | None = None,
           manifest: Path | None = None, copy: bool = True) -> dict[str, Any]:
    """Copy the run's best weights and the config into `weights_dir` (unless not `copy`: then the
    file already there is described, e.g. to add the metrics measured with it), write the entry."""
    config = load_config(config_file)
    target_dir = weights_dir or REPO_ROOT / "weights"
    target = copy_weights(config_file, target_dir) if copy else target_dir / f"{NAME}.weights.h5"
    m = config["model"]
    t = config["train"]
    entry = {
        "name": NAME, "pipeline": NAME, "framework": "keras",
        "architecture": f"keras_unet/l{m['num_layers']}-f{m['base_filters']}-k{m['base_kernels'][0]}"
                        f"-c{m['image_channels']}",
        "file": f"weights/{target.name}", "sha256": sha256_file(target), "size_bytes": target.stat().st_size,
        "hub": {"repo_id": "mammo-project/mammo-weights", "filename": target.name, "revision": None},
        "input_size": [m["image_height"], m["image_width"]], "classes": ["lesion"],
        "training": {"data": DATA_NAMES.get(t["dataset"] or "", "images/masks folders"),
                     "split": t["split_csv"] or "splits/none.csv",
                     "command": f"python -m training.cesm_unet train {config_file}"},
        "metrics": metrics, "licence": LICENCES.get(t["dataset"] or "", "see the data set's licence"),
    }
    parse_entry(entry)  # validate before touching the manifest
    write_entry(entry, manifest)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cesm_unet.export", description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("--metrics", type=Path, nargs="*", default=[],
                        help="metrics.json of `python -m eval --pipeline cesm-unet` runs (OUT/metrics.json)")
    parser.add_argument("--metric", action="append", default=[], help="extra NAME=VALUE")
    parser.add_argument("--entry-only", action="store_true",
                        help="keep weights/cesm-unet.weights.h5 as it is; only rewrite its manifest entry")
    args = parser.parse_args(argv)
    metrics = pipeline_metrics(args.metrics)
    metrics.update({k: float(v) for k, v in (item.split("=", 1) for item in args.metric)})
    print(json.dumps(export(args.config, metrics, copy=not args.entry_only), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
