"""`python -m eval`: evaluate a pipeline on a dataset, re-score saved predictions, or serve evaluations.

    python -m eval --pipeline NAME --dataset KIND:PATH --out DIR [--split S] [--limit N] [--workers N] [--resume]
    python -m eval --pipeline box-lesion --dataset KIND:PATH --out DIR --prompt-from-reference [--box-jitter F]
    python -m eval score --predictions DIR/predictions.csv --dataset KIND:PATH [--split S]
    python -m eval serve --datasets-root DIR [--port 7861]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from mammo.errors import MammoInputError

if TYPE_CHECKING:
    from eval.runner import PromptSpec

KINDS_HELP = ("KIND:PATH; KIND is tissue-ddsm, mias, mias-roi, mias-outlined, cdd-cesm, glam-exam, "
              "cbis-ddsm (TCIA description CSVs + DICOM tree), ddsm-films (DDSM films by case volume: images.csv), "
              "cdd-cesm-subtracted (cdd_cesm/subtracted/{Benign,Malignant,Normal}), mass-seg-08 (Tiryaki's split folders), "
              "deepmica-png (DeepMiCa's Datasets/{INbreast,CBIS_DDSM}/{AllPng,Masks,csv}), dicom-folder, "
              "folder (images + optional masks/ and labels.csv) or csv (image_path, mask_path, benign_label, "
              "malignant_label, patient_id, acquisition)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="a committed split name (train/val/test) or a split CSV "
                                        "(PATH.csv or PATH.csv:val): evaluate only its images")
    parser.add_argument("--limit", type=int, help="only the first N images (after --split)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--no-report", action="store_true", help="skip report.html")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="pipeline name (see `mammo pipelines`)")
    parser.add_argument("--dataset", required=True, help=KINDS_HELP)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, each with its own model (default 1: in this process)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--dicom", action="store_true",
                        help="also write dicom/<image>/seg.dcm and sr.dcm (DICOM SEG and SR) for each DICOM input")
    prompt = parser.add_argument_group("box prompts (prompted pipelines: box-lesion)")
    prompt.add_argument("--prompt-from-reference", action="store_true",
                        help="give the pipeline the tight box of each component of the reference mask")
    prompt.add_argument("--prompt-class", default="lesion", help="reference class the boxes come from (default lesion)")
    prompt.add_argument("--box-jitter", type=float, default=0.0, metavar="F",
                        help="move each box edge by a uniform amount in [-F, +F] x the box's side (default 0: tight)")
    prompt.add_argument("--prompt-min-pixels", type=int, default=16, metavar="N",
                        help="no box for reference components under N pixels (default 16: mask specks)")
    prompt.add_argument("--prompt-seed", type=int, default=0, help="seed of the jitter (default 0)")
    _common(parser)
    return parser


def prompt_spec(args: argparse.Namespace) -> PromptSpec | None:
    """The `--prompt-*` options, or None without `--prompt-from-reference`."""
    if not args.prompt_from_reference:
        return None
    from eval.runner import PromptSpec

    if not 0 <= args.box_jitter < 0.5:
        raise MammoInputError(f"--box-jitter must be in [0, 0.5), got {args.box_jitter}")
    return PromptSpec(args.prompt_class, args.box_jitter, args.prompt_min_pixels, args.prompt_seed)


def score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval score",
                                     description="Recompute metrics.json and report.html from saved files.")
    parser.add_argument("--predictions", required=True, help="a predictions.csv written by `python -m eval`")
    parser.add_argument("--dataset", help=KINDS_HELP + " (omit to use only the CSV's columns)")
    _common(parser)
    return parser


def _print_summary(metrics: dict) -> None:
    keep = {k: metrics[k] for k in ("n_images", "n_errors", "seconds_per_image", "segmentation",
                                    "classification", "detection") if k in metrics}
    print(json.dumps(keep, indent=1))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["serve"]:
            from eval.server import add_serve_args, serve

            parser = argparse.ArgumentParser(prog="python -m eval serve",
                                             description="Serve batch evaluations over the Gradio API.")
            add_serve_args(parser)
            return int(serve(parser.parse_args(argv[1:])))
        if argv[:1] == ["score"]:
            from eval.runner import rescore

            args = score_parser().parse_args(argv[1:])
            metrics = rescore(args.predictions, args.dataset, split=args.split, limit=args.limit,
                              n_resamples=args.resamples, report=not args.no_report, quiet=args.quiet)
        else:
            from eval.runner import evaluate

            args = run_parser().parse_args(argv)
            metrics = evaluate(args.pipeline, args.dataset, args.out, split=args.split, limit=args.limit,
                               workers=args.workers, resume=args.resume, n_resamples=args.resamples,
                               report=not args.no_report, quiet=args.quiet, prompt=prompt_spec(args),
                               dicom=args.dicom)
    except MammoInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        _print_summary(metrics)
    return 1 if metrics.get("n_errors") else 0
