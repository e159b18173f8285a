"""`deepmica-png` on small fixtures in the DeepMiCa seed's layout:
`Datasets/{INbreast,CBIS_DDSM}/{AllPng,Masks,csv}` with the seed's two tables."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import mammo.datasets.deepmica_png as deepmica
from mammo.datasets import LOADERS, DeepMiCaPng, load_dataset
from mammo.errors import MammoInputError

SHAPE = (40, 32)
INBREAST_HEADER = ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR",
                   "Bi-Rads", "Mass ", "Micros", "Distortion", "Asymmetry", "Findings Notes (in Portuguese)"]
#: (patient, file name, laterality, view, micros): 12 patients with micros (ids sort differently as
#: numbers and as text: 2 < 10), one image without (not a sample, and it has no mask)
INBREAST_ROWS = [(p, f"{20586900 + 2 * i + k}", "LR"[k], "CC", "X")
                 for i, p in enumerate((1, 2, 3, 5, 8, 10, 13, 21, 34, 55, 89, 144)) for k in (0, 1)]
INBREAST_ROWS.append((7, "30000000", "L", "MLO", ""))
#: CBIS: (patient, film, [(mask suffix, pathology)]); 10 patients, P_00005 with two films
CBIS_FILMS = [("P_00005", "00005_RIGHT_CC", [("1", "1"), ("2", "0")]),
              ("P_00005", "00005_RIGHT_MLO", [("1", "MALIGNANT")])]
CBIS_FILMS += [(f"P_{n:05d}", f"{n:05d}_LEFT_CC", [("1", "0")]) for n in range(7, 34, 3)]


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def film(seed: int, dtype: type = np.uint8) -> np.ndarray:
    """Noise over the full range (the reader refuses blank images); uint16 ones are 12-bit."""
    top = 4096 if dtype == np.uint16 else 256
    return np.random.default_rng(seed).integers(0, top, SHAPE, dtype=dtype)


def dots(seed: int, value: int = 255) -> np.ndarray:
    """uint8 mask with a few single-pixel "calcifications" set to `value`."""
    mask = np.zeros(SHAPE, np.uint8)
    rng = np.random.default_rng(1000 + seed)
    mask[rng.integers(0, SHAPE[0], 5), rng.integers(0, SHAPE[1], 5)] = value
    return mask


def make_inbreast(folder: Path) -> None:
    """16-bit images, masks of the same name, the ';'-separated ISO-8859-1 table."""
    for seed, (_, name, _, _, micros) in enumerate(INBREAST_ROWS):
        write_png(folder / "AllPng" / f"{name}.png", film(seed, np.uint16))
        if micros:
            write_png(folder / "Masks" / f"{name}.png", dots(seed))
    (folder / "csv").mkdir()
    with (folder / "csv" / deepmica.CSV_NAMES["INbreast"]).open("w", newline="", encoding="iso-8859-1") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(INBREAST_HEADER)
        for patient, name, side, view, micros in INBREAST_ROWS:
            writer.writerow([patient, 50, side, view, 201001, name, 2, "4a", "", micros, "", "",
                             "calcificações"])


def make_cbis(folder: Path) -> None:
    """8-bit films, one mask per row, the ','-separated table (file names with .png)."""
    rows = []
    for seed, (patient, stem, masks) in enumerate(CBIS_FILMS):
        write_png(folder / "AllPng" / f"{stem}.png", film(100 + seed))
        for suffix, pathology in masks:
            write_png(folder / "Masks" / f"{stem}_{suffix}.png", dots(100 + seed + int(suffix)))
            rows.append([f"{stem}.png", f"{stem}_{suffix}.png", patient, pathology])
    (folder / "csv").mkdir()
    with (folder / "csv" / deepmica.CSV_NAMES["CBIS_DDSM"]).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name_complete", "file_name_mask", "patient_id", "pathology"])
        writer.writerows(rows)


def make_datasets(root: Path) -> Path:
    """`root/Datasets` with both subsets; returns it."""
    make_inbreast(root / "Datasets" / "INbreast")
    make_cbis(root / "Datasets" / "CBIS_DDSM")
    return root / "Datasets"


MICROS = sorted(name for _, name, *_, micros in INBREAST_ROWS if micros)
FILMS = sorted(stem for _, stem, _ in CBIS_FILMS)


# -- listing, pixels, masks, labels ------------------------------------------------------------
def test_registered() -> None:
    assert LOADERS["deepmica-png"] is DeepMiCaPng


def test_inbreast_images_masks_and_labels(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    ds = load_dataset("deepmica-png", data / "INbreast")
    assert ds.ids == MICROS and "30000000" not in ds.ids  # only the Micros = X rows
    assert dict(zip(ds.ids, ds.patient_ids, strict=True))["20586904"] == "3"
    seed = [name for _, name, *_ in INBREAST_ROWS].index("20586905")
    s = ds["20586905"]
    assert s.image.dtype == np.float32 and s.image.shape == SHAPE
    assert np.allclose(s.image, film(seed, np.uint16) / 4095.0, atol=1e-6)  # 16-bit PNG, 12-bit values
    assert set(s.masks) == {"calcification"} and s.masks["calcification"].dtype == bool
    assert np.array_equal(s.masks["calcification"], dots(seed) > 0)
    assert s.labels == {"benign": None, "malignant": None}
    assert s.meta.laterality == "R" and s.meta.view == "CC" and s.meta.sources["laterality"] == "filename"
    assert s.extra == {"subset": "INbreast", "image_type": "DM", "mask_files": ["20586905.png"],
                       "birads": "4a"}


def test_cbis_masks_are_united_and_labels_aggregated(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    ds = load_dataset("deepmica-png", data / "CBIS_DDSM")
    assert ds.ids == FILMS
    labels = {ref.image_id: ref.labels for ref in ds.refs}
    assert labels["00005_RIGHT_CC"] == {"benign": 1, "malignant": 1}  # rows 1 and 0
    assert labels["00005_RIGHT_MLO"] == {"benign": 0, "malignant": 1}  # TCIA's word
    assert labels["00007_LEFT_CC"] == {"benign": 1, "malignant": 0}
    s = ds["00005_RIGHT_CC"]
    assert s.patient_id == "P_00005" and s.image.dtype == np.float32
    assert np.allclose(s.image, film(100) / 255.0, atol=1e-6)
    united = (dots(101) > 0) | (dots(102) > 0)
    assert np.array_equal(s.masks["calcification"], united) and united.sum() > (dots(101) > 0).sum()
    assert s.meta.laterality == "R" and s.meta.view == "CC"  # from the file name
    assert s.extra == {"subset": "CBIS_DDSM", "image_type": "FILM",
                       "mask_files": ["00005_RIGHT_CC_1.png", "00005_RIGHT_CC_2.png"], "pathology": ["1", "0"]}


def test_zero_one_masks_and_names_without_suffix(tmp_path: Path) -> None:
    folder = tmp_path / "CBIS_DDSM"
    write_png(folder / "AllPng" / "00001_LEFT_MLO.png", film(0))
    write_png(folder / "Masks" / "00001_LEFT_MLO_1.png", dots(0, value=1))
    (folder / "csv").mkdir(parents=True)
    (folder / "csv" / "CBIS_DDSM.csv").write_text(
        "file_name_complete,file_name_mask,patient_id,pathology\n00001_LEFT_MLO,00001_LEFT_MLO_1,1,1.0\n")
    s = load_dataset("deepmica-png", folder)[0]
    assert np.array_equal(s.masks["calcification"], dots(0) > 0)  # 0/1 mask, not read as empty
    assert s.labels == {"benign": 0, "malignant": 1} and s.patient_id == "1"


def test_listing_reads_no_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_datasets(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(deepmica, "read_image", lambda path: calls.append(path))
    monkeypatch.setattr(deepmica, "read_binary_mask", lambda path, threshold=127: calls.append(path))
    assert len(load_dataset("deepmica-png", data)) == len(MICROS) + len(FILMS) and calls == []


def test_mask_of_another_size_is_refused_on_load(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    write_png(data / "INbreast" / "Masks" / f"{MICROS[0]}.png", np.zeros((SHAPE[0], SHAPE[1] + 1), np.uint8))
    ds = load_dataset("deepmica-png", data / "INbreast")
    with pytest.raises(MammoInputError, match="mask shape"):
        ds[MICROS[0]]


# -- roots and subsets -------------------------------------------------------------------------
def test_root_and_subset_choices(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    both = load_dataset("deepmica-png", data)
    assert both.ids == sorted([f"CBIS_DDSM__{s}" for s in FILMS] + [f"INbreast__{n}" for n in MICROS])
    assert "INbreast__3" in both.patient_ids and "CBIS_DDSM__P_00005" in both.patient_ids
    assert both["INbreast__20586905"].patient_id == "INbreast__3"
    assert DeepMiCaPng(data, subset="all").ids == both.ids
    assert DeepMiCaPng(data, subset="INbreast").ids == MICROS  # one subset: the seed's own names
    assert DeepMiCaPng(data, subset="cbis-ddsm").ids == FILMS
    assert DeepMiCaPng(data / "CBIS_DDSM", subset="CBIS_DDSM").ids == FILMS
    with pytest.raises(MammoInputError, match="is the INbreast folder.*Datasets folder"):
        DeepMiCaPng(data / "INbreast", subset="all")
    with pytest.raises(MammoInputError, match="subset must be one of INbreast, CBIS_DDSM, all"):
        DeepMiCaPng(data, subset="ddsm")
    shutil.rmtree(data / "INbreast")
    assert load_dataset("deepmica-png", data).ids == FILMS  # only what is there, unprefixed
    with pytest.raises(MammoInputError, match="no INbreast folder under.*Expected layout"):
        DeepMiCaPng(data, subset="all")


# -- splits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("subset", ["INbreast", "CBIS_DDSM"])
def test_seed_split_is_patient_level_and_complete(tmp_path: Path, subset: str) -> None:
    data = make_datasets(tmp_path)
    whole = load_dataset("deepmica-png", data / subset)
    parts = {name: load_dataset("deepmica-png", data / subset, split=name) for name in ("train", "val", "test")}
    assert all(len(part) > 0 for part in parts.values())
    ids = [i for part in parts.values() for i in part.ids]
    assert sorted(ids) == whole.ids  # every image exactly once
    patients = {name: set(part.patient_ids) for name, part in parts.items()}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    assert load_dataset("deepmica-png", data / subset, split="test").ids == parts["test"].ids  # repeatable
    n = len(set(whole.patient_ids))
    assert len(patients["test"]) == n - int(0.9 * n)  # the seed's 90/10 draw over patients


def test_seed_split_of_both_subsets_is_the_union(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    for name in ("train", "val", "test"):
        one = [f"{s}__{i}" for s in ("INbreast", "CBIS_DDSM") for i in DeepMiCaPng(data, name, s).ids]
        assert load_dataset("deepmica-png", data, split=name).ids == sorted(one)


def test_seed_split_matches_the_seed_scripts(tmp_path: Path) -> None:
    """Redo the seed's own steps (pandas + scikit-learn, as in its split.py files) on the fixture."""
    pd = pytest.importorskip("pandas")
    model_selection = pytest.importorskip("sklearn.model_selection")
    data = make_datasets(tmp_path)

    def seed_draw(table: pd.DataFrame, group: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        splitter = model_selection.GroupShuffleSplit(train_size=0.90, n_splits=2, random_state=0)
        rest_idx, test_idx = next(splitter.split(table, groups=table[[group]]))
        rest = table.iloc[rest_idx]
        train_idx, val_idx = next(splitter.split(rest, groups=rest[[group]]))
        return rest.iloc[train_idx], rest.iloc[val_idx], table.iloc[test_idx]

    inbreast = pd.read_csv(data / "INbreast" / "csv" / "INbreast_table_noClusters.csv", delimiter=";",
                           encoding="ISO-8859-1")
    inbreast["Micros"] = inbreast["Micros"].replace("X", 1).replace(np.nan, 0)
    table = inbreast[inbreast["Micros"] == 1].copy()
    table["Patient ID"] = table["Patient ID"].astype("int")
    expected = dict(zip(("train", "val", "test"), seed_draw(table, "Patient ID"), strict=True))
    for name, part in expected.items():
        ids = sorted(str(int(f)) for f in part["File Name"])
        assert load_dataset("deepmica-png", data / "INbreast", split=name).ids == ids, name

    cbis = pd.read_csv(data / "CBIS_DDSM" / "csv" / "CBIS_DDSM.csv")
    expected = dict(zip(("train", "val", "test"), seed_draw(cbis, "patient_id"), strict=True))
    for name, part in expected.items():
        ids = sorted({Path(f).stem for f in part["file_name_complete"]})
        assert load_dataset("deepmica-png", data / "CBIS_DDSM", split=name).ids == ids, name


def test_patient_ids_sort_as_numbers_when_they_are() -> None:
    assert deepmica.patient_sort_key(["10", "2"]) == {"10": 10, "2": 2}
    assert deepmica.patient_sort_key(["P_10", "2"]) == {"P_10": "P_10", "2": "2"}
    split = deepmica.seed_split(["2", "10", "3", "4"])
    assert sorted(split.values()) == ["test", "train", "train", "val"]
    with pytest.raises(MammoInputError, match="at least 3 patients"):
        deepmica.seed_split(["1", "2", "2"])


def test_split_csv_and_errors(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    table = tmp_path / "mine.csv"
    table.write_text("image_id,patient_id,split\nINbreast__20586900,INbreast__1,val\n"
                     "CBIS_DDSM__00007_LEFT_CC,CBIS_DDSM__P_00007,test\n")
    assert load_dataset("deepmica-png", data, split=table).ids == ["CBIS_DDSM__00007_LEFT_CC",
                                                                    "INbreast__20586900"]
    assert load_dataset("deepmica-png", data, split=f"{table}:val").ids == ["INbreast__20586900"]
    table.write_text("image_id,patient_id,split\n20586900,1,val\n")  # unprefixed: not in the mixed set
    with pytest.raises(MammoInputError, match="not in the dataset"):
        load_dataset("deepmica-png", data, split=table)
    tiny = tmp_path / "tiny" / "CBIS_DDSM"
    shutil.copytree(data / "CBIS_DDSM", tiny)
    (tiny / "csv" / "CBIS_DDSM.csv").write_text(
        "file_name_complete,file_name_mask,patient_id,pathology\n00007_LEFT_CC.png,00007_LEFT_CC_1.png,P_7,0\n")
    assert len(load_dataset("deepmica-png", tiny)) == 1
    with pytest.raises(MammoInputError, match="CBIS_DDSM: the seed's .*at least 3 patients"):
        load_dataset("deepmica-png", tiny, split="test")


# -- wrong layouts -----------------------------------------------------------------------------
def test_wrong_layouts_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MammoInputError, match="no INbreast or CBIS_DDSM folder.*Expected layout"):
        load_dataset("deepmica-png", tmp_path / "empty")
    write_png(tmp_path / "loose" / "AllPng" / "a.png", film(0))
    with pytest.raises(MammoInputError, match="holds AllPng/ but no csv/.*subset is unknown"):
        load_dataset("deepmica-png", tmp_path / "loose")
    data = make_datasets(tmp_path)
    shutil.rmtree(data / "CBIS_DDSM" / "Masks")
    with pytest.raises(MammoInputError, match=r"missing under .*CBIS_DDSM/Masks.*Expected layout"):
        load_dataset("deepmica-png", data)
    (data / "INbreast" / "csv" / "INbreast_table_noClusters.csv").unlink()
    with pytest.raises(MammoInputError, match=r"missing under .*csv/INbreast_table_noClusters\.csv"):
        load_dataset("deepmica-png", data / "INbreast", split=None)


def test_missing_files_and_bad_rows_are_named(tmp_path: Path) -> None:
    data = make_datasets(tmp_path)
    (data / "INbreast" / "Masks" / f"{MICROS[3]}.png").unlink()
    with pytest.raises(MammoInputError, match=rf"1 problems .*no file Masks/{MICROS[3]}\.png.*Expected"):
        load_dataset("deepmica-png", data / "INbreast")
    table = data / "CBIS_DDSM" / "csv" / "CBIS_DDSM.csv"
    text = table.read_text()
    table.write_text(text.replace("P_00007,0", "P_00007,BENIGNISH"))
    with pytest.raises(MammoInputError, match="unknown pathology 'BENIGNISH'"):
        load_dataset("deepmica-png", data / "CBIS_DDSM")
    table.write_text(text.replace("P_00007", "removed"))
    with pytest.raises(MammoInputError, match="00007_LEFT_CC.png: no patient id"):
        load_dataset("deepmica-png", data / "CBIS_DDSM")
    table.write_text(text.replace("patient_id", "patient"))
    with pytest.raises(MammoInputError, match=r"missing columns \['patient id'\]"):
        load_dataset("deepmica-png", data / "CBIS_DDSM")
