"""`python -m training.measure_glam [--split val] [--scheme sep joint] [--calibrate] [--record]`:
GLAM's numbers on mini-MIAS through the pipeline, with 95% patient-bootstrap CIs.

- scores: benign and malignant AUC (image labels: any B row, any M row; normals are negatives);
- localisation on the abnormal images with located circles (masses and calcification clusters):
  saliency FROC (candidates: components of the larger class map >= 0.5, scored by their
  maximum, a hit when one touches a circle), the share of malignant images whose top patch (the
  highest attention) touches the lesion, and Dice of the `lesion` mask with the whole-breast
  baseline;
- patches outside the breast: patches with less than half of their area in the classical breast
  mask, over every image of the split and the 8 example DICOMs (must be 0);
- examples: the malignant score of the malignant example 1-280 and of the benign 1-130;
- speed: `run()` with the model loaded on the example DICOMs (median, and over a reference
  forward pass timed in the same process, see `training.measure_cascade`).

`--calibrate` (on the validation split): fit temperature scaling per class on the raw scores
(`mammo.calibration`) and write it into the manifest entry; `--record` writes the numbers of
this split into the entry's metrics (only for the weights the manifest lists now).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.metrics import dice_iou, froc_sensitivities, match_detections, roc_auc, with_ci
from mammo.preprocess import breast_mask

CLASSES = ("benign", "malignant")


def truth_mask(sample) -> np.ndarray:
    """bool (H, W): the MIAS circles of masses and calcification clusters together."""
    empty = np.zeros(sample.image.shape, bool)
    return sample.masks.get("lesion", empty) | sample.masks.get("calcification", empty)


def patches_outside(result, breast: np.ndarray) -> int:
    """Patches of `result` with less than half of their area in `breast`."""
    return sum(float(breast[p.y0:p.y1, p.x0:p.x1].mean()) < 0.5 for p in result.patches if p.y1 > p.y0)


def ci(stat, groups: list[str]) -> dict:
    out = with_ci(stat, groups)
    return {"mean": None if out["mean"] is None else round(out["mean"], 4),
            "ci95": [round(v, 4) for v in out["ci95"] or []]}


def measure_split(pipe, root: str, split: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Scores, localisation and patch placement on one MIAS split; also the raw scores and labels."""
    rows: dict[str, list] = {"raw": [], "scores": [], "labels": [], "groups": []}
    dets, dets_groups, dice, dice_breast, top_hits, top_groups, outside = [], [], [], [], [], [], 0
    for sample in tqdm(load_dataset("mias", root, split=split), desc=f"glam {split}", leave=False):
        result = pipe.run(sample.image, sample.meta)
        breast = breast_mask(sample.image)
        outside += patches_outside(result, breast)
        rows["raw"].append(result.geometry["raw_scores"])
        rows["scores"].append([result.scores[c] for c in CLASSES])
        rows["labels"].append([int(sample.labels[c] or 0) for c in CLASSES])
        rows["groups"].append(sample.patient_id)
        truth = truth_mask(sample)
        if not truth.any():
            continue
        dets.append(match_detections(result.probabilities["lesion"], truth, 0.5))
        dets_groups.append(sample.patient_id)
        dice.append(dice_iou(result.masks["lesion"], truth)[0])
        dice_breast.append(dice_iou(breast, truth)[0])
        if sample.labels["malignant"]:
            top = max(result.patches, key=lambda p: p.score)
            top_hits.append(float(truth[top.y0:top.y1, top.x0:top.x1].any()))
            top_groups.append(sample.patient_id)
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    report: dict = {"n_images": len(arrays["labels"]), "patches_outside_breast": outside}
    for k, name in enumerate(CLASSES):
        y, s = arrays["labels"][:, k], arrays["scores"][:, k]
        report[f"auc_{name}"] = {**ci(lambda i, y=y, s=s: roc_auc(y[i], s[i]), rows["groups"]),
                                 "positives": int(y.sum())}
    report["froc"] = {f"{r:g}": ci(lambda i, r=r: froc_sensitivities([dets[j] for j in i], (r,))[r]
                                    if sum(dets[j].n_lesions for j in i) else None, dets_groups)
                      for r in (0.5, 1, 2)}
    report["top_patch_hits_malignant"] = {**ci(lambda i: float(np.mean([top_hits[j] for j in i])), top_groups),
                                          "n": len(top_hits)}
    report["dice_lesion"] = {**ci(lambda i: float(np.mean([dice[j] for j in i])), dets_groups),
                             "breast_baseline": round(float(np.mean(dice_breast)), 4), "n": len(dice)}
    return report, arrays


def examples(pipe) -> dict:
    """Malignant score per example DICOM, patches outside the breast, and the speed."""
    from mammo.examples import example_dicoms
    from mammo.io import read_image
    from mammo.models.torch_reference import reference_forward_seconds

    out, times, outside = {}, [], 0
    for path in example_dicoms():
        image, meta = read_image(path)
        start = time.perf_counter()
        result = pipe.run(image, meta)
        times.append(time.perf_counter() - start)
        out[path.stem] = round(result.scores["malignant"], 4)
        outside += patches_outside(result, breast_mask(image))
    reference = reference_forward_seconds()
    return {"malignant_scores": out, "ranks_1_280_above_1_130": out["1-280"] > out["1-130"],
            "patches_outside_breast": outside, "median_run_seconds": round(float(np.median(times)), 3),
            "reference_forward_seconds": round(reference, 4),
            "median_over_reference": round(float(np.median(times)) / reference, 2)}


def calibrate(entry_name: str, arrays: dict[str, np.ndarray], split: str) -> dict:
    """Fit per-class temperature scaling on `arrays` and write it into the manifest entry."""
    import yaml

    from mammo.calibration import fit_temperature
    from mammo.weights import manifest_path
    from training.export import write_entry

    fitted = {}
    for k, name in enumerate(CLASSES):
        t = fit_temperature(arrays["raw"][:, k], arrays["labels"][:, k])
        fitted[name] = {"temperature": round(t.temperature, 5), "bias": round(t.bias, 5)}
    entries = {e["name"]: e for e in yaml.safe_load(manifest_path().read_text())["entries"]}
    entry = entries[entry_name]
    entry["calibration"] = {"fitted_on": f"mini-MIAS {split} split ({len(arrays['labels'])} images), "
                            "python -m training.measure_glam --calibrate", **fitted}
    write_entry(entry)
    return fitted


def record(entry_name: str, sha: str, split: str, report: dict) -> None:
    """Write this split's headline numbers into the manifest entry's metrics."""
    import yaml

    from mammo.weights import manifest_path
    from training.export import write_entry

    entry = {e["name"]: e for e in yaml.safe_load(manifest_path().read_text())["entries"]}[entry_name]
    if entry["sha256"] != sha:
        raise SystemExit("--record: these numbers are for other weights than the manifest lists")
    m = entry["metrics"]
    for name in CLASSES:
        if report[f"auc_{name}"]["mean"] is not None:
            m[f"pipeline_{split}_auc_{name}"] = report[f"auc_{name}"]["mean"]
    m[f"pipeline_{split}_saliency_froc_sens_at_1fp"] = report["froc"]["1"]["mean"]
    m[f"pipeline_{split}_top_patch_hits_malignant"] = report["top_patch_hits_malignant"]["mean"]
    write_entry(entry)


def main(argv: list[str] | None = None) -> int:
    from mammo.pipelines.glam import WEIGHTS
    from mammo.pipelines.registry import get_pipeline

    parser = argparse.ArgumentParser(prog="python -m training.measure_glam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val")
    parser.add_argument("--scheme", nargs="+", default=["sep", "joint"], choices=sorted(WEIGHTS))
    parser.add_argument("--data-root", default="../shared/data/mias")
    parser.add_argument("--skip-examples", action="store_true", help="no example DICOMs (ranking, speed)")
    parser.add_argument("--calibrate", action="store_true", help="fit temperature scaling on this split")
    parser.add_argument("--record", action="store_true", help="write this split's numbers into the manifest")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from mammo.models.frameworks import import_torch

    import_torch().set_num_threads(args.threads)
    report = {}
    for scheme in args.scheme:
        pipe = get_pipeline(f"glam:{scheme}")
        report[scheme], arrays = measure_split(pipe, args.data_root, args.split)
        if not args.skip_examples:
            report[scheme]["examples"] = examples(pipe)
        if args.calibrate:
            report[scheme]["calibration"] = calibrate(WEIGHTS[scheme], arrays, args.split)
        if args.record:
            record(WEIGHTS[scheme], pipe.weights_sha256, args.split, report[scheme])
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
