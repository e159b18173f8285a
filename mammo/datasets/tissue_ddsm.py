"""`tissue-ddsm`: DDSM MLO mammograms with adipose / fibroglandular / pectoral label images.

Tiryaki & Kaplanoglu, IRBM 2022. Label PNGs use 64 background, 128 adipose, 192 fibroglandular,
255 pectoral muscle; values in between are snapped to the nearest level.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from mammo.datasets.base import (
    UNKNOWN_LABELS,
    DatasetLoader,
    Sample,
    SampleRef,
    check_mask_shape,
    fill_acquisition,
    fill_view,
)
from mammo.errors import MammoInputError
from mammo.io import read_image

#: label value -> class (background is 64).
LEVELS = {64: "background", 128: "adipose", 192: "fibroglandular", 255: "pectoral"}
#: the tissue classes in label order (0 background .. 3 pectoral), as the cascade models output them.
TISSUE_CLASSES = tuple(LEVELS.values())
_NAME = re.compile(r"^(?P<case>[A-Za-z]+_\d+)_\d+\.(?P<side>LEFT|RIGHT)_(?P<view>[A-Z]+)$")


def parse_name(stem: str) -> tuple[str, str | None, str | None]:
    """`A_0002_1.RIGHT_MLO` -> ("A_0002", "R", "MLO"); an unknown pattern -> (stem, None, None)."""
    match = _NAME.match(stem)
    if match is None:
        return stem, None, None
    return match["case"], match["side"][0], match["view"]


def tissue_masks(label: np.ndarray) -> dict[str, np.ndarray]:
    """Label image uint8 (H, W) -> bool (H, W) masks breast (not background), adipose,
    fibroglandular, pectoral; each pixel snapped to the nearest of 64/128/192/255."""
    levels = np.array(sorted(LEVELS), dtype=np.int16)
    nearest = np.abs(label.astype(np.int16)[..., None] - levels).argmin(axis=-1)
    masks = {"breast": nearest != 0}
    for idx, level in enumerate(sorted(LEVELS)):
        if LEVELS[level] != "background":
            masks[LEVELS[level]] = nearest == idx
    return masks


class TissueDDSM(DatasetLoader):
    """Loader for `tissue_ddsm/`: one sample per `fgt_seg/*.png`; patient = DDSM case (`A_0002`).

    Samples: masks breast/adipose/fibroglandular/pectoral; labels unknown (None); extra
    "case_prefix" is the DDSM case letter (A, B, C, D: the digitiser/site volume).
    """

    kind = "tissue-ddsm"
    layout = ("<root>/fgt_seg/<case>_<n>.<SIDE>_<VIEW>.png (e.g. A_0002_1.RIGHT_MLO.png) and "
              "<root>/fgt_seg_labels/<same stem>_LI.png with 64 background, 128 adipose, "
              "192 fibroglandular, 255 pectoral")

    def _list_refs(self) -> list[SampleRef]:
        self.require("fgt_seg", "fgt_seg_labels")
        images = sorted((self.root / "fgt_seg").glob("*.png"))
        missing = [p.name for p in images if not self._label_path(p).is_file()]
        if missing:
            raise self.layout_error(f"no label image in fgt_seg_labels/ for {missing[:5]}"
                                    f"{' ...' if len(missing) > 5 else ''}")
        refs = []
        for path in images:
            case, side, view = parse_name(path.stem)
            refs.append(SampleRef(path.stem, case, path, dict(UNKNOWN_LABELS),
                                  {"laterality": side, "view": view, "case_prefix": case.split("_")[0]}))
        return refs

    def _label_path(self, image_path: Path) -> Path:
        return self.root / "fgt_seg_labels" / f"{image_path.stem}_LI.png"

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        label_path = self._label_path(ref.path)
        try:
            with Image.open(label_path) as im:
                label = np.asarray(im.convert("L"))
        except OSError as err:
            raise MammoInputError(f"cannot read label image {label_path}: {err}") from err
        check_mask_shape(label, image, str(label_path))
        meta = fill_acquisition(fill_view(meta, ref.info["laterality"], ref.info["view"]), "film")
        return Sample(image=image, meta=meta,
                      masks=tissue_masks(label), labels=dict(ref.labels), patient_id=ref.patient_id,
                      image_id=ref.image_id, extra={"case_prefix": ref.info["case_prefix"]})
