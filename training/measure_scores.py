"""`python -m training.measure_scores --entry NAME [--split test] [--set SOURCE=KIND:PATH ...] [--record]`:
the held-out AUC of a weights entry's scores per data source, with 95% patient-bootstrap CIs.

Each set is evaluated with `python -m eval` (same code path as users': `predictions.csv`,
`metrics.json` and `report.html` under `runs/measure/<entry>/<kind>-<split>/`), then
`runs/measure/<entry>/evidence-<split>.json` and `roc-<split>.png` (every set's ROC curve per
class) are written. `--record` writes the measurements into the entry's `evidence` in
`weights_manifest.yaml` (`mammo.evidence`), after checking that the evaluated pipeline ran on
exactly these weights. `--calibrate` (validation split, uncalibrated entry) fits temperature
scaling per class on every set's predictions pooled (`mammo.calibration`) and writes it into the
entry's `calibration`: a monotone map, so AUCs do not move, but the scores become probabilities.
The default sets per entry are in `DEFAULT_SETS`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DATA = "../shared/data"
FILM_SETS = (f"film=ddsm-films:{DATA}/ddsm_films", f"film=mias:{DATA}/mias")
DEFAULT_SETS = {  # entry -> (pipeline, sets)
    "glam-joint": ("glam:joint", (*FILM_SETS, f"cesm=cdd-cesm-subtracted:{DATA}/cdd_cesm")),
    "glam-sep": ("glam:sep", (*FILM_SETS, f"cesm=cdd-cesm-subtracted:{DATA}/cdd_cesm")),
    # the image-level malignant score of tiryaki-mass (its highest mass's ROI-classifier score)
    "tiryaki-classifier": ("tiryaki-mass", (*FILM_SETS, f"cesm=cdd-cesm-subtracted:{DATA}/cdd_cesm")),
}


def parse_set(text: str) -> tuple[str, str, str]:
    """"film=ddsm-films:../shared/data/ddsm_films" -> (source, kind, path)."""
    from mammo.io.acquisition import check_acquisition

    source, sep, rest = text.partition("=")
    kind, sep2, path = rest.partition(":")
    if not sep or not sep2 or not kind or not path:
        raise SystemExit(f"--set {text!r}: expected SOURCE=KIND:PATH, e.g. film=ddsm-films:{DATA}/ddsm_films")
    try:
        return check_acquisition(source, "--set"), kind, path
    except ValueError as error:
        raise SystemExit(str(error)) from None


def measure_set(pipeline: str, source: str, kind: str, path: str, split: str, out: Path,
                classes: tuple[str, ...], command: str, resume: bool,
                limit: int | None = None) -> tuple[dict[str, dict], str]:
    """Evaluate one set; (class -> evidence item, for the classes with both labels; weights sha256 used)."""
    from eval.runner import evaluate

    metrics = evaluate(pipeline, f"{kind}:{path}", str(out), split=split, resume=resume, quiet=False,
                       limit=limit)
    if metrics.get("n_errors"):
        raise SystemExit(f"{kind}: {metrics['n_errors']} images failed; see {out}/predictions.csv")
    items = {}
    for name in classes:
        entry = (metrics.get("classification") or {}).get(name)
        if not entry or entry["auc"]["mean"] is None:
            continue
        items[name] = {"source": source, "dataset": kind, "split": split, "auc": entry["auc"]["mean"],
                       "ci95": entry["auc"]["ci95"], "n": entry["n"], "n_pos": entry["n_pos"], "command": command}
    return items, metrics.get("weights_sha256") or ""


def roc_plot(folders: dict[str, Path], classes: tuple[str, ...], evidence: dict[str, list[dict]], path: Path) -> None:
    """One panel per class: each set's ROC curve from its predictions.csv, AUC and CI in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, len(classes), figsize=(5.5 * len(classes), 5), squeeze=False)
    for ax, name in zip(axes[0], classes):
        for kind, folder in folders.items():
            labels, scores = labelled(folder, name)
            if not labels.size or labels.min() == labels.max():
                continue
            fpr, tpr, _ = roc_curve(labels, scores)
            item = next(e for e in evidence.get(name, []) if e["dataset"] == kind)
            ax.plot(fpr, tpr, label=f"{kind}: {item['auc']:.3f} ({item['ci95'][0]:.3f}-{item['ci95'][1]:.3f}), "
                                    f"n={item['n']}, pos={item['n_pos']}")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=f"{name}", xlabel="1 - specificity", ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def labelled(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels int, scores float) of class `name` in a run's predictions.csv: the rows with both,
    read as `python -m eval score` reads them (`eval.table.read_rows`, `eval.scoring.label_pairs`)."""
    from eval.scoring import label_pairs
    from eval.table import read_rows

    pairs = label_pairs(read_rows(folder / "predictions.csv"), name)
    return (pairs[0], pairs[1]) if pairs else (np.zeros(0, int), np.zeros(0))


def pooled(folders: dict[str, Path], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of class `name` over every set's predictions.csv, rows with both."""
    parts = [labelled(folder, name) for folder in folders.values()]
    return np.concatenate([s for _, s in parts]), np.concatenate([y for y, _ in parts])


def manifest_entry(entry_name: str, sha: str, flag: str) -> dict:
    """The raw manifest entry, refusing when `sha` (what the pipeline ran on) is not its file's."""
    import yaml

    from mammo.weights import manifest_path

    entry = {e["name"]: e for e in yaml.safe_load(manifest_path().read_text())["entries"]}[entry_name]
    if not any(part and entry["sha256"].startswith(part) for part in sha.split("+")):
        raise SystemExit(f"{flag}: the pipeline ran on weights {sha}, not {entry_name}'s {entry['sha256']}")
    return entry


def calibrate(entry_name: str, sha: str, folders: dict[str, Path], classes: tuple[str, ...], split: str) -> dict:
    """Fit and write the entry's calibration from the pooled predictions of `folders`."""
    from mammo.calibration import fit_temperature
    from training.export import write_entry

    entry = manifest_entry(entry_name, sha, "--calibrate")
    if entry.get("calibration"):
        raise SystemExit(f"--calibrate: {entry_name} is calibrated already (its predictions are not raw); "
                         "remove its calibration block first")
    fitted, counts = {}, []
    for name in classes:
        scores, labels = pooled(folders, name)
        if labels.size and 0 < labels.sum() < labels.size:
            t = fit_temperature(scores, labels)
            fitted[name] = {"temperature": round(t.temperature, 5), "bias": round(t.bias, 5)}
            counts.append(f"{name} {labels.size} images")
    entry["calibration"] = {"fitted_on": f"{split} splits of {', '.join(folders)} pooled ({'; '.join(counts)}), "
                            f"python -m training.measure_scores --entry {entry_name} --split {split} --calibrate",
                            **fitted}
    write_entry(entry)
    return fitted


def record(entry_name: str, sha: str, evidence: dict[str, list[dict]]) -> None:
    """Write `evidence` into the manifest entry, refusing when `sha` is not its file's."""
    from training.export import write_entry

    entry = manifest_entry(entry_name, sha, "--record")
    evidence = {name: items for name, items in evidence.items() if name in entry["classes"]}
    entry["evidence"] = {**(entry.get("evidence") or {}), **evidence}
    write_entry(entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.measure_scores", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entry", required=True, help="weights manifest entry, e.g. glam-joint")
    parser.add_argument("--pipeline", help="pipeline that loads it (default from DEFAULT_SETS)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--set", action="append", dest="sets", metavar="SOURCE=KIND:PATH",
                        help="a data set to measure on (repeat); default: DEFAULT_SETS[entry]")
    parser.add_argument("--classes", nargs="+", default=["benign", "malignant"])
    parser.add_argument("--out", type=Path, help="default runs/measure/<entry>")
    parser.add_argument("--resume", action="store_true", help="keep images already evaluated in --out")
    parser.add_argument("--record", action="store_true", help="write the evidence into the manifest entry")
    parser.add_argument("--calibrate", action="store_true", help="fit the score calibration on this split")
    parser.add_argument("--limit", type=int, help="only the first N images of each set (a smoke test; "
                                                   "not with --record)")
    args = parser.parse_args(argv)
    if (args.record or args.calibrate) and args.limit:
        parser.error("--record and --calibrate use whole splits: drop --limit")
    if args.calibrate and args.split == "test":
        parser.error("--calibrate fits on the validation split, never on test")
    pipeline, sets = DEFAULT_SETS.get(args.entry, (None, ()))
    pipeline, sets = args.pipeline or pipeline, args.sets or sets
    if not pipeline or not sets:
        parser.error(f"no default sets for {args.entry!r}: give --pipeline and --set")
    out = args.out or Path("runs/measure") / args.entry
    command = f"python -m training.measure_scores --entry {args.entry} --split {args.split}"
    evidence: dict[str, list[dict]] = {}
    folders, shas = {}, set()
    for text in sets:
        source, kind, path = parse_set(text)
        folders[kind] = out / f"{kind}-{args.split}"
        items, sha = measure_set(pipeline, source, kind, path, args.split, folders[kind], tuple(args.classes),
                                 command, args.resume, args.limit)
        shas.add(sha)
        for name, item in items.items():
            evidence.setdefault(name, []).append(item)
    if len(shas) != 1:
        raise SystemExit(f"the sets ran on different weights: {sorted(shas)}")
    (out / f"evidence-{args.split}.json").write_text(json.dumps(evidence, indent=2) + "\n")
    roc_plot(folders, tuple(args.classes), evidence, out / f"roc-{args.split}.png")
    sha = shas.pop()
    if args.record:
        record(args.entry, sha, evidence)
    if args.calibrate:
        print("calibration:", calibrate(args.entry, sha, folders, tuple(args.classes), args.split))
    print(json.dumps(evidence, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
