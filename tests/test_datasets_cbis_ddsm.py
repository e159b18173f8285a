"""`cbis-ddsm` on a small fixture in the TCIA layout: description CSVs + `CBIS-DDSM/` DICOM tree
with renamed UID folders and files (1-1.dcm, 1-2.dcm), ROI masks next to their crops."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

import mammo.datasets.cbis_ddsm as cbis
from mammo.datasets import LOADERS, CbisDDSM, load_dataset
from mammo.errors import MammoInputError

SHAPE = (64, 48)
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
UID = "1.3.6.1.4.1.9590.100.1.2."


def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """An uncompressed MONOCHROME2 MG DICOM holding `pixels` (uint8 or uint16, (H, W))."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MG", path.parts[-4]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = 8 if pixels.dtype == np.uint8 else 12
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def film(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """uint16 12-bit noise (full range: the reader refuses blank images)."""
    return np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)


def box(y: slice, x: slice, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """uint8 0/255 mask, 255 in [y, x]."""
    mask = np.zeros(shape, np.uint8)
    mask[y, x] = 255
    return mask


def csv_path(series: str, name: str) -> str:
    """A CSV file path as TCIA writes it (UID folders), not as the files are stored."""
    return f"{series}/{UID}4221127{len(series)}/{UID}3423861{len(name)}/{name}"


def row(series: str, abn: int, side: str, view: str, pathology: str, *details: str) -> list[str]:
    patient = "_".join(series.split("_")[1:3])
    return [patient, "3", side, view, str(abn), "mass" if series.startswith("Mass") else "calcification",
            *details, "4", pathology, "5", csv_path(series, "000000.dcm"),
            csv_path(f"{series}_{abn}", "000000.dcm"), csv_path(f"{series}_{abn}", "000001.dcm") + "\n"]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


MASK_1 = box(slice(10, 20), slice(5, 15))
MASK_2 = box(slice(40, 50), slice(30, 40))


def make_cbis(root: Path) -> Path:
    """Four mammograms: two mass-train, one mass-test, one calc-train; returns the DICOM tree."""
    tree = root / "CBIS-DDSM"
    full = "07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm"
    roi = "09-06-2017-DDSM-30176/1.000000-ROI mask images-94682"
    # P_00001: two abnormalities; 1: crop is 1-1.dcm, mask 1-2.dcm; 2: mask 1-1.dcm, crop in its own series
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC" / full, film(1))
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC_1" / roi / "1-1.dcm", film(2, (20, 16)))
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC_1" / roi / "1-2.dcm", MASK_1)
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC_2" / roi / "1-1.dcm", MASK_2)
    write_dicom(tree / "Mass-Training_P_00001_LEFT_CC_2" / "x" / "1.000000-cropped images-1" / "1-1.dcm",
                film(3, (24, 30)))
    # P_00004: a single DICOM in the ROI folder, one row short of the mammogram (resized)
    write_dicom(tree / "Mass-Training_P_00004_RIGHT_MLO" / full, film(4))
    write_dicom(tree / "Mass-Training_P_00004_RIGHT_MLO_1" / roi / "1-1.dcm",
                box(slice(10, 20), slice(0, 8), (63, 48)))
    # P_00017: the "crop" has the mammogram's size too; the two-valued file is the mask
    write_dicom(tree / "Mass-Test_P_00017_LEFT_MLO" / full, film(5))
    write_dicom(tree / "Mass-Test_P_00017_LEFT_MLO_1" / roi / "1-1.dcm", film(6))
    write_dicom(tree / "Mass-Test_P_00017_LEFT_MLO_1" / roi / "1-2.dcm", MASK_2)
    write_dicom(tree / "Calc-Training_P_00005_RIGHT_CC" / full, film(7))
    write_dicom(tree / "Calc-Training_P_00005_RIGHT_CC_1" / roi / "1-2.dcm", MASK_1)
    write_csv(root / "mass_case_description_train_set.csv", MASS_HEADER, [
        row("Mass-Training_P_00001_LEFT_CC", 1, "LEFT", "CC", "MALIGNANT", "IRREGULAR", "SPICULATED"),
        row("Mass-Training_P_00001_LEFT_CC", 2, "LEFT", "CC", "BENIGN", "OVAL", "CIRCUMSCRIBED"),
        row("Mass-Training_P_00004_RIGHT_MLO", 1, "RIGHT", "MLO", "BENIGN_WITHOUT_CALLBACK", "ROUND",
            "OBSCURED")])
    write_csv(root / "mass_case_description_test_set.csv", MASS_HEADER, [
        row("Mass-Test_P_00017_LEFT_MLO", 1, "LEFT", "MLO", "BENIGN", "LOBULATED", "ILL_DEFINED")])
    write_csv(root / "calc_case_description_train_set.csv", CALC_HEADER, [
        row("Calc-Training_P_00005_RIGHT_CC", 1, "RIGHT", "CC", "MALIGNANT", "AMORPHOUS", "CLUSTERED")])
    write_csv(root / "calc_case_description_test_set.csv", CALC_HEADER, [])
    return tree


def test_listing_splits_and_labels(tmp_path: Path) -> None:
    make_cbis(tmp_path)
    assert LOADERS["cbis-ddsm"] is CbisDDSM
    ds = load_dataset("cbis-ddsm", tmp_path)
    assert ds.ids == [
        "Mass-Test_P_00017_LEFT_MLO", "Mass-Training_P_00001_LEFT_CC", "Mass-Training_P_00004_RIGHT_MLO"]
    assert ds.patient_ids == ["P_00017", "P_00001", "P_00004"]
    assert [ref.labels for ref in ds.refs] == [{"benign": 1, "malignant": 0}, {"benign": 1, "malignant": 1},
                                               {"benign": 1, "malignant": 0}]
    assert load_dataset("cbis-ddsm", tmp_path, split="train").ids == ds.ids[1:]
    assert load_dataset("cbis-ddsm", tmp_path, split="test").ids == ds.ids[:1]
    calc = CbisDDSM(tmp_path, abnormality="calc")
    assert calc.ids == ["Calc-Training_P_00005_RIGHT_CC"]
    assert calc.refs[0].labels == {"benign": 0, "malignant": 1}
    assert len(CbisDDSM(tmp_path, abnormality="all")) == 4
    with pytest.raises(MammoInputError, match="no images found"):  # the calc test CSV has no rows
        CbisDDSM(tmp_path, split="test", abnormality="calc")
    assert cbis.PATHOLOGY_LABELS["BENIGN_WITHOUT_CALLBACK"] == (1, 0)


def test_union_of_abnormalities_and_roi_vs_crop(tmp_path: Path) -> None:
    make_cbis(tmp_path)
    s = load_dataset("cbis-ddsm", tmp_path)["Mass-Training_P_00001_LEFT_CC"]
    assert s.image.shape == SHAPE and s.image.dtype == np.float32
    assert np.array_equal(s.masks["lesion"], (MASK_1 > 0) | (MASK_2 > 0)) and s.masks["lesion"].sum() == 200
    assert s.labels == {"benign": 1, "malignant": 1} and s.patient_id == "P_00001"
    assert s.meta.laterality == "L" and s.meta.view == "CC"
    assert s.meta.sources["laterality"] == "filename"  # from the CSV, not guessed from the pixels
    assert s.extra["image_type"] == "FILM" and s.extra["official_split"] == "train"
    assert s.extra["abnormalities"] == [
        {"id": 1, "pathology": "MALIGNANT", "type": "mass", "assessment": 4, "subtlety": 5,
         "breast_density": 3, "mass_shape": "IRREGULAR", "mass_margins": "SPICULATED"},
        {"id": 2, "pathology": "BENIGN", "type": "mass", "assessment": 4, "subtlety": 5,
         "breast_density": 3, "mass_shape": "OVAL", "mass_margins": "CIRCUMSCRIBED"}]
    # the crop has the mammogram's size: the two-valued DICOM is the mask
    t = load_dataset("cbis-ddsm", tmp_path, split="test")[0]
    assert np.array_equal(t.masks["lesion"], MASK_2 > 0) and t.extra["official_split"] == "test"


def test_mask_one_row_short_is_resized_nearest(tmp_path: Path) -> None:
    make_cbis(tmp_path)
    s = load_dataset("cbis-ddsm", tmp_path)["Mass-Training_P_00004_RIGHT_MLO"]
    assert s.labels == {"benign": 1, "malignant": 0} and s.meta.laterality == "R"
    # nearest 63 -> 64 rows: output row y shows input row floor(y * 63 / 64), so rows 10..19 -> 11..20
    assert np.array_equal(s.masks["lesion"], box(slice(11, 21), slice(0, 8)) > 0)


def test_calc_row_details(tmp_path: Path) -> None:
    make_cbis(tmp_path)
    s = CbisDDSM(tmp_path, split="train", abnormality="calc")[0]
    assert s.extra["abnormalities"][0]["calc_type"] == "AMORPHOUS"
    assert s.extra["abnormalities"][0]["calc_distribution"] == "CLUSTERED"
    assert np.array_equal(s.masks["lesion"], MASK_1 > 0)


def test_listing_reads_no_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cbis(tmp_path)
    calls: list[Path] = []
    monkeypatch.setattr(cbis, "read_image", lambda path: calls.append(path))
    monkeypatch.setattr(cbis, "read_stored_pixels", lambda path: calls.append(path))
    assert len(load_dataset("cbis-ddsm", tmp_path)) == 3 and calls == []


def test_missing_csv_and_series_folder(tmp_path: Path) -> None:
    tree = make_cbis(tmp_path)
    (tmp_path / "mass_case_description_test_set.csv").unlink()
    with pytest.raises(MammoInputError, match="missing under .*mass_case_description_test_set.csv.*Expected"):
        load_dataset("cbis-ddsm", tmp_path)
    assert len(load_dataset("cbis-ddsm", tmp_path, split="train")) == 2  # the test CSV is not needed
    shutil.rmtree(tree / "Mass-Training_P_00001_LEFT_CC_2")
    with pytest.raises(MammoInputError, match="no series folder Mass-Training_P_00001_LEFT_CC_2.*Expected"):
        load_dataset("cbis-ddsm", tmp_path, split="train")


def test_split_arguments(tmp_path: Path) -> None:
    make_cbis(tmp_path)
    with pytest.raises(MammoInputError, match="only official train and test"):
        load_dataset("cbis-ddsm", tmp_path, split="val")
    table = tmp_path / "split.csv"
    table.write_text("image_id,patient_id,split\nMass-Training_P_00004_RIGHT_MLO,P_00004,val\n"
                     "Mass-Test_P_00017_LEFT_MLO,P_00017,test\n")
    val = load_dataset("cbis-ddsm", tmp_path, split=f"{table}:val")
    assert val.ids == ["Mass-Training_P_00004_RIGHT_MLO"]
    table.write_text("image_id,patient_id,split\nMass-Test_P_00017_LEFT_MLO,P_99999,val\n")
    with pytest.raises(MammoInputError, match="other patient ids"):
        load_dataset("cbis-ddsm", tmp_path, split=table)
    with pytest.raises(MammoInputError, match="abnormality must be one of mass, calc, all"):
        CbisDDSM(tmp_path, abnormality="masses")


def test_bad_pathology_and_wrong_roi(tmp_path: Path) -> None:
    tree = make_cbis(tmp_path)
    # the ROI folder holds only the crop: nothing of the mammogram's size
    for path in (tree / "Mass-Training_P_00001_LEFT_CC_1").rglob("1-2.dcm"):
        path.unlink()
    ds = load_dataset("cbis-ddsm", tmp_path, split="train")
    with pytest.raises(MammoInputError, match=r"_CC_1: no DICOM there has about the mammogram's size \(64,"):
        ds["Mass-Training_P_00001_LEFT_CC"]
    write_csv(tmp_path / "mass_case_description_test_set.csv", MASS_HEADER, [
        row("Mass-Test_P_00017_LEFT_MLO", 1, "LEFT", "MLO", "UNPROVEN", "OVAL", "OBSCURED")])
    with pytest.raises(MammoInputError, match="unknown pathology 'UNPROVEN'"):
        load_dataset("cbis-ddsm", tmp_path, split="test")
