"""Reading raster mammograms (PNG, JPEG, BMP, PGM, TIFF) into float32 [0, 1] images.

Scaling rule (what `read_image` returns for each stored dtype):
    * 8-bit: value / 255. 1-bit (mode "1"): 0 or 1.
    * PGM: value / maxval (the maximum the file header declares).
    * 16-bit PNG/TIFF: value / (2**bits - 1), where `bits` is the PNG `sBIT` chunk when the file has
      one, else the smallest of 12, 14 and 16 bits that holds the image's largest value. Mammograms
      are acquired with 12 or 14 bits and are often saved as 16-bit PNG without saying so (the GLAM
      exam: 16-bit PNG, values 0..4095); dividing those by 65535 would give an image in [0, 0.06]
      that every threshold and model downstream sees as black. `meta.bits_stored` records the
      depth used and `meta.sources["bits_stored"]` says whether it came from "sBIT" or "image".
    * Other integers: as 16-bit when all values lie in 0..65535, else (value - min) / (max - min).
    * Float (TIFF): as stored when all values lie in [0, 1], else (value - min) / (max - min);
      NaN or infinite pixels are refused.
A grey image stored as RGB/RGBA/palette (all colour channels equal) is read as grey; a real colour
image is refused, and so are multi-page TIFFs and animations (the pages may be other views, a
thumbnail or a mask) and PGM headers with a maxval outside 1..65535. The header's sizes are checked
against `mammo.io.limits` before any pixel is decoded.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo.errors import MammoInputError, input_error
from mammo.io.limits import MAX_PIXELS, check_shape
from mammo.io.meta import ImageMeta

__all__ = ["MAX_PIXELS", "grey_from_channels", "input_error", "read_raster", "scale_float"]

_FORMAT_NAMES = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "PPM": "pgm", "TIFF": "tiff"}
# What Pillow and tifffile raise on damaged files (TypeError: e.g. a TIFF tag of the wrong type).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
                  KeyError)


class _DecodeFailure(MammoInputError):
    """Pillow could not open or decode the file (a TIFF then gets a second try with tifffile)."""


def _damaged(path: Path, exc: BaseException) -> _DecodeFailure:
    return _DecodeFailure(f"Cannot read image '{path}': the file is truncated or damaged and its "
                          f"pixels cannot be decoded ({exc}). Copy or download the file again.")


def grey_from_channels(array: np.ndarray, path: str | os.PathLike[str], tolerance: int = 0) -> np.ndarray:
    """(H, W) grey from (H, W) or (H, W, C) with equal colour channels; refuse real colour.

    Args:
        array: (H, W), (H, W, 2) grey + alpha, or (H, W, 3|4) RGB(A); any dtype.
        tolerance: largest channel difference still counted as equal (lossy JPEG needs ~2).

    Returns:
        (H, W) array of the same dtype (the first channel).
    """
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise input_error(path, f"its pixel array has shape {array.shape}, not (H, W)",
                          "Save the mammogram as a single greyscale image.")
    if array.shape[2] <= 2:  # grey, or grey + alpha: the alpha channel is ignored
        return array[:, :, 0]
    colour = array[:, :, :3]
    first = colour[:, :, 0]
    for c in (1, 2):
        diff = np.abs(colour[:, :, c].astype(np.int64) - first.astype(np.int64)).max()
        if diff > tolerance:
            raise input_error(
                path, "it is a colour image (its red, green and blue channels differ), and "
                "mammo reads greyscale mammograms only",
                "Pass the original greyscale mammogram, or convert this one to greyscale first.",
            )
    return first


def _png_sbit(path: Path) -> int | None:
    """Significant bits from a greyscale PNG's `sBIT` chunk, or None when it has none."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind in (b"IDAT", b"IEND"):
                return None
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"sBIT" and data:
                return int(data[0])


def _pgm_maxval(path: Path) -> int | None:
    """The maxval of a binary/plain PGM/PPM header (P2/P3/P5/P6), or None if unreadable."""
    with open(path, "rb") as f:
        head = f.read(512)
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        fields.extend(line.split(b"#", 1)[0].split())
        if len(fields) >= 4:
            break
    try:
        return int(fields[3])
    except (IndexError, ValueError):
        return None


def _bits_for_uint16(array: np.ndarray, path: Path, fmt: str) -> tuple[int, int, str]:
    """(divisor, significant bits, where the bits came from) for a 16-bit raster.

    See the module docstring; PGM values arrive from Pillow already rescaled from 0..maxval to
    0..65535, so they are divided by 65535 and maxval only gives `bits_stored`.
    """
    if fmt == "pgm":
        maxval = _pgm_maxval(path)
        return 65535, (maxval.bit_length() if maxval else 16), "maxval"
    bits, source = 16, "image"
    sbit = _png_sbit(path) if fmt == "png" else None
    if sbit is not None and 1 <= sbit <= 16:
        bits, source = sbit, "sBIT"
    else:
        top = int(array.max()) if array.size else 0
        bits = next(b for b in (12, 14, 16) if top < 2**b)
    return 2**bits - 1, bits, source


def _minmax(array: np.ndarray, path: Path) -> np.ndarray:
    """float32 (value - min) / (max - min); zeros for a constant image (refused later as blank).

    Float input is scaled in float64 before the cast: a float32 cast first turns values beyond
    3.4e38 (a float64 TIFF near 1e300) into inf and the image into NaN.
    """
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros(array.shape, np.float32)
    span = hi - lo
    if not np.isfinite(span):
        raise input_error(path, f"its pixel values span {lo:g} to {hi:g}, beyond what can be "
                          "scaled to [0, 1] (the values are damaged)",
                          "Check how the file was made, and save it again.")
    if array.dtype.kind == "f":  # float64 work copy: float32 - float32 can overflow too
        work = array.astype(np.float64)
        work -= lo
        work /= span
        return work.astype(np.float32)
    out = array.astype(np.float32)
    out -= np.float32(lo)
    out *= np.float32(1.0 / span)
    return out


def scale_float(array: np.ndarray, path: Path) -> np.ndarray:
    """float32 (H, W) in [0, 1] from a float array: kept when already in [0, 1], else min-max scaled.

    NaN or infinite values are refused with a MammoInputError naming `path`.
    """
    if not np.isfinite(array).all():
        raise input_error(path, "it has NaN or infinite pixel values",
                          "Replace the missing values (e.g. by 0) and save the image again.")
    if array.size and array.min() >= 0.0 and array.max() <= 1.0:
        return array.astype(np.float32)
    return _minmax(array, path)


def to_unit(array: np.ndarray, path: Path, fmt: str) -> tuple[np.ndarray, str, int, dict[str, str]]:
    """Scale a grey (H, W) raster to float32 [0, 1] by the module's rule.

    Returns:
        (image float32 (H, W) in [0, 1], stored dtype name, bits_stored, extra `meta.sources`).
    """
    if array.dtype == bool:
        return array.astype(np.float32), "bool", 1, {}
    if array.dtype == np.uint8:
        out = array.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out, "uint8", 8, {}
    if array.dtype.kind == "f":
        return scale_float(array, path), str(array.dtype), array.dtype.itemsize * 8, {}
    if array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16, copy=False)  # Pillow reads 16-bit PGM as int32
        divisor, bits, source = _bits_for_uint16(array, path, fmt)
        out = array.astype(np.float32)
        out *= np.float32(1.0 / divisor)
        np.minimum(out, 1.0, out=out)
        return out, "uint16", bits, {"bits_stored": source}
    return _minmax(array, path), str(array.dtype), array.dtype.itemsize * 8, {}


def _check_pnm_header(path: Path) -> None:
    """Refuse a PGM/PPM whose maxval is outside 1..65535 (Pillow raises a bare ValueError)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        return
    maxval = _pgm_maxval(path)
    if maxval is not None and not 1 <= maxval <= 65535:
        raise input_error(path, f"its PGM/PPM header gives maxval {maxval}, but it must be "
                          "between 1 and 65535 (the header is damaged)",
                          "Save the image again from its source.")


def _open(path: Path) -> Image.Image:
    """Open lazily (header only); Pillow's own decompression-bomb checks become MammoInputError."""
    try:
        with warnings.catch_warnings():
            # Our own check_shape (right after opening) decides; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise input_error(path, f"it is too large to decode safely ({exc})",
                          "Check the file, or downsample it before reading it with mammo.") from exc
    except UnidentifiedImageError as exc:
        raise _DecodeFailure(f"Cannot read image '{path}': it is not an image file mammo can read "
                             "(or it is damaged). Pass a DICOM, PNG, JPEG, BMP, PGM or TIFF "
                             "mammogram.") from exc
    except _DECODE_ERRORS as exc:  # a header Pillow recognises but cannot parse
        raise _damaged(path, exc) from exc


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    """Decode the opened image to a numpy array: (H, W) or (H, W, C)."""
    try:
        if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            im = im.convert("RGBA" if "A" in im.mode or "a" in im.mode else "RGB")
        elif im.mode in ("LA", "La"):
            im = im.convert("LA")
        return np.asarray(im)
    except _DECODE_ERRORS as exc:
        raise _damaged(path, exc) from exc


def _refuse_pages(path: Path, pages: int, tiff: bool) -> None:
    """Refuse a file holding several images.

    Not even the first page is read: the pages of a multi-page TIFF may be other views, a
    thumbnail or a mask, and reading one silently could analyse the wrong image.
    """
    if pages > 1:
        kind = "multi-page TIFFs are not supported" if tiff else "animations are not supported"
        raise input_error(path, f"it holds {pages} images ({'pages' if tiff else 'frames'}): "
                          f"{kind}", "Save each mammogram as its own single-image file.")


class _Quiet:
    """Context manager: `logger` logs nothing below CRITICAL inside it (its level is restored)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.level = logger, logger.level

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *_: object) -> None:
        self.logger.setLevel(self.level)


def _read_tiff_fallback(path: Path) -> np.ndarray:
    """Read a TIFF that Pillow cannot (e.g. 16-bit RGB, float64) with tifffile."""
    import tifffile

    quiet = _Quiet(logging.getLogger("tifffile"))  # its error logs repeat what the exception says
    try:
        with quiet, tifffile.TiffFile(path) as tif:
            _refuse_pages(path, len(tif.pages), tiff=True)
            page = tif.pages[0]
            check_shape(int(page.imagelength), int(page.imagewidth), path)
            return np.asarray(page.asarray())
    except MammoInputError:
        raise
    except NotImplementedError as exc:  # e.g. 9-bit samples or a codec needing `imagecodecs`
        raise input_error(path, f"its TIFF encoding is not supported ({exc})",
                          "Save it as an 8- or 16-bit TIFF without compression, or as a PNG.") from exc
    except (tifffile.TiffFileError, *_DECODE_ERRORS) as exc:
        raise input_error(path, f"the TIFF file is truncated or damaged ({exc})",
                          "Copy or download the file again.") from exc


def _read_with_pillow(path: Path) -> tuple[np.ndarray, str]:
    """(pixels (H, W) or (H, W, C), format name) through Pillow, checking size before decoding."""
    with _open(path) as im:
        fmt = _FORMAT_NAMES.get(str(im.format), str(im.format).lower())
        try:
            pages = int(getattr(im, "n_frames", 1))  # Pillow walks the TIFF directories here
        except _DECODE_ERRORS as exc:
            raise _damaged(path, exc) from exc
        _refuse_pages(path, pages, tiff=fmt == "tiff")
        check_shape(im.height, im.width, path)
        return _decode(im, path), fmt


def read_raster(path: Path, is_tiff: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a raster mammogram.

    Args:
        path: the file.
        is_tiff: the file starts with a TIFF signature; tifffile is tried when Pillow fails.

    Returns:
        (image float32 (H, W) in [0, 1], brighter = denser; ImageMeta with path, format, dtype,
        bits_stored, photometric "MONOCHROME2" and original_shape; laterality/view left None).
    """
    _check_pnm_header(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        array, fmt = _read_pixels(path, is_tiff)
    grey = grey_from_channels(array, path, tolerance=2 if fmt == "jpeg" else 0)
    image, dtype, bits, sources = to_unit(grey, path, fmt)
    meta = ImageMeta(path=str(path), format=fmt, dtype=dtype, bits_stored=bits,
                     photometric="MONOCHROME2", sources=sources,
                     original_shape=(int(grey.shape[0]), int(grey.shape[1])))
    # Pillow warns (on stderr) about damaged metadata it skipped: said in meta.warnings instead.
    notes = {f"the {fmt.upper()} decoder skipped damaged metadata: {w.message}" for w in caught
             if issubclass(w.category, UserWarning) and "PIL" in Path(w.filename).parts}
    meta.warnings = sorted(notes)
    return np.ascontiguousarray(image), meta


def _read_pixels(path: Path, is_tiff: bool) -> tuple[np.ndarray, str]:
    """(pixels (H, W) or (H, W, C), format): Pillow, then tifffile for a TIFF Pillow fails on."""
    try:
        return _read_with_pillow(path)
    except _DecodeFailure as exc:
        if not is_tiff:  # a plain MammoInputError: the private subclass stays in this module
            raise MammoInputError(str(exc)) from exc.__cause__
        return _read_tiff_fallback(path), "tiff"
