"""Sweeps and DDP training on a real 2-node Ray cluster on 127.0.0.1 (`tests/ray_cluster.py`).

Two `ray start` nodes of 1 CPU each, token authentication on. `python -m tune --address` runs on
tiny real data (tissue-ddsm at 64x32, resnet18) as in tests/test_tune.py; a 1-CPU trial fits one
per node, so two concurrent trials must use both nodes, and a 2-worker DDP run puts one worker on
each. Two sweeps keep their state in S3 (`--storage s3://...`, a moto server on 127.0.0.1 that
every node reaches), one of them of a `--workers 2` trial; the others use a folder. The head is
killed mid-sweep, the cluster restarted, and `--resume` finishes the sweep.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_distributed import LOSS_TOLERANCE
from test_tune import HANG_GUARD_S, SMALL, _space, check_resumed, finished_trials, wait_until_part_way

from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(3 * HANG_GUARD_S)]


@pytest.fixture(scope="module")
def s3():
    """A local S3 endpoint (moto) in this process, with a bucket "sweeps"; yields its AWS_* variables."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}  # honoured by boto3 and pyarrow's S3 alike
    try:
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="sweeps")
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(s3):
    require_data("tissue_ddsm")
    from tests.ray_cluster import LocalCluster

    nodes = LocalCluster(nodes=2, cpus=1, extra_env=s3)  # every node writes its trials' checkpoints to S3

    def terminated(signum: int, frame: object) -> None:  # a SIGTERM of pytest unwinds into `finally`
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:  # cleaned up even when starting it or a test fails
        yield nodes.start()
    finally:
        nodes.stop()
        signal.signal(signal.SIGTERM, previous)


def _tune(cluster, tmp_path: Path, storage: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tune", "--config", "training/configs/cascade_tissue.yaml", "--space",
            str(_space(tmp_path, 3)), "--address", cluster.address, "--storage", storage, "--seed", "0", *extra,
            *SMALL]


def _rows(table: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(table.open()))


def _s3(env: dict[str, str]):
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1",
                                   access_key="testing", secret_key="testing")


def _s3_names(env: dict[str, str], prefix: str) -> set[str]:
    """The objects under s3://`prefix` (relative names), listed through pyarrow as Ray does."""
    import pyarrow.fs

    infos = _s3(env).get_file_info(pyarrow.fs.FileSelector(prefix, recursive=True))
    return {i.path.removeprefix(prefix + "/") for i in infos if i.type == pyarrow.fs.FileType.File}


def test_sweep_trials_run_on_both_nodes_into_s3(cluster, s3, tmp_path: Path) -> None:
    command = _tune(cluster, tmp_path, "s3://sweeps/tune", "--num-samples", "2", "--scheduler", "none",
                    "--outputs", str(tmp_path / "out"))
    done = subprocess.run(command, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=HANG_GUARD_S,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(tmp_path / "out" / "trials.csv")
    assert len(rows) == 2 and all(r["status"] == "TERMINATED" and r["epochs"] == "3" for r in rows)
    assert {r["node_id"] for r in rows} == cluster.node_ids()  # one trial on each node
    prefix = "sweeps/tune/cascade-tissue-sweep"
    stored = _s3_names(s3, prefix)  # Tune's state and the uploaded outputs
    assert {name.split("/")[0] for name in stored if "/checkpoint_" in name} == {r["trial"] for r in rows}
    assert any(name.startswith("experiment_state") for name in stored)
    assert {"best.yaml", "trials.html", "best/weights/cascade-tissue-best.safetensors"} <= stored
    with _s3(s3).open_input_stream(f"{prefix}/trials.csv") as table:
        assert table.read() == (tmp_path / "out" / "trials.csv").read_bytes()


def test_sweep_of_two_worker_trials_exports_from_s3(cluster, s3, tmp_path: Path) -> None:
    """`--workers 2`: one trial = a DDP group over both nodes, its Ray Train checkpoints in S3."""
    space = tmp_path / "space-ddp.yaml"
    space.write_text("lr: {choice: [0.003]}\nepochs: 2\n")
    command = [*_tune(cluster, tmp_path, "s3://sweeps/tune", "--num-samples", "1", "--scheduler", "none",
                      "--workers", "2", "--name", "ddp-sweep", "--outputs", str(tmp_path / "out"), "batch_size=4")]
    command[command.index("--space") + 1] = str(space)
    done = subprocess.run(command, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=HANG_GUARD_S,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = _rows(tmp_path / "out" / "trials.csv")
    assert row["status"] == "TERMINATED" and row["epochs"] == "2" and row["node_id"] in cluster.node_ids()
    stored = _s3_names(s3, "sweeps/tune/ddp-sweep")
    assert any(name.startswith("train/") and "/checkpoint_" in name for name in stored)  # Ray Train's, in S3
    assert (tmp_path / "out" / "best" / "weights" / "cascade-tissue-best.safetensors").is_file()


def test_ddp_puts_one_worker_on_each_node(cluster, tmp_path: Path) -> None:
    small = [*SMALL, "epochs=2", "batch_size=4", "t0=2", "threads=1", f"out_dir={tmp_path}"]
    train = [sys.executable, "-m", "training.train", "--config", "training/configs/cascade_tissue.yaml"]
    ddp = subprocess.run([*train, "--workers", "2", "--address", cluster.address, "--storage",
                          str(tmp_path / "ray-train"), *small, "name=ddp"],
                         cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([*train, *small, "name=single"], cwd=REPO, env=cluster.env, capture_output=True,
                            text=True, timeout=HANG_GUARD_S, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    placement = json.loads((tmp_path / "ddp" / "workers.json").read_text())
    assert [w["rank"] for w in placement] == [0, 1]
    assert {w["node_id"] for w in placement} == cluster.node_ids()
    losses = [np.array([m["loss"] for m in json.loads((tmp_path / name / "metrics.json").read_text())["history"]])
              for name in ("single", "ddp")]
    print("single", losses[0].round(4).tolist(), "ddp", losses[1].round(4).tolist())
    assert losses[0].shape == losses[1].shape == (2,)
    assert np.all(np.abs(losses[1] - losses[0]) / losses[0] < LOSS_TOLERANCE), losses
    assert list((tmp_path / "ray-train" / "ddp").glob("checkpoint_*")), "Ray Train kept no checkpoint in --storage"


def test_missing_data_names_every_node(cluster, tmp_path: Path) -> None:
    command = _tune(cluster, tmp_path, str(tmp_path / "sweeps"), "--num-samples", "1", "data_root=/no/such/ddsm")
    done = subprocess.run(command, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=HANG_GUARD_S,
                          check=False)
    assert done.returncode == 2
    for node in cluster.node_ids():
        assert f"({node[:12]}): data_root=/no/such/ddsm" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "sweeps").exists()  # failed before any trial started


def test_head_killed_mid_sweep_then_resumed(cluster, tmp_path: Path) -> None:
    epochs, folder = 3, tmp_path / "sweeps" / "cascade-tissue-sweep"
    command = _tune(cluster, tmp_path, str(tmp_path / "sweeps"), "--num-samples", "3", "--scheduler", "none",
                    "--max-concurrent", "2")
    driver = subprocess.Popen(command, cwd=REPO, env=cluster.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_part_way(driver, folder, epochs)
        cluster.kill(0)  # the head: GCS, its raylet and its workers
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver lost its cluster
        driver.wait()
    before, snapshot = finished_trials(folder, epochs)
    cluster.restart()  # the head again at the same address, and the second node rejoins
    done = subprocess.run([*command, "--resume"], cwd=REPO, env=cluster.env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    check_resumed(folder, epochs, before, snapshot)  # from the checkpoints in the storage
    rows = _rows(folder / "trials.csv")
    assert len(rows) == 3 and all(len(r["node_id"]) == 56 for r in rows)
