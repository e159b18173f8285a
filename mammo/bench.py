"""`python -m mammo.bench`: the speed figures that tests must not time, as ratios to a reference.

For each pipeline (`--pipelines`, default: every numpy/torch pipeline of the registry), on the 8
example DICOMs by default (CBIS-DDSM, RLE lossless, ~4600x2800, 16-bit), each file goes through
what `mammo predict` does (`mammo.cli.predict_one`: read, run, `write_result`) and is timed
end to end ("total") and per stage: "read", each of the pipeline's own `Result.timings` steps,
"run" (the whole `run` call) and "write". The model is loaded and one file run once before
timing (imports, lazy initialisation); the load is reported apart.

Each figure (median and max seconds) is printed beside a reference forward pass timed in the
same run (`mammo.models.torch_reference`), and as a ratio to it: the ratio is what holds across
machines, the seconds do not. `--json PATH` saves the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NUMPY_TORCH = ("numpy", "torch")


def default_pipelines() -> list[str]:
    """Registered pipelines that need neither tensorflow nor keras (cesm-unet only on request);
    prompted ones (box-lesion) are timed with their own boxes (`time_prompts`)."""
    from mammo.pipelines.registry import describe_pipelines

    return [name for name, spec in describe_pipelines().items() if spec.framework in NUMPY_TORCH]


def summarise(times: list[float], reference: float) -> dict[str, float]:
    """Seconds per file -> median, max, median / reference seconds, count."""
    median = float(np.median(times))
    return {"median_seconds": round(median, 5), "max_seconds": round(float(np.max(times)), 5),
            "median_over_reference": round(median / reference, 2), "n": len(times)}


def time_pipeline(name: str, paths: list[Path], probabilities: bool = False,
                  threads: int | None = None) -> dict[str, Any]:
    """Build pipeline `name`, then `time_built` it.

    Returns:
        {"load_seconds": float, "stages": {stage: [seconds per file]}} (see `time_built`).
    """
    from mammo.pipelines.registry import PIPELINES, check_name, get_pipeline

    start = time.perf_counter()
    pipeline = get_pipeline(name)
    load = time.perf_counter() - start
    if PIPELINES[check_name(name)[0]].prompted:
        return {"load_seconds": round(load, 3), "stages": time_prompts(pipeline, paths, threads)}
    return {"load_seconds": round(load, 3), "stages": time_built(pipeline, paths, probabilities, threads)}


#: Boxes per image after the first: the same lesion redrawn a few pixels off (offsets in pixels).
REDRAWN = ((4, -3, 2, 5), (-6, 2, -3, -2), (2, 6, 7, 1))


def time_prompts(pipeline: Any, paths: list[Path], threads: int | None = None, side_mm: float = 15.0
                 ) -> dict[str, list[float]]:
    """A prompted pipeline as a reader uses it: per image, a first box (`side_mm` square at the
    breast's centre of mass: the embedding is computed) and then the same box redrawn
    `len(REDRAWN)` times a few pixels off (the embedding is cached: the decoder only).

    Returns:
        {"first_box": [seconds per image], "cached_box": [seconds per redrawn box], "read": [...],
        and the pipeline's own steps of the first box}.
    """
    from mammo.cli import configure_threads
    from mammo.io import read_image
    from mammo.preprocess.breast import breast_mask

    configure_threads(threads)
    stages: dict[str, list[float]] = {}

    def box_for(image: np.ndarray, meta: Any) -> tuple[float, float, float, float]:
        ys, xs = np.nonzero(breast_mask(image))
        half = side_mm / 2 / (meta.pixel_spacing_mm[1] if meta.pixel_spacing_mm else 0.1)
        cy, cx = float(ys.mean()), float(xs.mean())
        return (cx - half, cy - half, cx + half, cy + half)

    warm_image, warm_meta = read_image(paths[0])
    pipeline.run(warm_image[::-1].copy(), warm_meta, boxes=[box_for(warm_image, warm_meta)])  # not cached later
    for path in paths:
        start = time.perf_counter()
        image, meta = read_image(path)
        stages.setdefault("read", []).append(time.perf_counter() - start)
        box = box_for(image, meta)
        start = time.perf_counter()
        result = pipeline.run(image, meta, boxes=[box])
        stages.setdefault("first_box", []).append(time.perf_counter() - start)
        for step, seconds in result.timings.items():
            stages.setdefault(f"first:{step}", []).append(seconds)
        for offset in REDRAWN:
            moved = tuple(v + d for v, d in zip(box, offset))
            start = time.perf_counter()
            pipeline.run(image, meta, boxes=[moved])
            stages.setdefault("cached_box", []).append(time.perf_counter() - start)
    return stages


def time_built(pipeline: Any, paths: list[Path], probabilities: bool = False,
               threads: int | None = None) -> dict[str, list[float]]:
    """Warm a built pipeline on `paths[0]`, then time `predict_one` on every path, with `threads`
    torch/OpenCV/write threads (None: the libraries' defaults), as `mammo predict`.

    Returns:
        {stage: [seconds per file]} with stages "read", the pipeline's own steps, "run", "write"
        and "total", in that order.
    """
    from mammo.cli import configure_threads, predict_one

    configure_threads(threads)  # after the build, which may have imported torch
    stages: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        predict_one(pipeline, paths[0], Path(tmp) / "warm-up", probabilities, threads)
        for i, path in enumerate(paths):
            timings = predict_one(pipeline, path, Path(tmp) / f"{i}_{path.stem}", probabilities, threads)
            for stage, seconds in timings.items():
                stages.setdefault(stage, []).append(seconds)
    return stages


def run(paths: list[Path], pipelines: list[str] | None = None, probabilities: bool = False,
        threads: int | None = None) -> dict[str, Any]:
    """Time every pipeline of `pipelines` (default `default_pipelines()`) on `paths`.

    Returns:
        {"reference_forward_seconds", "threads", "files", "pipelines": {name: {"load_seconds",
        "stages": {stage: `summarise` dict}}}}.
    """
    from mammo.cli import configure_threads
    from mammo.models.frameworks import import_torch
    from mammo.models.torch_reference import reference_forward_seconds

    raw = {name: time_pipeline(name, paths, probabilities, threads) for name in pipelines or default_pipelines()}
    import_torch()  # a numpy-only run has not loaded it: the threads must reach it too
    configure_threads(threads)
    reference = reference_forward_seconds()
    report = {name: {"load_seconds": r["load_seconds"],
                     "stages": {s: summarise(t, reference) for s, t in r["stages"].items()}}
              for name, r in raw.items()}
    return {"reference_forward_seconds": round(reference, 4), "threads": threads,
            "files": len(paths), "probabilities": probabilities, "pipelines": report}


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table, one row per pipeline stage."""
    ref = report["reference_forward_seconds"]
    lines = [f"reference forward pass (resnet18, 1x3x512x512): {ref:.4f} s; "
             f"{report['files']} files; threads {report['threads'] or 'default'}",
             f"{'pipeline':10s} {'stage':12s} {'median s':>9s} {'max s':>9s} {'median/ref':>11s}"]
    for name, entry in report["pipelines"].items():
        lines.append(f"{name:10s} {'(load)':12s} {entry['load_seconds']:9.3f}")
        for stage, s in entry["stages"].items():
            lines.append(f"{name:10s} {stage:12s} {s['median_seconds']:9.3f} {s['max_seconds']:9.3f} "
                         f"{s['median_over_reference']:11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammo.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="DICOMs or images (default: the 8 examples)")
    parser.add_argument("--pipelines", nargs="+", metavar="NAME",
                        help="pipelines or variants to time (default: every numpy/torch pipeline of the "
                             "registry; cesm-unet only when named, as it loads tensorflow)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenCV/write threads, as `mammo predict --threads` (default: "
                             "MAMMO_THREADS, else the libraries' own)")
    parser.add_argument("--probabilities", action="store_true",
                        help="ask for and write every probability map, as `mammo predict --probabilities`")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save the numbers as JSON")
    args = parser.parse_args(argv)
    from mammo.cli import resolve_threads

    if args.files:
        files = args.files
    else:
        from mammo.examples import example_dicoms

        files = list(example_dicoms())
    report = run(files, args.pipelines, args.probabilities, resolve_threads(args.threads))
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"saved {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
