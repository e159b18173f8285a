"""`cdd-cesm`: CDD-CESM (TCIA) low-energy (DM) and contrast-subtracted (CM) images with masks.

Images `images/P<patient>_<L|R>_<DM|CM>_<CC|MLO>.jpg`, masks `masks/<same name>.jpg` (JPEG, so
thresholded at 127), labels from the `Pathology Classification/ Follow up` column of
`Radiology-manual-annotations.csv` (Malignant, Benign, Normal).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from mammo.datasets.base import (
    UNKNOWN_LABELS,
    DatasetLoader,
    Sample,
    SampleRef,
    fill_acquisition,
    check_mask_shape,
    fill_view,
    labels_from_flags,
    read_binary_mask,
)
from mammo.errors import MammoInputError
from mammo.io import read_image

ANNOTATIONS = "Radiology-manual-annotations.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME = re.compile(r"^P(?P<patient>\d+)_(?P<side>[LR])_(?P<type>DM|CM)_(?P<view>CC|MLO)$")
#: pathology value (lower case) -> (benign, malignant)
PATHOLOGY_LABELS = {"malignant": (0, 1), "benign": (1, 0), "normal": (0, 0)}
#: annotation columns kept in Sample.extra, by extra key
EXTRA_COLUMNS = {"findings": "Findings", "birads": "BIRADS", "density": "Breast density (ACR)",
                 "tags": "Tags", "age": "Age", "pathology": None}


def pathology_column(fieldnames: list[str]) -> str | None:
    """The pathology column name (starts with "Pathology"), or None."""
    return next((name for name in fieldnames if name.strip().lower().startswith("pathology")), None)


def read_annotations(path: Path) -> dict[str, dict[str, str]]:
    """`Radiology-manual-annotations.csv` -> image name -> row (keys and values stripped), with the
    pathology column also under the key "pathology"."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        names = [n.strip() for n in (reader.fieldnames or [])]
        column = pathology_column(names)
        if "Image_name" not in names or column is None:
            raise MammoInputError(f"{path}: expected columns Image_name and 'Pathology Classification/ "
                                  f"Follow up', got {names}")
        table = {}
        for raw in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            row["pathology"] = row[column]
            table[row["Image_name"]] = row
    return table


def pathology_labels(value: str | None) -> dict[str, int | None]:
    """Malignant -> malignant 1, Benign -> benign 1, Normal -> both 0, anything else -> None."""
    flags = PATHOLOGY_LABELS.get((value or "").strip().lower())
    return labels_from_flags(*flags) if flags else dict(UNKNOWN_LABELS)


class CddCesm(DatasetLoader):
    """Loader for `cdd_cesm/`: one sample per image; patient `P<number>`.

    Masks: `lesion` from `masks/<name>` (> 127); where there is no mask file, `lesion` is all False
    for a Normal image and absent (unknown) otherwise. extra: "image_type" (DM or CM), "pathology",
    "findings", "birads", "density", "tags", "age" (strings from the annotation table).
    """

    kind = "cdd-cesm"
    layout = ("<root>/images/P<patient>_<L|R>_<DM|CM>_<CC|MLO>.jpg, <root>/masks/<same name>.jpg and "
              f"<root>/{ANNOTATIONS}")

    def _list_refs(self) -> list[SampleRef]:
        self.require("images", "masks", ANNOTATIONS)
        table = read_annotations(self.root / ANNOTATIONS)
        files = sorted(p for p in (self.root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        bad = [p.name for p in files if not _NAME.match(p.stem)]
        if bad:
            raise self.layout_error(f"image names not of the form P<n>_<L|R>_<DM|CM>_<CC|MLO>: {bad[:5]}")
        refs = []
        for path in files:
            match = _NAME.match(path.stem)
            row = table.get(path.stem, {})
            info = {"side": match["side"], "view": match["view"], "image_type": match["type"], "row": row}
            refs.append(SampleRef(path.stem, f"P{int(match['patient'])}", path,
                                  pathology_labels(row.get("pathology")), info))
        return refs

    def _mask_path(self, ref: SampleRef) -> Path | None:
        for suffix in (ref.path.suffix, *IMAGE_SUFFIXES):
            candidate = self.root / "masks" / f"{ref.image_id}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        mask_path = self._mask_path(ref)
        masks = {}
        if mask_path is not None:
            masks["lesion"] = read_binary_mask(mask_path)
            check_mask_shape(masks["lesion"], image, str(mask_path))
        elif ref.labels == {"benign": 0, "malignant": 0}:
            masks["lesion"] = np.zeros(image.shape, dtype=bool)  # a Normal image has no lesion
        row = ref.info["row"]
        extra = {"image_type": ref.info["image_type"]}
        extra.update({key: row.get(col or key) for key, col in EXTRA_COLUMNS.items()})
        meta = fill_acquisition(fill_view(meta, ref.info["side"], ref.info["view"]),
                                "cesm" if ref.info["image_type"] == "CM" else "digital")
        return Sample(image=image, meta=meta, masks=masks,
                      labels=dict(ref.labels), patient_id=ref.patient_id, image_id=ref.image_id,
                      extra=extra)
