"""Writing a pipeline's `Result` to disk: mask PNGs in original geometry, overlay, scores.json.

Shared by `mammo predict`, the app and `eval/`, so a mask looks the same wherever it came from.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Result
from mammo.viz import downscale_for_view, overlay_masks

# PNG compression 1 writes a 4600x2800 mask ~5x faster than the default 3 and is ~10% larger.
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def write_png(path: Path, array: np.ndarray) -> None:
    """Write uint8 (H, W) or RGB (H, W, 3) atomically (temp file + rename): a crash never leaves
    a half-written PNG."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(tmp), array, _PNG_FAST):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)


def map_to_u8(prob: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W), value = round(255 * p)."""
    return np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)


def result_summary(result: Result, meta: ImageMeta) -> dict[str, Any]:
    """The JSON-serialisable part of a result: scores, timings, geometry, mask areas, meta."""
    return {
        "pipeline": result.pipeline,
        "weights_sha256": result.weights_sha256,
        "scores": {k: float(v) for k, v in result.scores.items()},
        "mask_pixels": {k: int(np.count_nonzero(v)) for k, v in result.masks.items()},
        "patches": [vars(p) for p in result.patches],
        "timings": {k: round(float(v), 4) for k, v in result.timings.items()},
        "geometry": {k: list(v) if isinstance(v, tuple) else v for k, v in result.geometry.items()},
        "meta": meta.to_dict(),
    }


def write_result(
    out_dir: Path, image: np.ndarray, meta: ImageMeta, result: Result, overlay_side: int = 2048,
    stem: str = "", probabilities: bool = False,
) -> dict[str, Path]:
    """Write one image's outputs into `out_dir` (created if needed).

    Files: `mask_<class>.png` (uint8 0/255, original (H, W)), `saliency_<class>.png` and, with
    `probabilities`, `prob_<class>.png` (uint8, value = 255 * p; each full-size map costs
    ~0.2 s), `overlay.png` (RGB, long side at most `overlay_side`), `scores.json` (see
    `result_summary`), and `<stem>_<suffix>.png` for each of the pipeline's `artifacts`.

    Returns:
        name -> path of every file written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result.check_shapes(image.shape)
    written: dict[str, Path] = {}
    futures = []
    # PNG encoding releases the GIL, so two threads encode while this one prepares the next
    # picture (measured: writing a cascade result for a 4600x2800 DICOM, 1.18 s -> 0.72 s).
    with ThreadPoolExecutor(max_workers=2) as pool:
        def submit(key: str, path: Path, picture: np.ndarray) -> None:
            written[key] = path
            futures.append(pool.submit(write_png, path, picture))

        for prefix, maps, convert in (
            ("mask", result.masks, lambda m: m.view(np.uint8) * np.uint8(255)),
            ("prob", result.probabilities if probabilities else {}, map_to_u8),
            ("saliency", result.saliency, map_to_u8),
        ):
            for name, arr in maps.items():
                submit(f"{prefix}_{name}", out_dir / f"{prefix}_{name}.png", convert(arr))
        for suffix, picture in result.artifacts.items():
            submit(suffix, out_dir / f"{stem or out_dir.name}_{suffix}.png", picture)
        submit("overlay", out_dir / "overlay.png", make_overlay(image, result.masks, overlay_side))
    for future in futures:
        future.result()  # re-raise a failed write here
    written["scores"] = out_dir / "scores.json"
    tmp = out_dir / ".scores.json.tmp"
    tmp.write_text(json.dumps(result_summary(result, meta), indent=2))
    os.replace(tmp, written["scores"])
    return written


def make_overlay(image: np.ndarray, masks: dict[str, np.ndarray], max_side: int = 2048) -> np.ndarray:
    """Overlay at viewing size: image and masks are shrunk first so the legend stays legible."""
    h, w = image.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        masks = {k: cv2.resize(v.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
                 for k, v in masks.items()}
    return downscale_for_view(overlay_masks(image, masks), max_side)
