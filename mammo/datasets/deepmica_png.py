"""`deepmica-png`: the PNG folders of the DeepMiCa seed (Gerbasi et al., CMPB 2023; its repository
github.com/ales-git/DeepMiCa, README "Project structure", and the paths its scripts read).

    Datasets/INbreast/AllPng/20586908.png          full-field digital mammograms
    Datasets/INbreast/Masks/20586908.png           microcalcification mask, the image's name
    Datasets/INbreast/csv/INbreast_table_noClusters.csv
    Datasets/CBIS_DDSM/AllPng/00005_RIGHT_CC.png   digitised films
    Datasets/CBIS_DDSM/Masks/00005_RIGHT_CC_1.png  one mask per abnormality (`_1`, `_2`, ...)
    Datasets/CBIS_DDSM/csv/CBIS_DDSM.csv

The INbreast table is the INbreast spreadsheet saved with ";" separators in ISO-8859-1: the seed
reads `Patient ID`, `File Name` (the PNG stem) and `Micros`, and keeps only the rows whose
`Micros` is "X" (the images with microcalcifications); those rows are the samples here too. It has
no pathology: labels are None (its `Bi-Rads` is kept in `extra["birads"]`, not turned into a label).
`Laterality`/`View`, when present, give the side and view.

The CBIS table has one row per mask: `file_name_complete` (the AllPng file), `file_name_mask` (the
Masks file), `patient_id` and `pathology`. The seed feeds `pathology` to a sigmoid classifier as a
number, so it is 0/1; 1 is read as malignant. TCIA's words (MALIGNANT, BENIGN,
BENIGN_WITHOUT_CALLBACK) are accepted too. As in `cbis-ddsm`, one sample is one film: its masks are
united, malignant = 1 if any row is, benign = 1 if any row is.

Neither table holds a split. The seed draws its splits with scikit-learn's
`GroupShuffleSplit(train_size=0.9, random_state=0)` over the patients: once for test, once more on
the rest for val. That draw uses only the sorted distinct patient ids (sorted as numbers when they
all are numbers, as pandas reads them), so `split="test"` here is the seed's test set exactly
(`seed_split` redoes the draw with NumPy, no scikit-learn needed). For INbreast the seed instead
cross-validates ten folds over train+val; here its val is the second draw, as for CBIS.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo.datasets.base import (
    SPLIT_NAMES,
    UNKNOWN_LABELS,
    DatasetLoader,
    Sample,
    SampleRef,
    check_mask_shape,
    fill_view,
    labels_from_flags,
    read_binary_mask,
)
from mammo.errors import MammoInputError
from mammo.io import read_image

SUBSETS = ("INbreast", "CBIS_DDSM")
CSV_NAMES = {"INbreast": "INbreast_table_noClusters.csv", "CBIS_DDSM": "CBIS_DDSM.csv"}
#: columns (lower case, "_" as " ") the seed reads from each table
REQUIRED_COLUMNS = {"INbreast": ("patient id", "file name", "micros"),
                    "CBIS_DDSM": ("file name complete", "file name mask", "patient id", "pathology")}
IMAGE_TYPES = {"INbreast": "DM", "CBIS_DDSM": "FILM"}
#: `Micros` values that mark an INbreast image with microcalcifications (the seed: "X", or 1)
MICROS_YES = ("X", "1")
#: CBIS `pathology` -> (benign, malignant) flags of one mask
PATHOLOGY_LABELS: dict[str, tuple[int, int]] = {
    "1": (0, 1), "0": (1, 0), "MALIGNANT": (0, 1), "BENIGN": (1, 0), "BENIGN_WITHOUT_CALLBACK": (1, 0)}
#: patient ids that mean "no id" (placeholders of anonymised tables; pandas' NaN)
NO_PATIENT = ("", "removed", "nan")
#: the seed's GroupShuffleSplit settings
SEED_TRAIN_SIZE = 0.9
SEED_RANDOM_STATE = 0


@dataclass
class SeedImage:
    """One mammogram of a seed table: its files (relative to AllPng/ and Masks/) and its rows."""

    stem: str
    patient: str
    image_file: str
    mask_files: list[str] = field(default_factory=list)
    pathologies: list[str] = field(default_factory=list)
    side: str | None = None
    view: str | None = None
    birads: str | None = None


def column_key(name: str) -> str:
    """Header -> lookup key: `file_name_mask` and `File Name ` both -> "file name mask"/"file name"."""
    return " ".join(name.strip().lower().replace("_", " ").split())


def read_table(path: Path, subset: str) -> list[dict[str, str]]:
    """Rows of a seed CSV (";" or "," separated, UTF-8 or ISO-8859-1), keys by `column_key`."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")  # the INbreast table (Portuguese notes)
    header = text.split("\n", 1)[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    names = {column_key(n) for n in reader.fieldnames or []}
    missing = [c for c in REQUIRED_COLUMNS[subset] if c not in names]
    if missing:
        raise MammoInputError(f"{path}: missing columns {missing} (has {sorted(names)}); the DeepMiCa seed "
                              f"reads {', '.join(REQUIRED_COLUMNS[subset])}")
    return [{column_key(k): (v or "").strip() for k, v in row.items() if k} for row in reader]


def png_name(value: str) -> str:
    """A table's file name -> the PNG's name: `20586908` (or pandas' `20586908.0`) -> `20586908.png`."""
    value = re.sub(r"^(\d+)\.0+$", r"\1", value.strip())
    return value if value.lower().endswith(".png") else value + ".png"


def pathology_key(value: str) -> str:
    """`1`, `1.0`, `malignant` -> a `PATHOLOGY_LABELS` key (unknown values come back upper-cased)."""
    value = value.strip().upper()
    return re.sub(r"^([01])\.0+$", r"\1", value)


def inbreast_images(rows: list[dict[str, str]]) -> list[SeedImage]:
    """The rows with microcalcifications (`Micros` "X"), one `SeedImage` each."""
    images = []
    for row in rows:
        if row["micros"].upper() not in MICROS_YES:
            continue
        name = png_name(row["file name"])
        side, view = row.get("laterality", "")[:1].upper(), row.get("view", "").upper()
        images.append(SeedImage(Path(name).stem, row["patient id"], name, [name], side=side or None,
                                view=view or None, birads=row.get("bi-rads") or None))
    return images


def cbis_images(rows: list[dict[str, str]]) -> list[SeedImage]:
    """The rows grouped by film (`file_name_complete`), in table order."""
    images: dict[str, SeedImage] = {}
    for row in rows:
        name = png_name(row["file name complete"])
        image = images.setdefault(name, SeedImage(Path(name).stem, row["patient id"], name))
        if image.patient != row["patient id"]:
            image.patient = ""  # two patients for one film: reported by `check_images`
        mask = png_name(row["file name mask"])
        if mask not in image.mask_files:
            image.mask_files.append(mask)
            image.pathologies.append(row["pathology"])
    return list(images.values())


def check_images(images: list[SeedImage], folder: Path) -> list[str]:
    """Problems of a subset's listing: missing files, missing patient ids, unknown pathologies."""
    problems = []
    for image in images:
        if image.patient.lower() in NO_PATIENT:
            problems.append(f"{image.image_file}: no patient id (or two for one image)")
        files = [f"AllPng/{image.image_file}", *(f"Masks/{m}" for m in image.mask_files)]
        missing = [name for name in files if not (folder / name).is_file()]
        if missing:
            problems.append(f"no file {', '.join(missing)}")
        unknown = [p for p in image.pathologies if pathology_key(p) not in PATHOLOGY_LABELS]
        if unknown:
            problems.append(f"{image.image_file}: unknown pathology {unknown[0]!r} (expected 0/1 or "
                            f"{', '.join(k for k in PATHOLOGY_LABELS if len(k) > 1)})")
    return problems


def image_labels(image: SeedImage) -> dict[str, int | None]:
    """CBIS: any malignant mask -> malignant 1, any benign -> benign 1; INbreast: unknown."""
    if not image.pathologies:
        return dict(UNKNOWN_LABELS)
    flags = [PATHOLOGY_LABELS[pathology_key(p)] for p in image.pathologies]
    return labels_from_flags(max(b for b, _ in flags), max(m for _, m in flags))


def patient_sort_key(patients: Iterable[str]) -> dict[str, int | float | str]:
    """Patient id -> the value pandas reads for it: int when all ids are integers, else float when
    all are numbers, else the text (so that ids sort as in the seed's `np.unique`)."""
    ids = sorted(set(patients))
    for kind in (int, float):
        try:
            return {p: kind(p) for p in ids}
        except ValueError:
            continue
    return {p: p for p in ids}


def shuffle_split(groups: list) -> tuple[list, list]:
    """(train, test) of `GroupShuffleSplit(train_size=0.9, random_state=0)` over the sorted distinct
    `groups`: of a RandomState(0) permutation, the first n - floor(0.9 n) are test, the rest train."""
    n_train = math.floor(SEED_TRAIN_SIZE * len(groups))
    n_test = len(groups) - n_train
    order = np.random.RandomState(SEED_RANDOM_STATE).permutation(len(groups))
    return [groups[i] for i in order[n_test:]], [groups[i] for i in order[:n_test]]


def seed_split(patients: Iterable[str]) -> dict[str, str]:
    """Patient id -> "train" | "val" | "test" as the DeepMiCa scripts draw them (module docstring).

    Raises MammoInputError for fewer than 3 distinct patients (a split would be empty).
    """
    keys = patient_sort_key(patients)
    groups = sorted(set(keys.values()))
    if len(groups) < 3:
        raise MammoInputError(f"the seed's train/val/test split needs at least 3 patients, got {len(groups)}")
    rest, test = shuffle_split(groups)
    train, val = shuffle_split(sorted(rest))
    split_of = {g: name for name, part in (("train", train), ("val", val), ("test", test)) for g in part}
    return {patient: split_of[key] for patient, key in keys.items()}


def read_mask(path: Path) -> np.ndarray:
    """A mask PNG as bool (H, W): > 127 (0/255 masks), or > 0 when nothing is above 127 (0/1 masks)."""
    mask = read_binary_mask(path)
    return mask if mask.any() else read_binary_mask(path, threshold=0)


class DeepMiCaPng(DatasetLoader):
    """Loader for the DeepMiCa seed's `Datasets/{INbreast,CBIS_DDSM}/{AllPng,Masks,csv}` folders.

    Samples: image float32 (H, W) in [0, 1] (8- or 16-bit PNG, see `mammo.io.read_image`); masks
    {"calcification": bool (H, W), the union of the image's Masks files}, the standard class for
    calcifications (as `mias` uses it), since these masks outline microcalcifications, not masses
    (`lesion` elsewhere); labels from CBIS `pathology`, None for INbreast; patient_id from the
    table; image_id the PNG stem. When both subsets are read, ids and patient ids get the subset as
    prefix (`INbreast__20586908`, `CBIS_DDSM__00005_RIGHT_CC`): the two sets share no patients.
    extra: {"subset", "image_type": "DM" (INbreast) | "FILM" (CBIS), "mask_files": [names in
    Masks/], "pathology": [the CBIS rows' values] or "birads": the INbreast `Bi-Rads`}.

    Args:
        root: the `Datasets` folder, or its `INbreast` or `CBIS_DDSM` folder.
        split: None (all), "train" / "val" / "test" (the seed's patient-level draw, see the module
            docstring; no split CSV is read), or a split CSV as in `DatasetLoader`.
        subset: "INbreast", "CBIS_DDSM", "all" (both; `root` must be `Datasets`), or None: the
            folder `root` is, or every subset folder under it.
    """

    kind = "deepmica-png"
    layout = ("<root>/{INbreast,CBIS_DDSM}/{AllPng,Masks,csv}/ (root = the seed's Datasets folder, or one "
              "of those two folders): INbreast/AllPng/<File Name>.png, INbreast/Masks/<File Name>.png, "
              "INbreast/csv/INbreast_table_noClusters.csv (';'-separated: Patient ID, File Name, Micros); "
              "CBIS_DDSM/AllPng/00005_RIGHT_CC.png, CBIS_DDSM/Masks/00005_RIGHT_CC_1.png, "
              "CBIS_DDSM/csv/CBIS_DDSM.csv (file_name_complete, file_name_mask, patient_id, pathology)")

    def __init__(self, root: str | Path, split: str | Path | None = None, subset: str | None = None) -> None:
        choices = {name.lower(): name for name in (*SUBSETS, "all")}
        key = None if subset is None else str(subset).lower().replace("-", "_")
        if key is not None and key not in choices:
            raise MammoInputError(f"{self.kind}: subset must be one of {', '.join(choices.values())} "
                                  f"or None, got {subset!r}")
        self.subset = None if key is None else choices[key]
        name = None if split is None else str(split)
        # The seed's draw is the split: a split name picks its part, without any split CSV.
        self.seed_split = name if name in SPLIT_NAMES else None
        super().__init__(root, None if self.seed_split or split is None else split)

    def _own_subset(self) -> str | None:
        """The subset the root folder itself is (None: the root is the `Datasets` folder)."""
        by_csv = [name for name in SUBSETS if (self.root / "csv" / CSV_NAMES[name]).is_file()]
        if by_csv:
            return by_csv[0]
        if self.root.name in SUBSETS:
            return self.root.name
        if (self.root / "AllPng").is_dir():
            if self.subset in SUBSETS:
                return self.subset
            raise self.layout_error(f"{self.root} holds AllPng/ but no csv/{CSV_NAMES['INbreast']} or "
                                    f"csv/{CSV_NAMES['CBIS_DDSM']}, so its subset is unknown")
        return None

    def _folders(self) -> dict[str, Path]:
        """Subset name -> its folder (holding AllPng/, Masks/, csv/)."""
        own = self._own_subset()
        if own is not None:
            if self.subset not in (None, own):
                raise self.layout_error(f"{self.root} is the {own} folder; subset {self.subset!r} needs "
                                        "the Datasets folder above it")
            return {own: self.root}
        present = [name for name in SUBSETS if (self.root / name).is_dir()]
        wanted = list(SUBSETS) if self.subset == "all" else [self.subset] if self.subset else present
        missing = [name for name in wanted if name not in present]
        if missing or not wanted:
            raise self.layout_error(f"no {' or '.join(missing or SUBSETS)} folder under {self.root}")
        return {name: self.root / name for name in wanted}

    def _list_subset(self, subset: str, folder: Path) -> list[SeedImage]:
        rel = Path(".") if folder == self.root else folder.relative_to(self.root)
        self.require(*(str(rel / name) for name in ("AllPng", "Masks", f"csv/{CSV_NAMES[subset]}")))
        rows = read_table(folder / "csv" / CSV_NAMES[subset], subset)
        images = inbreast_images(rows) if subset == "INbreast" else cbis_images(rows)
        stems = [image.stem for image in images]
        problems = [f"{s}.png is listed twice" for s in sorted({s for s in stems if stems.count(s) > 1})]
        problems += check_images(images, folder)
        if problems:
            raise self.layout_error(f"{len(problems)} problems with {folder / 'csv' / CSV_NAMES[subset]}: "
                                    + "; ".join(problems[:10]))
        if self.seed_split and images:
            try:
                split_of = seed_split(image.patient for image in images)
            except MammoInputError as err:
                raise MammoInputError(f"{self.kind} {subset}: {err}") from err
            images = [image for image in images if split_of[image.patient] == self.seed_split]
        return images

    def _list_refs(self) -> list[SampleRef]:
        folders = self._folders()
        prefix = len(folders) > 1
        refs = []
        for subset, folder in folders.items():
            for image in self._list_subset(subset, folder):
                ids = [f"{subset}__{x}" if prefix else x for x in (image.stem, image.patient)]
                extra: dict[str, Any] = {"subset": subset, "image_type": IMAGE_TYPES[subset],
                                         "mask_files": list(image.mask_files)}
                if subset == "CBIS_DDSM":
                    extra["pathology"] = list(image.pathologies)
                elif image.birads is not None:
                    extra["birads"] = image.birads
                info = {"masks": [folder / "Masks" / m for m in image.mask_files], "side": image.side,
                        "view": image.view, "extra": extra}
                refs.append(SampleRef(ids[0], ids[1], folder / "AllPng" / image.image_file,
                                      image_labels(image), info))
        return sorted(refs, key=lambda ref: ref.image_id)

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        if ref.info["side"] and meta.sources.get("laterality") == "image":
            meta.laterality = None  # the table's side beats the reader's guess from the pixels
        calcification = np.zeros(image.shape, bool)
        for path in ref.info["masks"]:
            mask = read_mask(path)
            check_mask_shape(mask, image, f"{self.kind} {ref.image_id}: {path}")
            calcification |= mask
        extra = {key: list(value) if isinstance(value, list) else value
                 for key, value in ref.info["extra"].items()}
        return Sample(image=image, meta=fill_view(meta, ref.info["side"], ref.info["view"]),
                      masks={"calcification": calcification}, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id, extra=extra)
