"""What the page shows of a `Prediction`: pictures, the scores chart's rows, details, summary.

Pictures are uint8 RGB (h, w, 3) with the long side at most `DISPLAY_SIDE`; the page shows them
`app.IMAGE_HEIGHT` (640) px tall, so text drawn on them must be readable at 640/1024 of its size.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from mammo.demo.predict import Prediction
from mammo.evidence import result_evidence
from mammo.export import flags_line, make_overlay, meta_flags
from mammo.pipelines.base import STANDARD_CLASSES, Result
from mammo.viz import draw_boxes, heatmap_overlay, patch_labels, to_rgb8, view_size
from mammo.weights import evidence_for

DISPLAY_SIDE = 1024  # long side of the pictures sent to the page (a 4600x2800 PNG is ~10 MB)
ARTIFACT_SIDE = 256   # smallest long side of an extra picture on the page (a 3 mm ROI at 0.2 mm is 16 px)
# Extra pictures (`Result.artifacts`) shown in Maps: deepmica's SHAP map over each cluster's ROI. The
# others (cascade's tool pictures) repeat what the overlay and maps already show.
SHOWN_ARTIFACTS = ("shap_",)
TISSUE_CLASSES = ("adipose", "fibroglandular", "pectoral")


def view_masks(result: Result) -> dict[str, np.ndarray]:
    """The masks to draw, in standard class order (lesion drawn over the tissues); "breast" is
    left out when tissue classes are present, since it is their union and would hide them."""
    masks = dict(result.masks)
    if "breast" in masks and any(name in masks for name in TISSUE_CLASSES):
        del masks["breast"]
    order = {name: i for i, name in enumerate(STANDARD_CLASSES)}
    return dict(sorted(masks.items(), key=lambda item: order.get(item[0], len(order))))


def _display_scale(shape: tuple[int, ...], side: int) -> float:
    return min(1.0, side / max(shape[:2]))


def _shrink(array: np.ndarray, scale: float) -> np.ndarray:
    """Resize a float map (H, W) by `scale` (area averaging); unchanged when scale is 1."""
    if scale >= 1.0:
        return array
    size = view_size(array.shape, scale)  # each side >= 1 px, long side capped, any aspect ratio
    return cv2.resize(array.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def overlay_view(pred: Prediction, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image with each mask in its class colour and a colour key: uint8 RGB, long side <= `side`."""
    return make_overlay(pred.image, view_masks(pred.result), side)


def map_views(pred: Prediction, side: int = DISPLAY_SIDE) -> list[tuple[np.ndarray, str]]:
    """Each probability and saliency map as a heatmap over the image, with a colour bar on the
    right, then the pipeline's extra pictures named in `SHOWN_ARTIFACTS` (enlarged to >= `ARTIFACT_SIDE`):
    (uint8 RGB (h, w, 3), caption) pairs."""
    scale = _display_scale(pred.image.shape, side)
    small = _shrink(pred.image, scale)
    views = []
    for kind, maps in (("probability", pred.result.probabilities), ("saliency", pred.result.saliency)):
        for name, heat in maps.items():
            # Colours span 0..the map's maximum (a weak map still shows where it points); the colour
            # bar and the caption give the values, so a weak map is not mistaken for a confident one.
            caption = f"{kind}: {name} (max {float(heat.max()):.2f})"
            views.append((heatmap_overlay(small, _shrink(heat, scale)), caption))
    for name, picture in pred.result.artifacts.items():
        if name.startswith(SHOWN_ARTIFACTS):
            views.append((_at_least(picture, ARTIFACT_SIDE), f"picture: {name}"))
    return views


def _at_least(picture: np.ndarray, side: int) -> np.ndarray:
    """uint8 RGB enlarged (nearest neighbour: pixels stay visible) so its long side is >= `side`."""
    factor = int(np.ceil(side / max(picture.shape[:2])))
    return picture if factor <= 1 else np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def patch_view(pred: Prediction, side: int = DISPLAY_SIDE) -> np.ndarray | None:
    """The patch map (the patches as boxes over the image, each labelled "rank score", rank 1
    the highest), or None when there is none."""
    if not pred.result.patches:
        return None
    scale = _display_scale(pred.image.shape, side)
    boxes = [tuple(round(v * scale) for v in (p.y0, p.x0, p.y1, p.x1)) for p in pred.result.patches]
    return draw_boxes(to_rgb8(_shrink(pred.image, scale)), boxes, labels=patch_labels(pred.result.patches))


def score_evidence(pred: Prediction) -> dict[str, dict]:
    """class -> what may be shown of its score on this kind of image (`mammo.evidence.score_evidence`);
    only the classes whose weights carry held-out measurements."""
    return result_evidence(pred.result.scores, evidence_for(pred.result.weights_sha256), pred.meta.acquisition)


def score_rows(pred: Prediction) -> list[dict[str, Any]]:
    """Scores for a bar chart: [{"class": name, "score": float in [0, 1]}, ...] (may be empty).
    A score whose classifier was not better than chance where it was measured is left out: the
    summary says so instead of drawing a number."""
    withheld = {name for name, shown in score_evidence(pred).items() if shown["score"] is None}
    return [{"class": name, "score": float(value)} for name, value in pred.result.scores.items()
            if name not in withheld]


def details(pred: Prediction) -> dict[str, Any]:
    """What the page shows as JSON: scores, mask areas, the metadata used, timings (seconds).
    "pipeline" is the name asked for ("cascade:fgt"), not the result's own label."""
    meta = pred.meta
    warnings, qc = meta_flags(meta)
    return {
        "pipeline": pred.name,
        "file": pred.source,
        "qc": qc,
        "warnings": warnings,
        "scores": {name: float(value) for name, value in pred.result.scores.items()},  # raw, all of them
        "evidence": {name: {k: shown[k] for k in ("status", "text", "acquisition")}
                     for name, shown in score_evidence(pred).items()},
        "mask_fraction": {name: float(mask.mean()) for name, mask in pred.result.masks.items()},
        "patches": len(pred.result.patches),
        "image": {"shape": list(pred.image.shape), "format": meta.format, "laterality": meta.laterality,
                  "view": meta.view, "photometric": meta.photometric,
                  "window": list(meta.window) if meta.window else None, "bits_stored": meta.bits_stored,
                  "sources": dict(meta.sources)},
        "seconds": {**{k: round(v, 3) for k, v in pred.seconds.items()},
                    "total": round(pred.total_seconds, 3)},
        "pipeline_timings": {k: round(float(v), 3) for k, v in pred.result.timings.items()},
        "weights_sha256": pred.result.weights_sha256,
    }


def summary(pred: Prediction) -> str:
    """One line for the page: pipeline, file, size, laterality/view, photometric, window, time,
    then, in bold, the reader's QC flags and warnings, if any (the result may not mean much)."""
    meta, (h, w) = pred.meta, pred.image.shape
    window = f", window {meta.window[0]:g}/{meta.window[1]:g}" if meta.window else ""
    side = " ".join(v for v in (meta.laterality, meta.view) if v) or "laterality/view unknown"
    flags = flags_line(meta).replace("`", "'")  # a warning quoting a value must not open code
    return (f"**{pred.name}** on `{pred.source}`: {w}x{h} {meta.format}, {side}, {meta.photometric}"
            f"{window}; {pred.total_seconds:.2f} s (read {pred.seconds['read']:.2f}, load "
            f"{pred.seconds['load']:.2f}, run {pred.seconds['run']:.2f})"
            + (f"; **⚠ {flags}**" if flags else "") + _evidence_lines(pred))


def _evidence_lines(pred: Prediction) -> str:
    """The scores with the evidence behind them, one Markdown line each ("" when none has any)."""
    shown = score_evidence(pred)
    return "".join(f"\n\n- {'**' if e['score'] is None else ''}{e['text']}{'**' if e['score'] is None else ''}"
                   for e in shown.values())
