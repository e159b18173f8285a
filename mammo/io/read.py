"""`read_image(path) -> (image, ImageMeta)`: any supported mammogram file as float32 [0, 1]."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from mammo.errors import MammoInputError, input_error
from mammo.io.dicom import read_dicom
from mammo.io.limits import check_unit_image, check_usable_range
from mammo.io.meta import ImageMeta
from mammo.io.orientation import laterality_from_image, parse_filename
from mammo.io.raster import read_raster
from mammo.qc import qc_flags

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_RASTER_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"P2", b"P5", b"P3", b"P6")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _check_path(path: str | os.PathLike[str]) -> Path:
    """The path as a Path, after checking it names a non-empty readable file."""
    if not isinstance(path, (str, os.PathLike)):
        raise MammoInputError(f"read_image expects a file path (str or Path), not "
                              f"{type(path).__name__}.")
    p = Path(path)
    if not p.exists():
        raise input_error(p, "the file does not exist",
                          f"Check the path (relative paths start at {Path.cwd()}).")
    if p.is_dir():
        raise input_error(p, "it is a directory, not a file",
                          "Pass one image file; to read a folder, loop over its files.")
    mode = p.stat().st_mode
    if not stat.S_ISREG(mode):
        # Checked before any open(): opening a FIFO blocks until something writes to it.
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise input_error(p, f"it is not a regular file but {kind}",
                          "Save the image to a file first, and pass that file.")
    if p.stat().st_size == 0:
        raise input_error(p, "the file is empty (0 bytes)", "Copy or download the file again.")
    return p


def _sniff(path: Path) -> str:
    """The file kind: "dicom", "dicom-raw" (no preamble), "tiff" or "raster" (first bytes, suffix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise input_error(path, f"the file cannot be opened ({exc.strerror or exc})",
                          "Check that it is readable by you.") from exc
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_TIFF_MAGIC):
        return "tiff"
    if head.startswith(_RASTER_MAGIC):
        return "raster"
    # A DICOM stream without the 128-byte preamble starts with a group 0002 or 0008 tag.
    if path.suffix.lower() in _DICOM_SUFFIXES or head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom-raw"
    return "raster"  # Pillow knows more formats; it refuses what is not an image


def _fill_orientation(image: np.ndarray, meta: ImageMeta, path: Path) -> None:
    """Fill laterality/view missing from the tags: file name first, then (laterality) the image."""
    lat, view = parse_filename(path.name)
    if meta.laterality is None and lat is not None:
        meta.laterality, meta.sources["laterality"] = lat, "filename"
    if meta.view is None and view is not None:
        meta.view, meta.sources["view"] = view, "filename"
    if meta.laterality is None:
        meta.laterality, meta.sources["laterality"] = laterality_from_image(image), "image"


def read_image(path: str | os.PathLike[str],
               allow_modality: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read one mammogram from a DICOM, PNG, JPEG, BMP, PGM or TIFF file.

    Nothing is written and no state changes; bad input raises `MammoInputError` whose message
    names the file, says what is wrong and what to do (missing, empty, not a regular file,
    truncated, not an image, DICOM without pixel data, multi-frame or multi-page, colour, outside
    the size limits of `mammo.io.limits`, a damaged header, NaN pixels, blank, a directory, a
    DICOM Modality other than MG: `ModalityNotAllowedError`).

    Args:
        path: the image file.
        allow_modality: read a DICOM whose Modality is not MG (CT, US, CR, DX, ...) instead of
            refusing it; it then gets the `modality_not_mg` QC flag. A missing Modality is
            always accepted (flag `modality_missing`). Rasters have no Modality.

    Returns:
        image: float32 (H, W), values in [0, 1], higher = denser (brighter) tissue whatever the
            source: DICOM goes through the Modality LUT, the VOI LUT or window it carries (else
            its full BitsStored range) and MONOCHROME1 inversion; rasters are divided by their
            dtype's range (16-bit: see `mammo.io.raster` for 12/14-bit data saved as 16-bit).
        meta: `ImageMeta`; laterality and view come from DICOM tags, else the file name, else
            (laterality only) which image edge the breast touches; `meta.sources` says which.
            `meta.warnings`: damaged optional attributes that were ignored (one sentence each);
            `meta.qc`: quality-control flags (`mammo.qc`), e.g. ["saturated"].
    """
    p = _check_path(path)
    kind = _sniff(p)
    if kind in ("dicom", "dicom-raw"):
        image, meta = read_dicom(p, force=kind == "dicom-raw", allow_modality=allow_modality)
    else:
        image, meta = read_raster(p, is_tiff=kind == "tiff")
    check_unit_image(image, p)
    check_usable_range(image, p)
    _fill_orientation(image, meta, p)
    meta.qc = qc_flags(image, meta)
    return image, meta
