"""How a mammogram was acquired: "film" (digitised screen film), "digital" (full-field digital)
or "cesm" (contrast-enhanced spectral mammography), from the DICOM header.

It matters because a classifier's measured accuracy holds for the kind of image it was measured
on (`mammo.evidence`): a score trained and tested on DDSM films says nothing yet about digital
screening images. The rules, first match wins:

1. ImageType holds SUBTRACTION, RECOMBINED, CESM or CEDM -> "cesm" (the recombined/subtracted
   images of the vendors' contrast exams);
2. SOPClassUID is Secondary Capture (any of its variants) -> "film": a converted picture, which
   is how digitised films are archived (CBIS-DDSM: ConversionType WSD, no acquisition tags);
   ConversionType DF (digitised film) says so outright;
3. SOPClassUID is Digital Mammography, Digital X-Ray or Breast Tomosynthesis -> "digital";
4. Modality MG with a PresentationIntentType (only acquisition devices write it) -> "digital";
5. otherwise None: not known (rasters, sparse headers). Data sets whose publisher says what they
   are set it themselves (`mammo.datasets`), source "dataset".
"""

from __future__ import annotations

from typing import Any

ACQUISITIONS = ("film", "digital", "cesm")

_CESM_IMAGE_TYPES = frozenset({"SUBTRACTION", "RECOMBINED", "CESM", "CEDM"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants .7.1-.7.4
_DIGITAL_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray
    "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis
})


def acquisition_from_tags(image_type: Any, sop_class: str | None, conversion_type: str | None,
                          modality: str | None, presentation_intent: str | None) -> tuple[str | None, str]:
    """(acquisition or None, the tag that decided) from already-read DICOM values (see the rules
    in the module docstring); `image_type` is the raw ImageType value (a string or a list)."""
    tokens = [image_type] if isinstance(image_type, str) else list(image_type or [])
    if _CESM_IMAGE_TYPES & {str(t).strip().upper() for t in tokens}:
        return "cesm", "ImageType"
    sop = str(sop_class or "")
    if (conversion_type or "").strip().upper() == "DF":
        return "film", "ConversionType"
    if sop == _SECONDARY_CAPTURE or sop.startswith(_SECONDARY_CAPTURE + "."):
        return "film", "SOPClassUID"
    if sop in _DIGITAL_SOP_CLASSES:
        return "digital", "SOPClassUID"
    if (modality or "").upper() == "MG" and presentation_intent:
        return "digital", "PresentationIntentType"
    return None, ""


def check_acquisition(value: str, where: str) -> str:
    """`value` lower-cased when it is one of `ACQUISITIONS`; else ValueError naming `where`."""
    text = str(value).strip().lower()
    if text not in ACQUISITIONS:
        raise ValueError(f"{where}: acquisition must be one of {', '.join(ACQUISITIONS)}, not {value!r}")
    return text
