"""DICOM outputs (issue 19): SEG and Comprehensive 3D SR written for the example DICOMs, read
back with highdicom and pydicom, compared with the PNG masks and findings, and validated with
dciodvfy (dicom3tools; `.ci/run` installs it, CI=true fails without it)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from tests.conftest import assert_ok, run_python

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's "Error" lines for `path` (skip without dciodvfy, fail under CI=true)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        message = "dciodvfy (Debian package dicom3tools) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, cbis_dicoms: list[Path]) -> dict[str, Path]:
    """`mammo predict --dicom-seg --dicom-sr --seg-fractional` with cascade (tissue + lesion masks)
    and with box-lesion (one finding), on example DICOM 1-130: pipeline -> output folder."""
    out = tmp_path_factory.mktemp("dicom_out")
    folders = {}
    for name, extra in (("cascade", ["--probabilities"]), ("box-lesion:plain", ["--box", "1400,2200,1800,2600"])):
        target = out / name.replace(":", "_")
        assert_ok(run_python(["-m", "mammo", "predict", "--pipeline", name, *extra, "--dicom-seg", "--dicom-sr",
                              "--seg-fractional", "--out", str(target), "--quiet", str(cbis_dicoms[0])]))
        folders[name] = next(target.iterdir())
    return folders


def test_seg_masks_equal_the_png_masks_and_reference_the_source(written: dict[str, Path],
                                                                cbis_dicoms: list[Path]) -> None:
    import highdicom as hd

    source = pydicom.dcmread(cbis_dicoms[0], stop_before_pixels=True)
    folder = written["cascade"]
    seg = hd.seg.segread(folder / "seg.dcm")
    assert seg.SOPClassUID == SEG_SOP_CLASS and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    labels = {d.SegmentNumber: d.SegmentLabel for d in seg.SegmentSequence}
    assert set(labels.values()) == {"adipose", "fibroglandular", "pectoral", "lesion"} | (
        {"breast"} if (folder / "mask_breast.png").exists() else set())
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=sorted(labels))[0]
    for index, number in enumerate(sorted(labels)):
        png = cv2.imread(str(folder / f"mask_{labels[number]}.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert np.array_equal(pixels[..., index] > 0, png), labels[number]
    codes = {d.SegmentLabel: d.SegmentedPropertyTypeCodeSequence[0].CodeValue for d in seg.SegmentSequence}
    assert codes["lesion"] == "4147007" and codes["pectoral"] == "60005003"  # SNOMED CT: mass, pectoralis major
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    sha256 = json.loads((folder / "scores.json").read_text())["weights_sha256"]
    assert algorithm.AlgorithmName == "mammo cascade" and algorithm.AlgorithmVersion == sha256[:64] != ""


def test_fractional_seg_holds_the_probability_map(written: dict[str, Path], cbis_dicoms: list[Path]) -> None:
    import highdicom as hd

    folder = written["cascade"]
    seg = hd.seg.segread(folder / "seg_fractional.dcm")
    assert seg.SegmentationType == "FRACTIONAL" and seg.MaximumFractionalValue == 255
    source_uid = pydicom.dcmread(cbis_dicoms[0], stop_before_pixels=True).SOPInstanceUID
    number = next(d.SegmentNumber for d in seg.SegmentSequence if d.SegmentLabel == "lesion")
    stored = seg.get_pixels_by_source_instance([source_uid], segment_numbers=[number],
                                               rescale_fractional=False)[0, ..., 0]
    png = cv2.imread(str(folder / "prob_lesion.png"), cv2.IMREAD_GRAYSCALE).astype(int)  # 255 x probability
    assert stored.shape == png.shape and np.abs(stored.astype(int) - png).max() <= 1


def test_sr_reports_the_finding_on_the_source_image(written: dict[str, Path], cbis_dicoms: list[Path]) -> None:
    import highdicom as hd

    source = pydicom.dcmread(cbis_dicoms[0], stop_before_pixels=True)
    folder = written["box-lesion:plain"]
    sr = hd.sr.srread(folder / "sr.dcm")
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID and sr.PatientName == source.PatientName
    evidence = {sop.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}
    seg_uid = pydicom.dcmread(folder / "seg.dcm", stop_before_pixels=True).SOPInstanceUID
    assert {source.SOPInstanceUID, seg_uid} <= evidence
    report = sr.content  # TID 1500
    groups = hd.sr.MeasurementReport.from_sequence(report).get_planar_roi_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group.roi is not None and group.roi.GraphicType == "POLYLINE"
    image_ref = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert image_ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    points = np.asarray(group.roi.GraphicData, np.float32).reshape(-1, 2)
    assert np.array_equal(points[0], points[-1]) and len(points) >= 4  # closed outline
    x0, y0, x1, y1 = 1400, 2200, 1800, 2600
    assert (points[:, 0] >= x0 - 100).all() and (points[:, 0] <= x1 + 100).all()
    assert (points[:, 1] >= y0 - 100).all() and (points[:, 1] <= y1 + 100).all()
    row = next(csv.DictReader(open(folder / "findings.csv")))
    by_name = {m.name.meaning: m for m in group.get_measurements()}
    assert by_name["Area"].value == pytest.approx(float(row["area_px"]))
    assert by_name["Area"].unit.value == "{pixels}"  # the CBIS file states no pixel spacing
    assert by_name["Diameter"].value == pytest.approx(float(row["diameter_px"]), abs=0.06)  # the CSV has 0.1 px


def test_sr_has_image_scores_and_qc_flags(tmp_path: Path) -> None:
    """Image-level scores as measurements, QC flags as qualitative evaluations, sizes in mm from
    the DICOM's spacing (synthetic result on a synthetic MG DICOM); its SR and SEG validate."""
    import highdicom as hd

    from mammo.export_dicom import read_source, segmentation
    from mammo.export_sr import structured_report
    from mammo.io import read_image
    from mammo.pipelines.base import Result
    from tests.dicom_factory import make_dicom

    path = make_dicom(tmp_path, None, "tiny.dcm", ImageLaterality="L")
    image, meta = read_image(path)
    meta.qc = ["saturated"]
    mask = np.zeros(image.shape, bool)
    mask[10:20, 5:15] = True
    result = Result(masks={"lesion": mask}, scores={"malignant": 0.7, "benign": 0.3}, pipeline="test",
                    weights_sha256="ab" * 32)
    sr = structured_report(read_source(path), meta, result)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    back = hd.sr.srread(tmp_path / "sr.dcm")
    report = hd.sr.MeasurementReport.from_sequence(back.content)
    image_group = report.get_image_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in image_group.get_measurements()}
    assert values["Probability of cancer"] == pytest.approx(0.7) and values["Probability benign"] == pytest.approx(0.3)
    flags = [e.value.meaning for e in image_group.get_qualitative_evaluations()]
    assert flags == ["saturated"]
    roi = report.get_planar_roi_measurement_groups()[0]  # the lesion component, in mm (0.1 mm pixels)
    area = next(m for m in roi.get_measurements() if m.name.meaning == "Area")
    assert area.unit.value == "mm2" and area.value == pytest.approx(100 * 0.01)
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    # The SEG of a DICOM that states ImagerPixelSpacing only, as digital mammograms do.
    segmentation(read_source(path), meta, result).save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


@pytest.mark.parametrize("name", ["seg.dcm", "seg_fractional.dcm", "sr.dcm"])
@pytest.mark.parametrize("pipeline", ["cascade", "box-lesion:plain"])
def test_dciodvfy_finds_no_error(written: dict[str, Path], pipeline: str, name: str) -> None:
    path = written[pipeline] / name
    assert path.exists()
    assert dciodvfy_errors(path) == []


def test_png_input_gets_no_dicom_and_says_why(tmp_path: Path) -> None:
    image = tmp_path / "film.png"
    cv2.imwrite(str(image), np.tile(np.linspace(0, 250, 48, dtype=np.uint8), (64, 1)))
    proc = run_python(["-m", "mammo", "predict", "--pipeline", "breast", "--dicom-seg", "--dicom-sr",
                       "--out", str(tmp_path / "out"), "--quiet", str(image)])
    assert_ok(proc)
    assert "is a PNG file, not DICOM" in proc.stderr and "no DICOM was written" in proc.stderr
    folder = next((tmp_path / "out").iterdir())
    assert (folder / "mask_breast.png").exists() and not list(folder.glob("*.dcm"))


def test_eval_writes_dicom_per_image(tmp_path: Path, cbis_dicoms: list[Path]) -> None:
    folder = tmp_path / "dicoms"
    folder.mkdir()
    for path in cbis_dicoms[:2]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "eval"
    assert_ok(run_python(["-m", "eval", "--pipeline", "breast", "--dataset", f"dicom-folder:{folder}", "--out",
                          str(out), "--dicom", "--quiet", "--no-report", "--resamples", "20"]))
    for path in cbis_dicoms[:2]:
        files = sorted(p.name for p in (out / "dicom" / path.stem).iterdir())
        assert files == ["seg.dcm", "sr.dcm"], files
        seg = pydicom.dcmread(out / "dicom" / path.stem / "seg.dcm", stop_before_pixels=True)
        assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == \
            pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_app_downloads_have_no_dicom_for_a_png(tmp_path: Path) -> None:
    """The app's downloads for a PNG upload: the PNG masks and scores, no .dcm (no UIDs to reference)."""
    from mammo import demo

    image = tmp_path / "film.png"
    cv2.imwrite(str(image), np.tile(np.linspace(0, 250, 48, dtype=np.uint8), (64, 1)))
    files = demo.write_downloads(demo.predict_file(str(image), "breast"), tmp_path / "downloads")
    names = {Path(f).name for f in files}
    assert "mask_breast.png" in names and not any(name.endswith(".dcm") for name in names)
