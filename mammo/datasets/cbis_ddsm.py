"""`cbis-ddsm`: CBIS-DDSM (TCIA) full mammograms, each with the union of its abnormalities' ROI masks.

Read as TCIA distributes it: the case-description CSVs (`mass_case_description_train_set.csv`,
..., `calc_case_description_test_set.csv`) in the root, and the DICOM tree `CBIS-DDSM/` beside them.
The CSV file paths (`Mass-Training_P_00001_LEFT_CC/1.3.6.../1.3.6.../000000.dcm`) do not match the
downloaded files, whose UID folders and file names the NBIA client renames
(`07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm`): only their first component,
the series folder, is used, and the DICOMs under it are found by search. An abnormality's series
folder (`..._LEFT_CC_1`) holds its ROI mask and its crop (two files, in either order): the mask is
the one with the mammogram's size (and, if that leaves two, the one with two pixel values).

Mass and calcification sets store the same film in different series folders (`Mass-...`,
`Calc-...`): with `abnormality="all"` such a film is two samples.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from mammo.datasets.base import DatasetLoader, Sample, SampleRef, fill_view, labels_from_flags
from mammo.errors import MammoInputError
from mammo.io import read_image
from mammo.io.dicom_meta import DICOM_ERRORS
from mammo.io.limits import check_shape

CSV_FILES = {(kind, split): f"{kind}_case_description_{split}_set.csv"
             for kind in ("mass", "calc") for split in ("train", "test")}
ABNORMALITY_TYPES = {"mass": ("mass",), "calc": ("calc",), "all": ("mass", "calc")}
OFFICIAL_SPLITS = ("train", "test")
#: CSV pathology -> (benign, malignant) flags of one abnormality
PATHOLOGY_LABELS: dict[str, tuple[int, int]] = {
    "MALIGNANT": (0, 1), "BENIGN": (1, 0), "BENIGN_WITHOUT_CALLBACK": (1, 0)}
#: columns (lower case, "_" as " ") every description CSV must have
REQUIRED_COLUMNS = ("patient id", "abnormality id", "pathology", "image file path", "roi mask file path")
#: columns copied into each `extra["abnormalities"]` dict, by key (absent ones are left out)
DETAIL_COLUMNS = {"type": "abnormality type", "assessment": "assessment", "subtlety": "subtlety",
                  "breast_density": "breast density", "mass_shape": "mass shape",
                  "mass_margins": "mass margins", "calc_type": "calc type",
                  "calc_distribution": "calc distribution"}
DICOM_SUFFIXES = (".dcm", ".dicom")
#: ROI masks may differ from their mammogram by a few rows/columns (they do in CBIS-DDSM) and
#: are then resized; by more than this fraction of a side (at least 2 px), they do not belong to it
SIZE_TOLERANCE = 0.02


def column_key(name: str) -> str:
    """CSV header -> lookup key: `breast_density` and `breast density` both -> "breast density"."""
    return " ".join(name.strip().lower().replace("_", " ").split())


def series_folder(csv_path: str) -> str:
    """First component of a CSV file path (the series folder), e.g. `Mass-Training_P_00001_LEFT_CC`."""
    return csv_path.strip().strip('"').replace("\\", "/").strip("/").split("/")[0].strip()


def read_description(path: Path) -> list[dict[str, str]]:
    """Rows of a case-description CSV, keys by `column_key`, values stripped (the TCIA CSVs have
    stray newlines inside the path cells)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        names = {column_key(n) for n in reader.fieldnames or []}
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise MammoInputError(f"{path}: missing columns {missing} (has {sorted(names)})")
        return [{column_key(k): (v or "").strip() for k, v in raw.items() if k} for raw in reader]


def _value(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def abnormality_info(row: dict[str, str], source: Path) -> dict[str, Any]:
    """One CSV row -> {"id", "pathology", "type", "assessment", "subtlety", ...}."""
    pathology = row["pathology"].upper()
    if pathology not in PATHOLOGY_LABELS:
        raise MammoInputError(f"{source}: unknown pathology {row['pathology']!r} for {row['patient id']} "
                              f"(expected one of {', '.join(PATHOLOGY_LABELS)})")
    info: dict[str, Any] = {"id": _value(row["abnormality id"]), "pathology": pathology}
    info.update({key: _value(row[col]) for key, col in DETAIL_COLUMNS.items() if col in row})
    return info


def find_dicoms(folder: Path) -> list[Path]:
    """Every DICOM file below `folder`, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file())


def header_shape(path: Path) -> tuple[int, int]:
    """(Rows, Columns) from the header only (pixel data not read)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except (InvalidDicomError, *DICOM_ERRORS) as err:
        raise MammoInputError(f"{path} is not a readable DICOM image: {err}") from err


def read_stored_pixels(path: Path) -> np.ndarray:
    """The stored values (H, W) of a ROI mask DICOM (integer dtype, no LUT or window applied).

    Not `read_image`: it refuses images whose 0.5-99.5th percentile range is empty, which is what
    a mask of a small lesion (< 0.5% of the film) is, and it would window the 0/255 values.
    """
    check_shape(*header_shape(path), path)  # refuse absurd sizes before decoding
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
            pixels = pydicom.dcmread(path).pixel_array
    except (InvalidDicomError, *DICOM_ERRORS) as err:
        raise MammoInputError(f"cannot decode the ROI mask {path}: {err}") from err
    if pixels.ndim != 2:
        raise MammoInputError(f"ROI mask {path} is not one grey frame (pixel array {pixels.shape})")
    return pixels


def is_binary(pixels: np.ndarray) -> bool:
    """Whether `pixels` holds at most two values, 0 and its maximum."""
    return not np.any((pixels != 0) & (pixels != pixels.max()))


def shape_close(shape: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether `shape` is within `SIZE_TOLERANCE` of `target` on both sides."""
    return all(abs(a - b) <= max(2, SIZE_TOLERANCE * b) for a, b in zip(shape, target, strict=True))


def roi_mask(files: list[Path], shape: tuple[int, int], what: str) -> np.ndarray:
    """The ROI mask among `files` (one abnormality's DICOMs) as bool `shape` (resized, nearest).

    Raises MammoInputError when no file has about the mammogram's size, or several binary ones do.
    """
    sizes = {path: header_shape(path) for path in files}
    near = [path for path in files if shape_close(sizes[path], shape)]
    if not near:
        raise MammoInputError(f"{what}: no DICOM there has about the mammogram's size {shape}: "
                              + ", ".join(f"{p.name} {s}" for p, s in sizes.items()))
    if len(near) == 1:
        pixels = read_stored_pixels(near[0])
    else:
        binary = [pixels for pixels in map(read_stored_pixels, near) if is_binary(pixels)]
        if len(binary) != 1:
            raise MammoInputError(f"{what}: {len(binary)} of the DICOMs {[p.name for p in near]} of the "
                                  f"mammogram's size are two-valued masks; expected exactly one")
        pixels = binary[0]
    top = int(pixels.max())
    mask = pixels > top / 2 if top > 0 else np.zeros(pixels.shape, bool)
    if mask.shape != shape:
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


class CbisDDSM(DatasetLoader):
    """Loader for CBIS-DDSM: one sample per full mammogram (series folder, the image id).

    Samples: image float32 (H, W) in [0, 1] (the digitised film); masks {"lesion": bool (H, W),
    the union of the selected abnormalities' ROI masks}; labels malignant = 1 if any abnormality
    is MALIGNANT else 0, benign = 1 if any is BENIGN or BENIGN_WITHOUT_CALLBACK else 0;
    patient_id the CSV's (`P_00001`); extra {"abnormalities": [dict per CSV row, see
    `abnormality_info`], "image_type": "FILM", "official_split": "train" | "test"}.

    Args:
        root: the folder with the description CSVs and `CBIS-DDSM/`.
        split: None (both official sets), "train" / "test" (the official set, from the CSV names;
            only its CSVs and folders are needed), or a split CSV / "PATH.csv:val" as in
            `DatasetLoader` (there is no committed splits/cbis_ddsm.csv).
        abnormality: "mass" (default), "calc" or "all": whose CSVs and ROI masks are read.
    """

    kind = "cbis-ddsm"
    layout = ("<root>/{mass,calc}_case_description_{train,test}_set.csv (TCIA) and the DICOM tree "
              "<root>/CBIS-DDSM/<series folder>/<study>/<series>/<file>.dcm (or the series folders "
              "directly in <root>); series folders as the CSV paths start: Mass-Training_P_00001_LEFT_CC "
              "(mammogram), Mass-Training_P_00001_LEFT_CC_1 (ROI mask and crop of abnormality 1)")

    def __init__(self, root: str | Path, split: str | Path | None = None, abnormality: str = "mass") -> None:
        if abnormality not in ABNORMALITY_TYPES:
            raise MammoInputError(f"{self.kind}: abnormality must be one of {', '.join(ABNORMALITY_TYPES)}, "
                                  f"got {abnormality!r}")
        self.abnormality = abnormality
        name = None if split is None else str(split)
        if name in ("val", "valid"):
            raise MammoInputError(f"{self.kind}: CBIS-DDSM has only official train and test sets; for a "
                                  "validation split pass a split CSV (PATH.csv:val, columns image_id,"
                                  "patient_id,split)")
        # Plain "train"/"test" are the official sets, taken from the CSV names, not from a split CSV.
        self.official_split = name if name in OFFICIAL_SPLITS else None
        super().__init__(root, None if self.official_split or split is None else split)

    def _list_refs(self) -> list[SampleRef]:
        sets = [self.official_split] if self.official_split else list(OFFICIAL_SPLITS)
        names = [(CSV_FILES[(kind, s)], s) for kind in ABNORMALITY_TYPES[self.abnormality] for s in sets]
        self.require(*(name for name, _ in names))
        tree = self.root / "CBIS-DDSM" if (self.root / "CBIS-DDSM").is_dir() else self.root
        groups: dict[str, dict[str, Any]] = {}
        for name, official in names:
            for row in read_description(self.root / name):
                group = groups.setdefault(series_folder(row["image file path"]), {
                    "patient": row["patient id"], "official_split": official, "abnormalities": [],
                    "roi_folders": [], "side": row.get("left or right breast", "")[:1].upper() or None,
                    "view": row.get("image view", "").upper() or None})
                group["abnormalities"].append(abnormality_info(row, self.root / name))
                group["roi_folders"].append(series_folder(row["roi mask file path"]))
        folders = {p.name: p for p in tree.iterdir() if p.is_dir()}
        problems: list[str] = []
        refs = []
        for image_id, group in sorted(groups.items()):
            roi_folders = list(dict.fromkeys(group["roi_folders"]))  # one read per folder
            missing = [f for f in (image_id, *roi_folders) if f not in folders]
            if missing:
                problems.append(f"no series folder {', '.join(missing)}")
                continue
            images = find_dicoms(folders[image_id])
            roi_files = [find_dicoms(folders[f]) for f in roi_folders]
            empty = [f for f, files in zip(roi_folders, roi_files, strict=True) if not files]
            if len(images) != 1 or empty:
                problems.append(f"{image_id} holds {len(images)} DICOM files (expected 1)" if len(images) != 1
                                else f"no DICOM under {', '.join(empty)}")
                continue
            flags = [PATHOLOGY_LABELS[a["pathology"]] for a in group["abnormalities"]]
            labels = labels_from_flags(max(b for b, _ in flags), max(m for _, m in flags))
            info = {**group, "roi_folders": roi_folders, "roi_files": roi_files, "image_type": "FILM"}
            refs.append(SampleRef(image_id, group["patient"], images[0], labels, info))
        if problems:
            raise self.layout_error(f"{len(problems)} mammograms of the CSVs cannot be found under {tree}: "
                                    + "; ".join(problems[:5]))
        return refs

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        if meta.sources.get("laterality") == "image":
            meta.laterality = None  # the CSV's side beats the reader's guess from the image
        lesion = np.zeros(image.shape, bool)
        for folder, files in zip(ref.info["roi_folders"], ref.info["roi_files"], strict=True):
            lesion |= roi_mask(files, image.shape, f"{self.kind} {ref.image_id}: ROI series folder {folder}")
        extra = {"abnormalities": [dict(a) for a in ref.info["abnormalities"]], "image_type": "FILM",
                 "official_split": ref.info["official_split"]}
        return Sample(image=image, meta=fill_view(meta, ref.info["side"], ref.info["view"]),
                      masks={"lesion": lesion}, labels=dict(ref.labels), patient_id=ref.patient_id,
                      image_id=ref.image_id, extra=extra)
