"""Run (or resume) a sweep: `run_sweep(SweepOptions(...))` -> the Tune `ResultGrid` + output files.

The experiment lives in `<storage>/<name>/` (Tune's own state, one folder per trial with its
checkpoints); `tune.outputs` adds trials.csv, trials.html, best.yaml and best/ there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from training.config import TrainConfig, load_config
from tune.space import load_space, read_space
from tune.trainables import METRIC, distributed_trial, torch_trial

PATH_FIELDS = ("data_root", "split", "init_from")
REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_EXCLUDES = [".git/", "runs/", "weights/", "demo_out/", "*.pt", "*.safetensors"]


@dataclass
class SweepOptions:
    """Everything `python -m tune` takes; see `tune.__main__` for the meaning of each."""

    config: str
    space: str
    num_samples: int = 8
    scheduler: str = "asha"
    address: str | None = None
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    workers: int = 0
    resume: bool = False
    storage: str = "runs/tune"
    name: str | None = None
    overrides: list[str] = field(default_factory=list)
    num_cpus: int | None = None
    max_concurrent: int = 0
    export_name: str | None = None
    pipeline: str = "cascade"
    grace_period: int = 1
    seed: int | None = None


def absolute_paths(config: TrainConfig) -> dict[str, Any]:
    """The config as a dict with data paths made absolute: trials run in their own folders."""
    values = config.to_dict()
    for key in PATH_FIELDS:
        if values[key] and not Path(values[key]).is_absolute():
            values[key] = str(Path(values[key]).resolve())
    return values


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to `address`, or start an embedded local Ray (no dashboard) on this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:  # ship this checkout to the cluster's workers (not the runs, weights or git history)
        ray.init(address=address, runtime_env={"working_dir": str(REPO_ROOT), "excludes": CLUSTER_EXCLUDES})
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)


def _trainable(opts: SweepOptions, base: dict[str, Any], data: Any = None):
    """The function trainable with its resources: one process, or a driver + K workers."""
    from ray import tune

    if opts.workers:
        fn = partial(distributed_trial, base=base, workers=opts.workers, use_gpu=opts.gpus_per_trial > 0,
                     cpus_per_worker=0.9 * opts.cpus_per_trial, data=data)
        return tune.with_resources(fn, {"cpu": 0.01})  # the workers hold the real resources
    fn = partial(torch_trial, base=base, data=data)
    return tune.with_resources(fn, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})


def _scheduler(opts: SweepOptions, max_epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    if opts.scheduler == "none":
        return None
    if opts.scheduler != "asha":
        raise ValueError(f"--scheduler must be asha or none, not {opts.scheduler!r}")
    return ASHAScheduler(time_attr="training_iteration", max_t=max(1, max_epochs),
                         grace_period=min(opts.grace_period, max(1, max_epochs)), reduction_factor=2)


def experiment_dir(opts: SweepOptions, base: TrainConfig) -> Path:
    return Path(opts.storage).resolve() / (opts.name or f"{base.name}-sweep")


def base_config(opts: SweepOptions) -> TrainConfig:
    """The training config the sweep starts from, with `threads` matched to the trial's CPUs."""
    config = load_config(opts.config, opts.overrides)
    read_space(opts.space)  # unknown fields fail here, before Ray starts
    if not any(item.startswith("threads=") for item in opts.overrides):
        config.threads = max(1, int(opts.cpus_per_trial))
    return config


def build_tuner(opts: SweepOptions, data: Any = None):
    """A new `Tuner`, or the interrupted one restored from its folder when `opts.resume`."""
    from ray import tune

    base = base_config(opts)
    path = experiment_dir(opts, base)
    trainable = _trainable(opts, absolute_paths(base), data)
    if opts.resume:
        if not tune.Tuner.can_restore(str(path)):
            raise FileNotFoundError(f"no sweep to resume in {path}")
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    space = load_space(opts.space)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tune_config = tune.TuneConfig(metric=METRIC, mode="max", num_samples=opts.num_samples,
                                  search_alg=BasicVariantGenerator(random_state=opts.seed),
                                  scheduler=_scheduler(opts, int(space.get("epochs", base.epochs))),
                                  max_concurrent_trials=opts.max_concurrent or None)
    run_config = tune.RunConfig(name=path.name, storage_path=str(path.parent),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                failure_config=tune.FailureConfig(max_failures=2))
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def run_sweep(opts: SweepOptions, data: Any = None) -> tuple[Any, Path]:
    """Run or resume the sweep, then write its outputs; returns (ResultGrid, experiment folder).

    `data` (tests): the (train, val) pair every trial uses instead of reading the config's data.
    """
    from tune.outputs import write_outputs

    base = base_config(opts)
    init_ray(opts.address, opts.num_cpus)
    results = build_tuner(opts, data).fit()
    path = experiment_dir(opts, base)
    write_outputs(results, path, base, opts, val=data[1] if data else None)
    return results, path

