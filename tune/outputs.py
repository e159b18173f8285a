"""What a finished sweep leaves in its experiment folder, besides Tune's own state.

- trials.csv: one row per trial (id, status, the Ray node it last ran on, epochs run, best and last
  score, its parameters);
- trials.html: the same table and every trial's validation score per epoch (plotly);
- best.yaml: the best trial's training config (the sweep's base config with its parameters), runnable
  as `python -m training.train --config best.yaml`;
- best/: the best trial's checkpoint as a run folder (config.yaml, best.pt, last.pt, command.txt),
  exported like `training.export` does into best/weights/ and best/weights_manifest.yaml.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from training.cluster import is_uri
from training.config import TrainConfig, save_config
from tune.trainables import METRIC


def trials_table(results: Any) -> pd.DataFrame:
    """One row per trial of a `ResultGrid`, best score first."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        scores = history[METRIC] if history is not None and METRIC in history else pd.Series(dtype=float)
        nodes = history["node_id"].dropna() if history is not None and "node_id" in history else []
        rows.append({"trial": Path(result.path).name,
                     "status": "ERROR" if result.error else "TERMINATED",
                     "node_id": str(nodes.iloc[-1]) if len(nodes) else "",
                     "epochs": int(scores.size),
                     "best_score": float(scores.max()) if scores.size else float("nan"),
                     "last_score": float(scores.iloc[-1]) if scores.size else float("nan"),
                     **{f"param_{k}": (str(v) if isinstance(v, list) else v) for k, v in result.config.items()}})
    return pd.DataFrame(rows).sort_values("best_score", ascending=False, na_position="last")


def write_plot(results: Any, table: pd.DataFrame, path: Path) -> None:
    """trials.html: the table, then each trial's validation score per epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, row_heights=[0.4, 0.6], vertical_spacing=0.08,
                        specs=[[{"type": "table"}], [{"type": "xy"}]])
    shown = table.round(4).astype(str)
    fig.add_trace(go.Table(header={"values": list(shown.columns)},
                           cells={"values": [shown[c] for c in shown.columns]}), row=1, col=1)
    for result in results:
        history = result.metrics_dataframe
        if history is None or METRIC not in history:
            continue
        fig.add_trace(go.Scatter(x=history["training_iteration"], y=history[METRIC], mode="lines+markers",
                                 name=Path(result.path).name), row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    fig.update_yaxes(title_text=f"validation {METRIC}", row=2, col=1)
    fig.update_layout(title="sweep trials", height=900)
    fig.write_html(str(path), include_plotlyjs=True)  # self-contained: no network to view it


def best_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The base config (its own relative data paths) with the best trial's parameters."""
    return TrainConfig(**{**base.to_dict(), **params, "name": f"{base.name}-best"})


def _train_checkpoint(path: str, storage: str) -> Any:
    """Ray Train's checkpoint at `path` on the sweep's storage. Ray reports it as a path inside the
    storage's file system (no s3:// in front), so for a URI storage the file system comes from there."""
    from ray.train import Checkpoint

    if is_uri(storage) and not is_uri(path):
        import pyarrow.fs

        return Checkpoint(path, filesystem=pyarrow.fs.FileSystem.from_uri(storage)[0])
    return Checkpoint(path)


def _best_run(result: Any, target: Path, config: TrainConfig, config_file: Path, storage: str) -> Path | None:
    """Copy the best trial's checkpoint into `target` as a run folder; None when it has none.

    Its config.yaml is `config` (the sweep's own relative data paths, as the manifest wants them,
    where the trial ran with absolute ones)."""
    # A distributed trial's checkpoint is Ray Train's, passed on as a path by TuneReportCallback.
    train_checkpoint = (result.metrics or {}).get("checkpoint_path")
    if result.checkpoint is None and not train_checkpoint:
        return None
    if target.exists():
        shutil.rmtree(target)
    if result.checkpoint is not None:
        result.checkpoint.to_directory(str(target))
    else:
        _train_checkpoint(train_checkpoint, storage).to_directory(str(target))
    save_config(config, target / "config.yaml")
    (target / "command.txt").write_text(f"python -m training.train --config {config_file}\n")
    return target


def upload_outputs(folder: Path, location: str) -> None:
    """Copy the output files in `folder` to the experiment at the URI `location`, beside Tune's state."""
    import pyarrow.fs

    pyarrow.fs.copy_files(str(folder), location, source_filesystem=pyarrow.fs.LocalFileSystem())
    print(f"outputs uploaded to {location}")


def write_outputs(results: Any, path: Path, base: TrainConfig, opts: Any, val: Any = None) -> dict[str, Any]:
    """Write trials.csv/html, best.yaml and best/ (exported) into the experiment folder `path`."""
    from training.export import export_run

    table = trials_table(results)
    table.to_csv(path / "trials.csv", index=False)
    write_plot(results, table, path / "trials.html")
    best = results.get_best_result(metric=METRIC, mode="max", scope="all")
    config = best_config(base, best.config)
    save_config(config, path / "best.yaml")
    run = _best_run(best, path / "best", config, path / "best.yaml", opts.storage)
    entry = None
    if run is not None:
        manifest = run / "weights_manifest.yaml"
        manifest.write_text("# the best trial of this sweep, exported by python -m tune\nentries: []\n")
        entry = export_run(run, opts.export_name or config.name, opts.pipeline, weights_dir=run / "weights",
                           manifest=manifest, val=val)
    summary = {"best_trial": Path(best.path).name, "best_score": table["best_score"].iloc[0],
               "best_config": str(path / "best.yaml"), "export": entry}
    print(f"best trial {summary['best_trial']}: {METRIC} {summary['best_score']:.4f}; config {path / 'best.yaml'}; "
          f"table {path / 'trials.csv'}, {path / 'trials.html'}")
    return summary
