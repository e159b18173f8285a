"""`python -m training.compare_runs RUN_DIR [RUN_DIR ...] [--minutes 20] [--plot FILE]`: runs side
by side on equal CPU time.

For each run folder (its `last.pt` history, else `metrics.json`): the encoder and its start
(ImageNet or scratch), the input size, the best validation score (and its per-class Dice) reached
within the first `--minutes` of training time and over the whole run, with the epoch and the
minute it came at. Prints a Markdown table; `--plot` draws the validation score against training
minutes for every run in one PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def history(run_dir: Path) -> list[dict[str, float]]:
    """Per-epoch validation metrics with "minutes" (cumulative training time) added."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        rows = json.loads(metrics.read_text())["history"]
    else:
        from mammo.models.frameworks import import_torch

        rows = import_torch().load(run_dir / "last.pt", weights_only=False, map_location="cpu")["history"]
    minutes = np.cumsum([r["seconds"] for r in rows]) / 60
    return [{**r, "minutes": float(m)} for r, m in zip(rows, minutes)]


def best_within(rows: list[dict[str, float]], minutes: float | None) -> dict[str, float] | None:
    """The epoch with the highest "score" among those that ended within `minutes` (None: all)."""
    kept = [r for r in rows if minutes is None or r["minutes"] <= minutes + 1e-9]
    return max(kept, key=lambda r: r["score"]) if kept else None


def describe(run_dir: Path, minutes: float) -> dict[str, Any]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = history(run_dir)
    return {"run": run_dir.name, "encoder": config["encoder"],
            "start": (f"{Path(config['init_from']).parent.name} (fine-tuned)" if config.get("init_from")
                      else "ImageNet" if config.get("encoder_weights") == "imagenet" else "scratch"),
            "input": "x".join(str(v) for v in config["input_size"]),
            "budget": best_within(rows, minutes), "all": best_within(rows, None),
            "epochs": len(rows), "minutes": rows[-1]["minutes"] if rows else 0.0, "rows": rows}


def _cell(row: dict[str, float] | None, classes: list[str]) -> str:
    if row is None:
        return "-"
    parts = "/".join(f"{row[f'dice_{c}']:.3f}" for c in classes if f"dice_{c}" in row)
    return f"{row['score']:.4f} ({parts}; epoch {int(row['epoch']) + 1}, {row['minutes']:.0f} min)"


def table(runs: list[dict[str, Any]], minutes: float) -> str:
    classes = ["adipose", "fibroglandular", "pectoral", "lesion"]
    lines = [f"| run | encoder | start | input | best val score within {minutes:g} min | best over the run "
             "| epochs, minutes |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {r['encoder']} | {r['start']} | {r['input']} | {_cell(r['budget'], classes)} "
                     f"| {_cell(r['all'], classes)} | {r['epochs']}, {r['minutes']:.0f} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path, minutes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        ax.plot([x["minutes"] for x in r["rows"]], [x["score"] for x in r["rows"]], marker=".",
                label=f"{r['run']}: {r['encoder']} ({r['start']}, {r['input']})")
    ax.axvline(minutes, color="grey", ls="--", lw=1)
    ax.set(xlabel="minutes (training + validation, per epoch, summed)", ylabel="validation score", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare_runs", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    runs = [describe(run, args.minutes) for run in args.runs]
    print(table(runs, args.minutes))
    if args.plot:
        plot(runs, args.plot, args.minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
