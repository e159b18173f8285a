"""`python -m training.cesm_unet.measure`: the numbers of the cesm-unet note.

    compare A/predictions.csv B/predictions.csv   per-image lesion Dice of two `python -m eval`
                                                  runs on the same images: all, _DM_, _CM_ (mean
                                                  and patient-bootstrap 95% CI), and A - B paired
    speed [--image FILE] [--repeats 20]           seconds of `run()` on one 512x512 image, model loaded
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np

from mammo.metrics import with_ci
from mammo.pipelines.cesm_unet import image_type_of


def read_dice(path: Path) -> dict[str, tuple[str, float]]:
    """image id -> (patient id, per-image lesion Dice) of a `python -m eval` predictions.csv."""
    with path.open(newline="") as handle:
        return {row["image_index"]: (row["patient_id"], float(row["dice_lesion"]))
                for row in csv.DictReader(handle) if row.get("dice_lesion")}


def summarize(ids: list[str], patients: list[str], values: np.ndarray) -> dict[str, dict]:
    """{"all"|"DM"|"CM": {"n", "mean", "ci95"}} of per-image values, CI by patient bootstrap."""
    out = {}
    for group in ("all", "DM", "CM"):
        keep = [i for i, name in enumerate(ids) if group == "all" or image_type_of(name) == group]
        sub, groups = values[keep], [patients[i] for i in keep]
        ci = with_ci(lambda idx, v=sub: float(v[idx].mean()), groups)
        out[group] = {"n": len(keep), "mean": round(ci["mean"], 4),
                      "ci95": [round(x, 4) for x in ci["ci95"]] if ci["ci95"] else None}
    return out


def compare(a: Path, b: Path) -> dict[str, dict]:
    """Per-image Dice of runs `a` and `b` on their common images, and of a - b (paired)."""
    da, db = read_dice(a), read_dice(b)
    ids = sorted(set(da) & set(db))
    patients = [da[i][0] for i in ids]
    va, vb = np.array([da[i][1] for i in ids]), np.array([db[i][1] for i in ids])
    return {str(a.parent): summarize(ids, patients, va), str(b.parent): summarize(ids, patients, vb),
            "difference": summarize(ids, patients, va - vb)}


def speed(image_path: Path | None, repeats: int) -> dict[str, float]:
    """Median/max seconds of `CesmUnetPipeline.run` on one 512x512 image (a CDD-CESM image resized
    to 512x512 unless `image_path` is given), after one warm-up run; the model is loaded first."""
    import cv2

    from mammo.io import read_image
    from mammo.pipelines.registry import get_pipeline

    pipe = get_pipeline("cesm-unet")
    image, meta = read_image(image_path or Path("../shared/data/cdd_cesm/images/P102_R_DM_CC.jpg"))
    image = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
    pipe.run(image, meta)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe.run(image, meta)
        times.append(time.perf_counter() - start)
    return {"median_seconds": round(statistics.median(times), 4), "max_seconds": round(max(times), 4),
            "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cesm_unet.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_parser = sub.add_parser("compare")
    cmp_parser.add_argument("a", type=Path)
    cmp_parser.add_argument("b", type=Path)
    speed_parser = sub.add_parser("speed")
    speed_parser.add_argument("--image", type=Path)
    speed_parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "speed":
        print(json.dumps(speed(args.image, args.repeats)))
        return 0
    for run, groups in compare(args.a, args.b).items():
        for group, value in groups.items():
            print(f"{run:<40} {group:<4} n={value['n']:<3} dice={value['mean']:.4f} ci95={value['ci95']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
