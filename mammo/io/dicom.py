"""Reading DICOM mammograms with pydicom (+ pylibjpeg plugins) into float32 [0, 1] images.

Header checks come first, before any pixel is decoded (`_check_header`): pixel data present and
complete, a real transfer syntax, one frame, the sizes in `mammo.io.limits`, a photometric
interpretation consistent with SamplesPerPixel, and Modality MG unless `allow_modality`.
The stored values then go through `mammo.io.dicom_lut` (Modality LUT, VOI LUT or window,
MONOCHROME1 inversion) and the header fills `ImageMeta` (`mammo.io.dicom_meta`). Whatever pydicom
raises on a damaged file becomes a `MammoInputError` naming the file. Transfer syntaxes: whatever pydicom can decode with the plugins installed;
uncompressed, RLE Lossless, JPEG Baseline / Extended / Lossless, JPEG-LS and JPEG 2000 with
pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, RLELossless

from mammo.errors import MammoInputError, ModalityNotAllowedError, input_error
from mammo.io.dicom_lut import to_unit
from mammo.io.dicom_meta import DICOM_ERRORS, build_meta, modality_of, sop_class
from mammo.io.limits import check_shape
from mammo.io.meta import ImageMeta
from mammo.io.raster import grey_from_channels

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_REDOWNLOAD = "Copy or download the file again."
_HEADER_INTS = ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                "PixelRepresentation")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT",
           "YBR_RCT")


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
        except DICOM_ERRORS as exc:
            raise input_error(path, f"the DICOM file is truncated or damaged ({exc})",
                              _REDOWNLOAD) from exc
    if force and not any(k in ds for k in ("Rows", "SOPClassUID", *_PIXEL_KEYWORDS)):
        raise input_error(path, "it is not a valid DICOM file (no DICOM image elements found)",
                          "Pass a DICOM (.dcm) or image file.")
    return ds, any("end of file" in str(w.message).lower() for w in caught)


def _transfer_syntax(ds: Dataset) -> UID | None:
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def _pixel_bytes_missing(ds: Dataset) -> bool:
    """True when uncompressed pixel data is shorter than Rows x Columns x samples x frames."""
    tsuid = _transfer_syntax(ds)
    if "PixelData" not in ds or tsuid is None or tsuid.is_compressed:
        return False
    expected = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
                * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
                * int(ds.get("BitsAllocated", 8) or 8) // 8)
    return len(ds.PixelData) < expected


def _check_pixel_data(ds: Dataset, path: Path, ended_early: bool) -> None:
    """Refuse a file without pixel data: truncated/damaged if its header describes an image."""
    if any(k in ds for k in _PIXEL_KEYWORDS):
        return
    sop = sop_class(ds)
    if ended_early or "Rows" in ds or (sop is not None and "Image Storage" in sop.name):
        what = f" ({sop.name})" if sop is not None and "Image Storage" in sop.name else ""
        raise input_error(path, f"the DICOM file is truncated or damaged: it has no pixel data "
                          f"although its header describes an image{what}", _REDOWNLOAD)
    raise input_error(path, "the DICOM file has no pixel data (it is not an image: e.g. a "
                      "structured report or a presentation state)",
                      "Pass the DICOM file that holds the mammogram itself.")


def _check_transfer_syntax(ds: Dataset, path: Path) -> None:
    tsuid = _transfer_syntax(ds)
    if tsuid is not None and not (isinstance(tsuid, UID) and tsuid.is_transfer_syntax):
        raise input_error(path, f"its transfer syntax UID {str(tsuid)!r} is not a DICOM transfer "
                          "syntax, so its pixel data cannot be decoded (the file meta header is "
                          "damaged or non-standard)", "Export the file again from its source.")


def _header_int(ds: Dataset, keyword: str, path: Path) -> int | None:
    """The integer value of `keyword`, None when absent; refuse one that is not a single integer."""
    try:
        value = ds.get(keyword)  # pydicom converts on access: "1e400" in an IS overflows here
        return None if value in (None, "") else int(value)
    except DICOM_ERRORS as exc:
        raw = ds.get_item(keyword).value  # as stored, unconverted
        text = raw.decode("ascii", "replace").strip() if isinstance(raw, bytes) else str(raw)
        raise input_error(path, f"its {keyword} {text!r} is not a number (the header is "
                          "damaged)", _REDOWNLOAD) from exc


def _check_numbers(ds: Dataset, path: Path) -> None:
    """Refuse a header whose image-size elements are missing, not single numbers or inconsistent.

    After this, int(ds.get(keyword, default) or default) is safe for each of `_HEADER_INTS`.
    """
    values = {keyword: _header_int(ds, keyword, path) for keyword in _HEADER_INTS}
    for keyword in ("Rows", "Columns"):
        if values[keyword] is None:
            raise input_error(path, f"its header has no {keyword} (the header is damaged)",
                              _REDOWNLOAD)
    allocated = values["BitsAllocated"] or 0
    stored = values["BitsStored"] or allocated
    if allocated and not 1 <= stored <= allocated:
        raise input_error(path, f"its header is inconsistent: BitsStored {stored} does not fit in "
                          f"BitsAllocated {allocated}", _REDOWNLOAD)


def _check_photometric(ds: Dataset, path: Path, notes: list[str]) -> None:
    """Refuse colour and headers whose PhotometricInterpretation contradicts SamplesPerPixel."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "PALETTE COLOR":
        raise input_error(path, "it is a colour (PALETTE COLOR) image, and mammo reads greyscale "
                          "mammograms only", "Pass the original greyscale mammogram.")
    if samples not in (1, 3):
        raise input_error(path, f"it has {samples} samples per pixel",
                          "Pass a greyscale mammogram (SamplesPerPixel 1).")
    if not photometric and samples == 1:
        notes.append("PhotometricInterpretation is missing; MONOCHROME2 was assumed")
        ds.PhotometricInterpretation = "MONOCHROME2"  # in memory only, for the decoder
        return
    wanted = 1 if photometric.startswith("MONOCHROME") else 3 if photometric in _COLOUR else None
    if wanted is None:
        raise input_error(path, f"its PhotometricInterpretation {photometric!r} is not one mammo "
                          "reads (MONOCHROME1, MONOCHROME2, or grey stored as RGB/YBR)",
                          "Pass a greyscale mammogram.")
    if samples != wanted:
        raise input_error(path, f"its header is inconsistent: PhotometricInterpretation "
                          f"{photometric} needs {wanted} sample(s) per pixel, but SamplesPerPixel "
                          f"is {samples}", "Export the file again from its source.")


def _check_modality(ds: Dataset, path: Path, allow_modality: bool) -> None:
    modality = modality_of(ds, [])
    if modality is None or modality == "MG" or allow_modality:
        return
    raise ModalityNotAllowedError(
        f"Cannot read image '{path}': its Modality is {modality}, not MG (mammography); mammo's "
        "pipelines were made for mammograms and give meaningless results on other images. Pass a "
        "mammogram; if this file is one with another Modality tag (e.g. CR or DX from a "
        "computed-radiography system), read it anyway with `mammo predict --allow-modality` "
        "(Python: read_image(path, allow_modality=True)).", modality)


def _check_header(ds: Dataset, path: Path, ended_early: bool, allow_modality: bool,
                  notes: list[str]) -> None:
    """Refuse files mammo cannot read, from the header alone (before decoding any pixel)."""
    _check_pixel_data(ds, path, ended_early)
    _check_transfer_syntax(ds, path)
    _check_numbers(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise input_error(path, f"it is a multi-frame DICOM ({frames} frames, e.g. a "
                          "tomosynthesis volume); mammo reads single 2D mammograms",
                          "Pass a 2D mammogram (or a synthesised 2D view), one frame per file.")
    check_shape(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), path)
    if ended_early or _pixel_bytes_missing(ds):
        raise input_error(path, "the DICOM file is truncated (it ends before its pixel data "
                          "is complete)", _REDOWNLOAD)
    _check_photometric(ds, path, notes)
    _check_modality(ds, path, allow_modality)


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (H, W), or (H, W, 3) for colour, in the stored integer dtype."""
    tsuid = _transfer_syntax(ds)
    try:
        if tsuid == RLELossless and "pylibjpeg" in get_decoder(RLELossless).available_plugins:
            # pylibjpeg-rle decodes a 4600x2800 16-bit mammogram ~4x faster than pydicom's own.
            ds.pixel_array_options(decoding_plugin="pylibjpeg")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except DICOM_ERRORS as exc:
        raise _undecodable(path, tsuid, exc) from exc
    except BaseException as exc:
        # Rust decoders (pylibjpeg-rle) panic on some damaged data, and pyo3's PanicException
        # derives from BaseException (its class is not importable): caught by name, only it.
        if type(exc).__name__ != "PanicException":
            raise
        raise _undecodable(path, tsuid, exc) from exc


def _undecodable(path: Path, tsuid: UID | None, exc: BaseException) -> MammoInputError:
    syntax = f" ({tsuid.name})" if tsuid is not None else ""
    return input_error(path, f"its pixel data{syntax} cannot be decoded ({type(exc).__name__}: "
                       f"{exc})", "The file may be truncated or damaged (copy it again); a "
                       "compressed file may need the pylibjpeg plugins installed.")


def read_dicom(path: Path, force: bool = False,
               allow_modality: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a single-frame DICOM mammogram.

    Args:
        path: the file.
        force: read a file without the DICOM preamble/"DICM" prefix.
        allow_modality: accept a Modality other than MG (else `ModalityNotAllowedError`).

    Returns:
        (image float32 (H, W) in [0, 1], brighter = denser; ImageMeta with every header field
        found, laterality/view from tags where present, else None, and `warnings` for damaged
        optional attributes that were ignored).
    """
    notes: list[str] = []
    with warnings.catch_warnings():
        # pydicom warns (on stderr) about each invalid value it meets; those are refused or
        # ignored below, each with its own message or `meta.warnings` sentence.
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        ds, ended_early = _read_dataset(path, force)
        try:
            _check_header(ds, path, ended_early, allow_modality, notes)
            pixels = _decode(ds, path)
            image, meta = _to_image(ds, path, pixels, notes)
        except MammoInputError:
            raise
        except DICOM_ERRORS as exc:
            # Last net: pydicom converts values when they are first read, and a damaged
            # required element (e.g. an unknown VR) raises there; a message, not a traceback.
            raise input_error(path, f"its DICOM header is damaged ({type(exc).__name__}: {exc})",
                              _REDOWNLOAD) from exc
    return image, meta


def _to_image(ds: Dataset, path: Path, pixels: np.ndarray,
              notes: list[str]) -> tuple[np.ndarray, ImageMeta]:
    """Decoded stored pixels -> (float32 (H, W) [0, 1] image, ImageMeta)."""
    # pydicom returns YCbCr-coded colour as RGB; a grey image may then differ by rounding
    ybr = str(ds.get("PhotometricInterpretation", "")).startswith("YBR")
    grey = grey_from_channels(pixels, path, tolerance=2 if ybr else 0)
    if grey.dtype.kind == "f" and not np.isfinite(grey).all():
        raise input_error(path, "it has NaN or infinite pixel values",
                          "Replace the missing values and save the file again.")
    image, window, voi_applied = to_unit(grey, ds, path, notes)
    meta = build_meta(ds, path, grey, notes)
    meta.window, meta.voi_lut_applied, meta.warnings = window, voi_applied, notes
    return np.ascontiguousarray(image), meta
