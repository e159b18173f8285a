"""Ray Tune function trainables. Each trial calls the same training code as `python -m training.train`.

- `torch_trial`: `training.engine.train` in the trial's process; its `report` hook calls
  `ray.tune.report` every epoch with the validation metrics and a checkpoint (last.pt, best.pt,
  config.yaml), and a restarted trial (failure, or `--resume` of the sweep) continues from it.
- `distributed_trial`: one trial = K Ray Train workers (`training.distributed`); Ray refuses
  `Tuner(trainer)`, so a light driver function runs `trainer.fit()` with `TuneReportCallback`.
- `keras_trial`: for Keras pipelines (cesm-unet): a `build_and_fit(params, callbacks)` callable
  gets Ray's Keras reporting callback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINT_FILES = ("last.pt", "best.pt", "config.yaml")
METRIC = "score"  # every task's validation "score": higher is better


def _torch_side_first() -> None:
    """Load torch, torchvision, timm and smp before anything in the trial can load tensorflow
    (a Ray worker process may have it loaded otherwise; see `mammo.models.frameworks`)."""
    from mammo.models.frameworks import import_smp

    import_smp()


def trial_config(base: dict[str, Any], params: dict[str, Any]):
    """The trial's `TrainConfig`: the base config with the sampled `params` on top."""
    from training.config import TrainConfig

    return TrainConfig(**{**base, **params})


def _copy_files(source: Path, target: Path, names: tuple[str, ...] = CHECKPOINT_FILES) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_file():
            try:  # last.pt/best.pt are replaced, never rewritten, so a hard link is a safe snapshot
                os.link(source / name, target / name)
            except OSError:
                shutil.copy2(source / name, target / name)


def _tune_report(run_dir: Path) -> Callable[[int, dict[str, float]], None]:
    """The engine's `report` hook: metrics + a checkpoint of the run folder, through Tune; each
    report also names the Ray node the trial ran on ("node_id": trials.csv shows where trials ran)."""
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()

    def report(epoch: int, metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory(dir=run_dir.parent) as tmp:
            _copy_files(run_dir, Path(tmp), ("best.pt", "config.yaml"))
            # Moved, not copied: the engine reads last.pt only to resume (from this checkpoint), and
            # the trial folder (under Ray's temp dir) would otherwise keep the largest file of every trial.
            os.replace(run_dir / "last.pt", Path(tmp) / "last.pt")
            tune.report({**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(tmp))

    return report


def _restore(run_dir: Path) -> bool:
    """Copy the trial's latest Tune checkpoint (if any) into `run_dir`; True when there was one."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as folder:
        _copy_files(Path(folder), run_dir)
    return (run_dir / "last.pt").is_file()


def torch_trial(params: dict[str, Any], base: dict[str, Any], data: Any = None) -> None:
    """One trial of a torch sweep: `training.engine.train` with Tune reporting and checkpoints."""
    _torch_side_first()
    from training.engine import train

    config = trial_config(base, params)
    run_dir = Path.cwd() / "run"  # Tune runs each trial in its own working folder
    resume = _restore(run_dir)
    train(config, run_dir, report=_tune_report(run_dir), resume=resume, data=data)
    (run_dir / "best.pt").unlink(missing_ok=True)  # it is in the trial's checkpoints now


def distributed_trial(params: dict[str, Any], base: dict[str, Any], workers: int, use_gpu: bool = False,
                      cpus_per_worker: float = 0.9, data: Any = None, storage: str = "") -> None:
    """One trial = `workers` Ray Train workers; the trial itself only drives `trainer.fit()`.

    `storage`: the sweep's experiment location; Ray Train keeps the trial's checkpoints in
    `<storage>/train/<trial name>`, which every node reaches (the trial's own folder may not)."""
    _torch_side_first()
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from training.distributed import make_trainer

    config = trial_config(base, params)
    run_dir = Path.cwd() / "run"
    # A restarted trial continues from the trial folder's last.pt (written by rank 0 every epoch).
    resume_from = run_dir if (run_dir / "last.pt").is_file() else None
    train_storage = f"{storage}/train" if storage else None
    trainer = make_trainer(config, run_dir, workers, use_gpu, resume_from, data,
                           callbacks=[TuneReportCallback()], cpus_per_worker=cpus_per_worker,
                           storage=train_storage, name=tune.get_context().get_trial_name())
    trainer.fit()


def keras_trial(params: dict[str, Any], build_and_fit: Callable[[dict[str, Any], list], Any],
                metrics: list[str] | dict[str, str] | None = None) -> None:
    """One trial of a Keras sweep: `build_and_fit(params, callbacks)` must pass `callbacks` to fit.

    The callback is Ray's `TuneReportCheckpointCallback` (Keras logs -> `ray.tune.report` at every
    epoch end, with a checkpoint of the model); `metrics` selects/renames the Keras log keys.
    """
    from mammo.models.frameworks import import_keras

    import_keras()  # the torch side, then tensorflow: never the other way round (segfault)
    from ray.tune.integration.keras import TuneReportCheckpointCallback

    build_and_fit(dict(params), [TuneReportCheckpointCallback(metrics=metrics)])
