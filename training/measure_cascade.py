"""`python -m training.measure_cascade [--split val] [--out FILE]`: the cascade's numbers, measured
in each input's original geometry through the pipeline itself (not at model resolution), with
95% patient-bootstrap CIs (1,000 seeded resamples, `mammo.metrics.with_ci`).

- tissue: per-image Dice of adipose, fibroglandular, pectoral and their mean on tissue-ddsm;
- lesion: per-image lesion Dice on CDD-CESM (all, DM, CM) at several probability thresholds
  (pick on val, report on test), and the FROC sensitivity at 0.25/0.5/1/2/4 false positives
  per image (components of prob >= 0.5 scored by their maximum probability), with the
  post-processing (breast only, no pectoral) on and off, for the fgt and breast regions;
- normals: on MIAS images with no abnormality (NORM), the share of the breast marked lesion
  and the share of images with at least one lesion component (a false positive);
- films: masses on MIAS screen film: Dice and FROC against the hand-drawn outlines placed back
  (`mias-outlined`), and the FROC against the circles of every film with a located mass;
- speed: seconds per example DICOM (~4600x2800) read + run with the models loaded, and peak
  memory (`--skip tissue lesion normals` for the speed benchmark alone).
"""

from __future__ import annotations

import argparse
import json
import resource
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.metrics import FROC_RATES, dice_iou, froc_sensitivities, match_detections, with_ci
from mammo.models.torch_reference import reference_forward_seconds
from mammo.pipelines.cascade import REGIONS, CascadePipeline, build
from training.data import is_lesion_free

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
TISSUES = ("adipose", "fibroglandular", "pectoral")


def replace(pipe: CascadePipeline, region: str, postprocess: bool = True,
            tta: bool | None = None) -> CascadePipeline:
    """The same models with another stage-2 region / post-processing / flip-TTA switch."""
    tissue_sha, lesion_sha = pipe.weights_sha256.split(",")
    return CascadePipeline(pipe.tissue, pipe.lesion, tissue_sha, lesion_sha, region, pipe.margin,
                           pipe.threshold, pipe.tissue_size, pipe.lesion_size, postprocess,
                           pipe.tta if tta is None else tta)


def mean_ci(values: list[float], groups: list[str]) -> dict:
    """Mean of per-image values with its patient-bootstrap 95% CI, rounded for reading."""
    arr = np.asarray(values, np.float64)
    out = with_ci(lambda idx: float(arr[idx].mean()), groups)
    return {"mean": round(out["mean"], 4), "ci95": [round(v, 4) for v in out["ci95"] or []], "n": len(values)}


def measure_tissue(pipes: dict[str, CascadePipeline], root: str, split: str) -> dict:
    """Per variant: per-image Dice of each tissue and of their mean, with CIs."""
    dice = {k: {name: [] for name in TISSUES} for k in pipes}
    groups: list[str] = []
    for sample in tqdm(load_dataset("tissue-ddsm", root, split=split), desc="tissue", leave=False):
        for key, pipe in pipes.items():
            result = pipe.run(sample.image, sample.meta)
            for name in TISSUES:
                dice[key][name].append(dice_iou(result.masks[name], sample.masks[name])[0])
        groups.append(sample.patient_id)
    out = {}
    for key, per_class in dice.items():
        out[key] = {name: mean_ci(values, groups) for name, values in per_class.items()}
        out[key]["mean3"] = mean_ci(list(np.mean([per_class[n] for n in TISSUES], axis=0)), groups)
    return out


def froc_ci(dets: list, groups: list[str]) -> dict:
    """FROC sensitivity at each rate with its patient-bootstrap CI."""
    out = {}
    for rate in FROC_RATES:
        def stat(idx, rate=rate):
            picked = [dets[i] for i in idx]
            return froc_sensitivities(picked, (rate,))[rate] if sum(d.n_lesions for d in picked) else None
        est = with_ci(stat, groups)
        out[f"{rate:g}"] = {"sensitivity": round(est["mean"], 4), "ci95": [round(v, 4) for v in est["ci95"] or []]}
    return out


def measure_lesion(pipes: dict[str, CascadePipeline], root: str, split: str) -> dict:
    """Per variant: Dice (all/DM/CM) per threshold with CIs, and the FROC with CIs."""
    dice = {k: {t: {"all": [], "DM": [], "CM": []} for t in THRESHOLDS} for k in pipes}
    dets: dict[str, list] = {k: [] for k in pipes}
    groups: dict[str, list[str]] = {"all": [], "DM": [], "CM": []}
    for sample in tqdm(load_dataset("cdd-cesm", root, split=split), desc="lesion", leave=False):
        kind = sample.extra.get("image_type", "DM")
        truth = sample.masks["lesion"]
        for key, pipe in pipes.items():
            prob = pipe.run(sample.image, sample.meta).probabilities["lesion"]
            for t in THRESHOLDS:
                d = dice_iou(prob >= t, truth)[0]
                dice[key][t]["all"].append(d)
                dice[key][t][kind].append(d)
            dets[key].append(match_detections(prob, truth, 0.5))
        groups["all"].append(sample.patient_id)
        groups[kind].append(sample.patient_id)
    out = {}
    for key in pipes:
        out[key] = {"dice": {str(t): {part: mean_ci(v, groups[part]) for part, v in parts.items() if v}
                             for t, parts in dice[key].items()},
                    "froc": froc_ci(dets[key], groups["all"])}
    return out


def normal_refs(root: str, split: str):
    """MIAS samples of `split` whose every Info.txt row is NORM."""
    for sample in load_dataset("mias", root, split=split):
        if is_lesion_free(sample):
            yield sample


def measure_normals(pipes: dict[str, CascadePipeline], root: str, split: str) -> dict:
    """Lesion area as a share of the breast, and images with any lesion component, on NORM films."""
    area: dict[str, list[float]] = {k: [] for k in pipes}
    flagged: dict[str, list[float]] = {k: [] for k in pipes}
    groups: list[str] = []
    for sample in tqdm(list(normal_refs(root, split)), desc="normals", leave=False):
        for key, pipe in pipes.items():
            result = pipe.run(sample.image, sample.meta)
            breast = max(1, int(result.masks["breast"].sum()))
            area[key].append(float(result.masks["lesion"].sum()) / breast)
            flagged[key].append(float(bool(result.patches)))
        groups.append(sample.patient_id)
    return {key: {"lesion_share_of_breast": mean_ci(area[key], groups),
                  "images_with_false_positive": mean_ci(flagged[key], groups)} for key in pipes}


def measure_films(pipes: dict[str, CascadePipeline], root: str, split: str) -> dict:
    """Masses on screen film (MIAS), the domain the CDD-CESM positives do not show.

    - outlined: films whose every abnormality has a hand-drawn outline (`mias-outlined`):
      per-image Dice at 0.5 and the FROC against the outlines;
    - circles: every film with a located mass row (`mias` circles): the FROC, a hit being any
      candidate that touches the circle (the circles are loose, so no Dice).
    """
    outlined = {k: {"dice": [], "dets": []} for k in pipes}
    circles: dict[str, list] = {k: [] for k in pipes}
    groups: dict[str, list[str]] = {"outlined": [], "circles": []}
    for sample in tqdm(load_dataset("mias-outlined", root, split=split), desc="films", leave=False):
        circle = sample.extra.get("lesion_circles")
        if circle is None or not circle.any():
            continue  # normal, calcification-only, or a mass without coordinates
        exact = sample.extra["mask_shape"] == "outline"
        for key, pipe in pipes.items():
            prob = pipe.run(sample.image, sample.meta).probabilities["lesion"]
            circles[key].append(match_detections(prob, circle, 0.5))
            if exact:
                outlined[key]["dice"].append(dice_iou(prob >= 0.5, sample.masks["lesion"])[0])
                outlined[key]["dets"].append(match_detections(prob, sample.masks["lesion"], 0.5))
        groups["circles"].append(sample.patient_id)
        if exact:
            groups["outlined"].append(sample.patient_id)
    return {key: {"outlined": {"dice": mean_ci(outlined[key]["dice"], groups["outlined"]),
                               "froc": froc_ci(outlined[key]["dets"], groups["outlined"])},
                  "circles": {"n": len(circles[key]), "froc": froc_ci(circles[key], groups["circles"])}}
            for key in pipes}


def measure_speed(pipe) -> dict:
    """Read + run per example DICOM with the models loaded (the write is timed apart), by the
    timing loop of `python -m mammo.bench` (`mammo.bench.time_built`)."""
    from mammo.bench import time_built
    from mammo.examples import example_dicoms

    stages = time_built(pipe, example_dicoms())
    times = np.add(stages["read"], stages["run"])
    median_parts = {k: round(float(np.median(v)), 3) for k, v in stages.items()
                    if k not in ("run", "total")}
    reference = reference_forward_seconds()
    return {"reference_forward_seconds": round(reference, 4),
            "median_over_reference": round(float(np.median(times)) / reference, 2),
            "median_read_run_seconds": round(float(np.median(times)), 3),
            "max_read_run_seconds": round(float(np.max(times)), 3), "median_parts": median_parts,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def manifest_metrics(report: dict) -> dict[str, dict[str, float]]:
    """The pipeline numbers recorded in the manifest: {entry name: {metric: value}}."""
    split, tissue, lesion = report["split"], {}, {}
    for name, value in report.get("tissue", {}).get("breast", {}).items():
        tissue[f"pipeline_{split}_dice_{name}"] = value["mean"]
    if "lesion" in report:
        dice = report["lesion"]["breast"]["dice"]["0.5"]
        for part, value in dice.items():
            lesion[f"pipeline_{split}_dice_lesion{'' if part == 'all' else '_' + part}"] = value["mean"]
        lesion[f"pipeline_{split}_froc_sens_at_1fp"] = report["lesion"]["breast"]["froc"]["1"]["sensitivity"]
    if "normals" in report:
        normals = report["normals"]["breast"]
        lesion[f"pipeline_{split}_mias_normal_lesion_share"] = normals["lesion_share_of_breast"]["mean"]
        lesion[f"pipeline_{split}_mias_normal_images_with_fp"] = normals["images_with_false_positive"]["mean"]
    if "films" in report:
        films = report["films"]["breast"]
        lesion[f"pipeline_{split}_mias_outlined_dice"] = films["outlined"]["dice"]["mean"]
        lesion[f"pipeline_{split}_mias_outlined_froc_sens_at_1fp"] = films["outlined"]["froc"]["1"]["sensitivity"]
        lesion[f"pipeline_{split}_mias_masses_froc_sens_at_1fp"] = films["circles"]["froc"]["1"]["sensitivity"]
    return {"cascade-tissue": tissue, "cascade-lesion": lesion}


def record(report: dict) -> None:
    """Write `manifest_metrics(report)` into the manifest entries (other metrics kept), only when
    the report was made with the weights the manifest lists now."""
    import yaml

    from mammo.weights import manifest_path
    from training.export import write_entry

    entries = {e["name"]: e for e in yaml.safe_load(manifest_path().read_text())["entries"]}
    listed = f"{entries['cascade-tissue']['sha256']},{entries['cascade-lesion']['sha256']}"
    if report["weights_sha256"] != listed:
        raise SystemExit("--record: these numbers are for other weights than the manifest lists")
    for name, metrics in manifest_metrics(report).items():
        if metrics:
            entries[name]["metrics"].update(metrics)
            write_entry(entries[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.measure_cascade", description=__doc__)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--split", default="val", help="train, val or test rows of the committed splits")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here too")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tissue", "lesion", "normals", "films", "speed"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the 2-core benchmark: 2)")
    parser.add_argument("--record", action="store_true",
                        help="write the pipeline_<split>_* numbers into weights_manifest.yaml")
    args = parser.parse_args(argv)
    from mammo.models.frameworks import import_torch

    import_torch().set_num_threads(args.threads)
    base = build()  # the models load once; region and post-processing are switches on the pipeline
    pipes = {f"{region}{'' if post else '-raw'}": replace(base, region, post)
             for region in REGIONS for post in (True, False)}
    tta_key = f"breast-tta-{'off' if base.tta else 'on'}"  # the other setting of the flip TTA
    pipes[tta_key] = replace(base, "breast", True, not base.tta)
    steps: dict[str, Callable[[], dict]] = {
        "speed": lambda: measure_speed(pipes["breast"]),
        "tissue": lambda: measure_tissue({k: pipes[k] for k in ("breast", tta_key)}, f"{args.data}/tissue_ddsm",
                                         args.split),
        # flip TTA is a stage-1 switch: it changes the lesion numbers only through the pectoral mask
        "lesion": lambda: measure_lesion({k: v for k, v in pipes.items() if k != tta_key}, f"{args.data}/cdd_cesm",
                                         args.split),
        "normals": lambda: measure_normals({k: pipes[k] for k in ("breast", "breast-raw")},
                                           f"{args.data}/mias", args.split),
        "films": lambda: measure_films({k: pipes[k] for k in ("breast", "breast-raw")}, f"{args.data}/mias",
                                       args.split),
    }
    report: dict = {"split": args.split, "weights_sha256": base.weights_sha256}
    for name, step in steps.items():
        if name not in args.skip:
            report[name] = step()
            print(f"{name}: done", flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.record:
        record(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
