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
image is refused.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo.errors import MammoInputError
from mammo.io.meta import ImageMeta

MAX_PIXELS = 100_000_000
"""Images with more pixels than this are refused before decoding (decompression-bomb guard)."""

_FORMAT_NAMES = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "PPM": "pgm", "TIFF": "tiff"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def input_error(path: str | os.PathLike[str], problem: str, advice: str) -> MammoInputError:
    """A `MammoInputError` whose message names the file, what is wrong and what to do."""
    return MammoInputError(f"Cannot read image '{path}': {problem}. {advice}")


def check_pixel_count(height: int, width: int, path: str | os.PathLike[str]) -> None:
    """Refuse an image of more than `MAX_PIXELS` pixels (called on header sizes, before decoding)."""
    if height * width > MAX_PIXELS:
        raise input_error(
            path, f"it is {width}x{height} = {height * width / 1e6:.0f} megapixels, over the "
            f"{MAX_PIXELS / 1e6:.0f}-megapixel limit (a corrupt header or a decompression bomb)",
            "Check the file, or downsample it before reading it with mammo.",
        )


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


def _minmax(array: np.ndarray) -> np.ndarray:
    """float32 (value - min) / (max - min); zeros for a constant image."""
    out = array.astype(np.float32)
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        return np.zeros_like(out)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
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
    return _minmax(array)


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
    return _minmax(array), str(array.dtype), array.dtype.itemsize * 8, {}


def _open(path: Path) -> Image.Image:
    """Open lazily (header only); Pillow's own decompression-bomb checks become MammoInputError."""
    try:
        with warnings.catch_warnings():
            # Our own MAX_PIXELS check (right after opening) decides; Pillow's warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise input_error(path, f"it is too large to decode safely ({exc})",
                          "Check the file, or downsample it before reading it with mammo.") from exc
    except UnidentifiedImageError as exc:
        raise input_error(path, "it is not an image file mammo can read (or it is damaged)",
                          "Pass a DICOM, PNG, JPEG, BMP, PGM or TIFF mammogram.") from exc


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    """Decode the opened image to a numpy array: (H, W) or (H, W, C)."""
    try:
        if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            im = im.convert("RGBA" if "A" in im.mode or "a" in im.mode else "RGB")
        elif im.mode in ("LA", "La"):
            im = im.convert("LA")
        return np.asarray(im)
    except _DECODE_ERRORS as exc:
        raise input_error(path, f"the file is truncated or damaged and its pixels cannot be "
                          f"decoded ({exc})", "Copy or download the file again.") from exc


def _read_tiff_fallback(path: Path) -> np.ndarray:
    """Read a TIFF that Pillow cannot (e.g. 16-bit RGB, float64) with tifffile."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) > 1:
                raise input_error(path, f"it holds {len(tif.pages)} images (pages)",
                                  "Save each mammogram as its own single-image file.")
            page = tif.pages[0]
            check_pixel_count(int(page.imagelength), int(page.imagewidth), path)
            return np.asarray(page.asarray())
    except (tifffile.TiffFileError, *_DECODE_ERRORS) as exc:
        raise input_error(path, f"the TIFF file is truncated or damaged ({exc})",
                          "Copy or download the file again.") from exc


def _read_with_pillow(path: Path) -> tuple[np.ndarray, str]:
    """(pixels (H, W) or (H, W, C), format name) through Pillow, checking size before decoding."""
    with _open(path) as im:
        check_pixel_count(im.height, im.width, path)
        frames = int(getattr(im, "n_frames", 1))
        if frames > 1:
            raise input_error(path, f"it holds {frames} images (frames/pages)",
                              "Save each mammogram as its own single-image file.")
        fmt = _FORMAT_NAMES.get(str(im.format), str(im.format).lower())
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
    try:
        array, fmt = _read_with_pillow(path)
    except MammoInputError:
        if not is_tiff:
            raise
        array, fmt = _read_tiff_fallback(path), "tiff"
    grey = grey_from_channels(array, path, tolerance=2 if fmt == "jpeg" else 0)
    image, dtype, bits, sources = to_unit(grey, path, fmt)
    meta = ImageMeta(path=str(path), format=fmt, dtype=dtype, bits_stored=bits,
                     photometric="MONOCHROME2", sources=sources,
                     original_shape=(int(grey.shape[0]), int(grey.shape[1])))
    return np.ascontiguousarray(image), meta
