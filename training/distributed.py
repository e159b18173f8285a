"""Data-parallel training with Ray Train's `TorchTrainer`: `fit(config, run_dir, workers=K)`.

Every worker runs `training.engine.train` (the same function as a single-process run) with the
`RayDDP` hooks: the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), each
worker sees its shard of every epoch (DistributedSampler) with `batch_size / K` images, so one
step still consumes `config.batch_size` images in all, and the epoch loss is averaged over the
workers. Rank 0 validates and writes the run folder exactly as a single-process run (config.yaml,
last.pt, best.pt, tb/, metrics.json) and reports its metrics; the others report their loss only.
Rank 0 also hands last.pt/best.pt/config.yaml to Ray as a checkpoint, so a restarted worker group
(or a Tune trial wrapping this trainer) continues from it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mammo.models.frameworks import import_torch
from training.config import TrainConfig

torch = import_torch()

CHECKPOINT_FILES = ("last.pt", "best.pt", "config.yaml")
DDP_TASKS = ("tissue", "lesion")


class RayDDP:
    """`training.engine.Distributed` hooks for one Ray Train worker."""

    def __init__(self, rank: int, world: int, seed: int, device: Any) -> None:
        self.rank, self.world, self.seed, self.device = rank, world, seed, device
        self.is_chief = rank == 0
        self._sampler = None

    def wrap_model(self, model: Any) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        model.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def wrap_loader(self, loader: Any) -> Any:
        """The same dataset, this rank's 1/K of it per epoch, batches of batch_size / K."""
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        self._sampler = DistributedSampler(loader.dataset, num_replicas=self.world, rank=self.rank,
                                           shuffle=True, seed=self.seed, drop_last=loader.drop_last)
        shard = DataLoader(loader.dataset, batch_size=max(1, loader.batch_size // self.world),
                           sampler=self._sampler, drop_last=loader.drop_last, num_workers=0)
        return shard if self.device.type == "cpu" else _OnDevice(shard, self.device)

    def set_epoch(self, epoch: int) -> None:
        if self._sampler is not None:
            self._sampler.set_epoch(epoch)

    def mean_loss(self, losses: list[float]) -> float:
        total = torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return float(total[0] / total[1])

    def host(self, model: Any) -> Any:
        """The model itself on CPU; on a GPU a CPU copy, because the tasks validate on the CPU."""
        if self.device.type == "cpu":
            return model
        import copy

        return copy.deepcopy(model).cpu()


class _OnDevice:
    """A loader whose tensors are moved to `device` (the tasks build CPU tensors)."""

    def __init__(self, loader: Any, device: Any) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield tuple(t.to(self.device) if hasattr(t, "to") else t for t in batch)


def _checkpoint_report(run_dir: Path, metrics: dict[str, float], chief: bool) -> None:
    """`ray.train.report` on every rank (Ray waits for all); the chief attaches the checkpoint."""
    import ray
    import ray.train

    # Tune keeps rank 0's metrics: trials.csv then names the node of a distributed trial's rank 0.
    metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
    if not chief:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
        for name in CHECKPOINT_FILES:
            if (run_dir / name).is_file():
                try:  # the engine replaces these files, never rewrites them: a hard link is a snapshot
                    os.link(run_dir / name, Path(tmp) / name)
                except OSError:
                    shutil.copy2(run_dir / name, Path(tmp) / name)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _restore(run_dir: Path, resume_from: str | None) -> bool:
    """Put last.pt into `run_dir` from Ray's checkpoint (a restarted group) or `resume_from`."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for name in CHECKPOINT_FILES:
                if (Path(folder) / name).is_file():
                    shutil.copy2(Path(folder) / name, run_dir / name)
        return True
    if resume_from:
        if Path(resume_from).resolve() != run_dir.resolve():
            shutil.copy2(Path(resume_from) / "last.pt", run_dir / "last.pt")
        return True
    return False


def _write_placement(run_dir: Path, rank: int, world: int, device: Any) -> None:
    """workers.json in the run folder (rank 0): the Ray node, host IP and device of every rank."""
    import ray

    here = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "device": str(device), "pid": os.getpid()}
    everyone: list[Any] = [None] * world
    torch.distributed.all_gather_object(everyone, here)
    if rank == 0:
        (run_dir / "workers.json").write_text(json.dumps(everyone, indent=2))


def worker_loop(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: `training.engine.train` with the `RayDDP` hooks."""
    from mammo.models.frameworks import import_smp

    import_smp()  # torch-side native libraries before anything loads tensorflow in this worker
    import ray.train
    import ray.train.torch

    from training.engine import train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if Path(loop_config["cwd"]).is_dir():  # relative data paths of the config mean the driver's folder
        os.chdir(loop_config["cwd"])
    config = TrainConfig(**loop_config["config"])
    torch.set_num_threads(config.threads)
    # Only rank 0 writes the real run folder; the others need a scratch folder for the engine.
    run_dir = Path(loop_config["run_dir"]) if rank == 0 else Path(tempfile.mkdtemp(prefix=f"rank{rank}-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = _restore(run_dir, loop_config.get("resume_from"))
    hooks = RayDDP(rank, world, config.seed, ray.train.torch.get_device())
    _write_placement(run_dir, rank, world, hooks.device)
    train(config, run_dir, report=lambda epoch, m: _checkpoint_report(run_dir, m, rank == 0),
          resume=resume, data=loop_config.get("data"), dist=hooks)
    if rank != 0:
        shutil.rmtree(run_dir, ignore_errors=True)


def make_trainer(config: TrainConfig, run_dir: Path, workers: int, use_gpu: bool = False,
                 resume_from: Path | None = None, data: tuple[Any, Any] | None = None,
                 callbacks: list | None = None, cpus_per_worker: float | None = None,
                 storage: str | None = None, name: str | None = None):
    """A `TorchTrainer` training `config` into `run_dir` on `workers` workers (not started).

    Ray Train keeps its checkpoints in `storage`/`name` (default `run_dir`/ray/`run_dir.name`); on a
    multi-node cluster `storage` must be a folder every node sees or a URI (s3://, gs://).

    Raises:
        ValueError: config.batch_size is not a multiple of `workers` (the global batch would change),
            or the task is GLAM.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if config.task not in DDP_TASKS:  # GLAM freezes parts of its network mid-run and reaches into it
        raise ValueError(f"--workers supports the tasks {', '.join(DDP_TASKS)}; {config.task!r} trains in one process")
    if workers < 1 or config.batch_size % workers:
        raise ValueError(f"batch_size {config.batch_size} must be a positive multiple of --workers {workers}")
    run_dir = run_dir.resolve()
    # 1 CPU each by default; under Tune on 2 CPUs give 0.9 (the trial's driver holds 0.01).
    per_worker = {"CPU": cpus_per_worker if cpus_per_worker is not None else 1.0}
    if use_gpu:
        per_worker["GPU"] = 1
    loop_config = {"config": config.to_dict(), "run_dir": str(run_dir), "data": data, "cwd": os.getcwd(),
                   "resume_from": str(resume_from.resolve()) if resume_from else None}
    return TorchTrainer(
        worker_loop, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(name=name or run_dir.name, storage_path=storage or str(run_dir / "ray"),
                                       callbacks=callbacks,
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))


def fit(config: TrainConfig, run_dir: Path, workers: int, use_gpu: bool = False,
        resume_from: Path | None = None, data: tuple[Any, Any] | None = None,
        cpus_per_worker: float | None = None, address: str | None = None,
        storage: str | None = None) -> dict[str, Any]:
    """Train on `workers` Ray workers; returns metrics.json as a single-process run writes it.

    Connects to the cluster at `address` (or RAY_ADDRESS), else starts a local Ray (all CPUs of this
    machine, no dashboard), unless Ray is connected already. The config's data paths are checked
    on every node first, and on a cluster made absolute (config.yaml then holds those). Rank 0
    writes the run folder, so `run_dir` must be on a file system its node sees (README "Running
    on a cluster").
    """
    from training.cluster import absolute_paths, check_paths_on_nodes, connect, storage_root

    connect(address)
    if data is None:
        values = absolute_paths(config)
        check_paths_on_nodes(values)
        if address or os.environ.get("RAY_ADDRESS"):  # a relative path means nothing on another node
            config = TrainConfig(**values)
    trainer = make_trainer(config, run_dir, workers, use_gpu, resume_from, data, cpus_per_worker=cpus_per_worker,
                           storage=storage_root(storage) if storage else None)
    trainer.fit()
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} is missing after training: rank 0 ran on another node "
                                f"(see {run_dir / 'workers.json'} there); give an out_dir every node shares")
    return json.loads(metrics.read_text())
