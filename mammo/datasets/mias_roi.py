"""`mias-roi`: crops around MIAS masses with hand-drawn outlines (`mdbNNN[_k].bmp` + `_bin.bmp`).

Benign/malignant come from the MIAS `Info.txt`. A crop `mdbNNN_k` is the k-th `Info.txt` row of
mdbNNN (checked by locating the crops in the full images: mdb132_1/_2 and mdb144_1/_2 sit at the
centres of rows 1 and 2); a crop without `_k` takes all rows of its image (mdb005's crop holds both
of its masses). The patient is that of the full MIAS image (see `mammo.datasets.mias`).
"""

from __future__ import annotations

import re
from pathlib import Path

from mammo.datasets.base import DatasetLoader, Sample, SampleRef, check_mask_shape, read_binary_mask
from mammo.datasets.mias import MiasRow, find_info, mias_labels, mias_patient_id, parse_info
from mammo.io import read_image

_CROP = re.compile(r"^(?P<ref>mdb\d{3})(?:_(?P<k>\d+))?$")


def crop_rows(rows: list[MiasRow], k: int | None) -> list[MiasRow]:
    """The Info.txt rows a crop shows: row k (1-based) when given and present, else all rows."""
    if k is not None and 1 <= k <= len(rows):
        return [rows[k - 1]]
    return rows


class MiasROI(DatasetLoader):
    """Loader for `mias_roi/`: one sample per crop; mask `lesion` from `<stem>_bin.bmp` (> 127).

    Args:
        root: the crop folder.
        split: see `DatasetLoader`.
        info_path: MIAS `Info.txt`; default `<root>/Info.txt`, else `<root>/../mias/Info.txt`.
    """

    kind = "mias-roi"
    layout = ("<root>/mdbNNN[_k].bmp crops with <root>/mdbNNN[_k]_bin.bmp outlines (0/255), and the "
              "MIAS Info.txt in <root>/Info.txt or <root>/../mias/Info.txt")

    def __init__(self, root: str | Path, split: str | Path | None = None,
                 info_path: str | Path | None = None) -> None:
        self.info_path = Path(info_path) if info_path is not None else None
        super().__init__(root, split)

    def _find_info(self) -> Path:
        if self.info_path is not None:
            if not self.info_path.is_file():
                raise self.layout_error(f"missing {self.info_path}")
            return self.info_path
        found = find_info(self.root) or find_info(self.root.parent / "mias")
        if found is None:
            raise self.layout_error(f"missing MIAS Info.txt: looked for {self.root / 'Info.txt'} and "
                                    f"{self.root.parent / 'mias' / 'Info.txt'}")
        return found

    def _list_refs(self) -> list[SampleRef]:
        info = parse_info(self._find_info())
        crops = sorted(p for p in self.root.glob("*.bmp") if _CROP.match(p.stem))
        missing = [p.name for p in crops if not self._mask_path(p).is_file()]
        unknown = [p.name for p in crops if _CROP.match(p.stem)["ref"] not in info]
        if missing or unknown:
            raise self.layout_error(f"crops without _bin.bmp outline: {missing[:5]}; crops without an "
                                    f"Info.txt row: {unknown[:5]}")
        refs = []
        for path in crops:
            match = _CROP.match(path.stem)
            k = int(match["k"]) if match["k"] else None
            rows = crop_rows(info[match["ref"]], k)
            refs.append(SampleRef(path.stem, mias_patient_id(match["ref"]), path, mias_labels(rows),
                                  {"mias_image": match["ref"], "rows": rows}))
        return refs

    def _mask_path(self, crop: Path) -> Path:
        return crop.with_name(f"{crop.stem}_bin.bmp")

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        mask_path = self._mask_path(ref.path)
        lesion = read_binary_mask(mask_path)
        check_mask_shape(lesion, image, str(mask_path))
        extra = {"mias_image": ref.info["mias_image"],
                 "rows": [(r.cls, r.severity, r.x, r.y, r.radius) for r in ref.info["rows"]]}
        return Sample(image=image, meta=meta, masks={"lesion": lesion}, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id, extra=extra)
