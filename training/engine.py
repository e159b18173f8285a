"""The training function: `train(config, run_dir, report=None)`, used by `training.train` and `tune/`.

Writes into `run_dir`: config.yaml (resolved), last.pt (every epoch, atomically) and best.pt,
TensorBoard logs (tb/), metrics.json (best validation numbers and the history). `resume=True`
continues from last.pt, losing at most the epoch that was running.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mammo.metrics import SegmentationMeter
from mammo.models.frameworks import import_torch
from training.config import TrainConfig, save_config
from training.data import Framed, build_augment, load_split

torch = import_torch()
from torch.utils.data import DataLoader, Dataset  # noqa: E402  (after the framework guard)

from mammo.models.torch_aca_resunet import create_model  # noqa: E402

Report = Callable[[int, dict[str, float]], None]


class AugmentedSet(Dataset):
    """Framed arrays with augmentation of the grey plane and its labels (other planes are constant)."""

    def __init__(self, data: Framed, augment=None):
        self.data, self.augment = data, augment

    def __len__(self) -> int:
        return len(self.data.ids)

    def __getitem__(self, i: int):
        x, y = self.data.x[i].copy(), self.data.y[i]
        if self.augment is not None:
            out = self.augment(image=x[0], mask=y)
            x[0], y = np.clip(out["image"], 0, 1), out["mask"]
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y)).long()


def make_loss(config: TrainConfig) -> Callable[[Any, Any], Any]:
    """config.dice_weight * Dice loss + config.ce_weight * (cross-entropy | BCE), from smp.losses."""
    from segmentation_models_pytorch.losses import DiceLoss

    if config.task == "tissue":
        dice, ce = DiceLoss("multiclass"), torch.nn.CrossEntropyLoss()
        return lambda logits, y: config.dice_weight * dice(logits, y) + config.ce_weight * ce(logits, y)
    dice, bce = DiceLoss("binary"), torch.nn.BCEWithLogitsLoss()

    def lesion_loss(logits, y):
        target = y.unsqueeze(1).float()
        return config.dice_weight * dice(logits, target) + config.ce_weight * bce(logits, target)

    return lesion_loss


def predict_labels(model, x: np.ndarray, config: TrainConfig, batch: int = 8) -> np.ndarray:
    """uint8 (N, h, w) label maps (tissue: argmax; lesion: probability > threshold)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i:i + batch]))
            if config.task == "tissue":
                out.append(logits.argmax(1).to(torch.uint8).numpy())
            else:
                out.append((torch.sigmoid(logits[:, 0]) > config.threshold).to(torch.uint8).numpy())
    return np.concatenate(out)


def validate(model, data: Framed, config: TrainConfig) -> dict[str, float]:
    """Per-image Dice/IoU per class at model resolution; "score" is the model-selection number."""
    pred = predict_labels(model, data.x, config)
    meter = SegmentationMeter()
    names = {n: v for v, n in enumerate(config.classes)} if config.task == "tissue" else {"lesion": 1}
    for p, t, kind in zip(pred, data.y, data.image_types):
        for name, value in names.items():
            meter.add(name, p == value, t == value)
            if config.task == "lesion":
                meter.add(f"lesion_{kind}", p == value, t == value)
    summary = meter.summary()
    metrics = {f"dice_{k}": v["dice"] for k, v in summary.items()}
    metrics.update({f"iou_{k}": v["iou"] for k, v in summary.items()})
    scored = ["adipose", "fibroglandular", "pectoral"] if config.task == "tissue" else ["lesion"]
    metrics["score"] = meter.mean_dice(scored)
    return metrics


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _state(model, opt, sched, epoch: int, best: float, history: list) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "epoch": epoch, "best": best, "history": history, "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}


def _log_overlays(writer, model, data: Framed, config: TrainConfig, epoch: int) -> None:
    n = min(config.val_overlays, len(data.ids))
    if n == 0:
        return
    pred = predict_labels(model, data.x[:n], config)
    scale = 255 // max(1, len(config.classes))
    for i in range(n):
        grey = (data.x[i, 0] * 255).astype(np.uint8)
        panel = np.concatenate([grey, data.y[i] * scale, pred[i] * scale], axis=1)
        writer.add_image(f"val/{data.ids[i]}", panel[None], epoch)


def train(config: TrainConfig, run_dir: Path, report: Report | None = None, resume: bool = False,
          data: tuple[Framed, Framed] | None = None) -> dict[str, Any]:
    """Train one model as configured; returns the contents of metrics.json.

    Args:
        config: the run's configuration.
        run_dir: output folder (created); with `resume`, it must hold last.pt.
        report: called after every epoch with (epoch, validation metrics + "loss" + "lr"), e.g.
            by Ray Tune.
        data: (train, val) already framed (tests and sweeps reuse them); read when None.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    train_data, val_data = data or (load_split(config, "train"), load_split(config, "val"))
    model = create_model(config.arch, config.encoder, config.in_channels, config.out_channels)
    if config.init_from and not resume:
        model.load_state_dict(torch.load(Path(config.init_from), weights_only=False)["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=config.t0, T_mult=config.t_mult)
    start, best, history = 0, -1.0, []
    if resume:
        state = torch.load(run_dir / "last.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best, history = state["epoch"] + 1, state["best"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
    loader = DataLoader(AugmentedSet(train_data, build_augment(config)), batch_size=config.batch_size,
                        shuffle=True, drop_last=len(train_data.ids) > config.batch_size, num_workers=0)
    loss_fn, writer = make_loss(config), SummaryWriter(str(run_dir / "tb"))
    for epoch in range(start, config.epochs):
        model.train()
        t0, losses = time.perf_counter(), []
        bar = tqdm(loader, desc=f"{config.name} epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        for step, (x, y) in enumerate(bar):
            loss = loss_fn(model(x), y)
            if config.l1_lambda > 0:
                loss = loss + config.l1_lambda * sum(p.abs().sum() for p in model.parameters())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step(epoch + (step + 1) / len(loader))
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        metrics = validate(model, val_data, config)
        metrics.update(loss=float(np.mean(losses)), lr=opt.param_groups[0]["lr"],
                       seconds=time.perf_counter() - t0, epoch=epoch)
        history.append(metrics)
        for key, value in metrics.items():
            writer.add_scalar(f"val/{key}" if key.startswith(("dice", "iou", "score")) else f"train/{key}", value, epoch)
        if metrics["score"] > best:
            best = metrics["score"]
            _save_atomic({"model": model.state_dict(), "epoch": epoch, "metrics": metrics}, run_dir / "best.pt")
            _log_overlays(writer, model, val_data, config, epoch)
        _save_atomic(_state(model, opt, sched, epoch, best, history), run_dir / "last.pt")
        tqdm.write(f"{config.name} epoch {epoch + 1}: loss {metrics['loss']:.4f} val score "
                   f"{metrics['score']:.4f} (best {best:.4f}) {metrics['seconds']:.0f} s")
        if report is not None:
            report(epoch, metrics)
    writer.close()
    best_epoch = max(history, key=lambda m: m["score"]) if history else {}
    result = {"name": config.name, "best_epoch": best_epoch.get("epoch"), "val": best_epoch,
              "history": history, "n_train": len(train_data.ids), "n_val": len(val_data.ids)}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
