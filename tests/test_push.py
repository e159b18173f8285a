"""`training.push` against a local stand-in for the Hub's HTTP API (no real Hub is reachable here).

The stand-in (`FakeHub`, http.server in a thread on 127.0.0.1) answers the requests that
`huggingface_hub` 2.4 makes for `create_repo`, README validation, preupload, commit and the
HEAD/GET of `hf_hub_download`. It answers "regular" to preupload, so files travel base64 in the
commit itself; the real Hub answers "lfs" for .safetensors and the client then uploads through
Xet, which this stand-in does not implement. Push and pull run in subprocesses because
huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE when it is imported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "mammo-test/tiny-weights"


class FakeHub:
    """The Hub endpoints huggingface_hub calls for a push and a download, kept in memory."""

    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refuse_commits = False
        self.paths: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.paths.append(f"POST {self.path}")
                self._json(*hub.post(self.path.split("?")[0], body))

            def do_HEAD(self) -> None:
                hub.paths.append(f"HEAD {self.path}")
                self._file(head=True)

            def do_GET(self) -> None:
                hub.paths.append(f"GET {self.path}")
                self._file(head=False)

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _file(self, head: bool) -> None:
                found = hub.resolve(self.path)
                if found is None:
                    self._json(404, {"error": "Entry not found"})
                    return
                commit, content = found
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if not head:
                    self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        """(status, JSON) for create_repo, validate-yaml, preupload and commit."""
        if path == "/api/repos/create":
            return 200, {"url": f"{self.url}/{REPO_ID}"}
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]}
        if "/commit/" in path:
            if self.refuse_commits:
                return 403, {"error": "You don't have the rights to push to this repository"}
            files = {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            oid = hashlib.sha1(body).hexdigest()
            self.commits[oid] = files
            return 200, {"commitUrl": f"{self.url}/{REPO_ID}/commit/{oid}", "commitOid": oid}
        return 404, {"error": f"not implemented: {path}"}

    def resolve(self, path: str) -> tuple[str, bytes] | None:
        """/{org}/{name}/resolve/{commit}/{filename} -> (commit, content)."""
        prefix = f"/{REPO_ID}/resolve/"
        if not path.startswith(prefix):
            return None
        commit, _, filename = path[len(prefix):].partition("/")
        content = self.commits.get(commit, {}).get(filename)
        return None if content is None else (commit, content)


@pytest.fixture()
def hub():
    server = FakeHub()
    yield server
    server.server.shutdown()


@pytest.fixture()
def setup(tmp_path: Path, hub: FakeHub) -> dict[str, Any]:
    """A ~1 MB weights file, its manifest entry (not yet on the Hub) and the subprocess env."""
    from safetensors.numpy import save_file

    from mammo.weights import sha256_file
    from training.config import TrainConfig

    weights = tmp_path / "weights"
    weights.mkdir()
    file = weights / "tiny.safetensors"
    config = TrainConfig(name="tiny", task="lesion", dataset="cdd-cesm", data_root=str(tmp_path / "no-data"))
    state = {"w": np.random.default_rng(0).random((512, 512), dtype=np.float32)}
    save_file(state, str(file), metadata={"config": json.dumps(config.to_dict())})
    entry = {"name": "tiny", "pipeline": "cascade", "framework": "torch", "architecture": "unet/resnet18",
             "file": "weights/tiny.safetensors", "sha256": sha256_file(file), "size_bytes": file.stat().st_size,
             "hub": {"repo_id": "placeholder/repo", "filename": "tiny.safetensors", "revision": None},
             "input_size": [64, 32], "classes": ["lesion"],
             "training": {"data": "synthetic", "split": "splits/none.csv", "command": "python -m training.train"},
             "metrics": {"val_dice_lesion": 0.5, "val_score": 0.5}, "licence": "research use"}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("# header\n" + yaml.safe_dump({"entries": [entry]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_fake_write_token", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_CACHE=str(tmp_path / "hf-cache"), HF_HUB_DISABLE_TELEMETRY="1",
               MAMMO_WEIGHTS_MANIFEST=str(manifest), MAMMO_WEIGHTS_DIR=str(weights))
    return {"file": file, "manifest": manifest, "env": env, "sha256": entry["sha256"]}


def _push(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "training.push", "tiny", "--repo-id", REPO_ID]
    # The timeout is a hang guard, not a speed limit.
    return subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_push_pins_the_commit_and_the_file_comes_back(setup: dict[str, Any], hub: FakeHub) -> None:
    done = _push(setup["env"])
    assert done.returncode == 0, done.stderr
    (commit, files), = hub.commits.items()
    assert set(files) == {"tiny.safetensors", "config.yaml", "README.md"}
    card = files["README.md"].decode()
    assert "research only" in card and "not for diagnosis" in card and "val_dice_lesion" in card
    assert yaml.safe_load(files["config.yaml"])["task"] == "lesion"
    pinned = yaml.safe_load(setup["manifest"].read_text())["entries"][0]
    assert setup["manifest"].read_text().startswith("# header")
    assert pinned["hub"] == {"repo_id": REPO_ID, "filename": "tiny.safetensors", "revision": commit}
    assert pinned["sha256"] == setup["sha256"]
    # pull it back through mammo.weights: no bundled copy, so it comes from the (fake) Hub
    setup["file"].unlink()
    pull = ("from mammo.weights import get_entry, resolve, sha256_file; p = resolve(get_entry('tiny')); "
            "print(p); print(sha256_file(p))")
    got = subprocess.run([sys.executable, "-c", pull], check=False, cwd=REPO, env=setup["env"],
                         capture_output=True, text=True, timeout=600)  # a hang guard, not a speed limit
    assert got.returncode == 0, got.stderr
    path, sha = got.stdout.split()
    assert sha == setup["sha256"] and path.startswith(setup["env"]["HF_HUB_CACHE"])
    assert any(p.startswith(f"GET /{REPO_ID}/resolve/{commit}/tiny.safetensors") for p in hub.paths)


def test_missing_token_is_a_clear_error(setup: dict[str, Any], hub: FakeHub) -> None:
    before = setup["manifest"].read_bytes()
    env = {k: v for k, v in setup["env"].items() if k != "HF_TOKEN"}
    done = _push(env)
    assert done.returncode == 1 and "no Hugging Face token" in done.stderr, done.stderr
    assert setup["manifest"].read_bytes() == before and not hub.commits


def test_refused_upload_leaves_the_manifest(setup: dict[str, Any], hub: FakeHub) -> None:
    hub.refuse_commits = True
    before = setup["manifest"].read_bytes()
    done = _push(setup["env"])
    assert done.returncode == 1 and "refused the upload" in done.stderr and "403" in done.stderr, done.stderr
    assert setup["manifest"].read_bytes() == before and not hub.commits


def test_model_card_with_cis() -> None:
    from training.push import model_card

    entry = {"name": "x", "pipeline": "cascade", "framework": "torch", "architecture": "a", "sha256": "0" * 64,
             "size_bytes": 1, "hub": {"filename": "x.safetensors"}, "input_size": [64, 32], "classes": ["lesion"],
             "training": {"data": "d", "split": "splits/s.csv", "command": "c"},
             "metrics": {"val_dice_lesion": 0.61, "epoch": 3}, "licence": "GPL-3.0 (trained on GPLv3 data)"}
    cis = {"dice_lesion": {"mean": 0.61, "ci95": [0.5, 0.7], "n_resamples": 1000}, "n_images": 9, "n_patients": 9}
    card = model_card(entry, {}, REPO_ID, cis)
    assert "| val_dice_lesion | 0.61 | 0.500 - 0.700 |" in card and "license: gpl-3.0" in card
    assert "bootstrap resamples over patients (9 patients" in card
