"""`dicom-folder`: every DICOM file under a folder, recursively, without annotations.

Listing reads headers only (PatientID). Patient id: the PatientID tag, else the file stem. CBIS-DDSM
puts the view into PatientID (`Mass-Test_P_00173_LEFT_CC`); such ids are reduced to the patient
(`P_00173`) so that all views of one woman share a patient, and the raw tag is kept in
`extra["dicom_patient_id"]`. Image id: the file stem, or the path below the root (with `/` as `__`)
where two files share a stem.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from mammo.datasets.base import UNKNOWN_LABELS, DatasetLoader, Sample, SampleRef
from mammo.errors import MammoInputError
from mammo.io import read_image

DICOM_SUFFIXES = (".dcm", ".dicom")
_CBIS = re.compile(r"^(?:Calc|Mass)-(?:Training|Test)_(?P<patient>P_\d+)_(?:LEFT|RIGHT)_(?:CC|MLO)(?:_\d+)?$")


def normalise_patient_id(raw: str) -> str:
    """CBIS-DDSM `Mass-Test_P_00173_LEFT_CC` -> `P_00173`; any other id unchanged."""
    match = _CBIS.match(raw)
    return match["patient"] if match else raw


def header_patient_id(path: Path) -> str:
    """PatientID tag of a DICOM file (header only), "" when absent; MammoInputError if not DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except (InvalidDicomError, OSError, ValueError) as err:
        raise MammoInputError(f"{path} is not a readable DICOM file: {err}") from err
    return str(ds.get("PatientID", "") or "").strip()


class DicomFolder(DatasetLoader):
    """Loader for any folder of `.dcm` / `.dicom` files (searched recursively).

    Samples have no masks ({}) and unknown labels (None); extra "dicom_patient_id" is the raw tag.
    """

    kind = "dicom-folder"
    layout = "<root>/**/*.dcm (any folder tree of DICOM files)"

    def _list_refs(self) -> list[SampleRef]:
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file())
        stems = Counter(p.stem for p in files)
        refs = []
        for path in files:
            raw = header_patient_id(path)
            image_id = path.stem if stems[path.stem] == 1 else (
                path.relative_to(self.root).with_suffix("").as_posix().replace("/", "__"))
            patient = normalise_patient_id(raw) if raw else path.stem
            refs.append(SampleRef(image_id, patient, path, dict(UNKNOWN_LABELS), {"dicom_patient_id": raw}))
        return refs

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        return Sample(image=image, meta=meta, masks={}, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id,
                      extra={"dicom_patient_id": ref.info["dicom_patient_id"]})
