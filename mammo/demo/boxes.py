"""Box prompts on the page: the drawing canvas, strokes -> boxes, outlining them with `box-lesion`,
and refining an automatic pipeline's lesions.

The canvas shows the mammogram shrunk to `CANVAS_SIDE`; every box the page shows or sends is in
the input's own pixels (x0,y0,x1,y1, x1/y1 exclusive), so what a user types, what the API takes
and what `mammo predict --box` takes are the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.demo.errors import check_file_argument, check_name_argument
from mammo.demo.predict import Prediction, load_image, run_pipeline
from mammo.errors import MammoInputError
from mammo.export import finding_rows
from mammo.pipelines.base import Result
from mammo.preprocess.prompt import format_box, mask_boxes, parse_boxes
from mammo.viz import to_rgb8

CANVAS_SIDE = 1024           # long side of the drawing canvas
BOX_PIPELINE = "box-lesion"
MAX_BOXES = 16               # per request: each new region costs an encoder pass (~1.2 s)
MIN_STROKE_PX = 9            # canvas pixels: smaller marks are slips, not boxes
OUTLINE_RGB = (0, 230, 255)  # refined (LiteMedSAM) outline
AUTO_RGB = (255, 200, 0)     # the automatic pipeline's outline
BOX_RGB = (255, 64, 64)
TABLE_COLUMNS = ["box", "label", "area_mm2", "diameter_mm", "area_px", "diameter_px", "outline_score",
                 "malignancy", "malignancy_source"]


@dataclass
class Canvas:
    """The picture to draw on: uint8 RGB (h, w, 3), and input pixels per canvas pixel."""

    picture: np.ndarray
    scale: float


def canvas(path: str | os.PathLike[str] | None) -> Canvas:
    """The uploaded file shrunk to `CANVAS_SIDE` (long side) for drawing boxes on."""
    image, _, _ = load_image(path)
    scale = max(1.0, max(image.shape) / CANVAS_SIDE)
    size = (max(1, round(image.shape[1] / scale)), max(1, round(image.shape[0] / scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale > 1 else image
    return Canvas(to_rgb8(small), image.shape[1] / size[0])


def strokes_to_boxes(layers: list[np.ndarray] | None, scale: float) -> str:
    """The boxes drawn on the canvas as "x0,y0,x1,y1" lines in input pixels: the bounding box of
    each separate mark (a rectangle outline, a scribble or a filled patch: any of them), where
    marks closer than 2% of the canvas are one mark (a rectangle drawn in several strokes).

    Args:
        layers: the editor's drawing layers, uint8 RGBA (h, w, 4) (or RGB), canvas pixels.
        scale: input pixels per canvas pixel (`Canvas.scale`).
    """
    if not layers:
        return ""
    drawn = np.zeros(np.asarray(layers[0]).shape[:2], bool)
    for layer in layers:
        layer = np.asarray(layer)
        drawn |= layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.any(axis=-1)
    gap = max(3, round(0.02 * max(drawn.shape)))
    joined = cv2.dilate(drawn.astype(np.uint8), np.ones((gap, gap), np.uint8)) > 0
    boxes = []
    for x0, y0, x1, y1 in mask_boxes(joined):
        piece = drawn[int(y0):int(y1), int(x0):int(x1)]
        ys, xs = np.nonzero(piece)
        if ys.size == 0 or max(np.ptp(ys), np.ptp(xs)) + 1 < MIN_STROKE_PX:
            continue
        bx0, by0 = x0 + xs.min(), y0 + ys.min()
        bx1, by1 = x0 + xs.max() + 1, y0 + ys.max() + 1
        boxes.append(tuple(v * scale for v in (bx0, by0, bx1, by1)))
    boxes.sort(key=lambda b: (b[1], b[0]))
    return "\n".join(format_box(b) for b in boxes)


def segment_boxes(path: str | os.PathLike[str] | None, boxes_text: str | list,
                  name: str = BOX_PIPELINE) -> Prediction:
    """Outline the lesion in each box of `boxes_text` (see `parse_boxes`) on the uploaded file.

    Raises:
        MammoInputError: no file or an unreadable one, no box or a malformed one, too many boxes.
    """
    check_file_argument(path)
    check_name_argument(name)
    if not isinstance(boxes_text, (str, list)):
        raise MammoInputError(f"boxes must be text (x0,y0,x1,y1 per line) or a list, not {type(boxes_text).__name__}")
    boxes = parse_boxes(boxes_text)
    if not boxes:
        raise MammoInputError("No box: draw a box around the region on the canvas, or type x0,y0,x1,y1 "
                              "(pixels of the image) in the Boxes field.")
    if len(boxes) > MAX_BOXES:
        raise MammoInputError(f"{len(boxes)} boxes; at most {MAX_BOXES} per request")
    image, meta, read_seconds = load_image(path)
    return run_pipeline(name, image, meta, Path(path or "").name, read_seconds, boxes=boxes)


def refine_lesions(path: str | os.PathLike[str] | None, automatic: str,
                   name: str = BOX_PIPELINE) -> tuple[Prediction, Prediction]:
    """Run the automatic pipeline `automatic`, then outline each of its lesion components again
    with `box-lesion` (their tight boxes as prompts): (automatic, refined) predictions.

    Raises:
        MammoInputError: also when `automatic` gives no lesion mask, or an empty one.
    """
    check_name_argument(automatic)
    image, meta, read_seconds = load_image(path)
    source = Path(path or "").name
    auto = run_pipeline(automatic, image, meta, source, read_seconds)
    lesion = auto.result.masks.get("lesion")
    if lesion is None:
        raise MammoInputError(f"{automatic} gives no lesion mask to refine")
    boxes = mask_boxes(lesion, min_pixels=16)[:MAX_BOXES]
    if not boxes:
        raise MammoInputError(f"{automatic} found no lesion on {source}: nothing to refine")
    labels = [f"{automatic} lesion {i + 1}" for i in range(len(boxes))]
    refined = run_pipeline(name, image, meta, source, 0.0, boxes=boxes, labels=labels)
    return auto, refined


def table_rows(result: Result) -> list[list[Any]]:
    """One row per finding, `TABLE_COLUMNS` (mm columns empty where the pixel spacing is unknown)."""
    rows = []
    for row in finding_rows(result):
        box = format_box((row["x0"], row["y0"], row["x1"], row["y1"]))
        rows.append([box, row["label"], row["area_mm2"], row["diameter_mm"], row["area_px"], row["diameter_px"],
                     row["outline_score"], row["malignancy"], row["malignancy_source"]])
    return rows


def outline_view(pred: Prediction, automatic: np.ndarray | None = None, side: int = CANVAS_SIDE) -> np.ndarray:
    """The image with each box (red, numbered) and its outline (cyan), and the automatic
    pipeline's lesion outline (yellow) when given: uint8 RGB, long side <= `side`."""
    image = pred.image
    scale = min(1.0, side / max(image.shape))
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    rgb = to_rgb8(cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image).copy()
    thick = max(1, round(max(size) / 400))
    if automatic is not None:
        _draw_outline(rgb, automatic, size, AUTO_RGB, thick)
    for i, finding in enumerate(pred.result.findings):
        _draw_outline(rgb, finding.full_mask(image.shape), size, OUTLINE_RGB, thick)
        x0, y0, x1, y1 = (round(v * scale) for v in finding.box)
        cv2.rectangle(rgb, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_RGB, thick)
        cv2.putText(rgb, str(i + 1), (x0 + 2, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick + 0.2,
                    BOX_RGB, thick, cv2.LINE_AA)
    return rgb


def _draw_outline(rgb: np.ndarray, mask: np.ndarray, size: tuple[int, int], colour: tuple[int, int, int],
                  thick: int) -> None:
    small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(rgb, contours, -1, colour, thick, cv2.LINE_AA)


def box_summary(pred: Prediction) -> str:
    """One line: how many boxes, the time taken, and where the malignancy scores come from."""
    sources = sorted({f.malignancy_source for f in pred.result.findings if f.malignancy_source})
    scored = f"; malignancy from {', '.join(sources)}" if sources else "; no malignancy classifier"
    timings = pred.result.timings
    return (f"**{pred.name}** on `{pred.source}`: {len(pred.result.findings)} box(es) outlined in "
            f"{pred.seconds['run']:.2f} s (image encoder {timings.get('embed', 0):.2f} s, decoder "
            f"{timings.get('decode', 0):.2f} s){scored}. Red: your boxes; cyan: the outlines.")
