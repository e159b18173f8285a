"""`ImageMeta` from a DICOM header: identifiers, spacing, orientation, modality, implant, intent.

Every attribute read here is optional: one that pydicom cannot convert (a damaged value, an
unknown VR) is left out, with a sentence in the caller's `notes` (`ImageMeta.warnings`).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.uid import UID

from mammo.io.acquisition import acquisition_from_tags
from mammo.io.meta import ImageMeta
from mammo.io.orientation import (
    laterality_from_value,
    view_from_code_sequence,
    view_from_patient_orientation,
    view_from_value,
)
from mammo.qc import FOR_PROCESSING_SOP_CLASSES

# What pydicom and its plugins raise on damaged data. Values are converted when first read, so
# reading an element can raise too (BytesLengthException: a length that does not fit its VR;
# NotImplementedError: an unknown VR).
DICOM_ERRORS = (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError,
                IndexError, TypeError, EOFError, OSError, OverflowError, struct.error,
                BytesLengthException)


def optional(ds: Dataset, keyword: str, notes: list[str]) -> Any:
    """ds.get(keyword) for an optional attribute; None when absent or unreadable (noted)."""
    try:
        return ds.get(keyword)
    except DICOM_ERRORS as exc:
        notes.append(f"{keyword} cannot be read ({type(exc).__name__}: {exc}); it was ignored")
        return None


def sop_class(ds: Dataset) -> UID | None:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID, else None (also if unreadable)."""
    notes: list[str] = []
    value = optional(ds, "SOPClassUID", notes)
    if not value:
        value = getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
    return UID(str(value)) if value else None


def modality_of(ds: Dataset, notes: list[str]) -> str | None:
    """Modality in upper case ("MG", "CT", ...), None when absent or unreadable."""
    value = str(optional(ds, "Modality", notes) or "").strip().upper()
    return value or None


def _implant(ds: Dataset, notes: list[str]) -> bool | None:
    """True/False from BreastImplantPresent, True for an "implant displaced" view, else None."""
    for item in optional(ds, "ViewModifierCodeSequence", notes) or []:
        if "implant" in str(item.get("CodeMeaning", "")).lower():
            return True
    value = str(optional(ds, "BreastImplantPresent", notes) or "").strip().upper()
    return {"YES": True, "NO": False}.get(value)


def _spacing(ds: Dataset, notes: list[str]) -> tuple[tuple[float, float] | None, str | None]:
    """(row, col) pixel spacing in mm and the tag it came from, or (None, None).

    A damaged value (not two positive numbers) is skipped with a sentence in `notes`.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = optional(ds, keyword, notes)
        if value in (None, ""):
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            row = col = math.nan
        if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
            return (row, col), keyword
        notes.append(f"{keyword} {str(value)!r} is not two positive numbers; it was ignored")
    return None, None


def _text(ds: Dataset, keyword: str, notes: list[str]) -> str | None:
    """A tag's string value, or None when absent, empty or unreadable."""
    value = optional(ds, keyword, notes)
    return str(value) if value not in (None, "") else None


def _orientation(ds: Dataset, meta: ImageMeta, notes: list[str]) -> None:
    """Fill meta.laterality / meta.view (and meta.sources) from the DICOM tags."""
    for keyword in ("ImageLaterality", "Laterality"):
        lat = laterality_from_value(optional(ds, keyword, notes))
        if lat is not None:
            meta.laterality, meta.sources["laterality"] = lat, keyword
            break
    readers = (("ViewPosition", view_from_value), ("ViewCodeSequence", view_from_code_sequence),
               ("PatientOrientation", view_from_patient_orientation))
    for keyword, reader in readers:
        try:
            view = reader(optional(ds, keyword, notes))
        except DICOM_ERRORS as exc:  # a damaged element inside a code sequence item
            notes.append(f"{keyword} cannot be read ({type(exc).__name__}: {exc}); it was ignored")
            continue
        if view is not None:
            meta.view, meta.sources["view"] = view, keyword
            break


def _presentation_intent(ds: Dataset, meta: ImageMeta, notes: list[str]) -> None:
    """PresentationIntentType, else FOR PROCESSING when the SOP class says so."""
    intent = _text(ds, "PresentationIntentType", notes)
    if intent is not None:
        meta.presentation_intent = intent.strip().upper()
        return
    sop = sop_class(ds)
    if sop is not None and str(sop) in FOR_PROCESSING_SOP_CLASSES:
        meta.presentation_intent, meta.sources["presentation_intent"] = "FOR PROCESSING", "SOPClassUID"


def build_meta(ds: Dataset, path: Path, pixels: np.ndarray, notes: list[str]) -> ImageMeta:
    """ImageMeta from the header (window fields and warnings are filled by the caller).

    Args:
        pixels: the stored grey pixels (H, W), for dtype and shape.
        notes: gets one sentence per optional attribute that could not be used.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spacing, spacing_tag = _spacing(ds, notes)
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    meta = ImageMeta(
        path=str(path), format="dicom", dtype=str(pixels.dtype),
        bits_stored=int(ds.get("BitsStored", pixels.dtype.itemsize * 8)),
        photometric=photometric if photometric.startswith("MONOCHROME") else "RGB",
        pixel_spacing_mm=spacing, manufacturer=_text(ds, "Manufacturer", notes),
        patient_id=_text(ds, "PatientID", notes), study_uid=_text(ds, "StudyInstanceUID", notes),
        sop_uid=_text(ds, "SOPInstanceUID", notes),
        original_shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        transfer_syntax=tsuid.name if isinstance(tsuid, UID) else None,
        modality=modality_of(ds, notes), breast_implant_present=_implant(ds, notes),
    )
    _presentation_intent(ds, meta, notes)
    meta.acquisition, tag = acquisition_from_tags(
        optional(ds, "ImageType", notes), sop_class(ds), _text(ds, "ConversionType", notes),
        meta.modality, meta.presentation_intent)
    if meta.acquisition is not None:
        meta.sources["acquisition"] = tag
    if spacing_tag is not None:
        meta.sources["pixel_spacing_mm"] = spacing_tag
    _orientation(ds, meta, notes)
    return meta
