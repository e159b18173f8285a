"""A real multi-node Ray cluster on 127.0.0.1 for tests: `ray start --head` plus `ray start --address`.

Each node has its own temp dir (its own raylet, object store and worker processes), the cluster
uses token authentication (RAY_AUTH_MODE=token with a fresh RAY_AUTH_TOKEN, so nothing is written
to ~/.ray), and `stop()` kills exactly the processes of this cluster's nodes: those whose command
line names one of its temp dirs, and their children (Ray's workers rename themselves, so they are
found as the raylet's descendants), read from /proc. `ray stop` would also kill any other Ray of
the same user.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Hang guard for a node to come up (about 5 s on an idle machine); never a speed limit.
START_GUARD_S = 180


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class LocalCluster:
    """`nodes` Ray nodes of `cpus` CPUs each on 127.0.0.1; `address` is the head's HOST:PORT.

    `extra_env` reaches every node's processes and the drivers (`env`), e.g. S3 credentials."""

    def __init__(self, nodes: int = 2, cpus: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.nodes, self.cpus = nodes, cpus
        self.address = f"127.0.0.1:{free_port()}"
        token = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_DEDUP_LOGS": "0",
                    "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
        # Short paths: Ray's Unix sockets live under the temp dir (the path limit is 107 bytes).
        self.temp_dirs = [tempfile.mkdtemp(prefix=f"ray{i}-", dir="/tmp") for i in range(nodes)]

    def _ray_start(self, index: int) -> None:
        common = ["--num-cpus", str(self.cpus), "--temp-dir", self.temp_dirs[index], "--node-ip-address",
                  "127.0.0.1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
        port = self.address.rsplit(":", 1)[1]
        role = (["--head", "--port", port, "--include-dashboard", "false"] if index == 0
                else ["--address", self.address])
        done = subprocess.run([RAY, "start", *role, *common], env=self.env, capture_output=True, text=True,
                              timeout=START_GUARD_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ray start of node {index} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def start(self) -> LocalCluster:
        """Start the head, then the other nodes; returns once `ray status` lists every node."""
        for index in range(self.nodes):
            self._ray_start(index)
        deadline = time.monotonic() + START_GUARD_S
        while len(self.node_ids()) < self.nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.node_ids())} of {self.nodes} Ray nodes came up")
            time.sleep(1)
        return self

    def node_ids(self) -> set[str]:
        """The ids of the active nodes, as `ray status` lists them."""
        done = subprocess.run([RAY, "status", "--address", self.address], env=self.env, capture_output=True,
                              text=True, timeout=START_GUARD_S, check=False)
        active = done.stdout.split("Pending:")[0]
        return set(re.findall(r"node_([0-9a-f]{56})", active))

    def _pids(self, index: int | None) -> set[int]:
        """The processes of node `index` (all nodes with None) and their descendants, from /proc."""
        dirs = [d.encode() for d in (self.temp_dirs if index is None else [self.temp_dirs[index]])]
        port = b":" + self.address.rsplit(":", 1)[1].encode()
        parents: dict[int, int] = {}
        found: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                line = (entry / "cmdline").read_bytes()
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # it ended meanwhile
                continue
            args = line.split(b"\0")
            # Ray's client server names only the head's address, not its temp dir.
            of_head = index in (None, 0) and any(a.startswith(b"--address=") and a.endswith(port) for a in args)
            if of_head or any(d in line for d in dirs):
                found.add(int(entry.name))
        grown = True
        while grown:  # add children until nothing new turns up
            children = {pid for pid, parent in parents.items() if parent in found} - found
            found |= children
            grown = bool(children)
        return found

    def kill(self, index: int | None = None) -> None:
        """SIGKILL node `index` (0 = the head) or, with None, every node of this cluster."""
        pids = self._pids(index)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and not _zombie(pid)
                                                  for pid in pids):
            time.sleep(0.1)

    def restart(self) -> None:
        """Kill every node, then start the cluster again at the same address (Tune state lives in storage)."""
        self.kill()
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
            Path(folder).mkdir()
        self.start()

    def stop(self) -> None:
        self.kill()
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
