"""Dataset loaders: one per public layout, all yielding `Sample`s lazily.

    from mammo.datasets import load_dataset
    ds = load_dataset("mias", "../shared/data/mias", split="test")
    sample = ds[0]            # or: for sample in ds: ...
    sample.image              # float32 (H, W) in [0, 1]
    sample.masks["lesion"]    # bool (H, W)
    sample.labels             # {"benign": 0/1/None, "malignant": 0/1/None}

Kinds: see `LOADERS`. Splits: "train"/"val"/"test" pick rows of the committed
`splits/<kind>.csv` (tissue-ddsm, mias, mias-roi, cdd-cesm, cdd-cesm-subtracted, ddsm-films); a CSV
path restricts to its rows.
`folder` and `csv` read the user's own images (see `mammo.datasets.folder`).
"""

from __future__ import annotations

from pathlib import Path

from mammo.datasets.base import DatasetLoader, Sample, SampleRef
from mammo.datasets.cbis_ddsm import CbisDDSM
from mammo.datasets.cdd_cesm import CddCesm
from mammo.datasets.cdd_cesm_subtracted import CddCesmSubtracted
from mammo.datasets.ddsm_films import DdsmFilms
from mammo.datasets.deepmica_png import DeepMiCaPng
from mammo.datasets.dicom_folder import DicomFolder
from mammo.datasets.folder import CsvList, ImageFolder
from mammo.datasets.glam import GlamExam
from mammo.datasets.mass_seg import MassSeg08
from mammo.datasets.mias import Mias
from mammo.datasets.mias_outlined import MiasOutlined
from mammo.datasets.mias_roi import MiasROI
from mammo.datasets.tissue_ddsm import TissueDDSM
from mammo.errors import MammoInputError

LOADERS: dict[str, type[DatasetLoader]] = {
    "tissue-ddsm": TissueDDSM,
    "mias": Mias,
    "mias-roi": MiasROI,
    "mias-outlined": MiasOutlined,
    "cdd-cesm": CddCesm,
    "cdd-cesm-subtracted": CddCesmSubtracted,
    "ddsm-films": DdsmFilms,
    "glam-exam": GlamExam,
    "cbis-ddsm": CbisDDSM,
    "mass-seg-08": MassSeg08,
    "deepmica-png": DeepMiCaPng,
    "dicom-folder": DicomFolder,
    "folder": ImageFolder,
    "csv": CsvList,
}


def load_dataset(kind: str, root: str | Path, split: str | Path | None = None) -> DatasetLoader:
    """Open a dataset folder with the loader for `kind` (lists samples; reads pixels on access).

    Args:
        kind: one of `LOADERS`.
        root: the dataset folder.
        split: None, "train"/"val"/"test", a CSV path, or "PATH.csv:test" (see `DatasetLoader`).

    Raises:
        MammoInputError: unknown kind, missing folder or files (the message gives the layout),
            or a split that does not fit the data.
    """
    if kind not in LOADERS:
        raise MammoInputError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(LOADERS)}")
    return LOADERS[kind](root, split=split)


__all__ = [
    "LOADERS",
    "CbisDDSM",
    "CddCesm",
    "CddCesmSubtracted",
    "DdsmFilms",
    "CsvList",
    "DatasetLoader",
    "DeepMiCaPng",
    "DicomFolder",
    "GlamExam",
    "ImageFolder",
    "MassSeg08",
    "Mias",
    "MiasOutlined",
    "MiasROI",
    "Sample",
    "SampleRef",
    "TissueDDSM",
    "load_dataset",
]
