"""`mias`: mini-MIAS mammograms (1024x1024 MLO, PNG or the original PGM) with `Info.txt`.

`Info.txt` has one row per abnormality: REFNUM BG CLASS [SEVERITY [X Y RADIUS]], and notes such
as `*NOTE 3*` that are ignored. X, Y are pixel coordinates of the centre with **Y counted from the
bottom edge**, so the centre row is `H - Y`. Rows without coordinates (mdb059, the `*NOTE 3*`
calcification rows) give labels but no location.

Patients: MIAS images come in left/right pairs of one woman, mdb001+mdb002, mdb003+mdb004, ...
Image mdbN belongs to patient `mias_{(N + 1) // 2:03d}`: mdb001, mdb002 -> mias_001;
mdb005, mdb006 -> mias_003; mdb321, mdb322 -> mias_161.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mammo.datasets.base import DatasetLoader, Sample, SampleRef, fill_acquisition, labels_from_flags
from mammo.errors import MammoInputError
from mammo.io import read_image

MASS_CLASSES = ("CIRC", "SPIC", "MISC", "ARCH", "ASYM")
ALL_CLASSES = ("NORM", "CALC", *MASS_CLASSES)
_REF = re.compile(r"^mdb(\d{3})$")
IMAGE_SUFFIXES = (".png", ".pgm")


@dataclass(frozen=True)
class MiasRow:
    """One `Info.txt` row. x, y (Y from the bottom edge) and radius in pixels, None where absent."""

    refnum: str
    tissue: str
    cls: str
    severity: str | None = None
    x: int | None = None
    y: int | None = None
    radius: int | None = None

    @property
    def mask_class(self) -> str | None:
        """Standard class this row is drawn into: calcification, lesion, or None for NORM."""
        if self.cls == "NORM":
            return None
        return "calcification" if self.cls == "CALC" else "lesion"

    @property
    def located(self) -> bool:
        return self.x is not None and self.y is not None and self.radius is not None


def _parse_line(tokens: list[str], where: str) -> MiasRow:
    """Tokens of one row (notes already removed) -> MiasRow."""
    if len(tokens) < 3 or not _REF.match(tokens[0]) or tokens[2] not in ALL_CLASSES:
        raise MammoInputError(f"{where}: expected 'mdbNNN BG CLASS [SEVERITY X Y RADIUS]', got {tokens}")
    severity = tokens[3] if len(tokens) > 3 and tokens[3] in ("B", "M") else None
    coords = tokens[4:7] if severity else tokens[3:6]
    if len(coords) == 3:
        try:
            x, y, r = (int(float(v)) for v in coords)
        except ValueError as err:
            raise MammoInputError(f"{where}: bad coordinates {coords}") from err
        return MiasRow(tokens[0], tokens[1], tokens[2], severity, x, y, r)
    return MiasRow(tokens[0], tokens[1], tokens[2], severity)


def parse_info(path: Path) -> dict[str, list[MiasRow]]:
    """Read `Info.txt` -> refnum -> its rows in file order (header and `*NOTE*` tokens skipped)."""
    if not path.is_file():
        raise MammoInputError(f"MIAS annotation file {path} does not exist")
    rows: dict[str, list[MiasRow]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = re.sub(r"\*[^*]*\*", " ", line)
        tokens = text.split()
        if not tokens or tokens[0].upper() == "REFNUM":
            continue
        row = _parse_line(tokens, f"{path}:{number}")
        rows.setdefault(row.refnum, []).append(row)
    return rows


def mias_patient_id(refnum: str) -> str:
    """`mdb005` -> `mias_003` (images 2k-1 and 2k are patient k)."""
    match = _REF.match(refnum)
    if match is None:
        raise MammoInputError(f"not a MIAS reference number: {refnum!r}")
    return f"mias_{(int(match.group(1)) + 1) // 2:03d}"


def mias_labels(rows: list[MiasRow]) -> dict[str, int | None]:
    """benign = 1 if any row is B, malignant = 1 if any row is M; NORM -> both 0."""
    severities = {row.severity for row in rows}
    if all(row.cls == "NORM" for row in rows):
        return labels_from_flags(0, 0)
    if severities == {None}:
        return labels_from_flags(None, None)
    return labels_from_flags(int("B" in severities), int("M" in severities))


def circle_masks(rows: list[MiasRow], shape: tuple[int, int]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Filled circles per class, centre (row H - Y, column X).

    Returns (masks, unlocated): masks bool (H, W) for `lesion` and `calcification`; a class with
    a row that has no coordinates is left out (unknown) and listed in `unlocated`.
    """
    height = shape[0]
    canvases = {name: np.zeros(shape, dtype=np.uint8) for name in ("lesion", "calcification")}
    unlocated: set[str] = set()
    for row in rows:
        name = row.mask_class
        if name is None:
            continue
        if not row.located:
            unlocated.add(name)
            continue
        cv2.circle(canvases[name], (int(row.x), int(height - row.y)), int(row.radius), 1, thickness=-1)
    masks = {name: canvas.astype(bool) for name, canvas in canvases.items() if name not in unlocated}
    return masks, sorted(unlocated)


def find_info(root: Path) -> Path | None:
    """`Info.txt` in root (any case), else None."""
    for name in ("Info.txt", "info.txt", "INFO.TXT"):
        if (root / name).is_file():
            return root / name
    return None


class Mias(DatasetLoader):
    """Loader for `mias/`: one sample per `mdbNNN.png|pgm` with a row in `Info.txt`.

    Masks: `lesion` (mass rows: CIRC SPIC MISC ARCH ASYM) and `calcification` (CALC rows) drawn
    as filled circles of the given radius; NORM images get all-False masks. extra: "tissue"
    (F/G/D), "rows" (list of (class, severity, x, y, radius)), "unlocated", "mask_shape".
    """

    kind = "mias"
    layout = ("<root>/Info.txt (REFNUM BG CLASS SEVERITY X Y RADIUS per abnormality, Y from the "
              "bottom edge) and <root>/mdbNNN.png or mdbNNN.pgm")

    def _list_refs(self) -> list[SampleRef]:
        info_path = find_info(self.root)
        if info_path is None:
            raise self.layout_error(f"missing {self.root / 'Info.txt'}")
        info = parse_info(info_path)
        files: dict[str, Path] = {}
        for path in sorted(self.root.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and _REF.match(path.stem):
                files.setdefault(path.stem, path)  # .png sorts before .pgm
        unlisted = sorted(set(files) - set(info))
        if unlisted:
            raise self.layout_error(f"{info_path.name} has no row for {unlisted[:5]}")
        return [SampleRef(ref, mias_patient_id(ref), path, mias_labels(info[ref]), {"rows": info[ref]})
                for ref, path in sorted(files.items())]

    def _load(self, ref: SampleRef) -> Sample:
        image, meta = read_image(ref.path)
        rows: list[MiasRow] = ref.info["rows"]
        masks, unlocated = circle_masks(rows, image.shape)
        extra = {"tissue": rows[0].tissue, "mask_shape": "circle", "unlocated": unlocated,
                 "rows": [(r.cls, r.severity, r.x, r.y, r.radius) for r in rows]}
        return Sample(image=image, meta=fill_acquisition(meta, "film"), masks=masks, labels=dict(ref.labels),
                      patient_id=ref.patient_id, image_id=ref.image_id, extra=extra)
