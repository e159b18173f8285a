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
