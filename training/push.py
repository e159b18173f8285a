"""`python -m training.push RUN_DIR_or_ENTRY --repo-id ORG/NAME [--private] [--revision BRANCH]`.

Uploads one weights file to the Hugging Face Hub with its resolved config (config.yaml) and a
model card (README.md), in one commit through `huggingface_hub.HfApi.create_commit`, then pins
that commit in `weights_manifest.yaml` (hub.repo_id, hub.filename, hub.revision = the commit
hash; sha256 and size unchanged), so `mammo.weights.resolve` later downloads exactly that file.

- ENTRY: a manifest entry name (e.g. cascade-tissue): its bundled/cached file is pushed.
- RUN_DIR: a training run folder: its best.pt is first exported like `training.export` does,
  into a staging folder; the weights file and the manifest entry are written only after the
  upload succeeded.

The token is the usual one (HF_TOKEN, or `hf auth login`); `HF_ENDPOINT` selects another Hub.
A missing token or a refused upload is a `PushError`; the manifest is then left as it was.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mammo.weights import get_entry, manifest_path, resolve, weights_dir
from training.export import write_entry


class PushError(RuntimeError):
    """The push did not happen (no token, refused upload); the manifest was not changed."""


LICENCE_IDS = {"GPL-3.0": "gpl-3.0"}  # the Hub's licence ids for the manifest's licences


def _patients(config: Any, ids: list[str]) -> list[str]:
    """Each image's patient from the split CSV (bootstrap over patients), else the image id."""
    import csv

    split = Path(config.split)
    if not split.is_file():
        return list(ids)
    with split.open(newline="") as handle:
        patient = {row["image_id"]: row.get("patient_id") or row["image_id"] for row in csv.DictReader(handle)}
    return [patient.get(i, i) for i in ids]


def validation_cis(config_dict: dict[str, Any], state: dict[str, Any], val: Any = None,
                   n_resamples: int = 1000) -> dict[str, Any] | None:
    """Per-class validation Dice with 95% patient-bootstrap CIs (segmentation tasks).

    None when the task is not a segmentation or the validation data cannot be read here.
    """
    from mammo.metrics import dice_iou, with_ci
    from mammo.models.frameworks import import_torch
    from training.config import TrainConfig
    from training.tasks import get_task

    config = TrainConfig(**config_dict)
    if config.task not in ("tissue", "lesion"):
        return None
    import_torch()
    from training.segmentation import predict_labels

    task = get_task(config)
    try:
        val = val if val is not None else task.load_data()[1]
    except (OSError, ValueError) as error:  # data not on this machine: the card says so
        print(f"validation data not available ({error}); the model card has no CIs", file=sys.stderr)
        return None
    model = task.build_model()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    pred = predict_labels(model, val.x, config)
    groups = _patients(config, val.ids)
    names = {n: v for v, n in enumerate(config.classes)} if config.task == "tissue" else {"lesion": 1}
    out = {}
    for name, value in names.items():
        dice = np.array([dice_iou(p == value, t == value)[0] for p, t in zip(pred, val.y)])
        out[f"dice_{name}"] = with_ci(lambda idx, d=dice: float(d[idx].mean()), groups, n_resamples=n_resamples)
    out["n_images"], out["n_patients"] = len(val.ids), len(set(groups))
    return out


def _metrics_table(metrics: dict[str, Any], cis: dict[str, Any] | None) -> str:
    lines = ["| metric | value | 95% CI |", "|---|---|---|"]
    for key, value in metrics.items():
        ci = (cis or {}).get(key.removeprefix("val_"), {}) if key.startswith("val_dice_") else {}
        interval = f"{ci['ci95'][0]:.3f} - {ci['ci95'][1]:.3f}" if ci.get("ci95") else "-"
        lines.append(f"| {key} | {value} | {interval} |")
    return "\n".join(lines)


def model_card(entry: dict[str, Any], config: dict[str, Any], repo_id: str, cis: dict[str, Any] | None) -> str:
    """README.md of the Hub repository: what the weights are, how they were made, how good, for what."""
    licence = entry["licence"]
    licence_id = next((hub for key, hub in LICENCE_IDS.items() if licence.startswith(key)), "other")
    front = {"license": licence_id, "tags": ["mammography", "medical-imaging", "segmentation", "research-only"],
             "library_name": "pytorch" if entry["framework"] == "torch" else "keras"}
    if licence_id == "other":
        front["license_name"] = "research-use"
    if cis:
        ci_note = (f"95% CIs: percentile intervals of 1000 bootstrap resamples over patients "
                   f"({cis['n_patients']} patients, {cis['n_images']} validation images), per-image Dice.")
    else:
        ci_note = "No confidence intervals: the validation data was not available when this was pushed."
    training = entry["training"]
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {entry['name']}

Weights of the `{entry["pipeline"]}` pipeline of mammo, in the Hub repository `{repo_id}`.

**Intended use: research only. Not a medical device; not for diagnosis or any clinical decision.**

- pipeline: `{entry['pipeline']}`; framework: {entry['framework']}; architecture: `{entry['architecture']}`
- file: `{entry['hub']['filename']}`, sha256 `{entry['sha256']}`, {entry['size_bytes']} bytes
- input size (H, W): {entry['input_size']}; classes: {', '.join(entry['classes'])}

## Training data and split

- data: {training['data']}
- split: `{training['split']}` (patients never cross splits)
- command: `{training['command']}`
- resolved config: `config.yaml` in this repository

## Validation metrics

{_metrics_table(dict(entry['metrics']), cis)}

{ci_note}

## Licence

{licence}. The weights inherit the terms of their training data.
"""


def require_token(token: str | None = None) -> str:
    """The token to push with: `token`, else HF_TOKEN / the saved login.

    Raises:
        PushError: none found, with what to do.
    """
    from huggingface_hub import get_token

    found = token or get_token()
    if not found:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access "
                        "to the target repository); nothing was uploaded and the manifest is unchanged")
    return found


def _raw_entry(name: str, manifest: Path) -> dict[str, Any]:
    """The manifest entry `name` as the raw mapping (validated through `get_entry` first)."""
    get_entry(name, manifest)
    entries = yaml.safe_load(manifest.read_text())["entries"]
    return copy.deepcopy(next(e for e in entries if e["name"] == name))


def read_config(weights: Path) -> dict[str, Any]:
    """The training config stored in the safetensors header by `training.export` ({} if none)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="np") as handle:
        metadata = handle.metadata() or {}
    return json.loads(metadata["config"]) if "config" in metadata else {}


def upload(repo_id: str, files: dict[str, Path | bytes], message: str, private: bool = False,
           revision: str | None = None, token: str | None = None, api: Any = None) -> str:
    """Create the repo (if needed) and commit `files` (path in repo -> local file or bytes).

    Returns the commit hash. Raises `PushError` when the Hub refuses (HTTP error).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    token = require_token(token)
    api = api or HfApi()
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(src) if isinstance(src, Path) else src)
                  for name, src in files.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        info = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision,
                                 token=token)
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise PushError(f"the Hub refused the upload to {repo_id} (HTTP {status}): {error}; "
                        "the manifest is unchanged") from error
    return info.oid


def _pin(entry: dict[str, Any], repo_id: str, commit: str) -> dict[str, Any]:
    pinned = copy.deepcopy(entry)
    pinned["hub"] = {"repo_id": repo_id, "filename": entry["hub"]["filename"], "revision": commit}
    return pinned


def push_file(entry: dict[str, Any], weights: Path, repo_id: str, manifest: Path, private: bool = False,
              revision: str | None = None, token: str | None = None, api: Any = None,
              cis: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload `weights` + config.yaml + README.md for raw manifest `entry`, then pin it in `manifest`."""
    config = read_config(weights)
    card = model_card(entry, config, repo_id, cis)
    files: dict[str, Path | bytes] = {entry["hub"]["filename"]: weights,
                                      "config.yaml": yaml.safe_dump(config, sort_keys=False).encode(),
                                      "README.md": card.encode()}
    commit = upload(repo_id, files, f"{entry['name']}: {entry['hub']['filename']} (sha256 {entry['sha256'][:12]})",
                    private, revision, token, api)
    pinned = _pin(entry, repo_id, commit)
    write_entry(pinned, manifest)  # only now: the upload succeeded
    return pinned


def push_entry(name: str, repo_id: str, manifest: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Push the manifest entry `name` (its file found by `mammo.weights.resolve`)."""
    manifest = manifest_path(manifest)
    weights = resolve(get_entry(name, manifest))
    if "cis" not in kwargs:
        from safetensors.numpy import load_file

        from mammo.models.frameworks import import_torch

        torch = import_torch()
        state = {k: torch.from_numpy(v) for k, v in load_file(str(weights)).items()}
        kwargs["cis"] = validation_cis(read_config(weights), state) if read_config(weights) else None
    return push_file(_raw_entry(name, manifest), weights, repo_id, manifest, **kwargs)


def push_run(run_dir: Path, name: str, repo_id: str, pipeline: str = "cascade", manifest: Path | None = None,
             val: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Export `run_dir` into a staging folder, push it, then install the file and the entry."""
    from training.export import export_run

    manifest = manifest_path(manifest)
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        (staging / "manifest.yaml").write_text("entries: []\n")
        entry = export_run(run_dir, name, pipeline, hub_repo=repo_id, weights_dir=staging / "weights",
                           manifest=staging / "manifest.yaml", val=val)
        weights = staging / "weights" / entry["hub"]["filename"]
        if "cis" not in kwargs:
            from mammo.models.frameworks import import_torch

            best = import_torch().load(run_dir / "best.pt", weights_only=False)["model"]
            kwargs["cis"] = validation_cis(read_config(weights), best, val)
        pinned = push_file(entry, weights, repo_id, staging / "manifest.yaml", **kwargs)
        target = weights_dir() / Path(entry["file"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(weights, target)
    write_entry(pinned, manifest)
    return pinned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a run folder (with best.pt) or a weights-manifest entry name")
    parser.add_argument("--repo-id", required=True, help="Hub model repository, ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    parser.add_argument("--name", help="RUN_DIR only: the manifest entry name (default: the run's config name)")
    parser.add_argument("--pipeline", default="cascade", help="RUN_DIR only: the pipeline using the weights")
    args = parser.parse_args(argv)
    options = {"private": args.private, "revision": args.revision}
    try:
        source = Path(args.source)
        if (source / "best.pt").is_file():
            from training.config import load_config

            name = args.name or load_config(source / "config.yaml").name
            pinned = push_run(source, name, args.repo_id, args.pipeline, **options)
        else:
            pinned = push_entry(args.source, args.repo_id, **options)
    except (PushError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pushed {pinned['name']} to {args.repo_id} at commit {pinned['hub']['revision']}; "
          f"manifest {manifest_path()} updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
