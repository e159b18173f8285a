"""`python -m mammo.bench`: the speed figures that tests must not time, as ratios to a reference.

On the 8 example DICOMs (CBIS-DDSM, RLE lossless, ~4600x2800, 16-bit):
- read: `read_image` alone (median, max; one warm-up read first);
- breast: read + the classical `breast` pipeline + `write_result` (mask PNG in original geometry).

Each figure is printed beside a reference forward pass timed in the same run
(`mammo.models.torch_reference`), and as a ratio to it: the ratio is what holds across machines.
The model pipelines have their own benchmarks (`python -m training.measure_cascade --skip tissue
lesion normals films`, `python -m training.measure_glam`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _summary(times: list[float], reference: float) -> dict[str, float]:
    median = float(np.median(times))
    return {"median_seconds": round(median, 3), "max_seconds": round(float(np.max(times)), 3),
            "median_over_reference": round(median / reference, 2), "n": len(times)}


def bench_read(paths: list[Path]) -> list[float]:
    """Seconds of `read_image` per file (after one warm-up read: imports, plugin discovery)."""
    from mammo.io import read_image

    read_image(paths[0])
    times = []
    for path in paths:
        start = time.perf_counter()
        read_image(path)
        times.append(time.perf_counter() - start)
    return times


def bench_breast(paths: list[Path]) -> list[float]:
    """Seconds of read + `breast` pipeline + `write_result` per file."""
    from mammo.export import write_result
    from mammo.io import read_image
    from mammo.pipelines.registry import get_pipeline

    pipe = get_pipeline("breast")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            start = time.perf_counter()
            image, meta = read_image(path)
            write_result(Path(tmp) / path.stem, image, meta, pipe.run(image, meta))
            times.append(time.perf_counter() - start)
    return times


def run(paths: list[Path]) -> dict:
    """Every figure of the module docstring, with the reference pass timed in the same run."""
    from mammo.models.torch_reference import reference_forward_seconds

    read, breast = bench_read(paths), bench_breast(paths)
    reference = reference_forward_seconds()
    return {"reference_forward_seconds": round(reference, 4), "read": _summary(read, reference),
            "read_breast_write": _summary(breast, reference)}


def main(argv: list[str] | None = None) -> int:
    from mammo.examples import example_dicoms

    parser = argparse.ArgumentParser(prog="python -m mammo.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="DICOMs or images (default: the 8 examples)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.files or list(example_dicoms())), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
