"""Quality-control flags of a mammogram as read: `qc_flags(image, meta) -> list[str]`.

`mammo.io.read_image` calls `qc_flags` and stores the result in `ImageMeta.qc`, so every channel
(CLI scores.json, app, eval) sees it through `meta.to_dict()`. A flag never stops a run: it tells
the person reading the results that they may be meaningless. Input that cannot be used at all is
refused instead (see `mammo.io.limits`); the flags cover what is doubtful but readable.

Image statistics are computed on a strided thumbnail (every s-th row and column, at most
`THUMB_SIDE` pixels on the long side, a view, no resampling): ~0.16 MP for a 4600x2800 image,
which keeps `qc_flags` under ~10 ms there (5-7 ms measured on the CBIS-DDSM DICOMs).

| flag               | raised when                                                               |
|--------------------|---------------------------------------------------------------------------|
| no_breast_found    | the breast mask (`mammo.preprocess.breast_mask`) covers < 2% of the image  |
| saturated          | >= 10% of the breast's pixels (of all pixels when no breast is found) sit  |
|                    | at the top of the scale (>= 0.995): a window or export that clipped dense |
|                    | tissue, or an inverted image whose white background was taken for breast  |
| low_dynamic_range  | the 1st-99th percentile spread is < 0.2 of the [0, 1] scale (e.g. 12-bit   |
|                    | data declared as 16-bit); under 0.01 (0.5th-99.5th) the image is refused   |
| small_image        | the long side is < 512 px: smaller than the models' inputs (256-512 px),  |
|                    | so detail is lost (images under 32 px per side are refused)               |
| odd_aspect_ratio   | long side / short side > 3 (mammograms: ~1.2-2; breast crops up to ~2.8); |
|                    | beyond 6 the image is refused                                             |
| modality_not_mg    | DICOM Modality is present and not MG (read with allow_modality=True)      |
| modality_missing   | DICOM without a Modality tag (rasters never have one: not flagged)        |
| for_processing     | DICOM PresentationIntentType "FOR PROCESSING" (or, without the tag, a For |
|                    | Processing SOP class): a raw detector image, not processed for viewing    |
| implant_suspected  | DICOM BreastImplantPresent is YES, or a ViewModifierCodeSequence item     |
|                    | means "implant displaced" (`ImageMeta.breast_implant_present`)            |

Flags come in the order of this table (`FLAGS`). Thresholds were checked on the 849 real images
in `../shared/data` (8 CBIS-DDSM DICOMs, 258 MIAS, 519 CDD-CESM, 4 GLAM, 60 tissue-ddsm): no
image raises no_breast_found (smallest breast share 7.9%), low_dynamic_range (smallest spread
0.29), small_image or odd_aspect_ratio (largest 2.8, GLAM); `saturated` is raised on 8 CDD-CESM
images, each with a visibly clipped white region covering 13-30% of the breast. `qc_flags` took
4-10 ms per image (26 ms at most, a first call) on those, CBIS 4600x2800 included.
Implants are flagged from the header only: a cheap image rule (large, very bright, flat blocks
inside the breast) was tried and dropped, as it flagged dense breasts (24-52% of the breast in
MIAS mdb179, mdb180, mdb288) and no implant mammogram is available here to set it against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mammo.preprocess.breast import breast_mask

if TYPE_CHECKING:  # mammo.io imports this module: no import of mammo.io at run time
    from mammo.io.meta import ImageMeta

THUMB_SIDE = 512
"""Long side (px) of the strided thumbnail the image statistics are computed on."""

# Thresholds of the table above (image values on the [0, 1] scale, sizes in pixels).
MIN_BREAST_FRACTION = 0.02
SATURATION_LEVEL = 0.995
SATURATED_FRACTION = 0.10
LOW_RANGE = 0.2
SMALL_LONG_SIDE = 512
ODD_ASPECT = 3.0

FOR_PROCESSING_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray Image Storage - For Processing
})

FLAGS = ("no_breast_found", "saturated", "low_dynamic_range", "small_image", "odd_aspect_ratio",
         "modality_not_mg", "modality_missing", "for_processing", "implant_suspected")
"""Every flag `qc_flags` can return, in the order it returns them."""


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Every s-th row and column of `image` (H, W), s the smallest step giving <= `side` px.

    Returns:
        a strided view (no copy) of shape (ceil(H / s), ceil(W / s)), same dtype.
    """
    step = max(1, -(-max(image.shape) // side))
    return image[::step, ::step]


def percentile_spread(values: np.ndarray, low: float, high: float) -> float:
    """`high` minus `low` percentile of `values` (any shape), 0.0 for an empty array."""
    if values.size == 0:
        return 0.0
    lo, hi = np.percentile(values, [low, high])
    return float(hi - lo)


def usable_range(image: np.ndarray) -> float:
    """Spread between the 0.5th and 99.5th percentile of a [0, 1] image, on its thumbnail.

    Robust to a few outliers (a label, a dead pixel): an all-white film with a black text label
    has a range of 0. Float in [0, 1]; NaN when the image holds NaN.
    """
    return percentile_spread(thumbnail(image), 0.5, 99.5)


def _saturated_fraction(thumb: np.ndarray, breast: np.ndarray) -> float:
    """Share of the breast's pixels (all pixels when no breast is found) >= SATURATION_LEVEL."""
    region = thumb[breast] if breast.any() else thumb
    return float(np.count_nonzero(region >= SATURATION_LEVEL) / max(1, region.size))


def image_stats(image: np.ndarray) -> dict[str, float]:
    """The image statistics the flags are decided on (thumbnail based, see the module docstring).

    Args:
        image: float32 (H, W) in [0, 1], brighter = denser.

    Returns:
        {"breast_fraction", "saturated_fraction", "range_1_99", "aspect", "long_side"}; fractions
        and range in [0, 1], aspect >= 1, long side in px.
    """
    h, w = image.shape
    thumb = np.ascontiguousarray(thumbnail(image), dtype=np.float32)
    breast = breast_mask(thumb)
    return {
        "breast_fraction": float(breast.mean()),
        "saturated_fraction": _saturated_fraction(thumb, breast),
        "range_1_99": percentile_spread(thumb, 1.0, 99.0),
        "aspect": max(h, w) / max(1, min(h, w)),
        "long_side": float(max(h, w)),
    }


def _image_flags(stats: dict[str, float]) -> list[str]:
    flags = []
    if stats["breast_fraction"] < MIN_BREAST_FRACTION:
        flags.append("no_breast_found")
    if stats["saturated_fraction"] >= SATURATED_FRACTION:
        flags.append("saturated")
    if stats["range_1_99"] < LOW_RANGE:
        flags.append("low_dynamic_range")
    if stats["long_side"] < SMALL_LONG_SIDE:
        flags.append("small_image")
    if stats["aspect"] > ODD_ASPECT:
        flags.append("odd_aspect_ratio")
    return flags


def _header_flags(meta: ImageMeta) -> list[str]:
    if meta.format != "dicom":  # rasters and arrays carry no DICOM header to judge
        return []
    flags = []
    if meta.modality is None:
        flags.append("modality_missing")
    elif meta.modality != "MG":
        flags.append("modality_not_mg")
    if (meta.presentation_intent or "").upper() == "FOR PROCESSING":
        flags.append("for_processing")
    return flags


def qc_flags(image: np.ndarray, meta: ImageMeta) -> list[str]:
    """The QC flags of one mammogram (see the module docstring's table), in `FLAGS` order.

    Args:
        image: float32 (H, W) in [0, 1], brighter = denser (as `read_image` returns it).
        meta: its `ImageMeta`; DICOM header fields (modality, presentation intent, implant tag)
            give the header flags; nothing is changed.

    Returns:
        flag names (snake_case), [] when nothing looks wrong.
    """
    stats = image_stats(image)
    flags = _image_flags(stats) + _header_flags(meta)
    if meta.breast_implant_present:
        flags.append("implant_suspected")
    return [f for f in FLAGS if f in flags]
