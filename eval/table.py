"""predictions.csv: its columns, one row per image, atomic writes, and reading it back.

Columns, in order: the five the GLAM authors' tool writes (`image_index, benign_pred,
malignant_pred, benign_label, malignant_label`; empty where unknown), then `patient_id,
laterality, view, pipeline, weights_sha256`, then `dice_<class>, iou_<class>` for each class that
some image has a reference mask for (standard class order), then `seconds` and `error` (empty
unless the image failed).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from mammo.pipelines.base import STANDARD_CLASSES

GLAM_COLUMNS = ("image_index", "benign_pred", "malignant_pred", "benign_label", "malignant_label")
ID_COLUMNS = ("patient_id", "laterality", "view", "pipeline", "weights_sha256")
TAIL_COLUMNS = ("seconds", "error")
Row = dict[str, str]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(image_id: str) -> str:
    """An image id as a file name: characters other than letters, digits, `._-` become `_`."""
    return _UNSAFE.sub("_", image_id)


def metric_classes(rows: list[Row]) -> list[str]:
    """Classes with a `dice_<class>` value in any row, in standard class order (then others)."""
    present = {key[5:] for row in rows for key, value in row.items() if key.startswith("dice_") and value}
    ordered = [c for c in STANDARD_CLASSES if c in present]
    return ordered + sorted(present - set(ordered))


def columns(rows: list[Row]) -> list[str]:
    """The header for these rows (see the module docstring)."""
    seg = [f"{m}_{c}" for c in metric_classes(rows) for m in ("dice", "iou")]
    return [*GLAM_COLUMNS, *ID_COLUMNS, *seg, *TAIL_COLUMNS]


def format_value(value: object, digits: int = 6) -> str:
    """Cell text: "" for None, floats with `digits` decimals, everything else str()."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_rows(path: Path, rows: list[Row]) -> None:
    """Write the CSV atomically: a temp file beside it, then a rename (a kill never leaves half a file)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in writer.fieldnames})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def read_rows(path: Path) -> list[Row]:
    """Rows of a predictions.csv as dicts of strings (missing cells are "")."""
    from mammo.errors import MammoInputError

    if not path.is_file():
        raise MammoInputError(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "image_index" not in reader.fieldnames:
            raise MammoInputError(f"{path} is not a predictions.csv (no image_index column)")
        return [{k: v or "" for k, v in row.items()} for row in reader]


def to_float(text: str) -> float | None:
    """Cell text -> float, None when empty or not a number."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value  # NaN counts as missing


def read_png_mask(path: Path, binary: bool = True) -> np.ndarray:
    """A PNG written by the runner: bool (H, W) (> 127), or float32 (H, W) in [0, 1]."""
    array = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if array is None:
        raise OSError(f"cannot read {path}")
    return array > 127 if binary else array.astype(np.float32) / 255.0
