"""`mias-outlined`: full mini-MIAS films whose mass circles are replaced by the hand-drawn outlines
of `mias_roi/`, placed back where each crop sits in its film.

The crops of `mias_roi/` are cut unchanged from the MIAS films, so each one is found in its film
by template matching (squared difference; a crop that does not match to within `MAX_MISMATCH`
grey levels RMS is an error, not a guess). Its `_bin.bmp` outline is pasted at that place.

A film's `lesion` mask is the union of its outlines, and `extra["mask_shape"]` says how complete
it is: "outline" when every abnormality row of the film has an outline (only those films are
exact lesion masks), "circle" when none has, "mixed" otherwise; NORM films are "none". Rows
without an outline keep their circle, as in `mias`. `extra["image_type"]` is "FILM";
`extra["lesion_circles"]` is the `mias` circle mask of the located masses (absent when a mass
row has no coordinates).

Splits are those of `mias` (`splits/mias.csv`): the same patients on the same side.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from mammo.datasets.base import Sample, SampleRef, read_binary_mask
from mammo.datasets.mias import Mias, MiasRow, circle_masks, find_info
from mammo.datasets.mias_roi import MiasROI
from mammo.io import read_image

#: RMS grey-level difference (0-255) above which a crop is taken not to come from its film.
MAX_MISMATCH = 1.0


def locate_crop(film: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Top-left (row, col) of `crop` in `film`, both uint8 (H, W); ValueError when it is not there."""
    if crop.shape[0] > film.shape[0] or crop.shape[1] > film.shape[1]:
        raise ValueError(f"crop {crop.shape} is larger than the film {film.shape}")
    scores = cv2.matchTemplate(film, crop, cv2.TM_SQDIFF)
    best, _, (col, row), _ = cv2.minMaxLoc(scores)
    rms = float(np.sqrt(best / crop.size))
    if rms > MAX_MISMATCH:
        raise ValueError(f"crop not found in its film: best match differs by {rms:.1f} grey levels RMS")
    return row, col


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float32 [0, 1] -> uint8 0-255, rounded (MIAS is 8-bit, so this is exact)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


class MiasOutlined(Mias):
    """Loader for `mias/` with the outlines of `mias_roi/` (default `<root>/../mias_roi`).

    Args:
        root: the MIAS folder (Info.txt and mdbNNN.png|pgm).
        split: see `DatasetLoader`; "train"/"val"/"test" read `splits/mias.csv`.
        outlines: the `mias_roi` folder.
    """

    kind = "mias-outlined"
    split_kind: ClassVar[str] = "mias"
    layout = (Mias.layout + "; outlines: <root>/../mias_roi/mdbNNN[_k].bmp crops with "
              "mdbNNN[_k]_bin.bmp outlines (0/255)")

    def __init__(self, root: str | Path, split: str | Path | None = None,
                 outlines: str | Path | None = None) -> None:
        self.outlines_root = Path(outlines) if outlines is not None else Path(root).parent / "mias_roi"
        super().__init__(root, split)

    def _list_refs(self) -> list[SampleRef]:
        if not self.outlines_root.is_dir():
            raise self.layout_error(f"outline folder {self.outlines_root} does not exist")
        crops: dict[str, list[SampleRef]] = {}
        for crop in MiasROI(self.outlines_root, info_path=self._info_path()).refs:
            crops.setdefault(crop.info["mias_image"], []).append(crop)
        refs = super()._list_refs()
        for ref in refs:
            ref.info["crops"] = crops.get(ref.image_id, [])
        return refs

    def _info_path(self) -> Path:
        path = find_info(self.root)
        if path is None:
            raise self.layout_error(f"missing {self.root / 'Info.txt'}")
        return path

    def _load(self, ref: SampleRef) -> Sample:
        sample = super()._load(ref)
        if "lesion" in sample.masks:  # the `mias` circles, kept: loose, but they cover every located mass
            sample.extra["lesion_circles"] = sample.masks["lesion"]
        rows: list[MiasRow] = ref.info["rows"]
        outlined: list[MiasRow] = []
        outline = np.zeros(sample.image.shape, bool)
        film = to_uint8(sample.image)
        for crop_ref in ref.info["crops"]:
            crop = to_uint8(read_image(crop_ref.path)[0])
            try:
                row, col = locate_crop(film, crop)
            except ValueError as err:
                raise self.layout_error(f"{crop_ref.path.name} in {ref.image_id}: {err}") from err
            mask = read_binary_mask(crop_ref.path.with_name(f"{crop_ref.path.stem}_bin.bmp"))
            outline[row:row + mask.shape[0], col:col + mask.shape[1]] |= mask
            outlined.extend(crop_ref.info["rows"])
        abnormal = [r for r in rows if r.cls != "NORM"]
        rest = [r for r in abnormal if r not in outlined]
        circles, _ = circle_masks([r for r in rest if r.mask_class == "lesion"], sample.image.shape)
        if outlined:
            sample.masks["lesion"] = outline | circles.get("lesion", np.zeros_like(outline))
        sample.extra["mask_shape"] = ("none" if not abnormal else "outline" if not rest
                                      else "circle" if not outlined else "mixed")
        sample.extra["image_type"] = "FILM"
        return sample
