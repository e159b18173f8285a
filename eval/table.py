"""The run's files: predictions.csv (its columns, one row per image, reading it back) and atomic writes.

Columns, in order: the five the GLAM authors' tool writes (`image_index, benign_pred,
malignant_pred, benign_label, malignant_label`; empty where unknown), then `patient_id,
laterality, view, pipeline, weights_sha256`, then `dice_<class>, iou_<class>` for each class that
some image has a reference mask for (standard class order; per image, so 1 when reference and
prediction are both empty), then `ref_area_<class>, pred_area_<class>` (the reference's and the
prediction's pixels as a fraction of the image's: 0 = empty; absent in files of older versions),
then `prompt_boxes` in runs with box prompts (the boxes given, "x0,y0,x1,y1;..."), then `seconds`
and `error` (empty unless the image failed).

This module sits at the bottom of `eval`: it imports no other `eval` module.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from mammo.metrics import MaskScore
from mammo.pipelines.base import STANDARD_CLASSES

GLAM_COLUMNS = ("image_index", "benign_pred", "malignant_pred", "benign_label", "malignant_label")
ID_COLUMNS = ("patient_id", "laterality", "view", "pipeline", "weights_sha256")
TAIL_COLUMNS = ("seconds", "qc", "error")  # qc: the reader's QC flags, ";"-joined
PROMPT_COLUMNS = ("prompt_boxes",)  # box prompts given (`--prompt-from-reference`): "x0,y0,x1,y1;..."
AREA_COLUMNS = ("ref_area", "pred_area")
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
    classes = metric_classes(rows)
    seg = [f"{m}_{c}" for c in classes for m in ("dice", "iou")]
    areas = [f"{m}_{c}" for c in classes for m in AREA_COLUMNS if any(r.get(f"{m}_{c}") for r in rows)]
    prompts = [c for c in PROMPT_COLUMNS if any(c in r for r in rows)]
    return [*GLAM_COLUMNS, *ID_COLUMNS, *seg, *areas, *prompts, *TAIL_COLUMNS]


def score_cells(name: str, score: MaskScore) -> Row:
    """The cells of one image's score of class `name`: dice/iou with 6 decimals, the areas with 6
    significant digits (a one-pixel reference in a large image must not print as 0)."""
    return {f"dice_{name}": format_value(score.dice), f"iou_{name}": format_value(score.iou),
            f"ref_area_{name}": f"{score.reference_area:.6g}", f"pred_area_{name}": f"{score.pred_area:.6g}"}


def row_score(row: Row, name: str) -> MaskScore | None:
    """The score of class `name` in a row; None without dice and iou. Rows of older files have no
    areas: reference_area None (counted as holding the class), pred_area NaN."""
    dice, iou = to_float(row.get(f"dice_{name}", "")), to_float(row.get(f"iou_{name}", ""))
    if dice is None or iou is None:
        return None
    ref, pred = (to_float(row.get(f"{m}_{name}", "")) for m in AREA_COLUMNS)
    return MaskScore(dice, iou, ref, math.nan if pred is None else pred)


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


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
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
