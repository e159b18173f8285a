"""GLAM / GMIC exam lists: the data model, and reading/writing it as .pkl, .json or .csv.

An exam list is a list of exams; an exam is a dict (the authors' format, nyukat/GMIC and GLAM):
    "horizontal_flip": "NO" or "YES"
    "L-CC", "R-CC", "L-MLO", "R-MLO": list of short image names (no folder, no suffix)
    "<view>_benign_seg", "<view>_malignant_seg": list of segmentation names (optional)
    "cancer_label": {"left_benign", "right_benign", "left_malignant", "right_malignant",
        "benign", "malignant", "unknown": 0/1} (optional)
After cropping (`mammo.glam.cropping`) and centres (`mammo.glam.centers`), per-image fields, each
{view: [one value per image of that view, in the same order]} over the views that have images:
    "window_location": (top, bottom, left, right), rows/columns of the crop in the original image
    "rightmost_points": ((y_first, y_last), x), in the flipped (model-orientation) crop
    "bottommost_points": (y, (x_first, x_last)), in the flipped crop
    "distance_from_starting_side": int, empty columns between the chest-wall edge and the breast
    "best_center": (y, x), centre of the model's input window in the flipped crop
Reading normalises these fields to tuples of Python ints, so every format compares equal.

CSV (defined here; the authors only use pickles): one row per image, in `iter_images` order, with
columns `exam_id` (index of the exam in the list), `view`, `image` (short name), `horizontal_flip`,
then JSON-encoded cells (empty = absent): the five per-image fields, `cancer_label`, `benign_seg`
and `malignant_seg` (the `<view>_<class>_seg` list of the row's view) and `exam_extra` (a dict of
every other exam key, e.g. empty view lists). Exam-level cells repeat on each row of an exam and are
read from its first row. An exam without any image has no row and cannot be written as CSV.
"""

from __future__ import annotations

import csv
import io
import json
import operator
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mammo.datasets.safe_pickle import check_plain, load_restricted
from mammo.errors import MammoInputError

VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")  # the authors' order (VIEWS.LIST)
FLIPS = ("NO", "YES")
SEG_CLASSES = ("benign", "malignant")
CROP_FIELDS = ("window_location", "rightmost_points", "bottommost_points", "distance_from_starting_side")
IMAGE_FIELDS = (*CROP_FIELDS, "best_center")
# Nesting of each per-image field: "i" is an int, a tuple is a tuple of those.
_FIELD_SHAPES: dict[str, Any] = {
    "window_location": ("i", "i", "i", "i"),
    "rightmost_points": (("i", "i"), "i"),
    "bottommost_points": ("i", ("i", "i")),
    "distance_from_starting_side": "i",
    "best_center": ("i", "i"),
}
CSV_COLUMNS = ("exam_id", "view", "image", "horizontal_flip", *IMAGE_FIELDS,
               "cancer_label", "benign_seg", "malignant_seg", "exam_extra")


def _as_shape(value: Any, shape: Any, where: str) -> Any:
    """`value` (nested lists/tuples of ints, numpy ints included) as nested tuples of int."""
    if shape == "i":
        if isinstance(value, bool):
            raise MammoInputError(f"{where}: expected an integer, got {value!r}")
        try:
            return operator.index(value)
        except TypeError:
            raise MammoInputError(f"{where}: expected an integer, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) != len(shape):
        raise MammoInputError(f"{where}: expected {len(shape)} values, got {value!r}")
    return tuple(_as_shape(v, s, where) for v, s in zip(value, shape))


def _check_names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MammoInputError(f"{where} must be a list of non-empty image names, got {value!r}")
    return list(value)


def _normalise_exam(exam: Any, idx: int, where: str) -> dict[str, Any]:
    """A checked copy of one exam, per-image fields as tuples of int; MammoInputError if malformed."""
    if not isinstance(exam, dict):
        raise MammoInputError(f"{where}: exam {idx} is a {type(exam).__name__}, not a dict")
    views = [v for v in VIEWS if v in exam]
    if not views:
        raise MammoInputError(f"{where}: exam {idx} has none of the view keys {', '.join(VIEWS)} "
                              f"(keys: {sorted(map(str, exam))})")
    if exam.get("horizontal_flip") not in FLIPS:
        raise MammoInputError(f"{where}: exam {idx} horizontal_flip must be 'NO' or 'YES', "
                              f"got {exam.get('horizontal_flip')!r}")
    out = dict(exam)
    for view in views:
        out[view] = _check_names(exam[view], f"{where}: exam {idx} {view!r}")
    for key in exam:
        if isinstance(key, str) and key.endswith("_seg"):
            out[key] = _check_names(exam[key], f"{where}: exam {idx} {key!r}")
    if not isinstance(exam.get("cancer_label", {}), dict):
        raise MammoInputError(f"{where}: exam {idx} cancer_label must be a dict")
    counts = {v: len(out[v]) for v in views}
    for name in IMAGE_FIELDS:
        if name in exam:
            out[name] = _normalise_field(exam[name], name, counts, f"{where}: exam {idx} {name}")
    return out


def _normalise_field(value: Any, name: str, counts: dict[str, int], where: str) -> dict[str, list]:
    """{view: [value per image]} checked against the exam's image counts per view.

    Views without images may be missing or hold [] (older GMIC lists); they are dropped.
    """
    if not isinstance(value, dict):
        raise MammoInputError(f"{where} must be a dict {{view: [one value per image]}}")
    needed = {v for v, n in counts.items() if n}
    if not needed <= set(value) <= set(counts):
        raise MammoInputError(f"{where} has views {sorted(value)} but the exam has images in "
                              f"{sorted(needed)}")
    out = {}
    for view in sorted(set(value), key=VIEWS.index):
        items, n = value[view], counts[view]
        if not isinstance(items, list) or len(items) != n:
            raise MammoInputError(f"{where}[{view!r}] must be a list of {n} values (one per image)")
        if n:
            out[view] = [_as_shape(v, _FIELD_SHAPES[name], f"{where}[{view!r}]") for v in items]
    return out


def validate_exam_list(exams: Any, where: str | os.PathLike[str] = "exam list") -> list[dict[str, Any]]:
    """A checked, normalised copy of an exam list; MammoInputError saying what is wrong."""
    if not isinstance(exams, list):
        raise MammoInputError(f"{where}: expected a list of exams, got {type(exams).__name__}")
    return [_normalise_exam(exam, i, str(where)) for i, exam in enumerate(exams)]


def iter_images(exams: list[dict[str, Any]]) -> Iterator[tuple[int, str, str]]:
    """(exam index, view, short name) of every image, views in the authors' order."""
    for i, view, _, name in iter_image_slots(exams):
        yield i, view, name


def iter_image_slots(exams: list[dict[str, Any]]) -> Iterator[tuple[int, str, int, str]]:
    """(exam index, view, position within exam[view], short name) of every image."""
    for i, exam in enumerate(exams):
        for view in VIEWS:
            for j, name in enumerate(exam.get(view) or []):
                yield i, view, j, name


def image_fields(exam: dict[str, Any], view: str, j: int = 0) -> dict[str, Any]:
    """The per-image fields present for image `j` of `view`: {"window_location": ..., ...}."""
    return {name: exam[name][view][j] for name in IMAGE_FIELDS if name in exam}


def _to_builtins(obj: Any) -> Any:
    """Nested containers with numpy scalars turned into Python ints/floats (for pickle/JSON)."""
    if isinstance(obj, dict):
        return {k: _to_builtins(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_builtins(v) for v in obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):
        return obj.item()  # numpy scalar -> int/float/bool
    return obj


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".pkl", ".json", ".csv"):
        raise MammoInputError(f"{path}: unknown exam-list format {path.suffix!r}; use .pkl, .json or .csv")
    return suffix


def read_exam_list(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate an exam list from .pkl (restricted unpickler: no code runs), .json or .csv."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise MammoInputError(f"exam list {path} does not exist")
    if suffix == ".pkl":
        try:
            exams = load_restricted(path)
        except MammoInputError as err:
            hint = (" (numpy values: the list was written by the authors' scripts; convert it to "
                    "plain ints or redo the step with mammo.glam)") if "numpy" in str(err) else ""
            raise MammoInputError(f"{path}: {err}{hint}") from err
    elif suffix == ".json":
        try:
            exams = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MammoInputError(f"{path}: not valid JSON: {err}") from err
    else:
        exams = _read_csv(path)
    return validate_exam_list(exams, path)


def write_exam_list(exams: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Validate `exams` and write them (atomically) as .pkl (plain data only), .json or .csv."""
    path = Path(path)
    suffix = _suffix(path)
    exams = _to_builtins(validate_exam_list(exams, path))
    if suffix == ".pkl":
        check_plain(exams)  # what safe_pickle.load_restricted can read back
        data = pickle.dumps(exams, protocol=4)
    elif suffix == ".json":
        try:
            data = json.dumps(exams, indent=1).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise MammoInputError(f"{path}: the exam list holds values JSON cannot store: {err}") from err
    else:
        data = _csv_bytes(exams, path)
    _write_atomic(path, data)


def _represented_keys(exam: dict[str, Any]) -> set[str]:
    """Exam keys the CSV columns hold; the rest goes into `exam_extra`."""
    keys = {"horizontal_flip", "cancer_label", *IMAGE_FIELDS}
    for view in VIEWS:
        if exam.get(view):
            keys.update({view, *(f"{view}_{cls}_seg" for cls in SEG_CLASSES)})
    return keys


def _csv_bytes(exams: list[dict[str, Any]], path: Path) -> bytes:
    """The CSV text of a validated exam list (see the module docstring)."""
    rows = []
    for i, exam in enumerate(exams):
        if not any(exam.get(v) for v in VIEWS):
            raise MammoInputError(f"{path}: exam {i} has no image; the CSV format has one row per "
                                  "image, so write this list as .pkl or .json")
    for i, view, j, name in iter_image_slots(exams):
        exam = exams[i]
        row = {"exam_id": str(i), "view": view, "image": name, "horizontal_flip": exam["horizontal_flip"]}
        for field in IMAGE_FIELDS:
            row[field] = json.dumps(exam[field][view][j]) if field in exam else ""
        row["cancer_label"] = json.dumps(exam["cancer_label"]) if "cancer_label" in exam else ""
        for cls in SEG_CLASSES:
            key = f"{view}_{cls}_seg"
            row[f"{cls}_seg"] = json.dumps(exam[key]) if key in exam else ""
        extra = {k: v for k, v in exam.items() if k not in _represented_keys(exam)}
        row["exam_extra"] = json.dumps(extra) if extra else ""
        rows.append(row)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _parse_cell(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MammoInputError(f"{where}: not a JSON value ({err}): {text[:80]!r}") from err


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """Rebuild the exam list from the flat CSV (validated by the caller)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise MammoInputError(f"{path}: missing CSV column(s) {missing}; expected {list(CSV_COLUMNS)}")
        exams: dict[str, dict[str, Any]] = {}
        for line, row in enumerate(reader, start=2):
            _add_csv_row(exams, row, f"{path} line {line}")
    return list(exams.values())


def _add_csv_row(exams: dict[str, dict[str, Any]], row: dict[str, str], where: str) -> None:
    view, name, exam_id = row["view"], row["image"], row["exam_id"]
    if view not in VIEWS:
        raise MammoInputError(f"{where}: view {view!r} is not one of {', '.join(VIEWS)}")
    first = exam_id not in exams
    exam = exams.setdefault(exam_id, {"horizontal_flip": row["horizontal_flip"]})
    if exam["horizontal_flip"] != row["horizontal_flip"]:
        raise MammoInputError(f"{where}: horizontal_flip differs between rows of exam {exam_id}")
    first_of_view = view not in exam
    exam.setdefault(view, []).append(name)
    for field in IMAGE_FIELDS:
        if row.get(field):
            value = _parse_cell(row[field], f"{where} {field}")
            exam.setdefault(field, {}).setdefault(view, []).append(value)
    if first and row.get("cancer_label"):
        exam["cancer_label"] = _parse_cell(row["cancer_label"], f"{where} cancer_label")
    if first and row.get("exam_extra"):
        extra = _parse_cell(row["exam_extra"], f"{where} exam_extra")
        if not isinstance(extra, dict):
            raise MammoInputError(f"{where}: exam_extra must be a JSON object")
        exam.update(extra)
    for cls in SEG_CLASSES:
        if first_of_view and row.get(f"{cls}_seg"):
            exam[f"{view}_{cls}_seg"] = _parse_cell(row[f"{cls}_seg"], f"{where} {cls}_seg")
