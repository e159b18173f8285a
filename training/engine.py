"""The training function: `train(config, run_dir, report=None)`, used by `training.train` and `tune/`.

Writes into `run_dir`: config.yaml (resolved, with its time budget), last.pt (every epoch,
atomically) and best.pt, TensorBoard logs (tb/), curves.png (loss and validation scores per
epoch, redrawn every epoch), metrics.json (best validation numbers, the history, and why the run
stopped). `resume=True` continues from last.pt, losing at most the epoch that was running; the
time already spent counts against `config.time_budget_min`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mammo.models.frameworks import import_torch
from training.config import TrainConfig, save_config
from training.tasks import get_task

torch = import_torch()

Report = Callable[[int, dict[str, float]], None]


class Distributed(Protocol):
    """Hooks for data-parallel training (`training.distributed`); None means one process.

    Every rank runs the same loop; only the chief (rank 0) validates, writes files and reports
    full metrics, the others report their epoch loss only.
    """

    is_chief: bool

    def wrap_model(self, model: Any) -> Any: ...          # e.g. DistributedDataParallel(model)
    def wrap_loader(self, loader: Any) -> Any: ...        # this rank's shard of the batches
    def set_epoch(self, epoch: int) -> None: ...          # reshuffles the shards each epoch
    def mean_loss(self, losses: list[float]) -> float: ...  # averaged over all ranks
    def host(self, model: Any) -> Any: ...                # the model on the CPU, to validate/save


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _state(model, opt, sched, epoch: int, best: float, history: list, elapsed: float) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": epoch, "best": best, "history": history, "elapsed": elapsed,
            "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}


def plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    """curves.png: training loss (left) and the validation score plus per-class Dice,
    sensitivities and AUCs (per source where a run reports them) (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] + 1 for m in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(epochs, [m["loss"] for m in history], marker=".")
    left.set(xlabel="epoch", ylabel="training loss", title=title)
    keys = sorted(k for k in history[-1] if k.startswith(("dice_", "sens_", "auc_")) or k == "score")
    for key in keys:
        right.plot(epochs, [m.get(key, np.nan) for m in history], label=key, lw=2.5 if key == "score" else 1)
    top = max([1.0] + [m.get(k, 0.0) for m in history for k in keys])  # deepmica's score reaches 1.25
    right.set(xlabel="epoch", ylabel="validation", ylim=(0, top * 1.02), title="validation (score picks best.pt)")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def train(config: TrainConfig, run_dir: Path, report: Report | None = None, resume: bool = False,
          data: tuple[Any, Any] | None = None, dist: Distributed | None = None) -> dict[str, Any]:
    """Train one model as configured; returns the contents of metrics.json.

    Args:
        config: the run's configuration.
        run_dir: output folder (created); with `resume`, it must hold last.pt.
        report: called after every epoch with (epoch, validation metrics + "loss" + "lr"), e.g.
            by Ray Tune.
        data: (train, val) as the task's `load_data` returns them (tests and sweeps reuse them);
            read when None.
        dist: data-parallel hooks (`training.distributed`); None trains in this process alone.
    """
    from tqdm import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    task = get_task(config)
    # After the task: tensorboard loads tensorflow when installed, and smp/timm (imported by the
    # task) must come first or the process refuses them (mammo.models.frameworks).
    from torch.utils.tensorboard import SummaryWriter
    train_data, val_data = data or task.load_data()
    model = task.build_model()
    if config.init_from and not resume:
        model.load_state_dict(torch.load(Path(config.init_from), weights_only=False)["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=config.t0, T_mult=config.t_mult)
    start, best, history, elapsed = 0, -1.0, [], 0.0
    if resume:
        state = torch.load(run_dir / "last.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best, history = state["epoch"] + 1, state["best"], state["history"]
        elapsed = float(state.get("elapsed", 0.0))
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
    loader, writer = task.loader(train_data), SummaryWriter(str(run_dir / "tb"))
    net = model if dist is None else dist.wrap_model(model)
    loader = loader if dist is None else dist.wrap_loader(loader)
    stopped = "epochs done"
    for epoch in range(start, config.epochs):
        if config.time_budget_min and elapsed >= config.time_budget_min * 60:
            stopped = f"time budget of {config.time_budget_min:g} min spent ({elapsed / 60:.1f} min)"
            break
        if dist is not None:
            dist.set_epoch(epoch)
        net.train()
        t0, losses = time.perf_counter(), []
        bar = tqdm(loader, desc=f"{config.name} epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        for step, batch in enumerate(bar):
            loss = task.loss(net, batch, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step(epoch + (step + 1) / len(loader))
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        mean_loss = float(np.mean(losses)) if dist is None else dist.mean_loss(losses)
        elapsed += time.perf_counter() - t0
        if dist is not None and not dist.is_chief:  # the chief alone validates, saves and logs
            if report is not None:
                report(epoch, {"loss": mean_loss, "epoch": epoch})
            continue
        host = model if dist is None else dist.host(model)
        metrics = task.validate(host, val_data)
        metrics.update(loss=mean_loss, lr=opt.param_groups[0]["lr"],
                       seconds=time.perf_counter() - t0, epoch=epoch)
        history.append(metrics)
        for key, value in metrics.items():
            writer.add_scalar(f"val/{key}" if key.startswith(task.metric_prefixes) else f"train/{key}", value,
                              epoch)
        if metrics["score"] > best:
            best = metrics["score"]
            _save_atomic({"model": host.state_dict(), "epoch": epoch, "metrics": metrics}, run_dir / "best.pt")
            task.log_images(writer, host, val_data, epoch)
        _save_atomic(_state(host, opt, sched, epoch, best, history, elapsed), run_dir / "last.pt")
        plot_curves(history, run_dir / "curves.png", config.name)
        tqdm.write(f"{config.name} epoch {epoch + 1}: loss {metrics['loss']:.4f} val score "
                   f"{metrics['score']:.4f} (best {best:.4f}) {metrics['seconds']:.0f} s")
        if report is not None:
            report(epoch, metrics)
    writer.close()
    best_epoch = max(history, key=lambda m: m["score"]) if history else {}
    result = {"name": config.name, "best_epoch": best_epoch.get("epoch"), "val": best_epoch,
              "history": history, "n_train": len(train_data), "n_val": len(val_data), "stopped": stopped,
              "train_minutes": round(elapsed / 60, 2), "time_budget_min": config.time_budget_min}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
