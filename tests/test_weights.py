"""`mammo.weights`: manifest parsing/validation, resolution (bundled, then Hub cache), integrity.

The Hub path is tested offline against a Hugging Face cache laid out by hand in tmp_path, in
a subprocess, because huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mammo import weights
from mammo.weights import (
    HubRef,
    ManifestError,
    WeightsEntry,
    WeightsIntegrityError,
    WeightsNotFoundError,
)

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
PAYLOAD = b"mammo test weights \x00\x01\x02" * 100


def raw_entry(name: str = "tiny", content: bytes = PAYLOAD, **changes: Any) -> dict[str, Any]:
    """A valid raw manifest entry for a file holding `content`; `changes` override keys."""
    entry: dict[str, Any] = {
        "name": name,
        "pipeline": "lesion",
        "framework": "torch",
        "architecture": "unet-resnet18",
        "file": f"weights/{name}.safetensors",
        "sha256": hashlib.sha256(content).hexdigest(),
        "size_bytes": len(content),
        "hub": {
            "repo_id": f"mammo-org/{name}",
            "filename": f"{name}.safetensors",
            "revision": COMMIT,
        },
        "input_size": [256, 128],
        "classes": ["background", "mass"],
        "training": {
            "data": "CBIS-DDSM",
            "split": "splits/cbis.csv",
            "command": f"python -m training.train --name {name}",
        },
        "metrics": {"dice_test": 0.5, "epochs": 3},
        "licence": "CC-BY-4.0",
    }
    entry.update(changes)
    return entry


def write_manifest(path: Path, entries: list[Any]) -> Path:
    """Write a manifest with `entries` to `path`; return it."""
    path.write_text(yaml.safe_dump({"entries": entries}), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _fresh_hash_cache() -> None:
    weights.clear_hash_cache()


@pytest.fixture()
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bundled-weights folder, set as MAMMO_WEIGHTS_DIR."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("MAMMO_WEIGHTS_DIR", str(folder))
    return folder


# --------------------------------------------------------------------------- manifest


def test_shipped_manifest_is_valid_and_its_files_verify() -> None:
    """Every bundled file matches its manifest sha256 and size, and obeys the size rules."""
    assert weights.DEFAULT_MANIFEST == REPO / "weights_manifest.yaml"
    entries = weights.load_manifest(weights.DEFAULT_MANIFEST)
    assert {"cascade-tissue", "cascade-lesion"} <= set(entries)
    total = 0
    for entry in entries.values():
        path = weights.resolve(entry)
        assert path == REPO / entry.file
        assert entry.size_bytes <= 50 * 1024**2, entry.name
        total += entry.size_bytes
    assert total <= 150 * 1024**2


def test_entry_is_parsed_typed(tmp_path: Path) -> None:
    entries = weights.load_manifest(write_manifest(tmp_path / "m.yaml", [raw_entry()]))
    entry = entries["tiny"]
    assert isinstance(entry, WeightsEntry)
    assert entry.hub == HubRef("mammo-org/tiny", "tiny.safetensors", COMMIT)
    assert entry.input_size == (256, 128)
    assert entry.classes == ("background", "mass")
    assert entry.training.split == "splits/cbis.csv"
    assert dict(entry.metrics) == {"dice_test": 0.5, "epochs": 3.0}
    with pytest.raises(TypeError):
        entry.metrics["dice_test"] = 1.0  # type: ignore[index]


def test_manifest_env_override_and_get_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_manifest(tmp_path / "m.yaml", [raw_entry("a"), raw_entry("b")])
    monkeypatch.setenv("MAMMO_WEIGHTS_MANIFEST", str(path))
    assert list(weights.load_manifest()) == ["a", "b"]
    assert weights.get_entry("b").name == "b"
    with pytest.raises(KeyError, match="valid names: a, b"):
        weights.get_entry("nope")


def _without(key: str) -> dict[str, Any]:
    entry = raw_entry()
    del entry[key]
    return entry


def _nested(section: str, key: str, value: Any) -> dict[str, Any]:
    entry = copy.deepcopy(raw_entry())
    entry[section][key] = value
    return entry


BAD_ENTRIES = [
    (raw_entry(colour="red"), "'colour'", "unknown key"),
    (_without("sha256"), "'sha256'", "missing required key"),
    (_without("hub"), "'hub'", "missing required key"),
    (raw_entry(size_bytes="12"), "'size_bytes'", "positive integer"),
    (raw_entry(size_bytes=True), "'size_bytes'", "positive integer"),
    (raw_entry(framework="jax"), "'framework'", "torch, keras"),
    (raw_entry(sha256="abc"), "'sha256'", "does not match"),
    (raw_entry(sha256=1234), "'sha256'", "quote it in the YAML"),
    (raw_entry(input_size=[256]), "'input_size'", r"\[H, W\]"),
    (raw_entry(classes="mass"), "'classes'", "list of strings"),
    (raw_entry(metrics={"dice": "high"}), "'metrics'", "name -> number"),
    (raw_entry(file="/abs/tiny.safetensors"), "'file'", "under weights/"),
    (raw_entry(file="weights/../x"), "'file'", "under weights/"),
    (_nested("hub", "revision", "main"), "'revision'", "40-hex commit hash or null"),
    (_nested("hub", "token", "x"), "'token'", "unknown key"),
    (_nested("training", "split", "data/split.csv"), "'split'", "under splits/"),
]


@pytest.mark.parametrize(("raw", "key", "problem"), BAD_ENTRIES)
def test_bad_entry_names_entry_and_key(
    tmp_path: Path, raw: dict[str, Any], key: str, problem: str
) -> None:
    path = write_manifest(tmp_path / "m.yaml", [raw])
    with pytest.raises(ManifestError, match=problem) as info:
        weights.load_manifest(path)
    assert "entry 'tiny'" in str(info.value)
    assert key in str(info.value)


def test_bad_manifest_structure(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("weights: []\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="'entries'"):
        weights.load_manifest(path)
    write_manifest(path, [raw_entry(), raw_entry()])
    with pytest.raises(ManifestError, match="'tiny' appears twice"):
        weights.load_manifest(path)
    write_manifest(path, ["just a string"])
    with pytest.raises(ManifestError, match="entry #0"):
        weights.load_manifest(path)


# --------------------------------------------------------------------------- integrity


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(2 * weights._CHUNK + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert weights.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_verify_caches_hash_by_path_size_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(PAYLOAD)
    calls: list[Path] = []
    real = weights.sha256_file

    def counting(p: Path) -> str:
        calls.append(Path(p))
        return real(p)

    monkeypatch.setattr(weights, "sha256_file", counting)
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    for _ in range(3):
        assert weights.verify(path, expected, len(PAYLOAD)) == path
    assert len(calls) == 1
    stat = path.stat()
    path.write_bytes(PAYLOAD[::-1])  # same size, new content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(WeightsIntegrityError):
        weights.verify(path, expected)
    assert len(calls) == 2


# --------------------------------------------------------------------------- bundled files


def test_resolve_bundled_file(tmp_path: Path, weights_dir: Path) -> None:
    (weights_dir / "tiny.safetensors").write_bytes(PAYLOAD)
    entry = weights.parse_entry(raw_entry())
    assert weights.resolve(entry) == weights_dir / "tiny.safetensors"


def test_resolve_refuses_tampered_bundled_file(weights_dir: Path) -> None:
    bad = PAYLOAD[:-1] + b"X"
    path = weights_dir / "tiny.safetensors"
    path.write_bytes(bad)
    entry = weights.parse_entry(raw_entry())
    with pytest.raises(WeightsIntegrityError) as info:
        weights.resolve(entry)
    message = str(info.value)
    assert entry.sha256 in message
    assert hashlib.sha256(bad).hexdigest() in message
    assert str(path) in message
    path.write_bytes(PAYLOAD + b"extra")
    with pytest.raises(WeightsIntegrityError, match="bytes, expected"):
        weights.resolve(entry)


def test_missing_unpushed_weights_say_how_to_train(weights_dir: Path) -> None:
    raw = _nested("hub", "revision", None)
    entry = weights.parse_entry(raw)
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve(entry)
    message = str(info.value)
    assert "train it with: python -m training.train --name tiny" in message
    assert "not on the Hugging Face Hub yet" in message
    assert isinstance(info.value, FileNotFoundError)


# --------------------------------------------------------------------------- Hub cache (offline)


def make_cached_repo(cache: Path, repo_id: str, filename: str, content: bytes, commit: str) -> Path:
    """Lay out one file of `repo_id` in an HF hub cache as huggingface_hub does; return blob."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content)
    snapshot = repo / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")  # no trailing newline
    return blob


HUB_SCRIPT = """
import json, sys
from mammo import weights
out = {}
for name in weights.load_manifest():
    try:
        out[name] = {"path": str(weights.resolve(weights.get_entry(name)))}
    except (weights.WeightsNotFoundError, weights.WeightsIntegrityError) as error:
        out[name] = {"error": type(error).__name__, "message": str(error)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hub_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    """Resolve three entries against a hand-made offline HF cache, in one subprocess."""
    root = tmp_path_factory.mktemp("hub")
    cache = root / "hub"
    make_cached_repo(cache, "mammo-org/good", "good.safetensors", PAYLOAD, COMMIT)
    blob = make_cached_repo(cache, "mammo-org/tampered", "tampered.safetensors", PAYLOAD, COMMIT)
    blob.write_bytes(PAYLOAD[:-1] + b"X")  # same size, different content
    make_cached_repo(cache, "mammo-org/stale", "stale.safetensors", PAYLOAD, COMMIT)
    stale = raw_entry("stale")
    stale["hub"]["revision"] = OTHER_COMMIT  # refs/main points at COMMIT; OTHER_COMMIT not cached
    manifest = write_manifest(root / "m.yaml", [raw_entry("good"), raw_entry("tampered"), stale])
    (root / "empty").mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "MAMMO_WEIGHTS_DIR": str(root / "empty"),
        "MAMMO_WEIGHTS_MANIFEST": str(manifest),
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HUB_SCRIPT)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard, not a speed limit
    )
    assert proc.returncode == 0, proc.stderr
    return cache, json.loads(proc.stdout.strip().splitlines()[-1])


def test_hub_cache_snapshot_is_resolved_and_verified(hub_results: tuple[Path, dict]) -> None:
    cache, results = hub_results
    expected = cache / "models--mammo-org--good" / "snapshots" / COMMIT / "good.safetensors"
    assert results["good"] == {"path": str(expected)}


def test_hub_cache_tampered_blob_is_refused(hub_results: tuple[Path, dict]) -> None:
    _, results = hub_results
    assert results["tampered"]["error"] == "WeightsIntegrityError"
    assert hashlib.sha256(PAYLOAD).hexdigest() in results["tampered"]["message"]
    assert hashlib.sha256(PAYLOAD[:-1] + b"X").hexdigest() in results["tampered"]["message"]


def test_hub_revision_not_cached_offline_says_what_to_run(hub_results: tuple[Path, dict]) -> None:
    _, results = hub_results
    assert results["stale"]["error"] == "WeightsNotFoundError"
    message = results["stale"]["message"]
    assert f"hf download mammo-org/stale stale.safetensors --revision {OTHER_COMMIT}" in message
    assert "make weights" in message
    assert "train it with: python -m training.train --name stale" in message


# --------------------------------------------------------------------------- torch loading


def test_load_torch_state_dict_keeps_fp16(weights_dir: Path) -> None:
    from safetensors.torch import save_file

    from mammo.models.frameworks import import_torch

    torch = import_torch()

    tensors = {"conv.weight": torch.randn(4, 3, 3, 3).half(), "conv.bias": torch.arange(4.0)}
    path = weights_dir / "tiny.safetensors"
    save_file(tensors, str(path))
    entry = weights.parse_entry(raw_entry(content=path.read_bytes()))
    from mammo.models.torch_weights import load_torch_state_dict

    state = load_torch_state_dict(entry)
    assert set(state) == set(tensors)
    assert state["conv.weight"].dtype == torch.float16
    assert state["conv.bias"].dtype == torch.float32
    assert torch.equal(state["conv.weight"], tensors["conv.weight"])


def test_load_torch_state_dict_rejects_keras_entry(weights_dir: Path) -> None:
    from mammo.models.torch_weights import load_torch_state_dict

    entry = weights.parse_entry(raw_entry(framework="keras"))
    with pytest.raises(ValueError, match="not torch"):
        load_torch_state_dict(entry)


def test_calibration_key_is_parsed_and_checked() -> None:
    raw = raw_entry()
    raw["calibration"] = {"fitted_on": "mini-MIAS val", "malignant": {"temperature": 2.0, "bias": -0.5}}
    entry = weights.parse_entry(raw)
    assert entry.calibration.fitted_on == "mini-MIAS val"
    assert entry.calibration.classes["malignant"](0.5) == pytest.approx(1 / (1 + np.exp(0.5)))
    assert weights.parse_entry(raw_entry()).calibration is None
    raw["calibration"]["malignant"] = {"temperature": 0}
    with pytest.raises(weights.ManifestError, match="calibration.*temperature must be a number > 0"):
        weights.parse_entry(raw)


def test_requirements_comments_name_things_that_exist() -> None:
    """Every module (mammo.x.y) and file (X.md) that requirements.txt's comments point to exists."""
    import importlib.util
    import re

    from mammo.weights import REPO_ROOT

    text = (REPO_ROOT / "requirements.txt").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for module in re.findall(r"\bmammo(?:\.[a-z_]+)+", comments):
        assert importlib.util.find_spec(module) is not None, module
    for name in re.findall(r"\b[\w-]+\.md\b", comments):
        assert (REPO_ROOT / name).is_file(), name


# --------------------------------------------------------------------------- `mammo weights`


def _mammo_weights(tmp_path: Path, manifest: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m mammo weights ARGS` with `manifest` and the bundled folder tmp_path/weights."""
    env = {**os.environ, "MAMMO_WEIGHTS_MANIFEST": str(manifest), "HF_HUB_OFFLINE": "1",
           "MAMMO_WEIGHTS_DIR": str(tmp_path / "weights")}
    return subprocess.run([sys.executable, "-m", "mammo", "weights", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120, check=False)


def test_cli_weights_verifies_bundled_files(tmp_path: Path) -> None:
    """A bundled file of the right size but other bytes is "corrupt (sha256 mismatch)", exit 1
    (it was listed as "bundled", exit 0); --quick checks sizes only; a wrong size is corrupt
    even then."""
    (tmp_path / "weights").mkdir()
    manifest = write_manifest(tmp_path / "m.yaml", [raw_entry("good"), raw_entry("bad")])
    (tmp_path / "weights" / "good.safetensors").write_bytes(PAYLOAD)
    bad = tmp_path / "weights" / "bad.safetensors"
    bad.write_bytes(PAYLOAD[:-1] + b"X")
    proc = _mammo_weights(tmp_path, manifest)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("good") and lines[0].endswith("bundled weights/good.safetensors (sha256 ok)")
    assert lines[1].startswith("bad") and "corrupt (sha256 mismatch)" in lines[1] and str(bad) in lines[1]
    quick = _mammo_weights(tmp_path, manifest, "--quick")
    assert quick.returncode == 0 and "sha256 not checked" in quick.stdout.splitlines()[1]
    bad.write_bytes(PAYLOAD + b"extra")
    quick = _mammo_weights(tmp_path, manifest, "--quick")
    assert quick.returncode == 1 and f"corrupt (size mismatch: {len(PAYLOAD) + 5} bytes, expected " \
        f"{len(PAYLOAD)})" in quick.stdout


def test_cli_weights_errors_are_one_line(tmp_path: Path) -> None:
    """A malformed manifest: one `mammo: error:` line, exit 1; --fetch of weights that are nowhere:
    MISSING with what to do, exit 1; never a traceback."""
    (tmp_path / "weights").mkdir()
    broken = write_manifest(tmp_path / "broken.yaml", [raw_entry(licence=None)])
    proc = _mammo_weights(tmp_path, broken)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("mammo: error: weights manifest, entry 'tiny', key 'licence'")
    unpushed = write_manifest(tmp_path / "m.yaml", [_nested("hub", "revision", None)])
    proc = _mammo_weights(tmp_path, unpushed, "--fetch")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "MISSING: weights 'tiny'" in proc.stdout and "train it with" in proc.stdout
