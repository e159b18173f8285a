"""Boxes and the views a box-prompted segmenter sees (pure numpy/OpenCV; no framework).

Coordinates: a box is (x0, y0, x1, y1) in the input image's pixels, columns x0:x1 and rows y0:y1
as numpy slices (x1, y1 exclusive), so the tight box of a mask is (min col, min row, max col + 1,
max row + 1).

Views: LiteMedSAM sees 256x256 pixels. A whole mammogram at 256 pixels makes a 10 mm mass ~15
pixels wide, so a box is segmented in a square window around it, `context` times its longest
side, not in the whole breast. Windows come from a fixed pyramid (sides `min_side * sqrt(2)^k`,
origins on a grid of a quarter side), so boxes near each other share one window, and so one
cached embedding: a box moved or redrawn around the same lesion costs only the decoder.

Windowing: the window's pixels are clipped to their 0.5th and 99.5th percentiles (over the
pixels that are not background, > `BACKGROUND`) and scaled to [0, 1], as MedSAM prepares
non-CT images; grey is copied to the three channels.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from mammo.errors import MammoInputError

Box = tuple[float, float, float, float]
BACKGROUND = 0.02  # [0, 1] intensity at or below which a pixel counts as air for the percentiles
DEFAULT_CONTEXT = 2.5
DEFAULT_MIN_SIDE = 256


@dataclass(frozen=True)
class Window:
    """A square of `side` input pixels whose top-left corner is (y0, x0); it may reach past the
    image, where the view is padded with 0."""

    y0: int
    x0: int
    side: int

    def to_view(self, box: Box, size: int) -> np.ndarray:
        """`box` in input pixels -> float32 (4,) in the `size`-pixel view frame."""
        scale = size / self.side
        x0, y0, x1, y1 = box
        return np.array([(x0 - self.x0) * scale, (y0 - self.y0) * scale,
                         (x1 - self.x0) * scale, (y1 - self.y0) * scale], np.float32)


def check_box(box: Box, shape: tuple[int, int]) -> Box:
    """`box` clipped to an image of `shape` (H, W); MammoInputError when it is empty or outside."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise MammoInputError(f"box {box}: needs x0 < x1 and y0 < y1 (x0,y0,x1,y1 in pixels)")
    clipped = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        raise MammoInputError(f"box {box} lies outside the {w}x{h} image (x0,y0,x1,y1 in pixels)")
    return clipped


def parse_boxes(text: str | list) -> list[Box]:
    """Boxes from "x0,y0,x1,y1" items separated by ";" or new lines, or from JSON
    ([[x0, y0, x1, y1], ...]); MammoInputError naming the item that is not a box."""
    if isinstance(text, list):
        items = text
    elif text.strip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise MammoInputError(f"boxes: not valid JSON ({err})") from None
    else:
        items = [part for part in re.split(r"[;\n]+", text) if part.strip()]
    boxes = []
    for item in items:
        values = re.split(r"[,\s]+", item.strip()) if isinstance(item, str) else list(item)
        try:
            numbers = tuple(float(v) for v in values if v != "")
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
            raise MammoInputError(f"box {item!r}: expected four numbers x0,y0,x1,y1 (pixels)")
        boxes.append(numbers)
    return boxes


def format_box(box: Box) -> str:
    """"x0,y0,x1,y1" with whole pixels, as `parse_boxes` and `mammo predict --box` read it."""
    return ",".join(str(int(round(v))) for v in box)


def mask_boxes(mask: np.ndarray, min_pixels: int = 1) -> list[Box]:
    """The tight box of each 8-connected component of a bool (H, W) mask with at least
    `min_pixels` pixels, largest first."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    comps = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [(float(stats[i, 0]), float(stats[i, 1]), float(stats[i, 0] + stats[i, 2]),
             float(stats[i, 1] + stats[i, 3])) for i in comps if stats[i, cv2.CC_STAT_AREA] >= min_pixels]


def jitter_box(box: Box, fraction: float, rng: np.random.Generator, shape: tuple[int, int]) -> Box:
    """Each edge moved by an independent uniform amount in [-fraction, +fraction] of the box's
    width (x edges) or height (y edges), then clipped to the image; at least 1 pixel stays."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx0, dx1, dy0, dy1 = rng.uniform(-fraction, fraction, 4)
    out = (x0 + dx0 * w, y0 + dy0 * h, x1 + dx1 * w, y1 + dy1 * h)
    if out[2] - out[0] < 1 or out[3] - out[1] < 1:
        out = box
    return check_box(out, shape)


def window_for_box(box: Box, shape: tuple[int, int], context: float = DEFAULT_CONTEXT,
                   min_side: int = DEFAULT_MIN_SIDE) -> Window:
    """The pyramid window for `box` in an image of `shape` (H, W): the smallest side
    `min_side * sqrt(2)^k` >= `context` x the box's longest side whose grid window (origin a
    multiple of a quarter side, nearest the box's centre) holds the whole box. Past the image's
    longest side, one window covers the whole image."""
    h, w = shape
    x0, y0, x1, y1 = box
    longest = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = max(0, math.ceil(2 * math.log2(max(context * longest, 1) / min_side) - 1e-9))
    while True:
        side = int(round(min_side * 2 ** (k / 2)))
        if side >= max(h, w):
            return Window(0, 0, max(h, w))
        step = side / 4
        wx0 = int(round(round((cx - side / 2) / step) * step))
        wy0 = int(round(round((cy - side / 2) / step) * step))
        if wx0 <= x0 and wy0 <= y0 and wx0 + side >= x1 and wy0 + side >= y1:
            return Window(wy0, wx0, side)
        k += 1


def frames_well(window: Window, box: Box) -> bool:
    """Whether `window` holds all of `box` with the box's centre in its middle half: a window
    already embedded for a nearby box that serves this one as well as its own window would."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 - window.x0, (y0 + y1) / 2 - window.y0
    inside = window.x0 <= x0 and window.y0 <= y0 and x1 <= window.x0 + window.side and y1 <= window.y0 + window.side
    return inside and all(window.side / 4 <= c <= 3 * window.side / 4 for c in (cx, cy))


def window_pixels(image: np.ndarray, window: Window) -> np.ndarray:
    """The window's pixels of float32 (H, W) `image`, 0 where it reaches past the image."""
    h, w = image.shape
    out = np.zeros((window.side, window.side), np.float32)
    ys, xs = max(0, window.y0), max(0, window.x0)
    ye, xe = min(h, window.y0 + window.side), min(w, window.x0 + window.side)
    if ye > ys and xe > xs:
        out[ys - window.y0:ye - window.y0, xs - window.x0:xe - window.x0] = image[ys:ye, xs:xe]
    return out


def make_view(image: np.ndarray, window: Window, size: int) -> np.ndarray:
    """float32 (H, W) in [0, 1] -> the encoder's view: float32 (size, size, 3) in [0, 1]
    (resized with area averaging when shrinking, percentile-windowed as the module says)."""
    pixels = window_pixels(image, window)
    interp = cv2.INTER_AREA if window.side > size else cv2.INTER_LINEAR
    small = cv2.resize(pixels, (size, size), interpolation=interp)
    tissue = small[small > BACKGROUND]
    if tissue.size >= 16:
        lo, hi = np.percentile(tissue, (0.5, 99.5))
    else:
        lo, hi = float(small.min()), float(small.max())
    if hi - lo < 1e-3:  # flat (one grey level of tissue): keep the image's own range
        lo, hi = 0.0, 1.0
    scaled = np.clip((small - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return np.repeat(scaled[:, :, None], 3, axis=2)


def box_region(box: Box, window: Window, shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1): `box` grown by `margin` x its width/height on every side, within the
    window and an image of `shape` (H, W): where a mask for `box` may lie."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    h, w = shape
    return (max(0, window.y0, math.floor(y0 - dy)), max(0, window.x0, math.floor(x0 - dx)),
            min(h, window.y0 + window.side, math.ceil(y1 + dy)), min(w, window.x0 + window.side, math.ceil(x1 + dx)))


def view_to_image(prob: np.ndarray, window: Window, region: tuple[int, int, int, int]) -> np.ndarray:
    """A (size, size) view-frame map -> float32 (y1 - y0, x1 - x0), bilinear, over `region`
    (y0, x0, y1, x1) of the image (inside the window). Only that region is computed: a
    whole-image window can be 5000 pixels a side."""
    ys, xs, ye, xe = region
    scale = prob.shape[0] / window.side
    map_x = (np.arange(xs, xe, dtype=np.float32) - window.x0 + 0.5) * scale - 0.5
    map_y = (np.arange(ys, ye, dtype=np.float32) - window.y0 + 0.5) * scale - 0.5
    mx, my = np.meshgrid(map_x, map_y)
    return cv2.remap(prob.astype(np.float32), mx, my, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def image_key(image: np.ndarray) -> str:
    """A fingerprint of an image for the embedding cache: its shape and every 8th row and column
    (1 ms on a 4600x2800 mammogram; hashing every pixel takes 50)."""
    digest = hashlib.blake2b(np.ascontiguousarray(image[::8, ::8]).tobytes(), digest_size=16)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()
