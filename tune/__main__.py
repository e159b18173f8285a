"""`python -m tune --config TRAIN_YAML --space SPACE_YAML --num-samples N [options] [key=value ...]`.

Sweeps the training config's hyperparameters with Ray Tune (ASHA by default). Without `--address`
an embedded local Ray runs on this machine; with it the trials run on that cluster.
"""

from __future__ import annotations

import argparse
import sys

from tune.sweep import SweepOptions, run_sweep


def parse_args(argv: list[str] | None) -> SweepOptions:
    parser = argparse.ArgumentParser(prog="python -m tune", description=__doc__)
    parser.add_argument("--config", required=True, help="training YAML (training/configs/...)")
    parser.add_argument("--space", required=True, help="search-space YAML over the config's fields (tune/spaces/)")
    parser.add_argument("--num-samples", type=int, default=8, help="trials to sample (default 8)")
    parser.add_argument("--scheduler", choices=("asha", "none"), default="asha",
                        help="asha stops bad trials early (default); none runs every trial to the end")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="K > 0: each trial trains on K Ray Train workers (DistributedDataParallel)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep of the same name")
    parser.add_argument("--storage", default="runs/tune",
                        help="folder of the sweeps, or a URI every cluster node reaches (s3://, gs://); default runs/tune")
    parser.add_argument("--name", help="sweep name (default <config name>-sweep)")
    parser.add_argument("--outputs", default="", help="local folder for trials.csv/html, best.yaml and best/ "
                        "(default: the sweep's folder; runs/tune/NAME when --storage is a URI)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: as resources allow)")
    parser.add_argument("--export-name", help="manifest name of the exported best weights (default <name>-best)")
    parser.add_argument("--pipeline", default="cascade", help="pipeline of the exported weights")
    parser.add_argument("--seed", type=int, help="seed of the parameter sampling (default: random)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the training config")
    args = parser.parse_args(argv)
    return SweepOptions(config=args.config, space=args.space, num_samples=args.num_samples,
                        scheduler=args.scheduler, address=args.address, gpus_per_trial=args.gpus_per_trial,
                        cpus_per_trial=args.cpus_per_trial, workers=args.workers, resume=args.resume,
                        storage=args.storage, name=args.name, overrides=args.overrides, num_cpus=args.num_cpus,
                        max_concurrent=args.max_concurrent, export_name=args.export_name, pipeline=args.pipeline,
                        seed=args.seed, outputs=args.outputs)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        run_sweep(opts)
    except (ValueError, FileNotFoundError) as error:  # bad space/config or nothing to resume
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
