"""Overlays shared by the CLI, the app, `eval/` and `training/`.

Images in: float32 (H, W) in [0, 1]. Images out: uint8 RGB (H, W, 3).
"""

from __future__ import annotations

import cv2
import numpy as np

# One colour per standard class (RGB), chosen to stay apart on a grey mammogram.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "breast": (80, 160, 255),
    "adipose": (255, 210, 60),
    "fibroglandular": (60, 220, 120),
    "pectoral": (200, 90, 255),
    "lesion": (255, 50, 50),
    "calcification": (0, 255, 255),   # cyan: white would vanish on the calcifications themselves
}
_FALLBACK = (255, 140, 0)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1] -> uint8 (H, W, 3) grey."""
    u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(u8[:, :, None], 3, axis=2)


def overlay_masks(
    image: np.ndarray, masks: dict[str, np.ndarray], alpha: float = 0.35, outline: bool = True,
    legend: bool = True,
) -> np.ndarray:
    """Draw each bool mask (H, W) in its class colour over the image, with outlines and a legend.

    Returns:
        uint8 RGB (H, W, 3).
    """
    rgb = to_rgb8(image).astype(np.float32)
    thickness = max(1, round(max(image.shape) / 600))
    for name, mask in masks.items():
        color = np.array(CLASS_COLORS.get(name, _FALLBACK), np.float32)
        m = mask.astype(bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * color
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    if outline:
        for name, mask in masks.items():
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, CLASS_COLORS.get(name, _FALLBACK), thickness)
    if legend and masks:
        draw_legend(out, list(masks))
    return out


#: Legend text height as a fraction of the image's long side: 2.5% is 26 px on a 1024 px overlay,
#: 16 px where the page shows it 640 px tall (the old key, 0.6 x min side / 900, was 6 px there).
LEGEND_TEXT_FRACTION = 0.025
_LEGEND_FONT = cv2.FONT_HERSHEY_SIMPLEX


def legend_box(shape: tuple[int, ...], names: list[str]) -> tuple[int, int, int, int, float, int]:
    """Geometry of the colour key for an image of `shape` (h, w[, 3]) listing `names`.

    Returns:
        (box width, box height, row height, text height, font scale, thickness) in pixels; the
        text height (a letter's height above the baseline) is `LEGEND_TEXT_FRACTION` of the long
        side (at least 8 px), shrunk only when the key would not fit in 90% of the image's width.
    """
    h, w = shape[:2]
    unit_w = max(cv2.getTextSize(n, _LEGEND_FONT, 1.0, 2)[0][0] for n in names)
    unit_h = cv2.getTextSize("Hg", _LEGEND_FONT, 1.0, 2)[0][1]
    text_h = max(8.0, LEGEND_TEXT_FRACTION * max(h, w))
    # swatch (text_h) + gap (text_h / 2) + text + padding (text_h / 2) on both sides
    width_per_unit = unit_w / unit_h + 2.5
    text_h = min(text_h, 0.9 * w / width_per_unit)
    scale = text_h / unit_h
    thickness = max(1, round(scale * 1.6))
    row = round(text_h * 1.6)
    pad = round(text_h / 2)
    # rows from the first's top to the last's descenders (0.3 of the text height), then padding
    height = (len(names) - 1) * row + round(1.3 * text_h) + 2 * pad
    return round(text_h * width_per_unit), height, row, round(text_h), scale, thickness


def _emptier_top_corner(rgb: np.ndarray, box_w: int, box_h: int) -> int:
    """x of the key: the top corner (left or right) with the darker content, so the key covers
    background rather than breast; the right one on a tie."""
    w = rgb.shape[1]
    left = float(rgb[:box_h, :box_w].mean()) if box_w and box_h else 0.0
    right = float(rgb[:box_h, max(0, w - box_w):].mean()) if box_w and box_h else 0.0
    return 0 if left < right else max(0, w - box_w)


def draw_legend(rgb: np.ndarray, names: list[str]) -> tuple[int, int, int, int]:
    """Write a colour key (a swatch and the class name, in its colour, per row, on a dark box) in
    the emptier top corner of a uint8 RGB image (H, W, 3), in place.

    Returns:
        the key's box (x0, y0, x1, y1) in pixels, x1/y1 exclusive.
    """
    if not names:
        return (0, 0, 0, 0)
    h, w = rgb.shape[:2]
    box_w, box_h, row, text_h, scale, thickness = legend_box(rgb.shape, names)
    box_w, box_h = min(box_w, w), min(box_h, h)
    x0 = _emptier_top_corner(rgb, box_w, box_h)
    backing = rgb[:box_h, x0:x0 + box_w]
    backing[:] = (backing.astype(np.float32) * 0.25).astype(np.uint8)  # 75% black: contrast on any tissue
    pad = round(text_h / 2)
    for i, name in enumerate(names):
        color = CLASS_COLORS.get(name, _FALLBACK)
        baseline_y = pad + text_h + i * row
        cv2.rectangle(rgb, (x0 + pad, baseline_y - text_h), (x0 + pad + text_h, baseline_y), color, -1)
        cv2.putText(rgb, name, (x0 + pad + round(1.5 * text_h), baseline_y), _LEGEND_FONT, scale, color,
                    thickness, cv2.LINE_AA)
    return (x0, 0, x0 + box_w, box_h)


#: No picture made for viewing is larger than this on its long side, whatever the input's shape
#: (cascade's 1024 px tall panel of a 1x5000 image would have been 5 million px wide: 20 GB).
MAX_VIEW_SIDE = 4096


def view_size(shape: tuple[int, ...], scale: float, max_side: int = MAX_VIEW_SIDE) -> tuple[int, int]:
    """The (width, height) for cv2.resize of an image of `shape` (h, w[, c]) scaled by `scale`,
    safe for any shape: each side at least 1 px, the long side at most `max_side` (the scale is
    lowered to fit, keeping the aspect ratio as far as whole pixels allow)."""
    h, w = max(1, int(shape[0])), max(1, int(shape[1]))
    scale = min(float(scale), max_side / max(h, w))
    return max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale)))


def downscale_for_view(rgb: np.ndarray, max_side: int = 2048) -> np.ndarray:
    """Shrink an RGB image so its long side is at most `max_side` (views, not measurements);
    never enlarged, never a side of 0 px (a 1x5000 image becomes 1x2048)."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    return cv2.resize(rgb, view_size(rgb.shape, 1.0, max_side), interpolation=cv2.INTER_AREA)


# Prediction vs. truth colours for `compare_overlay` (RGB): red fill for the prediction, green truth outline.
PRED_COLOR: tuple[int, int, int] = (255, 40, 40)
TRUTH_COLOR: tuple[int, int, int] = (40, 230, 80)


def compare_overlay(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray,
                    alpha: float = 0.4) -> np.ndarray:
    """Draw a prediction (translucent red fill + red outline) and the truth (green outline) over an image.

    Args:
        image: float32 (H, W) in [0, 1].
        truth: bool (H, W), or None when there is no ground truth.
        pred: bool (H, W).

    Returns:
        uint8 RGB (H, W, 3); the truth outline is drawn last so it stays visible over the fill.
    """
    rgb = to_rgb8(image).astype(np.float32)
    thickness = max(1, round(max(image.shape) / 300))
    p = pred.astype(bool)
    rgb[p] = (1 - alpha) * rgb[p] + alpha * np.array(PRED_COLOR, np.float32)
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    for mask, color in ((pred, PRED_COLOR), (truth, TRUTH_COLOR)):
        if mask is None:
            continue
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, thickness)
    return out


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, vmax: float | None = None,
                    colorbar: bool = True) -> np.ndarray:
    """A map float (H, W) in [0, 1] as a JET colour wash over the grey image (H, W) -> uint8 RGB.

    The colours span [0, vmax]; vmax defaults to the map's own maximum (at least 0.05, so that a
    flat near-zero map is not blown up into noise): a map that peaks at 0.2 is then as visible as
    one that peaks at 1, and the colour bar on the right (H, +bar) says what the colours mean in
    the map's own units. The colour is weighted by the scaled map, so zero stays plain grey.
    """
    grey = to_rgb8(image).astype(np.float32)
    heat = np.clip(np.nan_to_num(heat), 0, 1).astype(np.float32)
    top = float(vmax) if vmax is not None else max(float(heat.max()), 0.05)
    scaled = np.clip(heat / top, 0, 1)
    colour = cv2.cvtColor(cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET),
                          cv2.COLOR_BGR2RGB).astype(np.float32)
    weight = (alpha * scaled)[:, :, None]
    out = np.clip(grey * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)
    return np.concatenate([out, colour_bar(out.shape[0], top)], axis=1) if colorbar else out


def colour_bar(height: int, vmax: float) -> np.ndarray:
    """uint8 RGB (height, ~height/6) JET bar from 0 (bottom) to vmax (top), with three value labels."""
    width = max(24, height // 6)
    ramp = np.linspace(255, 0, height).astype(np.uint8)[:, None].repeat(max(6, width // 3), axis=1)
    bar = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    panel = np.full((height, width, 3), 255, np.uint8)
    panel[:, :bar.shape[1]] = bar
    scale = max(0.3, height / 900)
    thickness = max(1, int(scale * 2))
    for frac in (0.0, 0.5, 1.0):
        text = f"{frac * vmax:.2f}"
        (_, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        # the baseline at the value's height, kept inside the panel (the top label was cut in half)
        y = int(np.clip((1 - frac) * (height - 1) + text_h / 2, text_h + 2, height - base - 2))
        cv2.putText(panel, text, (bar.shape[1] + 2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return panel


def draw_boxes(rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], color: tuple[int, int, int] = (40, 120, 255),
               thickness: int | None = None, labels: list[str] | None = None) -> np.ndarray:
    """Draw (y0, x0, y1, x1) rectangles on a copy of a uint8 RGB image; `labels` (one per box,
    e.g. "1 0.42": rank and score) are written on a filled tab at each box's top-left corner."""
    out = rgb.copy()
    thickness = thickness or max(1, round(max(rgb.shape[:2]) / 400))
    # Label text ~2% of the long side: ~20 px on the 1024 px picture, ~12 px as the page shows it.
    scale = max(0.4, max(rgb.shape[:2]) / 1100)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), color, thickness)
        if labels is None or i >= len(labels) or not labels[i]:
            continue
        (tw, th), base = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness))
        top = max(0, int(y0) - th - base - 2) if int(y0) >= th + base + 2 else int(y0)
        cv2.rectangle(out, (int(x0), top), (int(x0) + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(out, labels[i], (int(x0) + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), max(1, thickness), cv2.LINE_AA)
    return out


def patch_labels(patches: list) -> list[str]:
    """"rank score" for each `PatchBox` (rank 1 = the highest score), e.g. "1 0.42"."""
    order = sorted(range(len(patches)), key=lambda i: -(patches[i].score or 0.0))
    rank = {i: r + 1 for r, i in enumerate(order)}
    return [f"{rank[i]}" + ("" if p.score is None else f" {p.score:.2f}") for i, p in enumerate(patches)]
