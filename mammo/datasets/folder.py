"""`folder` and `csv`: the user's own images, with optional masks and labels.

`folder` (what the evaluation server unpacks a zip into):

    <root>/[images/]*.dcm|png|jpg|...   the images (top level of <root>, or of <root>/images/)
    <root>/masks/<stem>.<any raster>     optional lesion mask of the image with that stem (> 127)
    <root>/masks/<class>/<stem>.<ext>    optional mask of another standard class (e.g. breast)
    <root>/labels.csv                    optional: columns image (file name or stem), and any of
                                         benign_label, malignant_label, patient_id

`csv`: one CSV file with columns `image_path` and optional `mask_path` (a lesion mask),
`benign_label`, `malignant_label`, `patient_id`, `acquisition` (film, digital or cesm: how the image
was made, for rasters whose header cannot say; it decides which held-out AUC a score is shown
with, `mammo.evidence`); relative paths are relative to the CSV's folder.

In both, the patient id is the `patient_id` column where given, else the image's stem (each image
its own patient). Labels: 1/true/yes and 0/false/no; anything else (empty, "nan") is unknown.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mammo.datasets.base import (
    DatasetLoader,
    Sample,
    SampleRef,
    check_mask_shape,
    fill_acquisition,
    labels_from_flags,
    read_binary_mask,
)
from mammo.errors import MammoInputError
from mammo.io import read_image
from mammo.io.acquisition import check_acquisition
from mammo.pipelines.base import STANDARD_CLASSES

IMAGE_SUFFIXES = (".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".pgm")
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def parse_flag(text: str | None) -> int | None:
    """"1"/"true"/"yes" -> 1, "0"/"false"/"no" -> 0, anything else (empty, "nan") -> None."""
    value = (text or "").strip().lower()
    value = value.removesuffix(".0")  # pandas writes integer columns with missing values as floats
    return 1 if value in _TRUE else 0 if value in _FALSE else None


def read_table(path: Path, required: str) -> list[dict[str, str]]:
    """Rows of a CSV (stripped strings) that must have column `required`."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or required not in reader.fieldnames:
                raise MammoInputError(f"{path}: needs a column {required!r}; it has {reader.fieldnames}")
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError) as err:
        raise MammoInputError(f"cannot read {path}: {err}") from err


def load_masks(paths: dict[str, Path], image: np.ndarray, image_id: str) -> dict[str, np.ndarray]:
    """Read each class's mask file as bool (H, W) and check it has the image's shape."""
    masks = {}
    for name, path in paths.items():
        masks[name] = read_binary_mask(path)
        check_mask_shape(masks[name], image, f"{image_id}: {path}")
    return masks


class ImageFolder(DatasetLoader):
    """Loader for a plain folder of images (see the module docstring for the layout)."""

    kind = "folder"
    layout = ("<root>/[images/]*.dcm|png|jpg|bmp|pgm|tif, optional <root>/masks/<stem>.png (lesion) or "
              "<root>/masks/<class>/<stem>.png, optional <root>/labels.csv "
              "(image, benign_label, malignant_label, patient_id)")

    def _image_dir(self) -> Path:
        images = self.root / "images"
        return images if images.is_dir() else self.root

    def _mask_paths(self, stem: str) -> dict[str, Path]:
        """class -> mask file for the image `stem`: masks/<stem>.* (lesion), masks/<class>/<stem>.*."""
        found: dict[str, Path] = {}
        for name, folder in [("lesion", self.root / "masks")] + [
                (c, self.root / "masks" / c) for c in STANDARD_CLASSES]:
            for suffix in MASK_SUFFIXES:
                path = folder / f"{stem}{suffix}"
                if path.is_file():
                    found.setdefault(name, path)
                    break
        return found

    def _labels(self) -> dict[str, dict[str, str]]:
        path = self.root / "labels.csv"
        if not path.is_file():
            return {}
        rows = read_table(path, "image")
        return {Path(row["image"]).stem: row for row in rows}

    def _list_refs(self) -> list[SampleRef]:
        folder = self._image_dir()
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith("."))
        table = self._labels()
        refs = []
        for path in files:
            row = table.get(path.stem, {})
            labels = labels_from_flags(parse_flag(row.get("benign_label")), parse_flag(row.get("malignant_label")))
            refs.append(SampleRef(path.stem, row.get("patient_id") or path.stem, path, labels,
                                  {"masks": self._mask_paths(path.stem)}))
        return refs

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        masks = load_masks(ref.info["masks"], image, ref.image_id)
        return Sample(image=image, meta=meta, masks=masks, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id)


class CsvList(DatasetLoader):
    """Loader for a CSV list of images (`root` is the CSV file; see the module docstring)."""

    kind = "csv"
    layout = ("a CSV file with columns image_path and optional mask_path, benign_label, malignant_label, "
              "patient_id, acquisition (film, digital or cesm) (paths relative to the CSV's folder)")

    def __init__(self, root: str | Path, split: str | Path | None = None) -> None:
        self.csv_path = Path(root)
        if not self.csv_path.exists():
            raise self.layout_error(f"dataset file {self.csv_path} does not exist")
        if not self.csv_path.is_file():
            raise self.layout_error(f"{self.csv_path} is a folder, not a CSV file")
        super().__init__(self.csv_path.parent, split=split)

    def _list_refs(self) -> list[SampleRef]:
        refs = []
        stems: dict[str, int] = {}
        for number, row in enumerate(read_table(self.csv_path, "image_path"), start=2):
            if not row["image_path"]:
                raise self.layout_error(f"{self.csv_path} line {number}: empty image_path")
            path = self.root / row["image_path"]
            stem = path.stem
            stems[stem] = stems.get(stem, 0) + 1
            image_id = stem if stems[stem] == 1 else f"{stem}_{stems[stem] - 1}"
            masks = {"lesion": self.root / row["mask_path"]} if row.get("mask_path") else {}
            labels = labels_from_flags(parse_flag(row.get("benign_label")), parse_flag(row.get("malignant_label")))
            acquisition = None
            if row.get("acquisition"):
                try:
                    acquisition = check_acquisition(row["acquisition"], f"{self.csv_path} line {number}")
                except ValueError as error:
                    raise self.layout_error(str(error)) from None
            refs.append(SampleRef(image_id, row.get("patient_id") or image_id, path, labels,
                                  {"masks": masks, "acquisition": acquisition}))
        return refs

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        missing = [str(p) for p in ref.info["masks"].values() if not p.is_file()]
        if missing:
            raise MammoInputError(f"{ref.image_id}: mask file not found: {', '.join(missing)}")
        masks = load_masks(ref.info["masks"], image, ref.image_id)
        if ref.info["acquisition"]:
            meta = fill_acquisition(meta, ref.info["acquisition"])
        return Sample(image=image, meta=meta, masks=masks, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id)
