"""`python -m training.cesm_unet train|evaluate|infer CONFIG [--section eval|test]`."""

from __future__ import annotations

import argparse
import sys

from mammo.pipelines.cesm_unet_config import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Run one command; a config error prints its message and exits with 2."""
    parser = argparse.ArgumentParser(prog="python -m training.cesm_unet", description=__doc__)
    parser.add_argument("command", choices=("train", "evaluate", "infer"))
    parser.add_argument("config", help="the INI file (train_eval_infer.config)")
    parser.add_argument("--section", choices=("eval", "test"), default="eval",
                        help="evaluate: which section's data (default eval)")
    args = parser.parse_args(argv)
    from mammo.pipelines.cesm_unet_config import load_config

    try:
        load_config(args.config)  # fail fast, before tensorflow is imported
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from training.cesm_unet import run

    try:
        if args.command == "train":
            print(f"best model: {run.train(args.config)}")
        elif args.command == "evaluate":
            print(run.evaluate(args.config, args.section))
        else:
            print(f"{len(run.infer(args.config))} masks written")
    except (ConfigError, FileNotFoundError) as error:  # a folder or model the config names is missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
