"""Every limit on what `mammo.io.read_image` accepts, in one place, and the checks applying them.

Shape limits are checked on the sizes a file's header declares (DICOM Rows/Columns, the PNG
IHDR, the TIFF page), before any pixel is decoded; the value limits on the image once it is in
[0, 1]. Each refusal is a `MammoInputError` whose message names the file and states the limit.

Limits:
    MAX_PIXELS = 40 MP. Full-field digital mammograms are ~13-21 MP (a 24 x 30 cm detector at
        70 um is 3328 x 4096 = 13.6 MP; the CBIS-DDSM DICOMs here are 12.1-13.2 MP); the same
        field at 50 um would be 4800 x 6000 = 29 MP, and fine film scans somewhat more. 40 MP
        leaves room for those and refuses the rest: corrupt headers, decompression bombs (a
        108 kB, 9990 x 9990 mostly-zero PNG = 99.8 MP used to be accepted, and took 116 s and
        5.1 GB in the app) and images that are not mammograms.
    MIN_SIDE = 32 px. Below it an image is degenerate (1x1, 3x3, a 1-px line): no breast mask,
        no model input. Lesion crops (MIAS ROI crops are 72-230 px) stay readable; everything
        under 512 px on its long side gets the `small_image` QC flag (`mammo.qc`).
    MAX_ASPECT = 6 (long side / short side). Mammograms are ~1.2-2, breast crops up to ~2.8
        (GLAM crops); a 1 x 5000 strip or a 100 x 5000 banner is not a mammogram.
    MIN_USABLE_RANGE = 0.01 of [0, 1] between the 0.5th and 99.5th percentile (`mammo.qc.
        usable_range`): below it an image is blank (all black, all white, one grey), and the
        pipelines invent results on it (the cascade marked 98.6% of an all-white image lesion).
        A DICOM window or VOI LUT that leaves no range is ignored with a warning first.
    Values: NaN or infinite pixels, or values outside [0, 1] after scaling, are refused after
        every conversion (a float64 TIFF near 1e300, a NaN RescaleSlope).

Memory and time per request (peak resident memory from `resource.getrusage(RUSAGE_SELF)
.ru_maxrss`, one image per fresh process, CPU, Python 3.11; synthetic 16-bit PNG mammograms made
by a script, and a real CBIS-DDSM RLE DICOM):

    | image                    |    MP | read_image + breast        | read_image + cascade      |
    |--------------------------|-------|----------------------------|---------------------------|
    | PNG 4600 x 2800          |  12.9 | 184 MB, 0.30 + 0.05 s      | 1.23 GB, 0.36 + 0.88 s    |
    | CBIS-DDSM DICOM (RLE)    |  13.1 | 185 MB, 0.13 + 0.04 s      |                           |
    | PNG 5000 x 4100          |  20.5 | 230 MB, 0.47 + 0.08 s      |                           |
    | PNG 7000 x 5700          |  39.9 | 341 MB, 0.90 + 0.11 s      | 1.80 GB, 1.18 + 2.53 s    |

    read_image + breast: ~94 MB (interpreter, numpy, OpenCV, Pillow, pydicom) + at most 7 B per
        pixel (the decoded 16-bit array, 2 B/px, and the float32 image, 4 B/px, coexist briefly).
    read_image + cascade: ~940 MB (torch and the weights, loaded once per process) + at most
        23 B per pixel.
    So at MAX_PIXELS a request peaks under ~0.35 GB for reading + breast and ~1.9 GB with the
    cascade (`peak_request_bytes`). The app adds its outputs and views on top: the 99.8 MP PNG
    above took 5.1 GB there, so ~2 GB at 40 MP if that scales with the pixels (an estimate).
"""

from __future__ import annotations

import os

import numpy as np

from mammo.errors import input_error
from mammo.qc import percentile_spread, thumbnail

MAX_PIXELS = 40_000_000
"""Most pixels (H x W) an image may have; refused from the header, before decoding."""

MIN_SIDE = 32
"""Fewest pixels an image may have on its short side."""

MAX_ASPECT = 6.0
"""Largest long side / short side ratio accepted."""

MIN_USABLE_RANGE = 0.01
"""Smallest 0.5th-99.5th percentile spread of the [0, 1] image accepted (one 8-bit level is 0.004)."""

BASE_BYTES = 94 * 2**20
"""Measured resident memory of the interpreter with numpy, OpenCV, Pillow and pydicom loaded."""

BYTES_PER_PIXEL = {"breast": 7.0, "cascade": 23.0}
"""Measured peak bytes per image pixel of read_image + each pipeline (module docstring)."""

MODEL_BYTES = {"breast": 0, "cascade": 846 * 2**20}
"""Measured resident memory of each pipeline's framework and weights once loaded."""

_TOO_BIG_ADVICE = "Check the file, or downsample it before reading it with mammo."


def peak_request_bytes(pixels: int, pipeline: str = "breast") -> int:
    """Upper estimate of a request's peak resident memory (bytes) from its pixel count.

    Args:
        pixels: H x W of the image.
        pipeline: "breast" or "cascade" (the measured ones; others: use "cascade").

    Returns:
        bytes, from the measurements in the module docstring.
    """
    return int(BASE_BYTES + MODEL_BYTES[pipeline] + BYTES_PER_PIXEL[pipeline] * pixels)


def check_shape(height: int, width: int, path: str | os.PathLike[str]) -> None:
    """Refuse an image over `MAX_PIXELS`, under `MIN_SIDE` or beyond `MAX_ASPECT`.

    Called on the header's sizes, before decoding. Raises `MammoInputError` naming `path`.
    """
    if height * width > MAX_PIXELS:
        raise input_error(
            path, f"it is {width}x{height} = {height * width / 1e6:.0f} megapixels, over the "
            f"{MAX_PIXELS / 1e6:.0f}-megapixel limit (full-field mammograms have ~13-29 megapixels: "
            "this is a corrupt header, a decompression bomb or not a mammogram)",
            _TOO_BIG_ADVICE)
    if min(height, width) < MIN_SIDE:
        raise input_error(
            path, f"it is {width}x{height} pixels, too small to be a mammogram (mammo needs at "
            f"least {MIN_SIDE} pixels on each side)", "Pass the full mammogram, not a thumbnail.")
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT:
        raise input_error(
            path, f"it is {width}x{height} pixels, a {aspect:.1f}:1 strip; a mammogram's sides "
            f"differ by at most {MAX_ASPECT:g}:1", "Pass the mammogram itself.")


def check_unit_image(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse an image with NaN or infinite values or values outside [0, 1] (after conversion).

    Args:
        image: float32 (H, W), meant to lie in [0, 1].
    """
    lo, hi = float(image.min()), float(image.max())  # NaN propagates: both comparisons fail
    if not (lo >= 0.0 and hi <= 1.0):
        raise input_error(path, f"its pixel values became NaN, infinite or left [0, 1] when "
                          f"converted (min {lo}, max {hi}): the stored values or their scaling "
                          "are damaged", "Check how the file was made, and save it again.")


def check_usable_range(image: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse a blank image: 0.5th-99.5th percentile spread under `MIN_USABLE_RANGE`.

    Args:
        image: float32 (H, W) in [0, 1], brighter = denser.
    """
    thumb = thumbnail(image)
    spread = percentile_spread(thumb, 0.5, 99.5)
    if spread < MIN_USABLE_RANGE:
        level = float(np.median(thumb))
        kind = "black" if level < 0.1 else "white" if level > 0.9 else f"grey ({level:.2f})"
        raise input_error(
            path, f"it has no usable dynamic range: 99% of its pixels have (nearly) the same "
            f"value, all {kind} once scaled to [0, 1] (spread {spread:.4f}, at least "
            f"{MIN_USABLE_RANGE} needed); it is blank or its grey levels were lost",
            "Pass the mammogram itself, exported with its full grey range.")
