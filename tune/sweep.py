"""Run (or resume) a sweep: `run_sweep(SweepOptions(...))` -> the Tune `ResultGrid` + output files.

The experiment lives in `<storage>/<name>/` (Tune's own state, one folder per trial with its
checkpoints); `<storage>` is a folder or a URI every node of a cluster reaches (s3://, gs://).
`tune.outputs` adds trials.csv, trials.html, best.yaml and best/ there (for a URI: written to
runs/tune/<name>/ and uploaded beside Tune's state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from training.cluster import (absolute_paths, check_paths_on_nodes, connect, is_uri, join_storage,
                              storage_root)
from training.config import TrainConfig, load_config
from tune.space import load_space, read_space
from tune.trainables import METRIC, distributed_trial, torch_trial


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
    outputs: str = ""


def _trainable(opts: SweepOptions, base: dict[str, Any], data: Any = None, storage: str = ""):
    """The function trainable with its resources: one process, or a driver + K workers (whose Ray
    Train checkpoints go under `storage`, the experiment's own location, reachable from every node)."""
    from ray import tune

    if opts.workers:
        fn = partial(distributed_trial, base=base, workers=opts.workers, use_gpu=opts.gpus_per_trial > 0,
                     cpus_per_worker=0.9 * opts.cpus_per_trial, data=data, storage=storage)
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


def experiment_name(opts: SweepOptions, base: TrainConfig) -> str:
    return opts.name or f"{base.name}-sweep"


def experiment_location(opts: SweepOptions, base: TrainConfig) -> str:
    """Where Tune keeps the sweep: an absolute folder, or a URI (s3://bucket/sweeps/NAME)."""
    return join_storage(opts.storage, experiment_name(opts, base))


def output_dir(opts: SweepOptions, base: TrainConfig) -> Path:
    """The local folder of trials.csv, trials.html, best.yaml and best/: `opts.outputs`, else the
    experiment folder itself, or for a URI storage runs/tune/NAME (then uploaded beside Tune's state)."""
    if opts.outputs:
        return Path(opts.outputs).resolve()
    if is_uri(opts.storage):
        return Path("runs/tune").resolve() / experiment_name(opts, base)
    return Path(experiment_location(opts, base))


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
    location = experiment_location(opts, base)
    trainable = _trainable(opts, absolute_paths(base), data, storage=location)
    if opts.resume:
        if not tune.Tuner.can_restore(location):
            raise FileNotFoundError(f"no sweep to resume in {location}")
        return tune.Tuner.restore(location, trainable, resume_unfinished=True, resume_errored=True)
    space = load_space(opts.space)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tune_config = tune.TuneConfig(metric=METRIC, mode="max", num_samples=opts.num_samples,
                                  search_alg=BasicVariantGenerator(random_state=opts.seed),
                                  scheduler=_scheduler(opts, int(space.get("epochs", base.epochs))),
                                  max_concurrent_trials=opts.max_concurrent or None)
    run_config = tune.RunConfig(name=experiment_name(opts, base), storage_path=storage_root(opts.storage),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                failure_config=tune.FailureConfig(max_failures=2))
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def run_sweep(opts: SweepOptions, data: Any = None) -> tuple[Any, Path]:
    """Run or resume the sweep, then write its outputs; returns (ResultGrid, experiment folder).

    `data` (tests): the (train, val) pair every trial uses instead of reading the config's data.
    """
    from tune.outputs import upload_outputs, write_outputs

    base = base_config(opts)
    connect(opts.address, opts.num_cpus)
    if data is None:  # fail before any trial starts when a node lacks the data
        check_paths_on_nodes(absolute_paths(base))
    results = build_tuner(opts, data).fit()
    path = output_dir(opts, base)
    path.mkdir(parents=True, exist_ok=True)
    write_outputs(results, path, base, opts, val=data[1] if data else None)
    location = experiment_location(opts, base)
    if is_uri(location):
        upload_outputs(path, location)
    return results, path

