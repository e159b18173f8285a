"""The cluster examples kept in `cluster/` (README "Running on a cluster") parse, and what they
run exists: the `ray up` YAML starts Ray with token authentication on every node, and the KubeRay
RayJob's entrypoint is a valid `python -m tune` command whose config and space are in the repo."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from tune.__main__ import parse_args

REPO = Path(__file__).resolve().parents[1]


def _pinned_ray() -> str:
    match = re.search(r"^ray\[[^\]]*\]==([\d.]+)", (REPO / "requirements.txt").read_text(), re.M)
    assert match, "ray is not pinned in requirements.txt"
    return match.group(1)


def test_ray_up_yaml_starts_every_node_with_token_auth() -> None:
    cluster = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    assert cluster["provider"]["type"] == "local" and cluster["provider"]["worker_ips"]
    assert cluster["min_workers"] == cluster["max_workers"] == len(cluster["provider"]["worker_ips"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cluster[key])
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN=" in start, key
    assert "--head" in " ".join(cluster["head_start_ray_commands"])
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(cluster["worker_start_ray_commands"])
    assert any("scripts/venv.sh" in c for c in cluster["setup_commands"]) and (REPO / "scripts" / "venv.sh").is_file()


def test_kuberay_rayjob_runs_a_valid_sweep() -> None:
    job = yaml.safe_load((REPO / "cluster" / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == _pinned_ray()
    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["python", "-m", "tune"]
    opts = parse_args(words[3:])  # the CLI's own parser: an option it does not know fails here
    assert (REPO / opts.config).is_file() and (REPO / opts.space).is_file()
    mount = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert opts.storage.startswith(mount["mountPath"])  # the sweep folder is on the shared volume
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        mounts = group["template"]["spec"]["containers"][0]["volumeMounts"]
        assert any(m["mountPath"] == mount["mountPath"] for m in mounts), group["groupName"]


def test_storage_locations_and_data_paths(tmp_path: Path, monkeypatch) -> None:
    from training.cluster import absolute_paths, is_uri, join_storage, missing_paths, storage_root
    from training.config import TrainConfig
    from tune.sweep import SweepOptions, experiment_location, output_dir

    assert is_uri("s3://bucket/sweeps") and is_uri("gs://b/x") and not is_uri("runs/tune")
    assert storage_root("s3://bucket/sweeps/") == "s3://bucket/sweeps"
    assert join_storage("gs://b/x", "exp") == "gs://b/x/exp"
    monkeypatch.chdir(tmp_path)
    assert join_storage("runs/tune", "exp") == str(tmp_path / "runs" / "tune" / "exp")
    base = TrainConfig(name="cascade-tissue")
    uri = SweepOptions(config="c.yaml", space="s.yaml", storage="s3://bucket/sweeps")
    assert experiment_location(uri, base) == "s3://bucket/sweeps/cascade-tissue-sweep"
    assert output_dir(uri, base) == tmp_path / "runs" / "tune" / "cascade-tissue-sweep"  # then uploaded
    local = SweepOptions(config="c.yaml", space="s.yaml", storage="sw", name="n")
    assert output_dir(local, base) == tmp_path / "sw" / "n"
    # every path field is made absolute (trials and workers run in folders of their own) and checked
    (tmp_path / "data").mkdir()
    config = TrainConfig(data_root="data", split="split.csv", negative_root="neg", init_from="")
    values = absolute_paths(config)
    assert values["data_root"] == str(tmp_path / "data") and values["negative_root"] == str(tmp_path / "neg")
    assert values["init_from"] == ""
    assert missing_paths(values) == [f"split={tmp_path / 'split.csv'}", f"negative_root={tmp_path / 'neg'}"]
    # so are those of GLAM's further labelled sources
    multi = TrainConfig(task="glam", data_root="data", glam_sources=[
        {"dataset": "mias", "data_root": "data", "split": "mias.csv"}])
    values = absolute_paths(multi)
    assert values["glam_sources"][0]["data_root"] == str(tmp_path / "data")
    assert missing_paths(values)[-1] == f"glam_sources[0].split={tmp_path / 'mias.csv'}"
    assert multi.glam_sources[0]["data_root"] == "data"  # the config itself is left as it was


def test_rayjob_driver_joins_the_job_cluster_through_ray_address(monkeypatch) -> None:
    """KubeRay sets RAY_ADDRESS for the entrypoint: `python -m tune` must join that cluster (a local
    Ray with num_cpus is refused under RAY_ADDRESS), so the entrypoint gives no --address."""
    job = yaml.safe_load((REPO / "cluster" / "kuberay-rayjob.yaml").read_text())
    assert parse_args(shlex.split(job["spec"]["entrypoint"])[3:]).address is None
    ray = __import__("pytest").importorskip("ray")
    from training.cluster import REPO_ROOT, connect

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.10:6379")
    connect(None, num_cpus=4)
    connect("10.0.0.10:6379")
    monkeypatch.delenv("RAY_ADDRESS")
    connect(None, num_cpus=4)
    assert calls[0] == {}  # the job's cluster, with the job's own runtime environment
    assert calls[1]["address"] == "10.0.0.10:6379" and calls[1]["runtime_env"]["working_dir"] == str(REPO_ROOT)
    assert calls[2] == {"num_cpus": 4, "include_dashboard": False}
