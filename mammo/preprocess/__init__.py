"""Pure numpy/OpenCV preprocessing: breast mask and crop, orientation, contrast, resize/pad."""

from mammo.preprocess.breast import (
    CropWindow,
    breast_mask,
    chest_wall_side,
    crop_to_breast,
    expand_window,
    flip_to_canonical,
    uncrop,
    unflip,
)
from mammo.preprocess.contrast import adaptive_clahe, adaptive_clip_limit, clahe, median_filter
from mammo.preprocess.geometry import Letterbox, letterbox, letterbox_geometry, restore

__all__ = [
    "CropWindow",
    "Letterbox",
    "adaptive_clahe",
    "adaptive_clip_limit",
    "breast_mask",
    "chest_wall_side",
    "clahe",
    "crop_to_breast",
    "expand_window",
    "flip_to_canonical",
    "letterbox",
    "letterbox_geometry",
    "median_filter",
    "restore",
    "uncrop",
    "unflip",
]
