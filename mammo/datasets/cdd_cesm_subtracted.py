"""`cdd-cesm-subtracted`: CDD-CESM contrast-subtracted (CM) images filed by pathology.

Layout (root = the `cdd_cesm/` folder, so the radiology table beside the images is found):
`<root>/subtracted/{Benign,Malignant,Normal}/P<patient>_<L|R>_CM_<CC|MLO>.png` and
`<root>/Radiology-manual-annotations-all.csv` (the full radiology table: one row per DM and CM
image, with pathology, BI-RADS, ACR density of each low-energy image and findings).

Labels come from the folder (biopsy or follow-up pathology of that image): Malignant -> (0, 1),
Benign -> (1, 0), Normal -> (0, 0). A table row that names another pathology for the same image
is refused, so a mislabelled copy cannot slip in. File names are stripped (one published file is
`P4_L_CM_MLO .png`). extra: "image_type" ("CM"), "pathology", "birads", "findings", "tags", "age",
and "density" = the ACR density (A-D) of the same breast and view's low-energy (DM) row.
"""

from __future__ import annotations

import re
from pathlib import Path

from mammo.datasets.base import DatasetLoader, Sample, SampleRef, fill_acquisition, fill_view
from mammo.datasets.cdd_cesm import pathology_labels, read_annotations
from mammo.io import read_image

TABLE = "Radiology-manual-annotations-all.csv"
FOLDER = "subtracted"
PATHOLOGIES = ("Benign", "Malignant", "Normal")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_NAME = re.compile(r"^P(?P<patient>\d+)_(?P<side>[LR])_CM_(?P<view>CC|MLO)$")
EXTRA_COLUMNS = {"birads": "BIRADS", "findings": "Findings", "tags": "Tags", "age": "Age"}


def low_energy_density(table: dict[str, dict[str, str]], image_id: str) -> str | None:
    """ACR density (A-D) of the DM image of the same patient, side and view, or None."""
    value = table.get(image_id.replace("_CM_", "_DM_"), {}).get("Breast density (ACR)", "")
    return value if value in ("A", "B", "C", "D") else None


class CddCesmSubtracted(DatasetLoader):
    """Loader for `cdd_cesm/subtracted/` (see the module docstring); patient `P<number>` as in
    `cdd-cesm`, so the two sets share patients and their splits agree (`splits/make_splits.py`)."""

    kind = "cdd-cesm-subtracted"
    layout = (f"<root>/{FOLDER}/{{{','.join(PATHOLOGIES)}}}/P<patient>_<L|R>_CM_<CC|MLO>.png and "
              f"<root>/{TABLE}")

    def _list_refs(self) -> list[SampleRef]:
        self.require(FOLDER, TABLE)
        table = read_annotations(self.root / TABLE)
        found = [p for p in (self.root / FOLDER).iterdir() if p.is_dir()]
        unknown = sorted(p.name for p in found if p.name not in PATHOLOGIES)
        if unknown or not found:
            raise self.layout_error(f"folders under {FOLDER}/ must be {', '.join(PATHOLOGIES)}; "
                                    f"found {', '.join(unknown) or 'none'}")
        refs, bad, disagree = [], [], []
        for folder in sorted(found):
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                stem = path.stem.strip()
                match = _NAME.match(stem)
                if match is None:
                    bad.append(path.name)
                    continue
                row = table.get(stem, {})
                if row and row["pathology"].lower() != folder.name.lower():
                    disagree.append(f"{stem} ({folder.name} folder, table {row['pathology']!r})")
                info = {"side": match["side"], "view": match["view"], "pathology": folder.name, "row": row,
                        "density": low_energy_density(table, stem)}
                refs.append(SampleRef(stem, f"P{int(match['patient'])}", path, pathology_labels(folder.name), info))
        if bad:
            raise self.layout_error(f"image names not of the form P<n>_<L|R>_CM_<CC|MLO>: {bad[:5]}")
        if disagree:
            raise self.layout_error(f"pathology folder and {TABLE} disagree for {disagree[:5]}")
        return sorted(refs, key=lambda ref: ref.image_id)

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        row = ref.info["row"]
        extra = {"image_type": "CM", "pathology": ref.info["pathology"], "density": ref.info["density"]}
        extra.update({key: row.get(column) for key, column in EXTRA_COLUMNS.items()})
        meta = fill_acquisition(fill_view(meta, ref.info["side"], ref.info["view"]), "cesm")
        return Sample(image=image, meta=meta, masks={},
                      labels=dict(ref.labels), patient_id=ref.patient_id, image_id=ref.image_id, extra=extra)
