"""The original tool's training callbacks beyond Keras's own: CSV logs with PNG plots, and the
epoch-change inference grid. Keras is passed in (imported by the caller through
`mammo.models.frameworks`), so importing this module imports no framework."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from mammo.viz import overlay_masks


def write_plot(rows: list[dict[str, float]], keys: list[str], path: Path) -> None:
    """A PNG line plot of `keys` against the epoch (matplotlib's Agg backend; no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=key)
    ax.set_xlabel("epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def read_rows(eval_dir: Path) -> list[dict[str, float]]:
    """The epochs already logged in `eval_dir` (both CSVs merged by epoch), for a resumed run."""
    by_epoch: dict[int, dict[str, float]] = {}
    for name in ("train_metrics", "train_losses"):
        path = eval_dir / f"{name}.csv"
        if path.is_file():
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    epoch = int(row.pop("epoch"))
                    by_epoch.setdefault(epoch, {"epoch": epoch}).update({k: float(v) for k, v in row.items()})
    return [by_epoch[e] for e in sorted(by_epoch)]


def metrics_logger(keras, eval_dir: Path, metric_names: list[str], resume: bool = False):
    """A callback appending `train_metrics.csv` (epoch, each metric and val_ metric) and
    `train_losses.csv` (epoch, loss, val_loss) to `eval_dir` each epoch, with a PNG plot of each.
    `resume`: keep the epochs already logged there (a re-logged epoch replaces its old row)."""

    class MetricsLogger(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, float]] = read_rows(eval_dir) if resume else []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            self.rows = [r for r in self.rows if r["epoch"] < epoch + 1]
            self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()
                                                    if np.ndim(v) == 0}})
            metrics = [k for m in metric_names for k in (m, f"val_{m}")]
            self._write("train_metrics", metrics)
            self._write("train_losses", ["loss", "val_loss"])

        def _write(self, name: str, keys: list[str]) -> None:
            keys = [k for k in keys if k in self.rows[-1]]
            eval_dir.mkdir(parents=True, exist_ok=True)
            with (eval_dir / f"{name}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["epoch", *keys])
                for row in self.rows:
                    writer.writerow([row["epoch"], *(round(row[k], 6) for k in keys)])
            if keys:
                write_plot(self.rows, keys, eval_dir / f"{name}.png")

    return MetricsLogger()


def infer_grid(images: np.ndarray, probs: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """RGB uint8 grid, one column per image: the input with the predicted mask (red) and, when
    known, the true mask outline. images float32 (N, h, w, C); probs float32 (N, h, w) in [0, 1]."""
    columns = []
    for i in range(len(images)):
        masks = {"lesion": probs[i] > 0.5}
        view = overlay_masks(images[i, ..., 0], masks, alpha=0.4, legend=False)
        if truth is not None:
            contours, _ = cv2.findContours(truth[i].astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(view, contours, -1, (0, 255, 0), 1)
        columns.append(view)
    return np.concatenate(columns, axis=1)


def epoch_change_infer(keras, images: np.ndarray, truth: np.ndarray | None, out_dir: Path):
    """A callback that predicts `images` (N, h, w, C) after each epoch and writes the grid to
    `out_dir/epoch_<NNN>.png`, so a user watches the masks improve."""

    class EpochChangeInfer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probs = np.asarray(self.model(images, training=False))[..., 0]
            out_dir.mkdir(parents=True, exist_ok=True)
            grid = infer_grid(images, probs, truth)
            cv2.imwrite(str(out_dir / f"epoch_{epoch + 1:03d}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    return EpochChangeInfer()


def time_budget(keras, minutes: float):
    """A callback that stops training after the first epoch that ends past `minutes` of this
    process's training (the crash-safe resume is BackupAndRestore's; its folder is kept)."""
    import time

    class TimeBudget(keras.callbacks.Callback):
        spent = False  # True once the budget stopped the run (the backup is then kept)

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            spent = (time.perf_counter() - self.start) / 60
            if spent >= minutes and epoch + 1 < self.params.get("epochs", epoch + 2):
                print(f"time budget of {minutes:g} min spent ({spent:.1f} min); stopping after epoch {epoch + 1}",
                      flush=True)
                self.model.stop_training = True
                self.spent = True

    return TimeBudget()
