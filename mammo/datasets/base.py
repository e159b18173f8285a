"""What every dataset loader shares: `Sample`, `SampleRef`, `DatasetLoader`, mask and split helpers.

A loader lists its samples when it is built (file names and annotation tables only, no pixels) and
reads one image with its masks when a sample is indexed or iterated, so a 519-image set never sits
in memory at once.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from mammo.errors import MammoInputError
from mammo.io.meta import ImageMeta
from mammo.pipelines.base import STANDARD_CLASSES

LABEL_KEYS = ("benign", "malignant")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_COLUMNS = ("image_id", "patient_id", "split")
#: Where the committed split CSVs live: `<repo>/splits/<kind with - as _>.csv`.
SPLITS_DIR = Path(__file__).resolve().parents[2] / "splits"


@dataclass
class Sample:
    """One annotated mammogram (or crop) as read from a dataset.

    Attributes:
        image: float32 (H, W) in [0, 1], brighter = denser (what `mammo.io.read_image` returns).
        meta: the image's `ImageMeta`; laterality/view filled from the file name where the
            reader left them empty (source "filename").
        masks: standard class name (see `STANDARD_CLASSES`) -> bool (H, W). A class is present
            only where the dataset says where it is; an all-False mask means "known absent",
            a missing key means "not annotated".
        labels: {"benign": 0/1/None, "malignant": 0/1/None}; None where the dataset does not say.
        patient_id: patient (or exam) the image belongs to; splits never separate one patient.
        image_id: the image's file stem (unique within the dataset).
        extra: dataset-specific annotations (arrays bool (H, W) or plain values).
    """

    image: np.ndarray
    meta: ImageMeta
    masks: dict[str, np.ndarray]
    labels: dict[str, int | None]
    patient_id: str
    image_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or self.image.dtype != np.float32:
            raise ValueError(f"{self.image_id}: image must be float32 (H, W), got "
                             f"{self.image.dtype} {self.image.shape}")
        for name, mask in self.masks.items():
            if name not in STANDARD_CLASSES:
                raise ValueError(f"{self.image_id}: mask {name!r} is not one of {STANDARD_CLASSES}")
            if mask.dtype != bool or mask.shape != self.image.shape:
                raise ValueError(f"{self.image_id}: mask {name!r} is {mask.dtype} {mask.shape}, "
                                 f"expected bool {self.image.shape}")
        if set(self.labels) != set(LABEL_KEYS):
            raise ValueError(f"{self.image_id}: labels must have keys {LABEL_KEYS}, "
                             f"got {sorted(self.labels)}")


@dataclass
class SampleRef:
    """A listed, not yet loaded sample: ids, source path, labels and loader-specific notes."""

    image_id: str
    patient_id: str
    path: Path
    labels: dict[str, int | None]
    info: dict[str, Any] = field(default_factory=dict)


class DatasetLoader:
    """Lazy, indexable collection of `Sample`s from one dataset layout.

    Subclasses set `kind` and `layout` (a one-paragraph description of the expected files, used
    in error messages) and implement `_list_refs` (cheap: names and tables) and `_load`.

    Args:
        root: the dataset folder.
        split: None (all samples), "train"/"val"/"test" (rows of the committed
            `splits/<kind>.csv`), a path to a CSV with an `image_id` column (its rows), or
            "PATH.csv:test" (the rows of PATH.csv whose `split` is test).
    """

    kind: ClassVar[str] = ""
    #: the kind whose committed split file "train"/"val"/"test" read ("" = `kind`)
    split_kind: ClassVar[str] = ""
    layout: ClassVar[str] = ""

    def __init__(self, root: str | Path, split: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise self.layout_error(f"dataset folder {self.root} does not exist")
        refs = self._list_refs()
        if not refs:
            raise self.layout_error(f"no images found under {self.root}")
        if split is not None:
            refs = apply_split(refs, self.split_kind or self.kind, split)
        self._refs = refs
        self._index = {ref.image_id: i for i, ref in enumerate(refs)}
        if len(self._index) != len(refs):
            raise MammoInputError(f"{self.kind}: image ids are not unique under {self.root}")

    # -- to implement -------------------------------------------------------------------------
    def _list_refs(self) -> list[SampleRef]:
        """All samples under `self.root`, sorted by image id; reads no pixels."""
        raise NotImplementedError

    def _load(self, ref: SampleRef) -> Sample:
        """Read one sample's image, masks and labels."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def layout_error(self, problem: str) -> MammoInputError:
        """A `MammoInputError` that names the problem and the expected layout."""
        return MammoInputError(f"{self.kind}: {problem}. Expected layout: {self.layout}")

    def require(self, *relative: str) -> None:
        """Raise a layout error naming every path in `relative` missing under the root."""
        missing = [name for name in relative if not (self.root / name).exists()]
        if missing:
            raise self.layout_error(f"missing under {self.root}: {', '.join(missing)}")

    @property
    def refs(self) -> list[SampleRef]:
        """The listed samples, in order."""
        return list(self._refs)

    @property
    def ids(self) -> list[str]:
        """Image ids, in order."""
        return [ref.image_id for ref in self._refs]

    @property
    def patient_ids(self) -> list[str]:
        """Patient id of each sample, in order (with repeats)."""
        return [ref.patient_id for ref in self._refs]

    def head(self, count: int) -> DatasetLoader:
        """Keep only the first `count` samples (in place; a prefix keeps the order); returns self."""
        if count < 1:
            raise MammoInputError(f"{self.kind}: the number of images to keep must be at least 1, got {count}")
        self._refs = self._refs[:count]
        self._index = {ref.image_id: i for i, ref in enumerate(self._refs)}
        return self

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, key: int | str) -> Sample:
        """Load a sample by position or by image id."""
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"{self.kind}: no image {key!r} under {self.root}")
            key = self._index[key]
        return self._load(self._refs[key])

    def __iter__(self) -> Iterator[Sample]:
        for ref in self._refs:
            yield self._load(ref)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)})"


# -- mask and metadata helpers -------------------------------------------------------------------
def read_binary_mask(path: Path, threshold: int = 127) -> np.ndarray:
    """Read a mask image (any PIL mode; 16-bit scaled to 8-bit) as bool (H, W): pixel > threshold."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):
                arr = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
            else:
                arr = np.asarray(im.convert("L"))
    except (OSError, ValueError) as err:
        raise MammoInputError(f"cannot read mask {path}: {err}") from err
    return arr > threshold


def check_mask_shape(mask: np.ndarray, image: np.ndarray, what: str) -> None:
    """Raise MammoInputError unless `mask` has the image's (H, W)."""
    if mask.shape != image.shape:
        raise MammoInputError(f"{what}: mask shape {mask.shape} differs from image shape {image.shape}")


def fill_acquisition(meta: ImageMeta, acquisition: str) -> ImageMeta:
    """Set meta.acquisition ("film", "digital", "cesm") from what the data set's publisher says,
    where the reader could not tell (rasters); source "dataset"."""
    if meta.acquisition is None:
        meta.acquisition = acquisition
        meta.sources["acquisition"] = "dataset"
    return meta


def fill_view(meta: ImageMeta, laterality: str | None, view: str | None) -> ImageMeta:
    """Set meta.laterality / meta.view from the file name where the reader left them None."""
    if meta.laterality is None and laterality:
        meta.laterality = laterality
        meta.sources["laterality"] = "filename"
    if meta.view is None and view:
        meta.view = view
        meta.sources["view"] = "filename"
    return meta


def labels_from_flags(benign: int | None, malignant: int | None) -> dict[str, int | None]:
    """The `labels` dict: ints 0/1 kept, anything else None."""
    return {"benign": None if benign is None else int(benign),
            "malignant": None if malignant is None else int(malignant)}


UNKNOWN_LABELS: dict[str, int | None] = {"benign": None, "malignant": None}


# -- splits -------------------------------------------------------------------------------------
def split_csv_path(kind: str) -> Path:
    """The committed split file of a loader kind: `splits/<kind with - as _>.csv`."""
    return SPLITS_DIR / (kind.replace("-", "_") + ".csv")


def resolve_split(kind: str, split: str | Path) -> tuple[Path, str | None]:
    """Turn a `split` argument into (csv path, split name or None for all rows)."""
    text = str(split)
    if text in SPLIT_NAMES:
        path = split_csv_path(kind)
        if not path.is_file():
            raise MammoInputError(f"{kind}: no committed split file {path}; pass a CSV path instead "
                                  f"(columns {','.join(SPLIT_COLUMNS)})")
        return path, text
    head, sep, tail = text.rpartition(":")
    if sep and head and tail in SPLIT_NAMES:
        return Path(head), tail
    return Path(text), None


def read_split_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a split CSV (needs an `image_id` column; `patient_id`, `split` optional)."""
    if not path.is_file():
        raise MammoInputError(f"split file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "image_id" not in reader.fieldnames:
            raise MammoInputError(f"split file {path} has no image_id column "
                                  f"(expected columns {','.join(SPLIT_COLUMNS)})")
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def apply_split(refs: list[SampleRef], kind: str, split: str | Path) -> list[SampleRef]:
    """Keep the refs named by the split (see `DatasetLoader`), in their listed order.

    Raises MammoInputError when the CSV names images the dataset lacks, gives a different patient
    than the loader for an image, or selects nothing.
    """
    path, name = resolve_split(kind, split)
    rows = read_split_rows(path)
    if name is not None:
        rows = [row for row in rows if row.get("split") == name]
    by_id = {ref.image_id: ref for ref in refs}
    missing = [row["image_id"] for row in rows if row["image_id"] not in by_id]
    if missing:
        raise MammoInputError(f"{kind}: split {path} names {len(missing)} images not in the dataset, "
                              f"e.g. {missing[:5]}")
    wrong = [row["image_id"] for row in rows
             if row.get("patient_id") and row["patient_id"] != by_id[row["image_id"]].patient_id]
    if wrong:
        raise MammoInputError(f"{kind}: split {path} gives other patient ids than the loader for {wrong[:5]}")
    keep = {row["image_id"] for row in rows}
    if not keep:
        raise MammoInputError(f"{kind}: split {split!r} selects no images from {path}")
    return [ref for ref in refs if ref.image_id in keep]
