"""DICOM stored values -> float32 [0, 1]: Modality LUT, VOI LUT or window, MONOCHROME1 inversion.

Pipeline, all in float32 (no float64 copy of a full image):
    stored values -> Modality LUT (RescaleSlope/RescaleIntercept, or a Modality LUT Sequence)
    -> VOI: the VOI LUT Sequence if present, else the first WindowCenter/WindowWidth pair
       (VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID), else the full stored range of BitsStored
       (through the rescale) mapped linearly onto [0, 1]
    -> MONOCHROME1 inverted (1 - x), so that brighter always means denser.

Damaged attributes (PS3.3 C.11): the Modality LUT says what the stored values mean, and every
later step (window, VOI LUT) is expressed in its output units; applied without it they give a
plausible-looking but wrong image. So a damaged Modality LUT or rescale (non-numeric, NaN,
infinite, zero slope, a LUT shorter than its descriptor) is refused. The VOI LUT and the window
are display hints: a damaged one (or one that leaves no usable dynamic range) is ignored, the
next one in the order above is used, and a sentence saying so goes into `warnings`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.multival import MultiValue

from mammo.errors import input_error
from mammo.io.limits import MIN_USABLE_RANGE
from mammo.io.raster import scale_float
from mammo.qc import usable_range

_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_REEXPORT = "The file's header is damaged: export it again from its source (PACS or modality)."


def first_number(value: Any) -> float:
    """The first number of a DICOM single- or multi-valued numeric element.

    Raises:
        ValueError, TypeError or IndexError when it is not a number (e.g. "abcd", empty).
    """
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """(min, max) a stored value can take, from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -float(2 ** (bits - 1)), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def lut_table(item: Dataset, ds: Dataset) -> tuple[np.ndarray, int, int]:
    """(table int64 (entries,), first mapped value, bits per entry) of a LUT sequence item.

    Raises:
        ValueError: the item is damaged; the message says how (for the caller's sentence).
    """
    try:
        descriptor = [int(v) for v in item.LUTDescriptor]
    except (AttributeError, KeyError, TypeError, ValueError, BytesLengthException) as exc:
        raise ValueError("its LUTDescriptor is missing or not numeric") from exc
    if len(descriptor) != 3:
        raise ValueError(f"its LUTDescriptor has {len(descriptor)} values, not 3")
    entries = descriptor[0] or 2**16  # 0 means 65536 entries
    data = item.get("LUTData")
    if data is None or (not isinstance(data, int) and len(data) == 0):
        raise ValueError("its LUTData is empty")
    if isinstance(data, (bytes, bytearray)):  # VR OW: 16-bit words in the file's byte order
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        raw = bytes(data)[: len(data) // 2 * 2]
        table = np.frombuffer(raw, dtype="<u2" if little else ">u2").astype(np.int64)
    else:
        table = np.asarray([data] if isinstance(data, int) else list(data), dtype=np.int64)
    if table.size < entries:
        raise ValueError(f"its LUTData holds {table.size} entries but its LUTDescriptor "
                         f"declares {entries}")
    return table[:entries], descriptor[1], descriptor[2]


def _look_up(values: np.ndarray, table: np.ndarray, first: int) -> np.ndarray:
    """float32 table[values - first], indices clipped to the table (DICOM: first/last entry)."""
    lo, hi = first, first + table.size - 1
    if values.dtype.kind == "f":  # clipped before the cast: a float beyond intp has no integer
        index = np.clip(np.rint(values), lo, hi).astype(np.intp)
    else:
        index = values.astype(np.intp)
        np.clip(index, lo, hi, out=index)
    index -= first
    return np.take(table.astype(np.float32), index)


def _rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), defaults 1 and 0; refuse values that are not usable."""
    found = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        raw = ds.get(keyword)
        if raw is None or raw == "":
            found.append(default)
            continue
        try:
            value = first_number(raw)
        except (ValueError, TypeError, IndexError):
            value = math.nan
        if not math.isfinite(value):
            raise input_error(path, f"its {keyword} is {str(raw)!r}, not a finite number, so its "
                              "stored values cannot be converted to real ones", _REEXPORT)
        found.append(value)
    if found[0] == 0.0:
        raise input_error(path, "its RescaleSlope is 0, which would give every pixel the same "
                          "value", _REEXPORT)
    return found[0], found[1]


def modality_values(pixels: np.ndarray, ds: Dataset,
                    path: Path) -> tuple[np.ndarray, float, float]:
    """Apply the Modality LUT to stored values (H, W).

    Returns:
        (values: `pixels` itself when untouched, else float32 (H, W); the range they can take).
    """
    lo, hi = _stored_range(ds)
    if ds.get("ModalityLUTSequence"):
        try:
            table, first, bits = lut_table(ds.ModalityLUTSequence[0], ds)
        except ValueError as exc:
            # Refused, not ignored: see the module docstring.
            raise input_error(path, f"its Modality LUT is damaged ({exc}), so its stored values "
                              "cannot be converted to real ones", _REEXPORT) from exc
        out_range = (0.0, float(2**bits - 1)) if 1 <= bits <= 16 else (float(table.min()),
                                                                          float(table.max()))
        return _look_up(pixels, table, first), *out_range
    slope, intercept = _rescale(ds, path)
    if slope == 1.0 and intercept == 0.0:
        return pixels, lo, hi
    values = pixels.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    a, b = lo * slope + intercept, hi * slope + intercept
    return values, min(a, b), max(a, b)


def _linear(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """float32 (values - lo) / (hi - lo) clipped to [0, 1]; in place when already float32."""
    out = values if values.dtype == np.float32 else values.astype(np.float32)
    out -= np.float32(lo)
    out *= np.float32(1.0 / max(hi - lo, 1e-12))
    return np.clip(out, 0.0, 1.0, out=out)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to float32 [0, 1] (in place when values are float32)."""
    if function == "SIGMOID":
        out = values.astype(np.float32)
        out -= np.float32(center)
        out *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # exp -> inf far below the centre: 1 / inf = 0, right
            np.exp(out, out=out)
        out += np.float32(1.0)
        return np.reciprocal(out, out=out)
    if function == "LINEAR_EXACT":
        return _linear(values, center - width / 2.0, center + width / 2.0)
    # LINEAR: x <= c - 0.5 - (w-1)/2 -> 0, x > c - 0.5 + (w-1)/2 -> 1, linear in between.
    half = max(width - 1.0, 1e-6) / 2.0
    return _linear(values, center - 0.5 - half, center - 0.5 + half)


def window_params(ds: Dataset, warnings: list[str]) -> tuple[float, float, str] | None:
    """(center, width, function) of the first usable window, or None (a warning says why)."""
    center_raw, width_raw = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center_raw in (None, "") and width_raw in (None, ""):
        return None
    try:
        center, width = first_number(center_raw), first_number(width_raw)
    except (ValueError, TypeError, IndexError):
        center = width = math.nan
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    smallest = 1.0 if function == "LINEAR" else 0.0  # PS3.3 C.11.2.1.2: w >= 1 (LINEAR), > 0
    if not (math.isfinite(center) and math.isfinite(width) and width > 0 and width >= smallest):
        warnings.append(f"WindowCenter/WindowWidth ({str(center_raw)!r}, {str(width_raw)!r}) "
                        "are not a usable window (numbers, width > 0); the window was ignored "
                        "and the full stored range used")
        return None
    if function not in _FUNCTIONS:
        warnings.append(f"VOILUTFunction {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID; "
                        "LINEAR was used")
        function = "LINEAR"
    return center, width, function


def _apply_voi(values: np.ndarray, ds: Dataset,
               warnings: list[str]) -> tuple[np.ndarray | None, tuple[float, float] | None, bool]:
    """(image or None when no VOI applies, the window applied, whether a VOI LUT was applied)."""
    damaged = ""
    if ds.get("VOILUTSequence"):
        try:
            table, first, _ = lut_table(ds.VOILUTSequence[0], ds)
        except ValueError as exc:
            damaged = f"the VOI LUT Sequence was ignored because {exc}"
        else:
            return _linear(_look_up(values, table, first), float(table.min()),
                           float(table.max())), None, True
    params = window_params(ds, warnings)
    if damaged:
        warnings.append(f"{damaged}; {'the window' if params else 'the full stored range'} was used")
    if params is None:
        return None, None, False
    center, width, function = params
    return _window(values, center, width, function), (center, width), False


def to_unit(pixels: np.ndarray, ds: Dataset, path: Path,
            warnings: list[str]) -> tuple[np.ndarray, tuple[float, float] | None, bool]:
    """Stored grey pixels (H, W) of `ds` -> float32 (H, W) in [0, 1], brighter = denser.

    Args:
        warnings: gets one sentence per damaged VOI attribute that was ignored.

    Returns:
        (image, the (center, width) window applied or None, whether a VOI LUT sequence was applied).
    """
    values, lo, hi = modality_values(pixels, ds, path)
    image, window, voi_applied = _apply_voi(values, ds, warnings)
    if image is not None and usable_range(image) < MIN_USABLE_RANGE:
        what = ("VOI LUT Sequence" if voi_applied or window is None
                else f"window (center {window[0]:g}, width {window[1]:g})")
        warnings.append(f"the {what} leaves no usable dynamic range (it maps nearly every pixel to "
                        "one grey level); it was ignored and the full stored range used")
        image, window, voi_applied = None, None, False
        values, lo, hi = modality_values(pixels, ds, path)  # the window may have changed values
    if image is None and pixels.dtype.kind == "f":  # Float Pixel Data: no stored range to use
        image = scale_float(values, path)
    elif image is None:
        image = _linear(values, lo, hi)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        np.subtract(np.float32(1.0), image, out=image)
    return image, window, voi_applied
