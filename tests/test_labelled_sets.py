"""The two labelled sets of issue 29 on the real data: `ddsm-films` (DDSM films by case volume) and
`cdd-cesm-subtracted` (CESM subtracted images by pathology), their labels and their fixed splits."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from mammo.datasets import load_dataset
from mammo.datasets.ddsm_films import read_table
from mammo.errors import MammoInputError
from tests.conftest import REPO, require_data


def split_rows(name: str) -> dict[str, tuple[str, str]]:
    with open(REPO / "splits" / name, newline="") as handle:
        return {r["image_id"]: (r["patient_id"], r["split"]) for r in csv.DictReader(handle)}


def test_ddsm_films_labels_and_split():
    ds = load_dataset("ddsm-films", require_data("ddsm_films"))
    volumes = Counter(ref.info["volume"] for ref in ds.refs)
    assert volumes == {"cancer": 286, "benign": 201, "benign_without_callback": 93, "normal": 354}
    for ref in ds.refs:
        expected = {"cancer": (None, 1), "normal": (0, 0)}.get(ref.info["volume"], (1, 0))
        assert (ref.labels["benign"], ref.labels["malignant"]) == expected, ref.image_id
    split = split_rows("ddsm_films.csv")
    assert set(split) == {ref.image_id for ref in ds.refs}
    by_case: dict[str, set[str]] = {}
    for patient, name in split.values():
        by_case.setdefault(patient, set()).add(name)
    assert all(len(names) == 1 for names in by_case.values())  # a case never straddles two splits
    test = [ref for ref in ds.refs if split[ref.image_id][1] == "test"]
    assert len(test) == 138 and sum(ref.labels["malignant"] for ref in test) == 43
    sample = ds[0]
    assert sample.meta.acquisition == "film" and sample.meta.laterality in ("L", "R")
    assert sample.image.shape == (640, 640) and sample.extra["case"] == sample.patient_id


def test_ddsm_films_table_errors_name_the_line(tmp_path):
    table = tmp_path / "images.csv"
    table.write_text("image,case,volume,side,view\nnormal/a.jpg,A_1,normal,LEFT,CC\nnormal/b.jpg,A_2,normal,UP,CC\n")
    with pytest.raises(MammoInputError, match="line 3: side 'UP'"):
        read_table(table)
    table.write_text("image,case,side,view\n")
    with pytest.raises(MammoInputError, match="missing column.*volume"):
        read_table(table)


def test_cdd_cesm_subtracted_labels_and_split():
    root = require_data("cdd_cesm")
    ds = load_dataset("cdd-cesm-subtracted", root)
    assert Counter(ref.info["pathology"] for ref in ds.refs) == {"Benign": 198, "Malignant": 265, "Normal": 328}
    split, parent = split_rows("cdd_cesm_subtracted.csv"), split_rows("cdd_cesm.csv")
    assert set(split) == {ref.image_id for ref in ds.refs}
    parent_split = {patient: name for patient, name in parent.values()}
    shared = [(patient, name) for patient, name in split.values() if patient in parent_split]
    assert shared and all(parent_split[patient] == name for patient, name in shared)  # same patient, same split
    sample = next(iter(ds))
    assert sample.meta.acquisition == "cesm" and sample.extra["image_type"] == "CM"
    assert sample.extra["density"] in ("A", "B", "C", "D", None)


def test_cdd_cesm_subtracted_refuses_unknown_folders(tmp_path):
    (tmp_path / "subtracted" / "Suspicious").mkdir(parents=True)
    (tmp_path / "Radiology-manual-annotations-all.csv").write_text("Image_name,Pathology Classification/ Follow up\n")
    with pytest.raises(MammoInputError, match="Suspicious"):
        load_dataset("cdd-cesm-subtracted", tmp_path).refs
