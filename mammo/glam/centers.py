"""GLAM stage 2: the model's input window on each crop (the authors' get_optimal_centers.py).

Frames, all (rows, columns):
  original image (H, W) --crop (window_location)--> crop --flip (cropping.needs_flip)-->
  model-orientation crop (h, w), breast pointing right --window (best_center)--> model input
  (2944, 1920 by default).
`best_center` (y, x) is given in the model-orientation crop. The authors' choice, reproduced:
  * CC: x = rightmost_x - W // 2 - 1 (the window's right edge at the nipple); y is the centre,
    among those that keep the window inside the crop, whose window holds the most non-zero pixels
    (ties: nearest the crop's centre, then the topmost); a crop not taller than the window gets
    y = h // 2.
  * MLO: (min(bottommost_y, last non-zero row of the crop's W rightmost columns) - H // 2 - 1,
    rightmost_x - W // 2 - 1).
The model input at test time (GMIC augmentations with zero noise), reproduced by `window_origin`:
the window around best_center is shifted to lie inside the crop; along an axis where the crop is
smaller than the window, the crop is zero-padded instead: CC rows centred ((H - h) // 2 zero rows
above), MLO rows at the top, columns always at the left.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mammo.errors import MammoInputError
from mammo.glam.cropping import CropInfo, flip_for_model, run_tasks
from mammo.glam.exam_list import CROP_FIELDS, VIEWS, iter_image_slots, validate_exam_list
from mammo.io import read_image

MODEL_INPUT = (2944, 1920)


def _view_kind(view: str) -> str:
    kind = view.split("-")[-1]
    if kind not in ("CC", "MLO"):
        raise MammoInputError(f"view must be CC or MLO (e.g. 'L-CC', 'R-MLO'), got {view!r}")
    return kind


def _window_sums(cumsum: np.ndarray, centers_y: np.ndarray, center_x: int,
                 shape: tuple[int, int], window: tuple[int, int]) -> np.ndarray:
    """Non-zero pixels inside the window at each centre (y, center_x), the authors' clipping rule.

    A window reaching past the top/left edge is moved inside; past the bottom/right it is cut.
    `cumsum` is the 2-D inclusive cumulative sum of the binary image, zero-padded on top and left.
    """
    half_y, half_x = window[0] // 2, window[1] // 2
    top = centers_y - half_y
    bottom = np.minimum(centers_y + (window[0] - half_y) + np.maximum(-top, 0), shape[0])
    top = np.maximum(top, 0)
    left = center_x - half_x
    right = min(center_x + (window[1] - half_x) + max(-left, 0), shape[1])
    left = max(left, 0)
    return cumsum[bottom, right] - cumsum[top, right] - cumsum[bottom, left] + cumsum[top, left]


def _cc_center_y(image: np.ndarray, center_x: int, window: tuple[int, int]) -> int:
    """Row of the CC window centre that covers the most non-zero pixels (see module docstring)."""
    h, w = image.shape
    half_y = window[0] // 2
    first, last = half_y, h - (window[0] - half_y)  # centres keeping the window inside the crop
    if first >= last:
        return h // 2
    binary = (image > 0).astype(np.int64)
    cumsum = np.zeros((h + 1, w + 1), np.int64)
    cumsum[1:, 1:] = binary.cumsum(axis=0).cumsum(axis=1)
    candidates = np.arange(first, last + 1)
    sums = _window_sums(cumsum, candidates, center_x, (h, w), window)
    best = candidates[sums == sums.max()]
    # Ties: nearest the crop's centre row; argmin keeps the topmost of equals.
    return int(best[np.argmin((best - h // 2) ** 2)])


def get_optimal_center(image: np.ndarray, view: str, rightmost_points: Any, bottommost_points: Any,
                       window: tuple[int, int] = MODEL_INPUT) -> tuple[int, int]:
    """The authors' best centre (y, x) of the model window on a crop.

    Args:
        image: (h, w), the crop in model orientation (`cropping.flip_for_model`); non-zero = breast.
        view: "L-CC", "R-CC", "L-MLO" or "R-MLO" (only CC vs MLO matters).
        rightmost_points: ((y_first, y_last), x); bottommost_points: (y, (x_first, x_last)).
        window: the model input (height, width).

    Returns:
        (y, x) in the crop's pixel grid; it may lie outside the crop (see `window_origin`).
    """
    if image.ndim != 2 or image.size == 0:
        raise MammoInputError(f"get_optimal_center expects a non-empty (h, w) image, got {image.shape}")
    center_x = int(rightmost_points[1]) - window[1] // 2 - 1
    if _view_kind(view) == "CC":
        return _cc_center_y(image, center_x, window), center_x
    bottom_y = int(bottommost_points[0])
    rows = np.flatnonzero((image[:, -window[1]:] != 0).any(axis=1))
    if rows.size:  # the authors trust the image over bottommost_points when it ends higher
        bottom_y = min(int(rows[-1]), bottom_y)
    return bottom_y - window[0] // 2 - 1, center_x


def window_origin(image_shape: tuple[int, int], best_center: tuple[int, int], view: str,
                  window: tuple[int, int] = MODEL_INPUT) -> tuple[int, int]:
    """(top, left) of the model window in crop coordinates; negative where the crop is padded."""
    kind = _view_kind(view)
    origin = []
    for axis in (0, 1):
        size, span, center = image_shape[axis], window[axis], int(best_center[axis])
        if size < span:  # too small: zero-pad (CC rows centred; MLO rows and all columns at 0)
            origin.append(-((span - size) // 2) if axis == 0 and kind == "CC" else 0)
        else:  # move the window inside the crop
            origin.append(min(max(center - span // 2, 0), size - span))
    return origin[0], origin[1]


def _overlap(origin: tuple[int, int], window: tuple[int, int],
             shape: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(slices in the window, slices in the image) of the pixels both share."""
    win, img = [], []
    for axis in (0, 1):
        start = max(origin[axis], 0)
        stop = min(origin[axis] + window[axis], shape[axis])
        stop = max(stop, start)
        img.append(slice(start, stop))
        win.append(slice(start - origin[axis], stop - origin[axis]))
    return (win[0], win[1]), (img[0], img[1])


def extract_window(image: np.ndarray, best_center: tuple[int, int],
                   window: tuple[int, int] = MODEL_INPUT, *, view: str) -> np.ndarray:
    """The model input: `window` (H, W) cut from the model-orientation crop, zeros outside it.

    Args:
        image: (h, w[, C]) model-orientation crop, any dtype (values copied unchanged).
        best_center: (y, x) from `get_optimal_center`.
        view: CC or MLO view name; decides where a crop smaller than the window is placed.

    Returns:
        (H, W[, C]) array of image's dtype. Normalisation is left to the model's loader.
    """
    origin = window_origin(image.shape[:2], best_center, view, window)
    out = np.zeros(tuple(window) + image.shape[2:], image.dtype)
    win, img = _overlap(origin, window, image.shape[:2])
    out[win] = image[img]
    return out


def paste_window(window_map: np.ndarray, best_center: tuple[int, int], image_shape: tuple[int, int],
                 *, view: str, fill: float = 0) -> np.ndarray:
    """Inverse of `extract_window`: a (H, W[, C]) map on the model input back onto the crop.

    Returns (h, w[, C]) of window_map's dtype: the map where the window covers the crop, `fill`
    elsewhere (only where the crop is larger than the window).
    """
    window = window_map.shape[:2]
    origin = window_origin(image_shape, best_center, view, window)
    out = np.full(tuple(image_shape) + window_map.shape[2:], fill, window_map.dtype)
    win, img = _overlap(origin, window, tuple(image_shape))
    out[img] = window_map[win]
    return out


def uncrop_to_original(cropped_map: np.ndarray, info: CropInfo | dict[str, Any],
                       original_shape: tuple[int, int] | None = None, flipped: bool | None = None,
                       fill: float = 0) -> np.ndarray:
    """A map on the model-orientation crop (h, w[, C]) back to the original image (H, W[, C]).

    Args:
        info: the image's `CropInfo`, or its per-image exam-list fields (`window_location` used).
        original_shape: (H, W); from `info` when it is a CropInfo and this is None.
        flipped: whether the map is mirrored relative to the original (`cropping.needs_flip`);
            from `info` when it is a CropInfo and this is None.
    """
    if isinstance(info, CropInfo):
        original_shape = info.original_shape if original_shape is None else original_shape
        flipped = info.flipped if flipped is None else flipped
    if original_shape is None or flipped is None:
        raise MammoInputError("uncrop_to_original needs original_shape and flipped with an exam-list dict")
    top, bottom, left, right = (int(v) for v in info_window(info))
    if cropped_map.shape[:2] != (bottom - top, right - left):
        raise MammoInputError(f"map shape {cropped_map.shape[:2]} does not match the crop "
                              f"{(bottom - top, right - left)} of window_location "
                              f"{(top, bottom, left, right)}")
    if bottom > original_shape[0] or right > original_shape[1]:
        raise MammoInputError(f"window_location {(top, bottom, left, right)} lies outside {original_shape}")
    out = np.full(tuple(original_shape) + cropped_map.shape[2:], fill, cropped_map.dtype)
    out[top:bottom, left:right] = cropped_map[:, ::-1] if flipped else cropped_map
    return out


def info_window(info: CropInfo | dict[str, Any]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a CropInfo or a per-image fields dict."""
    if isinstance(info, CropInfo):
        return info.window_location
    try:
        return tuple(info["window_location"])
    except (KeyError, TypeError):
        raise MammoInputError("expected a CropInfo or a dict with 'window_location'") from None


def _center_task(task: tuple[str, str, str, str, Any, Any, tuple[int, int]]) -> tuple[int, int]:
    """Read one crop, flip it to model orientation and find its centre (worker-process safe)."""
    folder, name, view, flip, rightmost, bottommost, window = task
    path = Path(folder) / f"{name}.png"
    image, _ = read_image(path)
    return get_optimal_center(flip_for_model(image, view, flip), view, rightmost, bottommost, window)


def add_optimal_centers(exams: list[dict[str, Any]], cropped_folder: str | os.PathLike[str],
                        window: tuple[int, int] = MODEL_INPUT, num_processes: int = 1,
                        progress: bool = True) -> list[dict[str, Any]]:
    """A copy of a cropped exam list with `best_center` added for every image.

    The crops are read from `cropped_folder/<short name>.png` (as `crop_exam_list` writes them).
    A list without the crop fields, or that already has best_center, raises MammoInputError.
    """
    exams = validate_exam_list(exams)
    for i, exam in enumerate(exams):
        missing = [name for name in CROP_FIELDS if name not in exam]
        if missing and any(exam.get(v) for v in VIEWS):
            raise MammoInputError(f"exam {i} lacks {missing}: crop the exam list first (crop_exam_list)")
        if "best_center" in exam:
            raise MammoInputError(f"exam {i} already has best_center")
    slots = list(iter_image_slots(exams))
    tasks = [(str(cropped_folder), name, view, exams[i]["horizontal_flip"],
              exams[i]["rightmost_points"][view][j], exams[i]["bottommost_points"][view][j],
              tuple(window)) for i, view, j, name in slots]
    centers = run_tasks(_center_task, tasks, num_processes, "optimal centres", progress)
    for (i, view, _, _), center in zip(slots, centers):
        exams[i].setdefault("best_center", {}).setdefault(view, []).append(center)
    return exams
