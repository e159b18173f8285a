"""Ray for `python -m tune` and `python -m training.train --workers K`: an embedded local Ray, or a cluster.

- `connect(address, num_cpus)`: join the cluster at `address` (this checkout is shipped to its
  workers as the job's working folder) or RAY_ADDRESS, or start a local Ray on this machine.
- `absolute_paths(config)`: the config with its data paths made absolute, because trials and
  workers run in folders of their own.
- `check_paths_on_nodes(config)`: every node reads the data from its own disk, so before anything
  trains a zero-CPU task on each alive node checks the config's paths there and the error names
  what is missing on which node.
- `is_uri` / `join_storage`: `--storage` may be a folder or any URI pyarrow understands (s3://,
  gs://, file://), the form every node of a cluster can reach.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the cluster's workers do not need from this checkout (runs, weights, git history).
CLUSTER_EXCLUDES = [".git/", ".pytest_cache/", "runs/", "weights/", "demo_out/", "*.pt", "*.safetensors"]
PATH_FIELDS = ("data_root", "split", "negative_root", "negative_split", "init_from", "glam_encoder_init")
SOURCE_PATH_FIELDS = ("data_root", "split")  # of each `glam_sources` item


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Connect to the Ray cluster at `address` ("HOST:PORT"), or to RAY_ADDRESS, or start a local Ray.

    With `address` this checkout is shipped to the cluster's workers as the job's working folder.
    Under RAY_ADDRESS (set by `ray job submit` and KubeRay's RayJob) the job's own runtime
    environment applies. A local Ray gets `num_cpus` (default: all) and no dashboard. A cluster
    with token authentication (RAY_AUTH_MODE=token) needs the same RAY_AUTH_MODE and RAY_AUTH_TOKEN
    (or ~/.ray/auth_token) here as on its nodes; see README "Running on a cluster".
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, runtime_env={"working_dir": str(REPO_ROOT), "excludes": CLUSTER_EXCLUDES})
    elif os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)


def absolute_paths(config: TrainConfig) -> dict[str, Any]:
    """The config as a dict with its data paths made absolute against this process's working folder."""
    values = config.to_dict()
    for key in PATH_FIELDS:
        if values[key] and not Path(values[key]).is_absolute():
            values[key] = str(Path(values[key]).resolve())
    for source in values.get("glam_sources") or []:
        for key in SOURCE_PATH_FIELDS:
            if source.get(key) and not Path(source[key]).is_absolute():
                source[key] = str(Path(source[key]).resolve())
    return values


def missing_paths(values: dict[str, Any]) -> list[str]:
    """`key=path` of every set path field of the config dict `values` that does not exist here."""
    missing = [f"{key}={values[key]}" for key in PATH_FIELDS if values.get(key) and not Path(values[key]).exists()]
    for i, source in enumerate(values.get("glam_sources") or []):
        missing += [f"glam_sources[{i}].{key}={source[key]}" for key in SOURCE_PATH_FIELDS
                    if source.get(key) and not Path(source[key]).exists()]
    return missing


def _missing_here(values: dict[str, Any]) -> tuple[str, list[str]]:
    import ray

    return ray.util.get_node_ip_address(), missing_paths(values)


def check_paths_on_nodes(values: dict[str, Any]) -> None:
    """Check the data paths of the config dict `values` on every alive node of the connected Ray.

    Raises:
        FileNotFoundError: naming each missing path and the node (IP and id) that lacks it.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_missing_here)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                       .remote(values) for node in nodes])
    problems = [f"  node {ip} ({node[:12]}): {', '.join(missing)}"
                for node, (ip, missing) in zip(nodes, answers, strict=True) if missing]
    if problems:
        raise FileNotFoundError(
            "the training data is not on every node of the Ray cluster:\n" + "\n".join(problems) +
            "\nevery node reads the data from its own disk: put it on a file system mounted at the same "
            "path on every node (or copy it there), or give absolute paths that exist on every node")


def is_uri(storage: str) -> bool:
    """True for a pyarrow file-system URI such as s3://bucket/sweeps (not a local folder)."""
    return "://" in storage


def storage_root(storage: str) -> str:
    """`storage` as Ray wants it: a URI without a trailing slash, or an absolute folder."""
    return storage.rstrip("/") if is_uri(storage) else str(Path(storage).resolve())


def join_storage(storage: str, name: str) -> str:
    """`storage`/`name`: a URI stays a URI, a folder becomes an absolute path."""
    return storage_root(storage) + "/" + name
