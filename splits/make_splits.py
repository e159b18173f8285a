"""Write the fixed patient-level train/val/test splits: splits/{tissue_ddsm,mias,mias_roi,cdd_cesm,
cdd_cesm_subtracted,ddsm_films}.csv.

Usage (from the repository root; `make splits` does this):

    python splits/make_splits.py [--data ../shared/data] [--out splits] [--seed 20240607]

Method (deterministic; the committed CSVs are its output with the defaults, seed 20240607):
- Images and patients come from the `mammo.datasets` loaders (file names and annotation tables
  only; no pixels are read), so the ids are the ones `load_dataset` uses.
- Patients are put into strata. Within each stratum the patient ids are sorted and shuffled
  with `random.Random(f"{seed}:{dataset}:{stratum}")`; the i-th of n gets the key (i + 0.5) / n.
  All patients are then ordered by (key, stratum) (each stratum spread evenly along the list)
  and cut: the first round_half_up(0.15 N) go to test, the next round_half_up(0.15 N) to val,
  the rest to train (70/15/15 by patient overall, proportional within each stratum to +-1).
  Every image goes where its patient goes.
- Strata: tissue_ddsm by DDSM case letter (A/B/C/D); mias by whether the patient (image pair
  mdb2k-1 + mdb2k) has any malignant image, so val and test get malignant cases; cdd_cesm one
  stratum (all its images are malignant), and a patient's DM and CM images share the patient id
  so always stay together; mias_roi is not drawn: each crop takes the split of its MIAS patient;
  ddsm_films by DDSM volume (cancer, benign, benign_without_callback, normal), patient = case;
  cdd_cesm_subtracted: a patient already in cdd_cesm keeps that split (the cascade's lesion stage
  was trained on cdd_cesm's train patients, so its val/test patients must stay unseen), the
  others are drawn by their worst pathology (Malignant > Benign > Normal) with the same rule.
- CSV: header `image_id,patient_id,split`, rows sorted by image_id, "\\n" line ends.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from a clone: use the mammo next to it

from mammo.datasets import (  # noqa: E402
    CddCesm,
    CddCesmSubtracted,
    DatasetLoader,
    DdsmFilms,
    Mias,
    MiasROI,
    TissueDDSM,
)

SEED = 20240607
FRACTIONS = {"test": 0.15, "val": 0.15}
DEFAULT_DATA = Path(os.environ.get("MAMMO_SHARED_DATA", REPO.parent / "shared" / "data"))


def round_half_up(value: float) -> int:
    """0.5 rounds up (Python's round() would round half to even)."""
    return int(value + 0.5)


def assign_patients(strata: dict[str, list[str]], dataset: str, seed: int) -> dict[str, str]:
    """Stratum -> patient ids  =>  patient id -> "train" | "val" | "test" (see module docstring)."""
    keyed: list[tuple[float, str, str]] = []
    for stratum in sorted(strata):
        patients = sorted(set(strata[stratum]))
        random.Random(f"{seed}:{dataset}:{stratum}").shuffle(patients)
        keyed += [((i + 0.5) / len(patients), stratum, p) for i, p in enumerate(patients)]
    order = [patient for _, _, patient in sorted(keyed)]
    n_test = round_half_up(FRACTIONS["test"] * len(order))
    n_val = round_half_up(FRACTIONS["val"] * len(order))
    return {patient: "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for i, patient in enumerate(order)}


def strata_of(loader: DatasetLoader, key: Callable[[list[dict]], str]) -> dict[str, list[str]]:
    """Group the loader's patients by `key(labels of the patient's images)`."""
    labels: dict[str, list[dict]] = {}
    for ref in loader.refs:
        labels.setdefault(ref.patient_id, []).append(ref.labels)
    strata: dict[str, list[str]] = {}
    for patient, patient_labels in labels.items():
        strata.setdefault(key(patient_labels), []).append(patient)
    return strata


def rows_for(loader: DatasetLoader, split_of: dict[str, str]) -> list[tuple[str, str, str]]:
    """(image_id, patient_id, split) for every image, sorted by image_id."""
    return sorted((ref.image_id, ref.patient_id, split_of[ref.patient_id]) for ref in loader.refs)


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Write the rows with header image_id,patient_id,split and "\\n" line ends."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("image_id", "patient_id", "split"))
        writer.writerows(rows)


def make_all(data: Path, seed: int) -> dict[str, list[tuple[str, str, str]]]:
    """Dataset name -> its split rows."""
    tissue = TissueDDSM(data / "tissue_ddsm")
    mias = Mias(data / "mias")
    roi = MiasROI(data / "mias_roi", info_path=data / "mias" / "Info.txt")
    cdd = CddCesm(data / "cdd_cesm")
    letter = {ref.patient_id: ref.info["case_prefix"] for ref in tissue.refs}
    tissue_strata: dict[str, list[str]] = {}
    for patient, prefix in letter.items():
        tissue_strata.setdefault(prefix, []).append(patient)
    malignant = strata_of(mias, lambda labels: "malignant" if any(x["malignant"] for x in labels)
                          else "other")
    mias_split = assign_patients(malignant, "mias", seed)
    missing = sorted({ref.patient_id for ref in roi.refs} - set(mias_split))
    if missing:
        raise SystemExit(f"mias_roi crops of patients without MIAS images: {missing}")
    cdd_split = assign_patients({"all": sorted(set(cdd.patient_ids))}, "cdd_cesm", seed)
    subtracted = CddCesmSubtracted(data / "cdd_cesm")
    films = DdsmFilms(data / "ddsm_films")
    volumes: dict[str, list[str]] = {}
    for ref in films.refs:
        volumes.setdefault(ref.info["volume"], []).append(ref.patient_id)
    return {
        "tissue_ddsm": rows_for(tissue, assign_patients(tissue_strata, "tissue_ddsm", seed)),
        "mias": rows_for(mias, mias_split),
        "mias_roi": rows_for(roi, mias_split),
        "cdd_cesm": rows_for(cdd, cdd_split),
        "cdd_cesm_subtracted": rows_for(subtracted, extend_split(subtracted, cdd_split, "cdd_cesm_subtracted", seed)),
        "ddsm_films": rows_for(films, assign_patients(volumes, "ddsm_films", seed)),
    }


def worst_pathology(labels: list[dict]) -> str:
    """The stratum of a CDD-CESM patient: malignant if any image is, else benign if any, else normal."""
    if any(x["malignant"] for x in labels):
        return "malignant"
    return "benign" if any(x["benign"] for x in labels) else "normal"


def extend_split(loader: DatasetLoader, fixed: dict[str, str], dataset: str, seed: int) -> dict[str, str]:
    """Patients already placed keep `fixed`; the others are drawn by `worst_pathology`."""
    strata = strata_of(loader, worst_pathology)
    new = {name: [p for p in patients if p not in fixed] for name, patients in strata.items()}
    drawn = assign_patients({name: p for name, p in new.items() if p}, dataset, seed)
    return {**drawn, **{p: s for p, s in fixed.items() if p in set(loader.patient_ids)}}


def summary(rows: list[tuple[str, str, str]]) -> str:
    """"train 42p/42i, val ..." for one dataset."""
    parts = []
    for name in ("train", "val", "test"):
        chosen = [r for r in rows if r[2] == name]
        parts.append(f"{name} {len({r[1] for r in chosen})}p/{len(chosen)}i")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the datasets")
    parser.add_argument("--out", type=Path, default=REPO / "splits", help="where to write the CSVs")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in make_all(args.data, args.seed).items():
        write_csv(args.out / f"{name}.csv", rows)
        print(f"{name}: {summary(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
