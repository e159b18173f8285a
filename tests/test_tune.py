"""`python -m tune`: search spaces, a real ASHA sweep on tiny real data, resume after a kill, Keras.

The sweeps run `python -m tune` in a subprocess (an embedded local Ray on 2 CPUs, its own
storage in tmp_path) on the tissue-ddsm split at 64x32 with resnet18, 3-4 epochs.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]
# Subprocess timeouts are hang guards only (a loaded shared host once took 218 s for a sweep that
# takes 60 s idle); speed is the business of `python -m mammo.bench`, never of a test.
HANG_GUARD_S = 900
SMALL = ["name=cascade-tissue", "input_size=[64,32]", "encoder=resnet18", "encoder_weights=", "val_overlays=0", "t0=3",
         "t_mult=1"]


def _space(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"lr: {{loguniform: [1.0e-3, 1.0e-2]}}\nbatch_size: {{choice: [2, 3]}}\n"
                    f"dice_weight: {{uniform: [0.3, 0.7]}}\nepochs: {epochs}\n")
    return path


def _sweep_command(tmp_path: Path, space: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tune", "--config", "training/configs/cascade_tissue.yaml", "--space", str(space),
            "--storage", str(tmp_path / "sweeps"), "--num-cpus", "2", "--seed", "0", *extra, *SMALL]


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}


def test_space_fields_and_distributions(tmp_path: Path) -> None:
    from tune.space import load_space, read_space

    space = load_space(REPO / "tune/spaces/cascade_tissue.yaml")
    assert {"lr", "weight_decay", "batch_size", "input_size", "encoder"} <= set(space)
    assert space["epochs"] == 30
    assert 1e-4 <= space["lr"].sample() <= 3e-3
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: {loguniform: [1e-4, 1e-2]}\n")
    with pytest.raises(ValueError, match="unknown training-config field.*learning_rate"):
        read_space(bad)
    bad.write_text("lr: {lognormal: [1, 2]}\n")
    with pytest.raises(ValueError, match="'lr'.*loguniform"):
        load_space(bad)
    bad.write_text("lr: {uniform: [1]}\n")
    with pytest.raises(ValueError, match="uniform takes a list of 2"):
        load_space(bad)
    bad.write_text("lr: {loguniform: [1e-4, 1e-2]}\n")  # YAML reads 1e-4 as a string: accepted
    assert 1e-4 <= load_space(bad)["lr"].sample() <= 1e-2


def test_cli_names_an_unknown_field(tmp_path: Path) -> None:
    from tune.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("lrate: {choice: [1, 2]}\n")
    assert main(["--config", "training/configs/cascade_tissue.yaml", "--space", str(bad), "--storage",
                 str(tmp_path)]) == 2


@pytest.mark.ray
def test_asha_sweep_writes_a_best_config_that_trains(tmp_path: Path) -> None:
    require_data("tissue_ddsm")
    command = _sweep_command(tmp_path, _space(tmp_path, 3), "--num-samples", "4")
    done = subprocess.run(command, check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "sweeps" / "cascade-tissue-sweep"
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert len(rows) == 4 and all(1 <= int(r["epochs"]) <= 3 for r in rows)
    assert any(int(r["epochs"]) < 3 for r in rows), "ASHA stopped no trial early"
    assert all(len(r["node_id"]) == 56 for r in rows)  # the Ray node each trial ran on (hex id)
    assert (folder / "trials.html").stat().st_size > 10_000
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["lr"] == pytest.approx(float(rows[0]["param_lr"])) and best["input_size"] == [64, 32]
    assert best["data_root"] == "../shared/data/tissue_ddsm"  # the config's own paths, runnable as is
    manifest = yaml.safe_load((folder / "best" / "weights_manifest.yaml").read_text())
    assert manifest["entries"][0]["name"] == "cascade-tissue-best"
    assert (folder / "best" / "weights" / "cascade-tissue-best.safetensors").is_file()
    # the best config trains as it is (one epoch here)
    from training.train import main

    assert main(["--config", str(folder / "best.yaml"), "epochs=1", f"out_dir={tmp_path / 'runs'}"]) == 0
    assert (tmp_path / "runs" / "cascade-tissue-best" / "metrics.json").is_file()


def _results(folder: Path) -> dict[str, list[dict]]:
    """Trial folder name -> its reported results so far."""
    out = {}
    for trial in folder.glob("torch_trial_*"):
        lines = (trial / "result.json").read_text().splitlines() if (trial / "result.json").is_file() else []
        out[trial.name] = [json.loads(line) for line in lines if line.strip()]
    return out


def wait_until_part_way(proc: subprocess.Popen, folder: Path, epochs: int) -> None:
    """Return once one trial of the sweep in `folder` has run all `epochs` and another is part way.

    A hang guard bounds the wait, not a speed limit: the loop leaves as soon as that state holds."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline and proc.poll() is None:
        counts = sorted(len(r) for r in _results(folder).values())
        if counts and counts[-1] == epochs and any(0 < c < epochs for c in counts):
            return
        time.sleep(0.5)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    raise AssertionError(f"no trial finished while another was part way within {HANG_GUARD_S} s")


def finished_trials(folder: Path, epochs: int) -> tuple[dict[str, list[dict]], dict[str, bytes]]:
    """The interrupted sweep's results per trial, and result.json of each finished trial."""
    before = _results(folder)
    finished = {name for name, rows in before.items() if len(rows) == epochs}
    assert finished and len(finished) < 3, before  # the sweeps here have 3 trials
    return before, {name: (folder / name / "result.json").read_bytes() for name in finished}


def check_resumed(folder: Path, epochs: int, before: dict[str, list[dict]], snapshot: dict[str, bytes]) -> None:
    """After `--resume`: all 3 trials ran every epoch once, the finished ones were not run again,
    and the interrupted ones continued from their checkpoints, not from epoch 0."""
    after = _results(folder)
    assert len(after) == 3
    for name, content in snapshot.items():
        assert (folder / name / "result.json").read_bytes() == content
    for name, rows in after.items():
        assert sorted({r["training_iteration"] for r in rows}) == list(range(1, epochs + 1)), name
    for name in (n for n, rows in before.items() if 0 < len(rows) < epochs):
        resumed = after[name][len(before[name]):]
        assert resumed and resumed[-1]["iterations_since_restore"] < resumed[-1]["training_iteration"]


@pytest.mark.ray
def test_killed_sweep_resumes_without_redoing_finished_trials(tmp_path: Path) -> None:
    require_data("tissue_ddsm")
    epochs, space = 4, _space(tmp_path, 4)
    command = _sweep_command(tmp_path, space, "--num-samples", "3", "--scheduler", "none", "--max-concurrent", "1")
    folder = tmp_path / "sweeps" / "cascade-tissue-sweep"
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the local Ray dies with it
    try:
        wait_until_part_way(proc, folder, epochs)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before, snapshot = finished_trials(folder, epochs)
    done = subprocess.run([*command, "--resume"], check=False, cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-3000:]
    check_resumed(folder, epochs, before, snapshot)
    assert len(list(csv.DictReader((folder / "trials.csv").open()))) == 3


def build_and_fit(params: dict, callbacks: list) -> None:
    """A tiny Keras regression, fitted with the callbacks the trainable hands over."""
    import numpy as np

    from mammo.models.frameworks import import_keras

    keras = import_keras()
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype("float32")
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(params["lr"]), loss="mse")
    model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0, callbacks=callbacks)


@pytest.mark.ray
def test_keras_function_trainable(tmp_path: Path) -> None:
    import ray
    import ray.cloudpickle
    from ray import tune

    from mammo.models.frameworks import import_torch
    from tune.trainables import keras_trial

    import_torch()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        tuner = tune.Tuner(partial(keras_trial, build_and_fit=build_and_fit),
                           param_space={"lr": tune.grid_search([0.01, 0.05])},
                           tune_config=tune.TuneConfig(metric="val_loss", mode="min"),
                           run_config=tune.RunConfig(storage_path=str(tmp_path), name="keras"))
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert len(results) == 2 and not results.errors
    for result in results:
        assert result.metrics["training_iteration"] == 3 and "val_loss" in result.metrics
        assert result.checkpoint is not None
