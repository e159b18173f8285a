"""Trained weights: the typed manifest, where each file is found, and its integrity check.

Every weights file mammo can load is described by one entry of `weights_manifest.yaml`
(repo root; see its header for the format). `resolve(entry)` finds the file, in this order:

1. the bundled file `entry.file` (``weights/...`` relative to the repo root); the env var
   ``MAMMO_WEIGHTS_DIR`` replaces the ``weights/`` folder;
2. the Hugging Face Hub, through ``huggingface_hub.hf_hub_download`` at the pinned commit
   (normal cache: ``HF_HUB_CACHE`` / ``HF_HOME``; ``HF_HUB_OFFLINE=1`` means cache only).

Whatever file is found is checked against the manifest's size and sha256 before it is used;
a mismatch is refused. Verified hashes are cached in-process by (path, size, mtime).
This module imports neither torch nor tensorflow; `mammo.models.torch_weights` loads the files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from mammo.calibration import Temperature
from mammo.evidence import Evidence, EvidenceError, parse_evidence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO_ROOT / "weights_manifest.yaml"
MANIFEST_ENV = "MAMMO_WEIGHTS_MANIFEST"
WEIGHTS_DIR_ENV = "MAMMO_WEIGHTS_DIR"
FRAMEWORKS = ("torch", "keras")

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_VERIFIED: dict[tuple[str, int, int], str] = {}
_MANIFEST_CACHE: dict[str, Any] = {}


class ManifestError(ValueError):
    """The weights manifest is malformed; the message names the entry and the key."""


class WeightsNotFoundError(FileNotFoundError):
    """A weights file is neither bundled nor on the Hub (cache); the message says what to run."""


class WeightsIntegrityError(ValueError):
    """A weights file does not match the manifest (size or sha256); it is not used."""


@dataclass(frozen=True)
class HubRef:
    """Where the file lives on the Hugging Face Hub; `revision` is None until it is pushed."""

    repo_id: str
    filename: str
    revision: str | None


@dataclass(frozen=True)
class TrainingInfo:
    """How the weights were made: data, split CSV (``splits/...``) and the exact command."""

    data: str
    split: str
    command: str


@dataclass(frozen=True)
class PretrainedInfo:
    """Where the encoder's starting weights came from (`mammo.models.pretrained`)."""

    encoder: str
    source: str
    licence: str


@dataclass(frozen=True)
class CalibrationInfo:
    """Per-class temperature scaling of the scores (`mammo.calibration`) and what it was fitted on."""

    fitted_on: str
    classes: Mapping[str, Temperature]


@dataclass(frozen=True)
class WeightsEntry:
    """One weights file of the manifest (see `weights_manifest.yaml` for the meaning of keys)."""

    name: str
    pipeline: str
    framework: str
    architecture: str
    file: str
    sha256: str
    size_bytes: int
    hub: HubRef
    input_size: tuple[int, int]
    classes: tuple[str, ...]
    training: TrainingInfo
    metrics: Mapping[str, float]
    licence: str
    pretrained: PretrainedInfo | None = None  # optional key; None: trained from random weights
    calibration: CalibrationInfo | None = None  # optional key; None: scores are shipped uncalibrated
    # optional key: class -> held-out AUCs per data source (`mammo.evidence`); empty: never measured
    evidence: Mapping[str, tuple[Evidence, ...]] = field(default_factory=lambda: MappingProxyType({}))


def _fail(where: str, key: str, problem: str) -> ManifestError:
    return ManifestError(f"weights manifest, {where}, key {key!r}: {problem}")


def _check_keys(raw: Mapping[str, Any], required: tuple[str, ...], where: str,
                optional: tuple[str, ...] = ()) -> None:
    """Unknown and missing keys are errors naming the entry and the key."""
    for key in raw:
        if key not in required + optional:
            raise _fail(where, str(key), f"unknown key (allowed: {', '.join(required + optional)})")
    for key in required:
        if key not in raw:
            raise _fail(where, key, "missing required key")


def _str(
    raw: Mapping[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None
) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        hint = " (quote it in the YAML)" if isinstance(value, (int, float)) else ""
        raise _fail(where, key, f"expected a non-empty string, got {value!r}{hint}")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(where, key, f"{value!r} does not match {pattern.pattern}")
    return value


def _int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(where, key, f"expected a positive integer, got {value!r}")
    return value


def _mapping(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw[key]
    if not isinstance(value, Mapping):
        raise _fail(where, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _relative_under(value: str, folder: str, key: str, where: str) -> str:
    """`value` must be a relative POSIX path inside `folder/` without '..'."""
    parts = value.split("/")
    if value.startswith("/") or parts[0] != folder or len(parts) < 2 or ".." in parts:
        raise _fail(where, key, f"{value!r} must be a relative path under {folder}/")
    return value


def _parse_hub(raw: Mapping[str, Any], where: str) -> HubRef:
    hub = _mapping(raw, "hub", where)
    sub = f"{where}.hub"
    _check_keys(hub, ("repo_id", "filename", "revision"), sub)
    revision = hub["revision"]
    if revision is not None and not (isinstance(revision, str) and _HEX40.fullmatch(revision)):
        problem = f"expected a quoted 40-hex commit hash or null, got {revision!r}"
        raise _fail(sub, "revision", problem)
    return HubRef(_str(hub, "repo_id", sub), _str(hub, "filename", sub), revision)


def _parse_training(raw: Mapping[str, Any], where: str) -> TrainingInfo:
    training = _mapping(raw, "training", where)
    sub = f"{where}.training"
    _check_keys(training, ("data", "split", "command"), sub)
    split = _relative_under(_str(training, "split", sub), "splits", "split", sub)
    return TrainingInfo(_str(training, "data", sub), split, _str(training, "command", sub))


def _parse_input_size(raw: Mapping[str, Any], where: str) -> tuple[int, int]:
    value = raw["input_size"]
    if not isinstance(value, list) or len(value) != 2:
        raise _fail(where, "input_size", f"expected [H, W], got {value!r}")
    return (_int(value[0], "input_size", where), _int(value[1], "input_size", where))


def _parse_classes(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    value = raw["classes"]
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise _fail(where, "classes", f"expected a non-empty list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(where, "classes", f"duplicate class names in {value!r}")
    return tuple(value)


def _parse_metrics(raw: Mapping[str, Any], where: str) -> Mapping[str, float]:
    metrics = _mapping(raw, "metrics", where)
    for key, value in metrics.items():
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not isinstance(key, str) or not is_number:
            raise _fail(where, "metrics", f"expected name -> number, got {key!r}: {value!r}")
    return MappingProxyType({key: float(value) for key, value in metrics.items()})


_OPTIONAL_KEYS = ("pretrained", "calibration", "evidence")
_ENTRY_KEYS = tuple(k for k in WeightsEntry.__dataclass_fields__ if k not in _OPTIONAL_KEYS)


def _parse_pretrained(raw: Mapping[str, Any], where: str) -> PretrainedInfo | None:
    if raw.get("pretrained") is None:
        return None
    info = _mapping(raw, "pretrained", where)
    sub = f"{where}.pretrained"
    _check_keys(info, ("encoder", "source", "licence"), sub)
    return PretrainedInfo(_str(info, "encoder", sub), _str(info, "source", sub), _str(info, "licence", sub))


def _parse_calibration(raw: Mapping[str, Any], where: str) -> CalibrationInfo | None:
    if raw.get("calibration") is None:
        return None
    info = _mapping(raw, "calibration", where)
    sub = f"{where}.calibration"
    classes = {}
    for name, value in info.items():
        if name == "fitted_on":
            continue
        if not isinstance(value, Mapping) or set(value) - {"temperature", "bias"} or "temperature" not in value:
            raise _fail(sub, str(name), "expected {temperature: T > 0, bias: b}")
        t, b = value["temperature"], value.get("bias", 0.0)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (t, b)) or t <= 0:
            raise _fail(sub, str(name), f"temperature must be a number > 0 and bias a number, got {t!r}, {b!r}")
        classes[str(name)] = Temperature(float(t), float(b))
    return CalibrationInfo(_str(info, "fitted_on", sub), MappingProxyType(classes))


def _parse_evidence(raw: Mapping[str, Any], classes: tuple[str, ...], where: str) -> Mapping[str, tuple[Evidence, ...]]:
    if raw.get("evidence") is None:
        return MappingProxyType({})
    try:
        return MappingProxyType(dict(parse_evidence(raw["evidence"], classes, f"{where}.evidence")))
    except EvidenceError as error:
        raise ManifestError(f"weights manifest, {error}") from None


def parse_entry(raw: Any, index: int = 0) -> WeightsEntry:
    """Validate one raw manifest entry (a mapping) and return it typed.

    Raises:
        ManifestError: unknown/missing key or wrong type; the message names entry and key.
    """
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"entry {name!r}" if isinstance(name, str) else f"entry #{index}"
    if not isinstance(raw, Mapping):
        raise ManifestError(f"weights manifest, {where}: expected a mapping, got {raw!r}")
    _check_keys(raw, _ENTRY_KEYS, where, _OPTIONAL_KEYS)
    framework = _str(raw, "framework", where)
    if framework not in FRAMEWORKS:
        raise _fail(where, "framework", f"{framework!r} is not one of {', '.join(FRAMEWORKS)}")
    classes = _parse_classes(raw, where)
    return WeightsEntry(
        name=_str(raw, "name", where),
        pipeline=_str(raw, "pipeline", where),
        framework=framework,
        architecture=_str(raw, "architecture", where),
        file=_relative_under(_str(raw, "file", where), "weights", "file", where),
        sha256=_str(raw, "sha256", where, _HEX64),
        size_bytes=_int(raw["size_bytes"], "size_bytes", where),
        hub=_parse_hub(raw, where),
        input_size=_parse_input_size(raw, where),
        classes=classes,
        training=_parse_training(raw, where),
        metrics=_parse_metrics(raw, where),
        licence=_str(raw, "licence", where),
        pretrained=_parse_pretrained(raw, where),
        calibration=_parse_calibration(raw, where),
        evidence=_parse_evidence(raw, classes, where),
    )


def manifest_path(path: str | Path | None = None) -> Path:
    """`path`, else ``$MAMMO_WEIGHTS_MANIFEST``, else the repo's `weights_manifest.yaml`."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)


def load_manifest(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """Read and validate the manifest; return name -> `WeightsEntry` in file order.

    The file is a mapping with one key, ``entries``: a list of entry mappings (may be empty).

    Raises:
        ManifestError: malformed YAML structure, bad entry, or duplicate names.
        FileNotFoundError: the manifest file does not exist.
    """
    source = manifest_path(path)
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or set(data) != {"entries"}:
        raise ManifestError(f"{source}: expected a mapping with exactly one key 'entries'")
    raw_entries = data["entries"] if data["entries"] is not None else []
    if not isinstance(raw_entries, list):
        raise ManifestError(f"{source}: 'entries' must be a list, got {type(raw_entries).__name__}")
    entries: dict[str, WeightsEntry] = {}
    for index, raw in enumerate(raw_entries):
        entry = parse_entry(raw, index)
        if entry.name in entries:
            raise ManifestError(f"{source}: entry {entry.name!r} appears twice")
        entries[entry.name] = entry
    return entries


def get_entry(name: str, path: str | Path | None = None) -> WeightsEntry:
    """The manifest entry called `name`.

    Raises:
        KeyError: no such entry; the message lists the valid names.
    """
    entries = load_manifest(path)
    if name not in entries:
        valid = ", ".join(entries) or "(none: the manifest has no entries yet)"
        raise KeyError(f"no weights called {name!r} in {manifest_path(path)}; valid names: {valid}")
    return entries[name]


def evidence_for(weights_sha256: str, path: str | Path | None = None) -> dict[str, tuple[Evidence, ...]]:
    """class -> held-out measurements of the weights a `Result` names (its `weights_sha256`: one
    full hash, or "+"-joined 16-hex prefixes of several files); the first entry listing a class
    wins. {} when no entry matches or none has evidence."""
    parts = [p for p in weights_sha256.lower().split("+") if len(p) >= 16]
    if not parts:
        return {}
    source = manifest_path(path)
    key = (str(source.resolve()), source.stat().st_mtime_ns)
    if _MANIFEST_CACHE.get("key") != key:  # eval asks once per image: parse the file once
        _MANIFEST_CACHE.update(key=key, entries=load_manifest(source))
    found: dict[str, tuple[Evidence, ...]] = {}
    for entry in _MANIFEST_CACHE["entries"].values():
        if any(entry.sha256.startswith(p) for p in parts):
            for name, measured in entry.evidence.items():
                found.setdefault(name, measured)
    return found


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_sha256(path: Path) -> str:
    """sha256 of `path`, memoised by (real path, size, mtime_ns)."""
    real = path.resolve()
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(real)
    return _VERIFIED[key]


def clear_hash_cache() -> None:
    """Forget memoised hashes (tests; or after rewriting a file within the mtime resolution)."""
    _VERIFIED.clear()


def verify(path: str | Path, sha256: str, size_bytes: int | None = None) -> Path:
    """Check `path` against the expected size (if given) and sha256; return it.

    Raises:
        WeightsIntegrityError: size or hash differs; names the file, expected and actual.
    """
    path = Path(path)
    if size_bytes is not None:
        actual_size = path.stat().st_size
        if actual_size != size_bytes:
            raise WeightsIntegrityError(
                f"weights file {path} has {actual_size} bytes, expected {size_bytes}; "
                "refusing to use it (delete it and fetch it again)"
            )
    actual = _cached_sha256(path)
    if actual != sha256.lower():
        raise WeightsIntegrityError(
            f"weights file {path} has sha256 {actual}, expected {sha256}; "
            "refusing to use it (delete it and fetch it again)"
        )
    return path


def weights_dir() -> Path:
    """The folder of bundled weights: ``$MAMMO_WEIGHTS_DIR`` or the repo's `weights/`."""
    override = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(override) if override else REPO_ROOT / "weights"


def bundled_path(entry: WeightsEntry) -> Path:
    """Where the bundled copy of `entry` would be (it may not exist)."""
    return weights_dir().joinpath(*entry.file.split("/")[1:])


def bundled_problem(entry: WeightsEntry, quick: bool = False) -> str | None:
    """What is wrong with the bundled copy of `entry` (`mammo weights`): None when it matches
    the manifest's size and sha256 (`quick`: its size only, no hashing), else "size mismatch
    (N bytes, expected M)" or "sha256 mismatch". Not memoised: a listing checks the file as
    it is now.

    Raises:
        OSError: there is no bundled copy (see `bundled_path`), or it cannot be read.
    """
    path = bundled_path(entry)
    size = path.stat().st_size
    if size != entry.size_bytes:
        return f"size mismatch: {size} bytes, expected {entry.size_bytes}"
    if not quick and sha256_file(path) != entry.sha256.lower():
        return "sha256 mismatch"
    return None


def how_to_get(entry: WeightsEntry) -> str:
    """The instructions given when `entry`'s file cannot be found."""
    steps = []
    if entry.hub.revision is not None:
        steps.append(
            f"run `make weights`, or download it with `hf download {entry.hub.repo_id} "
            f"{entry.hub.filename} --revision {entry.hub.revision}` (needs network"
            + ("; HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE") else "")
            + ")"
        )
    else:
        steps.append("it is not on the Hugging Face Hub yet (hub.revision is null)")
    steps.append(f"or place it at {bundled_path(entry)}")
    steps.append(f"or train it with: {entry.training.command}")
    return "; ".join(steps)


def _hub_errors() -> tuple[type[Exception], ...]:
    """The huggingface_hub exceptions meaning "this file cannot be had right now"."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    return (
        EntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )


def _from_hub(entry: WeightsEntry) -> Path:
    """Download (or find in the HF cache) `entry`'s file at its pinned revision."""
    if entry.hub.revision is None:
        raise WeightsNotFoundError(
            f"weights {entry.name!r}: no bundled file at {bundled_path(entry)}; {how_to_get(entry)}"
        )
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(entry.hub.repo_id, entry.hub.filename, revision=entry.hub.revision)
    except _hub_errors() as error:
        raise WeightsNotFoundError(
            f"weights {entry.name!r}: not bundled at {bundled_path(entry)} and not obtainable from "
            f"the Hub ({type(error).__name__}); {how_to_get(entry)}"
        ) from error
    return Path(local)


def resolve(entry: WeightsEntry) -> Path:
    """Path of `entry`'s verified file: bundled copy first, else the Hub (cache) at the pin.

    Raises:
        WeightsNotFoundError: nowhere to be found; the message says what to run.
        WeightsIntegrityError: the file found differs from the manifest's size/sha256.
    """
    bundled = bundled_path(entry)
    path = bundled if bundled.is_file() else _from_hub(entry)
    return verify(path, entry.sha256, entry.size_bytes)
