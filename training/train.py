"""`python -m training.train --config FILE [key=value ...] [--resume RUN_DIR] [--workers K [--gpus]]`.

With `--workers K` the run is data-parallel on K Ray Train workers (`training.distributed`); a local
Ray is started unless `--address HOST:PORT` (or RAY_ADDRESS) names a cluster. The run folder is the
same as without.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    parser.add_argument("--config", help="training YAML (see training/configs/)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last.pt")
    parser.add_argument("--workers", type=int, default=0, metavar="K",
                        help="train on K Ray Train workers (DistributedDataParallel); batch_size is global")
    parser.add_argument("--gpus", action="store_true", help="with --workers: one GPU per worker (nccl)")
    parser.add_argument("--address", help="with --workers: the Ray cluster to train on (HOST:PORT; default: "
                        "RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage", help="with --workers: where Ray Train keeps its checkpoints, a folder every "
                        "node sees or a URI (s3://...); default RUN_DIR/ray")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config's fields")
    args = parser.parse_args(argv)
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "last.pt").is_file():
            print(f"error: {run_dir} has no last.pt to resume from", file=sys.stderr)
            return 2
        config = load_config(run_dir / "config.yaml", args.overrides)
    elif args.config:
        config = load_config(args.config, args.overrides)
        run_dir = Path(config.out_dir) / config.name
        if (run_dir / "last.pt").exists():
            print(f"error: {run_dir} already holds a run; use --resume {run_dir} or name=<new name>",
                  file=sys.stderr)
            return 2
    else:
        parser.error("give --config FILE or --resume RUN_DIR")
    for flag in ("gpus", "address", "storage"):
        if getattr(args, flag) and not args.workers:
            parser.error(f"--{flag} needs --workers K")
    from training.engine import train  # imports torch: after argument errors are reported

    run_dir.mkdir(parents=True, exist_ok=True)
    if not args.resume:  # export copies this into the manifest: the exact command that made the run
        (run_dir / "command.txt").write_text(" ".join(["python -m training.train", *sys.argv[1:]]) + "\n")
    if args.workers:
        from training.distributed import fit

        try:
            result = fit(config, run_dir, args.workers, use_gpu=args.gpus,
                         resume_from=run_dir if args.resume else None, address=args.address, storage=args.storage)
        except FileNotFoundError as error:  # data missing on a node, or the run folder out of reach
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        result = train(config, run_dir, resume=bool(args.resume))
    print(f"best validation score {result['val'].get('score', float('nan')):.4f} at epoch "
          f"{result['best_epoch']}; run folder {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
