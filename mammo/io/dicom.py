"""Reading DICOM mammograms with pydicom (+ pylibjpeg plugins) into float32 [0, 1] images.

Pixel pipeline, all in float32 (no float64 copy of a full image):
    stored values -> Modality LUT (RescaleSlope/RescaleIntercept, or a Modality LUT Sequence)
    -> VOI: the VOI LUT Sequence if present, else the first WindowCenter/WindowWidth pair
       (VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID), else the full stored range of BitsStored
       (through the rescale) mapped linearly onto [0, 1]
    -> MONOCHROME1 inverted (1 - x), so that brighter always means denser.
Transfer syntaxes: whatever pydicom can decode with the plugins installed; uncompressed, RLE
Lossless, JPEG Baseline / Extended / Lossless, JPEG-LS and JPEG 2000 with pylibjpeg-libjpeg,
pylibjpeg-openjpeg and pylibjpeg-rle.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import RLELossless

from mammo.io.meta import ImageMeta
from mammo.io.orientation import (
    laterality_from_value,
    view_from_code_sequence,
    view_from_patient_orientation,
    view_from_value,
)
from mammo.io.raster import check_pixel_count, grey_from_channels, input_error, scale_float

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError,
                  IndexError, TypeError, EOFError, OSError, struct.error)
_REDOWNLOAD = "Copy or download the file again."


def _read_dataset(path: Path, force: bool) -> tuple[Dataset, bool]:
    """dcmread the whole file (pixel bytes included, nothing decoded yet).

    Returns:
        (the dataset, whether pydicom reached the end of the file in the middle of an element).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=force)
        except InvalidDicomError as exc:
            raise input_error(path, "it is not a valid DICOM file",
                              "Pass a DICOM (.dcm) or image file.") from exc
        except (*_DECODE_ERRORS,) as exc:
            raise input_error(path, f"the DICOM file is truncated or damaged ({exc})",
                              _REDOWNLOAD) from exc
    if force and not any(k in ds for k in ("Rows", "SOPClassUID", *_PIXEL_KEYWORDS)):
        raise input_error(path, "it is not a valid DICOM file (no DICOM image elements found)",
                          "Pass a DICOM (.dcm) or image file.")
    return ds, any("end of file" in str(w.message).lower() for w in caught)


def _pixel_bytes_missing(ds: Dataset) -> bool:
    """True when uncompressed pixel data is shorter than Rows x Columns x samples x frames."""
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds or tsuid is None or tsuid.is_compressed:
        return False
    expected = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
                * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
                * int(ds.get("BitsAllocated", 8) or 8) // 8)
    return len(ds.PixelData) < expected


def _check_header(ds: Dataset, path: Path, ended_early: bool) -> None:
    """Refuse files mammo cannot read, from the header alone (before decoding any pixel)."""
    truncated = input_error(path, "the DICOM file is truncated (it ends before its pixel data "
                            "is complete)", _REDOWNLOAD)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if ended_early:
            raise truncated
        raise input_error(path, "the DICOM file has no pixel data (it is not an image: e.g. a "
                          "structured report or a presentation state)",
                          "Pass the DICOM file that holds the mammogram itself.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise input_error(path, f"it is a multi-frame DICOM ({frames} frames, e.g. a "
                          "tomosynthesis volume); mammo reads single 2D mammograms",
                          "Pass a 2D mammogram (or a synthesised 2D view), one frame per file.")
    check_pixel_count(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), path)
    if ended_early or _pixel_bytes_missing(ds):
        raise truncated
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        raise input_error(path, "it is a colour (PALETTE COLOR) image, and mammo reads greyscale "
                          "mammograms only", "Pass the original greyscale mammogram.")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples not in (1, 3):
        raise input_error(path, f"it has {samples} samples per pixel",
                          "Pass a greyscale mammogram (SamplesPerPixel 1).")


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (H, W), or (H, W, 3) for colour, in the stored integer dtype."""
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        if tsuid == RLELossless and "pylibjpeg" in get_decoder(RLELossless).available_plugins:
            # pylibjpeg-rle decodes a 4600x2800 16-bit mammogram ~4x faster than pydicom's own.
            ds.pixel_array_options(decoding_plugin="pylibjpeg")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except _DECODE_ERRORS as exc:
        raise input_error(path, f"its pixel data cannot be decoded ({type(exc).__name__}: {exc})",
                          "The file may be truncated or damaged (copy it again); a compressed "
                          "file may need the pylibjpeg plugins installed.") from exc


def _first(value: Any) -> float:
    """The first number of a DICOM single- or multi-valued numeric element."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0]
    return float(value)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """(min, max) a stored value can take, from BitsStored and PixelRepresentation."""
    bits = int(ds.get("BitsStored", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -float(2 ** (bits - 1)), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _modality(pixels: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float]:
    """Apply the Modality LUT. Returns (values, float32 unless untouched; their possible range)."""
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds and ds.ModalityLUTSequence:
        item = ds.ModalityLUTSequence[0]
        out_bits = int(item.LUTDescriptor[2])
        return apply_modality_lut(pixels, ds).astype(np.float32), 0.0, float(2**out_bits - 1)
    slope = _first(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = _first(ds.get("RescaleIntercept", 0.0) or 0.0)
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
    """DICOM PS3.3 C.11.2.1.2 windowing to float32 [0, 1]."""
    if function == "SIGMOID":
        out = values.astype(np.float32)
        out -= np.float32(center)
        out *= np.float32(-4.0 / max(width, 1e-12))
        np.exp(out, out=out)
        out += np.float32(1.0)
        return np.reciprocal(out, out=out)
    if function == "LINEAR_EXACT":
        return _linear(values, center - width / 2.0, center + width / 2.0)
    # LINEAR: x <= c - 0.5 - (w-1)/2 -> 0, x > c - 0.5 + (w-1)/2 -> 1, linear in between.
    half = max(width - 1.0, 1e-6) / 2.0
    return _linear(values, center - 0.5 - half, center - 0.5 + half)


def _lut_table(item: Dataset, ds: Dataset) -> np.ndarray:
    """The LUTData of a VOI LUT Sequence item as an integer array."""
    entries = int(item.LUTDescriptor[0]) or 2**16
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):  # VR OW: 16-bit words in the file's byte order
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        return np.frombuffer(bytes(data), dtype="<u2" if little else ">u2")[:entries].astype(np.int64)
    return np.asarray([data] if isinstance(data, int) else list(data), dtype=np.int64)


def _voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the first VOI LUT Sequence item; the LUT's output range is mapped onto [0, 1]."""
    item = ds.VOILUTSequence[0]
    table = _lut_table(item, ds)
    first = int(item.LUTDescriptor[1])
    if values.dtype.kind == "f":
        values = np.rint(values)
    index = values.astype(np.int64) - first
    np.clip(index, 0, table.size - 1, out=index)
    return _linear(table.astype(np.float32)[index], float(table.min()), float(table.max()))


def to_unit(pixels: np.ndarray, ds: Dataset,
            path: Path) -> tuple[np.ndarray, tuple[float, float] | None, bool]:
    """Stored grey pixels (H, W) of `ds` -> float32 (H, W) in [0, 1], brighter = denser.

    Returns:
        (image, the (center, width) window applied or None, whether a VOI LUT sequence was applied).
    """
    values, lo, hi = _modality(pixels, ds)
    window: tuple[float, float] | None = None
    voi_applied = False
    if "VOILUTSequence" in ds and ds.VOILUTSequence:
        image, voi_applied = _voi_lut(values, ds), True
    elif ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, ""):
        window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        image = _window(values, window[0], window[1], function)
    elif pixels.dtype.kind == "f":  # Float Pixel Data without a window
        image = scale_float(values, path)
    else:
        image = _linear(values, lo, hi)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        np.subtract(np.float32(1.0), image, out=image)
    return image, window, voi_applied


def _spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """(row, col) pixel spacing in mm and the tag it came from, or (None, None)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            return (float(value[0]), float(value[1])), keyword
    return None, None


def _text(ds: Dataset, keyword: str) -> str | None:
    """A tag's string value, or None when absent or empty."""
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else None


def _orientation(ds: Dataset, meta: ImageMeta) -> None:
    """Fill meta.laterality / meta.view (and meta.sources) from the DICOM tags."""
    for keyword in ("ImageLaterality", "Laterality"):
        lat = laterality_from_value(ds.get(keyword))
        if lat is not None:
            meta.laterality, meta.sources["laterality"] = lat, keyword
            break
    readers = (("ViewPosition", view_from_value), ("ViewCodeSequence", view_from_code_sequence),
               ("PatientOrientation", view_from_patient_orientation))
    for keyword, reader in readers:
        view = reader(ds.get(keyword))
        if view is not None:
            meta.view, meta.sources["view"] = view, keyword
            break


def _meta(ds: Dataset, path: Path, pixels: np.ndarray) -> ImageMeta:
    """ImageMeta from the header (window fields are filled by the caller)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spacing, spacing_tag = _spacing(ds)
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    meta = ImageMeta(
        path=str(path), format="dicom", dtype=str(pixels.dtype),
        bits_stored=int(ds.get("BitsStored", pixels.dtype.itemsize * 8)),
        photometric=photometric if photometric.startswith("MONOCHROME") else "RGB",
        pixel_spacing_mm=spacing, presentation_intent=_text(ds, "PresentationIntentType"),
        manufacturer=_text(ds, "Manufacturer"), patient_id=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"), sop_uid=_text(ds, "SOPInstanceUID"),
        original_shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        transfer_syntax=tsuid.name if tsuid is not None else None,
    )
    if spacing_tag is not None:
        meta.sources["pixel_spacing_mm"] = spacing_tag
    _orientation(ds, meta)
    return meta


def read_dicom(path: Path, force: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a single-frame DICOM mammogram.

    Args:
        path: the file.
        force: read a file without the DICOM preamble/"DICM" prefix.

    Returns:
        (image float32 (H, W) in [0, 1], brighter = denser; ImageMeta with every header field
        found, laterality/view from tags where present, else None).
    """
    ds, ended_early = _read_dataset(path, force)
    _check_header(ds, path, ended_early)
    pixels = _decode(ds, path)
    # pydicom returns YCbCr-coded colour as RGB; a grey image may then differ by rounding
    ybr = str(ds.get("PhotometricInterpretation", "")).startswith("YBR")
    grey = grey_from_channels(pixels, path, tolerance=2 if ybr else 0)
    if grey.dtype.kind == "f" and not np.isfinite(grey).all():
        raise input_error(path, "it has NaN or infinite pixel values",
                          "Replace the missing values and save the file again.")
    image, window, voi_applied = to_unit(grey, ds, path)
    meta = _meta(ds, path, grey)
    meta.window, meta.voi_lut_applied = window, voi_applied
    return np.ascontiguousarray(image), meta
