"""The deepmica networks from the run folders or the manifest; the ROI classifier's export.

The segmenter exports with the shared `python -m training.export runs/deepmica-seg --name
deepmica-seg --pipeline deepmica`; the classifier (trained outside the engine) with
`python -m training.deepmica export-roi`, which writes weights/deepmica-classifier.safetensors
(fp16 when its largest change of P(malignant) on the MIAS ROIs stays <= `FP16_TOLERANCE`) and
its manifest entry with the numbers of runs/deepmica-classifier/{roi,cv}.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mammo.models.frameworks import import_torch
from mammo.weights import REPO_ROOT, parse_entry, sha256_file
from training.config import TrainConfig

FP16_TOLERANCE = 0.002
SEG_RUN = Path("runs/deepmica-seg")
ROI_RUN = Path("runs/deepmica-classifier")


def pipeline_from(source: str, config: TrainConfig) -> Any:
    """`deepmica` with the manifest's weights ("manifest") or the runs' networks ("runs": the
    segmenter's best.pt and the classifier's model.pt)."""
    if source == "manifest":
        from mammo.pipelines import get_pipeline

        return get_pipeline("deepmica")
    torch = import_torch()  # the frameworks guard: torch before tensorflow

    from mammo.models.torch_deepmica import TorchNet, build_patch_unet, build_roi_classifier
    from mammo.pipelines.deepmica import DeepMicaPipeline

    seg = build_patch_unet(config.encoder)
    seg.load_state_dict(torch.load(SEG_RUN / "best.pt", weights_only=False)["model"])
    roi = build_roi_classifier("efficientnet-lite0")
    roi.load_state_dict(torch.load(ROI_RUN / "model.pt", weights_only=False)["model"])
    return DeepMicaPipeline(TorchNet(seg.eval()), TorchNet(roi.eval()), work_mm=config.deepmica_work_mm)


def _metric(summary: dict[str, Any], key: str, out: dict[str, float]) -> None:
    if summary.get("mean") is not None:
        out[key] = round(float(summary["mean"]), 4)
        out[f"{key}_n"] = int(summary["n"])


def export_classifier(config: TrainConfig, run_dir: Path = ROI_RUN, name: str = "deepmica-classifier",
                      hub_repo: str = "mammo-project/mammo-weights") -> dict[str, Any]:
    """Write the classifier's safetensors and manifest entry; returns the entry."""
    torch = import_torch()  # the frameworks guard: torch before tensorflow
    from safetensors.torch import save_file

    from mammo.models.pretrained import source
    from training.deepmica.data import load_films
    from training.deepmica.roi import predict, roi_records
    from training.export import write_entry

    state = torch.load(run_dir / "model.pt", weights_only=False)["model"]
    records = roi_records([f for s in ("train", "val", "test") for f in load_films(config, s, normal_limit=0)
                           if f.circles])
    from mammo.models.torch_deepmica import build_roi_classifier

    model = build_roi_classifier("efficientnet-lite0").eval()
    model.load_state_dict(state)
    full = predict(model, records, config.deepmica_work_mm)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    model.load_state_dict({k: v.float() for k, v in half.items()})
    change = float(abs(predict(model, records, config.deepmica_work_mm) - full).max())
    use_fp16 = change <= FP16_TOLERANCE
    target = REPO_ROOT / "weights" / f"{name}.safetensors"
    tmp = target.with_suffix(".tmp")
    save_file(half if use_fp16 else {k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"backbone": "efficientnet-lite0", "work_mm": str(config.deepmica_work_mm),
                        "dtype": "float16" if use_fp16 else "float32"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    report = json.loads((run_dir / "roi.json").read_text())
    metrics: dict[str, float] = {"fp16_max_change": round(change, 5)}
    _metric(report["val"], "val_auc", metrics)
    _metric(report["test"], "test_auc", metrics)
    if (run_dir / "cv.json").is_file():
        _metric(json.loads((run_dir / "cv.json").read_text()), "cv_auc_train_val", metrics)
    src = source("tu-tf_efficientnet_lite0")
    entry = {
        "name": name, "pipeline": "deepmica", "framework": "torch", "architecture": "roi/efficientnet-lite0",
        "file": f"weights/{target.name}", "sha256": sha256_file(target), "size_bytes": target.stat().st_size,
        "hub": {"repo_id": hub_repo, "filename": target.name, "revision": None},
        "input_size": [224, 224], "classes": ["benign", "malignant"],
        "training": {"data": (f"mini-MIAS CALC circles of the training split ({report['train_rois']['n']} ROIs, "
                              f"{report['train_rois']['n_malignant']} malignant), cut around the pseudo-mask specks "
                              f"at {config.deepmica_work_mm} mm per pixel; ImageNet backbone frozen, head trained "
                              f"{report['epochs']} epochs"),
                     "split": config.split, "command": "python -m training.deepmica roi && "
                                                       "python -m training.deepmica export-roi"},
        "metrics": metrics, "licence": "research use; trained on mini-MIAS (cite the MIAS database)",
        "pretrained": {"encoder": "tu-tf_efficientnet_lite0", "source": src.description, "licence": src.licence},
    }
    parse_entry(entry)
    write_entry(entry)
    return entry


def record_measured(val: dict[str, Any], test: dict[str, Any], name: str = "deepmica-seg") -> dict[str, Any]:
    """Add the cluster-detection numbers of `measure` (val and test JSON) to entry `name`'s metrics."""
    import yaml

    from mammo.weights import manifest_path
    from training.export import write_entry

    entries = yaml.safe_load(manifest_path().read_text())["entries"]
    entry = next(e for e in entries if e["name"] == name)
    for split, report in (("val", val), ("test", test)):
        for detector in ("learned", "classical"):
            for key, label in ((detector, ""), (f"{detector}_in_breast", "_in_breast")):
                point = report[key]["at_1fp"]
                prefix = f"{split}_{'' if detector == 'learned' else 'classical_'}"
                entry["metrics"][f"{prefix}cluster_sens_at_1fp{label}"] = round(float(point["sensitivity"]), 4)
            entry["metrics"][f"{prefix}fp_clusters_per_film"] = round(float(report[detector]["at_1fp"]["fp_per_film"]), 4)
        entry["metrics"][f"{split}_films"] = report["films"]
        entry["metrics"][f"{split}_circles"] = report["circles"]
    parse_entry(entry)
    write_entry(entry)
    return entry
