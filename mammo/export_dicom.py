"""Results as DICOM, for viewers and PACS: a Segmentation (SEG) of a result's masks and a
Comprehensive 3D SR (TID 1500 Measurement Report) of its scores and findings (highdicom).

Both reference the source image (its Study, Series and SOP Instance UIDs) and copy its patient
and study attributes; nothing about the patient is invented. They are written only for a DICOM
input (`DicomOutputError` says why not for a PNG or JPEG): without the source's identifiers a
viewer could not place them on the image.

SEG: one segment per mask class, coded with SNOMED CT where a code fits (`SEGMENT_CODES`;
fibroglandular tissue has none in the DICOM code tables, so it gets a private "99MAMMO" code),
algorithm identification = "mammo <pipeline>" with the weights' sha256 as its version; BINARY,
or FRACTIONAL (probability x 255) for the probability maps when asked.

SR: one measurement group with the image-level scores (P(cancer) for "malignant", a private code
for the others) and the reader's QC flags as qualitative evaluations; one planar ROI group per
finding, its outline as a POLYLINE SCOORD on the source image, its area and largest diameter (mm
with a pixel spacing, else pixels) and its P(malignant).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.errors import MammoInputError
from mammo.io.meta import ImageMeta
from mammo.measure import mask_size
from mammo.pipelines.base import Finding, Result

PRIVATE_SCHEME = "99MAMMO"
MANUFACTURER = "mammo"
SERIES_NUMBER_SEG = 9001
SERIES_NUMBER_SR = 9002
MAX_DERIVED_FINDINGS = 20  # findings made from mask components, largest first
FINDING_CLASSES = ("lesion", "calcification")


class DicomOutputError(MammoInputError):
    """No DICOM output for this input (the message says why)."""


@dataclass(frozen=True)
class DicomRequest:
    """Which DICOM outputs to write: SEG of the masks, SR of the scores and findings, and the
    probability maps as a FRACTIONAL SEG too."""

    seg: bool = False
    sr: bool = False
    fractional: bool = False

    @property
    def wanted(self) -> bool:
        return self.seg or self.sr


@dataclass(frozen=True)
class Coded:
    """(value, scheme, meaning): one code, turned into highdicom's CodedConcept when written."""

    value: str
    scheme: str
    meaning: str

    def concept(self) -> Any:
        from highdicom.sr import CodedConcept

        return CodedConcept(self.value, self.scheme, self.meaning)


ANATOMY = Coded("91723000", "SCT", "Anatomical Structure")
TISSUE = Coded("85756007", "SCT", "Tissue")
ABNORMAL = Coded("49755003", "SCT", "Morphologically Abnormal Structure")
#: class -> (segmented property category, segmented property type)
SEGMENT_CODES: dict[str, tuple[Coded, Coded]] = {
    "breast": (ANATOMY, Coded("76752008", "SCT", "Breast")),
    "adipose": (TISSUE, Coded("55603005", "SCT", "Adipose tissue")),
    "fibroglandular": (TISSUE, Coded("fibroglandular", PRIVATE_SCHEME, "Fibroglandular tissue of breast")),
    "pectoral": (ANATOMY, Coded("60005003", "SCT", "Pectoralis major muscle")),
    "lesion": (ABNORMAL, Coded("4147007", "SCT", "Mass")),
    "calcification": (ABNORMAL, Coded("18115005", "SCT", "Pathologic calcification")),
}
FINDING_TYPES = {"lesion": Coded("4147007", "SCT", "Mass"),
                 "calcification": Coded("129769006", "SCT", "Calcification Cluster")}
PROBABILITY_OF_CANCER = Coded("111047", "DCM", "Probability of cancer")
AREA = Coded("42798000", "SCT", "Area")
DIAMETER = Coded("81827009", "SCT", "Diameter")
QUALITY_CONTROL = Coded("110002", "DCM", "Quality Control")
MAMMOGRAM = Coded("36625-2", "LN", "Mammogram")
DISPLAY_RGB = {"breast": (220, 220, 220), "adipose": (255, 220, 120), "fibroglandular": (255, 120, 200),
               "pectoral": (120, 200, 255), "lesion": (255, 40, 40), "calcification": (0, 230, 255)}


def not_dicom_reason(meta: ImageMeta) -> str:
    """Why a non-DICOM input gets no DICOM output."""
    return (f"{Path(meta.path).name or 'the input'} is a {meta.format.upper()} file, not DICOM: a DICOM SEG or SR "
            "must reference the source image's Study, Series and SOP Instance UIDs and copy its patient and "
            "study attributes, and it has none; no DICOM was written (the PNG masks and scores.json were)")


def check_source(meta: ImageMeta, shape: tuple[int, int] | None = None) -> None:
    """DicomOutputError unless the input was a DICOM and, with `shape`, its stored size is the
    masks' size."""
    if meta.format != "dicom":
        raise DicomOutputError(not_dicom_reason(meta))
    if shape is not None and tuple(meta.original_shape) != tuple(shape):
        raise DicomOutputError(f"the masks are {shape}, the DICOM stores {meta.original_shape}: no DICOM written")


#: Type 2 attributes of the Patient and General Study modules: present in every SEG/SR, empty
#: (value unknown) where the source lacks them; a value is only ever the source's own.
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")


def read_source(path: str | Path) -> Any:
    """The source DICOM's attributes (pixel data left out: SEG and SR need only its identifiers,
    geometry and patient/study modules), with absent Type 2 patient/study attributes empty."""
    import pydicom

    source = pydicom.dcmread(str(path), stop_before_pixels=True)
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def _algorithm(result: Result) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(name=f"mammo {result.pipeline}"[:64],
                                              family=codes.cid7162.ArtificialIntelligence,
                                              version=(result.weights_sha256 or "no weights")[:64])


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mammo")
    except PackageNotFoundError:
        return "unknown"


def segmentation(source: Any, meta: ImageMeta, result: Result, fractional: bool = False) -> Any:
    """The SEG dataset of `result` on `source` (see the module docstring).

    Args:
        source: the source DICOM's dataset (`read_source`).
        fractional: probability maps as FRACTIONAL segments (`result.probabilities`), instead
            of the binary masks.

    Raises:
        DicomOutputError: not a DICOM input, or nothing to segment.
    """
    import highdicom as hd

    maps = result.probabilities if fractional else result.masks
    names = [n for n in SEGMENT_CODES if n in maps] + sorted(n for n in maps if n not in SEGMENT_CODES)
    if not names:
        raise DicomOutputError(f"{result.pipeline} gives no {'probability map' if fractional else 'mask'}: "
                               "no DICOM SEG written")
    check_source(meta, next(iter(maps.values())).shape)
    algorithm = _algorithm(result)
    descriptions = []
    for number, name in enumerate(names, start=1):
        category, kind = SEGMENT_CODES.get(name, (ABNORMAL, Coded(name, PRIVATE_SCHEME, name)))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=category.concept(),
            segmented_property_type=kind.concept(), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*DISPLAY_RGB.get(name, (255, 255, 0)))))
    if fractional:
        pixels = np.stack([np.clip(maps[n], 0.0, 1.0).astype(np.float32) for n in names], axis=-1)[None]
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        pixels = np.stack([maps[n].astype(bool) for n in names], axis=-1)[None]
        kind = hd.seg.SegmentationTypeValues.BINARY
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=pixels, segmentation_type=kind, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBER_SEG, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=result.pipeline[:64],
        software_versions=_software_version(), device_serial_number="none",
        series_description=f"mammo {result.pipeline} {'probabilities' if fractional else 'masks'}"[:64],
        omit_empty_frames=False)
    _copy_orientation(seg, source)
    return seg


def _copy_orientation(dataset: Any, source: Any) -> None:
    """Patient Orientation is Type 2C in SEG's General Image module: the source's when it is a
    valid pair of directions (L, R, A, P, H, F; "A\\R"), else empty (Type 2: known to be unknown).
    CBIS-DDSM files hold "CC" there, which is not one."""
    value = source.get("PatientOrientation")
    values = [] if value is None else [value] if isinstance(value, str) else list(value)
    valid = len(values) == 2 and all(isinstance(v, str) and v and set(v) <= set("LRAPHF") for v in values)
    dataset.PatientOrientation = values if valid else ""


def result_findings(result: Result, meta: ImageMeta) -> list[tuple[str, Finding]]:
    """(class, finding) pairs: the pipeline's own `findings` (box prompts: "lesion"), else one
    per connected component of its lesion and calcification masks (largest first, at most
    `MAX_DERIVED_FINDINGS`), P(malignant) from the highest-scoring patch box overlapping it."""
    if result.findings:
        return [("lesion", f) for f in result.findings]
    found = []
    for cls in FINDING_CLASSES:
        mask = result.masks.get(cls)
        if mask is None or not mask.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        order = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:MAX_DERIVED_FINDINGS]
        for k, i in enumerate(order, start=1):
            x, y, w, h = (int(v) for v in stats[i, :4])
            crop = labels[y:y + h, x:x + w] == i
            size = mask_size(crop, meta.pixel_spacing_mm)
            scores = [p.score for p in result.patches if p.score is not None
                      and p.x0 < x + w and x < p.x1 and p.y0 < y + h and y < p.y1]
            found.append((cls, Finding(box=(x, y, x + w, y + h), mask=crop, offset=(y, x), area_px=size.area_px,
                                       diameter_px=size.diameter_px, area_mm2=size.area_mm2,
                                       diameter_mm=size.diameter_mm, malignancy=max(scores) if scores else None,
                                       malignancy_source=result.pipeline if scores else "",
                                       label=f"{cls} {k}")))
    return found


def outline_points(finding: Finding) -> np.ndarray:
    """The finding's outer contour as float32 (N, 2) (column, row) input pixels, closed (first
    point repeated last), as a DICOM POLYLINE; its box when the outline is empty."""
    contours, _ = cv2.findContours(finding.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        points = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)
        points += np.array([finding.offset[1], finding.offset[0]], np.float32)
    else:
        x0, y0, x1, y1 = finding.box
        points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    if len(points) < 3:  # a one- or two-pixel outline: its pixel square(s)
        x, y = points.min(axis=0)
        x1, y1 = points.max(axis=0) + 1
        points = np.array([[x, y], [x1, y], [x1, y1], [x, y1]], np.float32)
    return np.vstack([points, points[:1]])


def write_dicom_outputs(out_dir: Path, source_path: str | Path, meta: ImageMeta, result: Result, seg: bool = True,
                        sr: bool = True, fractional: bool = False) -> dict[str, Path]:
    """Write `seg.dcm` (and `seg_fractional.dcm` with `fractional`: the probability maps) and
    `sr.dcm` (referencing the SEG) into `out_dir`; returns name -> path of each file written.

    Raises:
        DicomOutputError: the input is not DICOM (nothing is written; the message says why).
    """
    check_source(meta)
    with warnings.catch_warnings():
        # highdicom checks the Patient's Name it copies; the source's value is kept as it is.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        return _write(out_dir, read_source(source_path), meta, result, seg, sr, fractional)


def _write(out_dir: Path, source: Any, meta: ImageMeta, result: Result, seg: bool, sr: bool,
           fractional: bool) -> dict[str, Path]:
    from mammo.export_sr import structured_report

    written: dict[str, Path] = {}
    datasets = []
    if seg:
        datasets.append(segmentation(source, meta, result))
        written["seg"] = out_dir / "seg.dcm"
        datasets[-1].save_as(written["seg"], enforce_file_format=True)
        if fractional and result.probabilities:
            written["seg_fractional"] = out_dir / "seg_fractional.dcm"
            segmentation(source, meta, result, fractional=True).save_as(written["seg_fractional"],
                                                                        enforce_file_format=True)
    if sr:
        written["sr"] = out_dir / "sr.dcm"
        structured_report(source, meta, result, datasets).save_as(written["sr"], enforce_file_format=True)
    return written
