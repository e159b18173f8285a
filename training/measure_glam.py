"""`python -m training.measure_glam [--split val] [--scheme sep joint]`: GLAM localisation and speed.

Localisation, the authors' own measure of GLAM: Dice between the thresholded saliency (the larger
of the benign and malignant maps >= the pipeline's threshold: the `lesion` mask) and the MIAS
circles (masses and calcification clusters together) on the abnormal images of the split that
have located circles, beside two baselines: the whole breast as the mask, and an oracle threshold
(the best of 0.05..0.95 chosen on these very images, so an upper bound, not a result).
Speed: `run()` with the model loaded, on 1024x1024 MIAS images and on the 8 example DICOMs.
AUCs with confidence intervals come from `python -m eval --pipeline glam[:joint] --dataset mias:...`.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mammo.datasets import load_dataset
from mammo.metrics import dice_iou
from mammo.preprocess import breast_mask

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def localisation(pipe, split: str, root: str) -> dict[str, float | int]:
    """Mean Dice over the abnormal, located images of `split` (see the module docstring)."""
    ds = load_dataset("mias", root, split=split)
    glam, breast, sweep = [], [], {float(t): [] for t in THRESHOLDS}
    for sample in ds:
        if not (sample.labels["benign"] or sample.labels["malignant"]):
            continue
        truth = sample.masks.get("lesion", np.zeros(sample.image.shape, bool)) | \
            sample.masks.get("calcification", np.zeros(sample.image.shape, bool))
        if not truth.any():
            continue  # abnormal but not located (e.g. mdb059)
        result = pipe.run(sample.image, sample.meta)
        glam.append(dice_iou(result.masks["lesion"], truth)[0])
        breast.append(dice_iou(breast_mask(sample.image), truth)[0])
        for t, values in sweep.items():
            values.append(dice_iou(result.probabilities["lesion"] >= t, truth)[0])
    best = max(sweep, key=lambda t: np.mean(sweep[t]))
    return {"n_images": len(glam), "dice": float(np.mean(glam)), "dice_breast_baseline": float(np.mean(breast)),
            "oracle_threshold": best, "dice_oracle_threshold": float(np.mean(sweep[best]))}


def speed(pipe, root: str) -> dict[str, float]:
    """Median seconds of `run()` (model loaded) on 8 MIAS images and on the 8 example DICOMs."""
    from mammo.examples import example_dicoms
    from mammo.io import read_image

    ds = load_dataset("mias", root, split="val")
    out = {}
    for label, items in (("mias_1024", [(s.image, s.meta) for s in (ds[i] for i in range(8))]),
                         ("dicom", [read_image(p) for p in example_dicoms()])):
        pipe.run(*items[0])  # warm-up
        times = []
        for image, meta in items:
            start = time.perf_counter()
            pipe.run(image, meta)
            times.append(time.perf_counter() - start)
        out[f"{label}_median_s"], out[f"{label}_max_s"] = float(np.median(times)), float(np.max(times))
    return out


def main(argv: list[str] | None = None) -> int:
    from mammo.pipelines.registry import get_pipeline

    parser = argparse.ArgumentParser(prog="python -m training.measure_glam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val")
    parser.add_argument("--scheme", nargs="+", default=["sep", "joint"], choices=["sep", "joint"])
    parser.add_argument("--data-root", default="../shared/data/mias")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    report = {}
    for scheme in args.scheme:
        pipe = get_pipeline(f"glam:{scheme}")
        report[scheme] = {"threshold": pipe.threshold, **localisation(pipe, args.split, args.data_root)}
        if not args.skip_speed:
            report[scheme].update(speed(pipe, args.data_root))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
