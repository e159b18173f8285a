"""`ddsm-films`: DDSM screen-film mammograms labelled by the DDSM volume of their case.

Layout (the Roboflow Universe export 'breast-cancer-detection-jixc0' v2 of DDSM, re-packed by
volume): `<root>/<volume>/<A|B|C|D>_<case>_<seq>-<LEFT|RIGHT>_<CC|MLO>.jpg` and `<root>/images.csv`
with columns image (path relative to the root), case, volume, side, view. Images are 640x640
8-bit: the export **stretched each film to a square**, so pixel aspect is not 1 and no pixel size
is known.

Labels are per case (the DDSM volume), not per lesion:

| volume | benign | malignant |
|---|---|---|
| cancer | None (not stated: a cancer case may also hold benign findings) | 1 |
| benign, benign_without_callback | 1 | 0 |
| normal | 0 | 0 |

Patient id = the case (`A_1108`); DDSM gives no patient identity across cases. In this export
the case letter is the volume (A normal, B benign, C cancer, D benign without callback), so a
model must never see the letter: it is kept only in `extra["case_letter"]`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from mammo.datasets.base import DatasetLoader, Sample, SampleRef, fill_acquisition, fill_view, labels_from_flags
from mammo.errors import MammoInputError
from mammo.io import read_image

TABLE = "images.csv"
COLUMNS = ("image", "case", "volume", "side", "view")
#: volume -> (benign, malignant); None = not stated by the volume
VOLUME_LABELS: dict[str, tuple[int | None, int]] = {
    "cancer": (None, 1), "benign": (1, 0), "benign_without_callback": (1, 0), "normal": (0, 0)}
SIDES = {"LEFT": "L", "RIGHT": "R"}
VIEWS = ("CC", "MLO")
_CASE = re.compile(r"^[A-D]_\d+$")


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of `images.csv` (values stripped). Raises MammoInputError naming a missing column or
    a bad value with its line number."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            names = [n.strip() for n in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise MammoInputError(f"{path}: missing column(s) {', '.join(missing)} "
                                      f"(expected {','.join(COLUMNS)}, got {','.join(names)})")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in raw.items()} for raw in reader]
    except UnicodeDecodeError as err:
        raise MammoInputError(f"{path}: not a UTF-8 CSV ({err.reason})") from err
    for number, row in enumerate(rows, start=2):
        problem = (f"volume {row['volume']!r} not one of {', '.join(VOLUME_LABELS)}"
                   if row["volume"] not in VOLUME_LABELS else
                   f"side {row['side']!r} not LEFT or RIGHT" if row["side"] not in SIDES else
                   f"view {row['view']!r} not CC or MLO" if row["view"] not in VIEWS else
                   f"case {row['case']!r} not of the form <A-D>_<number>" if not _CASE.match(row["case"]) else
                   "empty image" if not row["image"] else "")
        if problem:
            raise MammoInputError(f"{path} line {number}: {problem}")
    return rows


class DdsmFilms(DatasetLoader):
    """Loader for `ddsm_films/`: one sample per row of `images.csv` (see the module docstring).

    extra: "volume", "case_letter", "case". A case listed under two volumes is refused (its label
    would be ambiguous), as is an image listed twice.
    """

    kind = "ddsm-films"
    layout = ("<root>/images.csv (columns image,case,volume,side,view) and "
              "<root>/<volume>/<A|B|C|D>_<case>_<seq>-<LEFT|RIGHT>_<CC|MLO>.jpg, volume one of "
              + ", ".join(VOLUME_LABELS))

    def _list_refs(self) -> list[SampleRef]:
        self.require(TABLE)
        rows = read_table(self.root / TABLE)
        volumes: dict[str, set[str]] = {}
        for row in rows:
            volumes.setdefault(row["case"], set()).add(row["volume"])
        mixed = sorted(case for case, vols in volumes.items() if len(vols) > 1)
        if mixed:
            raise self.layout_error(f"cases listed under more than one volume: {mixed[:5]}")
        absent = [row["image"] for row in rows if not (self.root / row["image"]).is_file()]
        if absent:
            raise self.layout_error(f"{len(absent)} images of {TABLE} are missing, e.g. {absent[:3]}")
        refs = []
        for row in rows:
            path = self.root / row["image"]
            info = {"side": SIDES[row["side"]], "view": row["view"], "volume": row["volume"],
                    "case_letter": row["case"][0]}
            refs.append(SampleRef(path.stem, row["case"], path, labels_from_flags(*VOLUME_LABELS[row["volume"]]),
                                  info))
        return sorted(refs, key=lambda ref: ref.image_id)

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        extra = {"volume": ref.info["volume"], "case_letter": ref.info["case_letter"], "case": ref.patient_id}
        meta = fill_acquisition(fill_view(meta, ref.info["side"], ref.info["view"]), "film")
        return Sample(image=image, meta=meta, masks={},
                      labels=dict(ref.labels), patient_id=ref.patient_id, image_id=ref.image_id, extra=extra)
