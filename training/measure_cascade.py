"""`python -m training.measure_cascade [--split val] [--out FILE]`: the cascade's numbers, measured
in each input's original geometry through the pipeline itself (not at model resolution).

- stage 1: per-image Dice of adipose, fibroglandular, pectoral on tissue-ddsm (the split's rows);
- stage 2: per-image lesion Dice on CDD-CESM, for DM and CM separately, with the lesion region
  taken from the fibroglandular box (`fgt`) and from the whole breast (`breast`), at several
  probability thresholds (pick on val, report on test);
- speed: seconds per example DICOM (~4600x2800) with the models loaded, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mammo.datasets import load_dataset
from mammo.metrics import SegmentationMeter
from mammo.pipelines.cascade import REGIONS, CascadePipeline, build

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def replace(pipe: CascadePipeline, region: str) -> CascadePipeline:
    """The same models with another stage-2 region."""
    tissue_sha, lesion_sha = pipe.weights_sha256.split(",")
    return CascadePipeline(pipe.tissue, pipe.lesion, tissue_sha, lesion_sha, region, pipe.margin,
                           pipe.threshold, pipe.tissue_size, pipe.lesion_size)


def measure_tissue(pipe, root: str, split: str) -> dict:
    meter = SegmentationMeter()
    for sample in tqdm(load_dataset("tissue-ddsm", root, split=split), desc="tissue", leave=False):
        result = pipe.run(sample.image, sample.meta)
        for name in ("adipose", "fibroglandular", "pectoral"):
            meter.add(name, result.masks[name], sample.masks[name])
    summary = meter.summary()
    summary["mean3"] = meter.mean_dice(["adipose", "fibroglandular", "pectoral"])
    return summary


def measure_lesion(pipe, root: str, split: str, thresholds=THRESHOLDS) -> dict:
    """Per-image lesion Dice (all, DM, CM) at each probability threshold."""
    meters = {t: SegmentationMeter() for t in thresholds}
    for sample in tqdm(load_dataset("cdd-cesm", root, split=split), desc=f"lesion {pipe.region}", leave=False):
        prob = pipe.run(sample.image, sample.meta).probabilities["lesion"]
        kind = sample.extra.get("image_type", "DM")
        for t, meter in meters.items():
            meter.add("lesion", prob > t, sample.masks["lesion"])
            meter.add(f"lesion_{kind}", prob > t, sample.masks["lesion"])
    return {str(t): meter.summary() for t, meter in meters.items()}


def measure_speed(pipe) -> dict:
    from mammo.examples import example_dicoms
    from mammo.export import write_result
    from mammo.io import read_image

    import tempfile

    times, parts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for path in example_dicoms():
            t0 = time.perf_counter()
            image, meta = read_image(path)
            t1 = time.perf_counter()
            result = pipe.run(image, meta)
            t2 = time.perf_counter()
            write_result(Path(tmp) / path.stem, image, meta, result)
            t3 = time.perf_counter()
            times.append(t3 - t0)
            parts.append({"read": t1 - t0, **result.timings, "write": t3 - t2})
    median_parts = {k: round(float(np.median([p[k] for p in parts])), 3) for k in parts[0]}
    return {"median_seconds": round(float(np.median(times)), 3), "median_parts": median_parts,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.measure_cascade", description=__doc__)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--split", default="val", help="train, val or test rows of the committed splits")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here too")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tissue", "lesion", "speed"])
    args = parser.parse_args(argv)
    base = build()  # the models load once; the region is only a switch on the pipeline
    pipes = {region: replace(base, region) for region in REGIONS}
    report: dict = {"split": args.split}
    if "speed" not in args.skip:
        report["speed"] = measure_speed(pipes["fgt"])
    if "tissue" not in args.skip:
        report["tissue"] = measure_tissue(pipes["fgt"], f"{args.data}/tissue_ddsm", args.split)
    if "lesion" not in args.skip:
        report["lesion"] = {r: measure_lesion(p, f"{args.data}/cdd_cesm", args.split) for r, p in pipes.items()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
