"""`ImageMeta`: what was known about an image when it was read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ImageMeta:
    """Metadata of one mammogram as read by `mammo.io.read_image`.

    Attributes:
        path: source file path (str), or "" for an in-memory array.
        format: "dicom", "png", "jpeg", "bmp", "pgm", "tiff" or "array".
        dtype: dtype of the stored pixels before scaling to [0, 1] (e.g. "uint16").
        bits_stored: significant bits per pixel (DICOM BitsStored, else the dtype's width).
        photometric: "MONOCHROME1", "MONOCHROME2" or "RGB"; rasters are "MONOCHROME2".
        laterality: "L", "R" or None.
        view: "CC", "MLO", "ML", "LM", "XCCL", ... or None.
        sources: where each inferred field came from, e.g. {"laterality": "ImageLaterality",
            "view": "filename"}; values are tag names, "filename" or "image".
        pixel_spacing_mm: (row, col) spacing in mm, or None when unknown.
        presentation_intent: "FOR PRESENTATION", "FOR PROCESSING" or None.
        manufacturer: DICOM Manufacturer or None.
        patient_id, study_uid, sop_uid: DICOM identifiers where present.
        original_shape: (H, W) of the stored image.
        window: (center, width) applied to DICOM pixels, or None when none was applied.
        voi_lut_applied: True when a DICOM VOI LUT sequence (not a window) was applied.
        transfer_syntax: DICOM transfer syntax UID name, or None.
        modality: DICOM Modality ("MG", or another one read with `allow_modality=True`), or
            None (rasters; a DICOM without the tag).
        acquisition: "film" (digitised screen film), "digital" or "cesm" (contrast-enhanced), or
            None when unknown; see `mammo.io.acquisition` for the rules and `sources` for the tag.
        breast_implant_present: True when the DICOM says so (BreastImplantPresent YES, or an
            "implant displaced" view modifier), False when it says NO, else None.
        warnings: damaged optional attributes that were ignored, one sentence each saying what
            was ignored and what was used instead (e.g. a non-numeric WindowCenter: the full
            range was used); [] when none. The image is still valid.
        qc: quality-control flag names from `mammo.qc.qc_flags` (e.g. "saturated",
            "modality_missing"); [] when nothing looks wrong. The table of flags and their
            thresholds is in `mammo.qc`.
    """

    path: str = ""
    format: str = "array"
    dtype: str = "float32"
    bits_stored: int = 32
    photometric: str = "MONOCHROME2"
    laterality: str | None = None
    view: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    pixel_spacing_mm: tuple[float, float] | None = None
    presentation_intent: str | None = None
    manufacturer: str | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    sop_uid: str | None = None
    original_shape: tuple[int, int] = (0, 0)
    window: tuple[float, float] | None = None
    voi_lut_applied: bool = False
    transfer_syntax: str | None = None
    modality: str | None = None
    acquisition: str | None = None
    breast_implant_present: bool | None = None
    warnings: list[str] = field(default_factory=list)
    qc: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields, `warnings` and `qc` included (tuples stay tuples;
        `json.dumps` writes them as lists)."""
        return asdict(self)
