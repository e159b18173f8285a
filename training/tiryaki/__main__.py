"""`python -m training.tiryaki train|cv|export CONFIG` and `python -m training.tiryaki measure`."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    """Run one command; a config error prints its message and exits with 2."""
    parser = argparse.ArgumentParser(prog="python -m training.tiryaki", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "export", "cv"):
        cmd = sub.add_parser(name)
        cmd.add_argument("config", help="training/configs/tiryaki_*.yaml")
        if name == "cv":
            cmd.add_argument("--folds", type=int, default=5, help="patient-grouped folds over train + val")
            cmd.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the config's)")
        if name == "export":
            cmd.add_argument("--metrics", default="", help="comma-separated JSON reports of `measure --out`")
            cmd.add_argument("--weights-dir", default=None, help="where the file goes (default: weights/)")
            cmd.add_argument("--manifest", default=None, help="manifest to update (default: weights_manifest.yaml)")
    measure = sub.add_parser("measure", help="the whole pipeline on the fixed val/test splits")
    measure.add_argument("--split", choices=("val", "test"), default="val")
    measure.add_argument("--data", default="../shared/data", help="folder holding mias/, mias_roi/, tissue_ddsm/")
    measure.add_argument("--source", choices=("runs", "manifest"), default="runs",
                         help="the runs' best epochs, or the shipped weights of the manifest")
    measure.add_argument("--out", default="", help="write the report JSON here too")
    args = parser.parse_args(argv)
    from training.tiryaki.config import load_config

    if args.command in ("train", "export", "cv"):
        try:
            load_config(args.config)  # fail fast, before tensorflow is imported
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.command == "train":
        from training.tiryaki.run import train

        print(f"best weights: {train(args.config)}")
    elif args.command == "cv":
        from training.tiryaki.cv import cross_validate

        print(f"cross-validation curve: {cross_validate(args.config, args.folds, args.epochs)}")
    elif args.command == "export":
        from training.tiryaki.export import export

        from pathlib import Path

        entry = export(args.config, args.metrics, Path(args.weights_dir) if args.weights_dir else None,
                       Path(args.manifest) if args.manifest else None)
        print(json.dumps(entry, indent=1))
    else:
        from training.tiryaki.measure import measure

        report = measure(args.split, args.data, args.source)
        text = json.dumps(report, indent=1)
        if args.out:
            from pathlib import Path

            Path(args.out).write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
