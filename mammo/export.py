"""Writing a pipeline's `Result` to disk: mask PNGs in original geometry, overlay, scores.json.

Shared by `mammo predict`, the app and `eval/`, so a mask looks the same wherever it came from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo.evidence import result_evidence
from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Result
from mammo.viz import downscale_for_view, overlay_masks, view_size
from mammo.weights import evidence_for

# PNG settings per kind of picture. Measured with cv2.imencode, one thread, median of 5, on the
# cascade/glam outputs of example DICOM 1-130 (4432x2864; overlay 2048x1323 RGB, visualization
# 1024x1986 RGB). Time ms / size kB at zlib level 0, 1, 2, 3 with libpng's default adaptive row
# filters, then with the filter off (FILTER_NONE):
#   mask 0/255 (breast)      77/12718  67/84   67/84   67/83    L1 none: 17/86, + RLE: 17/27
#   mask 0/255 (lesion)      87/12718  84/56   83/56   83/56    L1 none: 16/56, + RLE: 17/12
#   tissue labels (4 grey)   78/12718  69/91   68/91   68/89    L1 none: 17/93, + RLE: 17/36
#   lesion prob (cascade)    73/12718  72/113  72/111  72/107   L2 none: 18/115
#   tissue prob (fgt)        72/12718  80/526  83/504  94/456   L2 none: 29/605
#   saliency (glam)          77/12718  79/263  79/248  82/227   L2 none: 22/277
#   overlay RGB              46/8144   71/938  76/904  100/862  L2 none: 36/901
#   visualization RGB        40/6112   51/486  52/450  60/390   L2 none: 20/505
# The adaptive filter search is most of the time (~50 ms a picture); level 0 writes 13 MB a mask.
# Masks and label maps (a few grey levels, long runs): level 1, no filter, run-length strategy
# (4x faster and 3x smaller than the old level 1 with filters). Everything else (smooth maps,
# RGB pictures): level 2, no filter (2-4x faster than level 1 with filters, within 15% of its size).
PNG_MASK = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)
PNG_PICTURE = (cv2.IMWRITE_PNG_COMPRESSION, 2, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE)

# Threads encoding PNGs beside the one preparing the next picture (`write_result(workers=...)`).
DEFAULT_WRITE_WORKERS = 2

# File systems limit one name to 255 bytes (ext4, xfs, APFS, NTFS in UTF-16 units). An output
# name is the input's stem plus a suffix ("_visualization.png", ".tmp.png"): a 240-character input
# name made cascade's artifacts fail half-way. Stems are cut to `MAX_STEM_BYTES`, which leaves 55
# bytes for any suffix mammo adds.
NAME_MAX_BYTES = 255
MAX_STEM_BYTES = 200


def fit_name(name: str, limit: int = MAX_STEM_BYTES) -> str:
    """`name` unchanged when its UTF-8 form fits in `limit` bytes; else its start, cut at a
    character boundary, then "~" and 8 hex digits of its sha256 (two long names that share
    their start stay apart). Idempotent: a fitted name fits."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: limit - 9].decode("utf-8", "ignore")  # "ignore" drops a character cut in two
    return f"{head}~{digest}"


def _temp_name(path: Path, suffix: str) -> Path:
    """A hidden temporary name beside `path` that fits the file system's name limit."""
    name = f".{path.name}{suffix}"
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
        name = f".{fit_name(path.name, MAX_STEM_BYTES)}{suffix}"
    return path.with_name(name)


def write_png(path: Path, array: np.ndarray, params: Sequence[int] = PNG_PICTURE) -> None:
    """Write uint8 (H, W) or RGB (H, W, 3) atomically (temp file + rename): a crash never leaves
    a half-written PNG. `params`: cv2.imwrite flags, `PNG_MASK` for 0/255 masks and label maps,
    `PNG_PICTURE` (default) for anything with gradients."""
    tmp = _temp_name(path, ".tmp.png")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(tmp), array, list(params)):
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)


def map_to_u8(prob: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W), value = round(255 * p), clipped to 0..255."""
    if prob.dtype == np.float32 and prob.ndim == 2 and prob.size and float(prob.min()) >= 0:
        # one pass instead of numpy's three (~5x faster on a full-field map); cv2 rounds halves
        # to even, so a value exactly halfway (p * 255 = k + 0.5) may land 1 lower
        return cv2.convertScaleAbs(prob, alpha=255.0)
    return np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)


def meta_flags(meta: ImageMeta) -> tuple[list[str], list[str]]:
    """(warnings, QC flags) the reader recorded for an image: damaged optional attributes it
    ignored, and quality flags such as "saturated" or "no_breast_found" (`mammo.io`)."""
    return list(meta.warnings), list(meta.qc)


def flags_line(meta: ImageMeta) -> str:
    """One line of an image's QC flags and warnings ("" when it has none), e.g.
    "QC: saturated, small_image; warning: WindowCenter 'abcd' is not a number, ignored"."""
    warnings, qc = meta_flags(meta)
    parts = [f"QC: {', '.join(qc)}"] if qc else []
    parts += [f"warning: {' '.join(w.split())}" for w in warnings]
    return "; ".join(parts)


def result_summary(result: Result, meta: ImageMeta) -> dict[str, Any]:
    """The JSON-serialisable part of a result: scores, timings, geometry, mask areas, meta.
    The reader's `warnings` and `qc` flags are also top-level keys, so they are seen."""
    warnings, qc = meta_flags(meta)
    return {
        "pipeline": result.pipeline,
        "weights_sha256": result.weights_sha256,
        "scores": {k: float(v) for k, v in result.scores.items()},
        "evidence": result_evidence(result.scores, evidence_for(result.weights_sha256), meta.acquisition),
        "mask_pixels": {k: int(np.count_nonzero(v)) for k, v in result.masks.items()},
        "patches": [vars(p) for p in result.patches],
        "findings": finding_rows(result),
        "timings": {k: round(float(v), 4) for k, v in result.timings.items()},
        "geometry": {k: list(v) if isinstance(v, tuple) else v for k, v in result.geometry.items()},
        "warnings": warnings,
        "qc": qc,
        "meta": meta.to_dict(),
    }


FINDING_COLUMNS = ("label", "x0", "y0", "x1", "y1", "area_px", "area_mm2", "diameter_px", "diameter_mm",
                   "outline_score", "malignancy", "malignancy_source")


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def finding_rows(result: Result) -> list[dict[str, Any]]:
    """One dict per `Finding` (`FINDING_COLUMNS`): its box in input pixels, sizes (mm None where
    the pixel spacing is unknown), the segmenter's outline score and P(malignant) with its source."""
    rows = []
    for f in result.findings:
        x0, y0, x1, y1 = (round(float(v), 1) for v in f.box)
        rows.append({"label": f.label, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "area_px": int(f.area_px),
                     "area_mm2": _rounded(f.area_mm2, 2), "diameter_px": round(float(f.diameter_px), 1),
                     "diameter_mm": _rounded(f.diameter_mm, 2), "outline_score": _rounded(f.score, 4),
                     "malignancy": _rounded(f.malignancy, 4), "malignancy_source": f.malignancy_source})
    return rows


def write_findings_csv(path: Path, result: Result) -> None:
    """findings.csv: `finding_rows`, one row per finding (atomically: temp file + rename)."""
    tmp = _temp_name(path, ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FINDING_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in finding_rows(result))
    os.replace(tmp, path)


def write_result(
    out_dir: Path, image: np.ndarray, meta: ImageMeta, result: Result, overlay_side: int = 2048,
    stem: str = "", probabilities: bool = False, workers: int | None = None,
) -> dict[str, Path]:
    """Write one image's outputs into `out_dir` (created if needed).

    Files: `mask_<class>.png` (uint8 0/255, original (H, W)), `saliency_<class>.png` and, with
    `probabilities`, `prob_<class>.png` (uint8, value = 255 * p; each full-size map costs
    ~0.02 s to encode), `overlay.png` (RGB, long side at most `overlay_side`), `scores.json`
    (see `result_summary`; `record_timings` adds the caller's read/write seconds), `findings.csv`
    when the result has findings (`finding_rows`: box prompts' outlines and sizes), and
    `<stem>_<suffix>.png` for each of the pipeline's `artifacts` (`stem` default: the folder's
    name; cut by `fit_name` when long, so that every name fits the file system).

    Args:
        workers: threads encoding PNGs while this one prepares the next picture (default
            `DEFAULT_WRITE_WORKERS`; `mammo predict --threads`).

    Returns:
        name -> path of every file written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result.check_shapes(image.shape)
    written: dict[str, Path] = {}
    futures = []
    # PNG encoding releases the GIL, so the pool encodes while this thread prepares the next
    # picture. The overlay is the slowest to make (~0.1 s for cascade's five masks at 2048 px):
    # it is made and written first, in the pool, beside the others.
    with ThreadPoolExecutor(max_workers=max(1, workers or DEFAULT_WRITE_WORKERS)) as pool:
        def submit(key: str, path: Path, picture: np.ndarray, params: Sequence[int] = PNG_PICTURE) -> None:
            written[key] = path
            futures.append(pool.submit(write_png, path, picture, params))

        written["overlay"] = out_dir / "overlay.png"
        futures.append(pool.submit(
            lambda: write_png(written["overlay"], make_overlay(image, result.masks, overlay_side))))
        for name, mask in result.masks.items():
            submit(f"mask_{name}", out_dir / f"mask_{name}.png", mask_to_u8(mask), PNG_MASK)
        prob_maps = result.probabilities if probabilities else {}
        for prefix, maps in (("prob", prob_maps), ("saliency", result.saliency)):
            for name, arr in maps.items():
                submit(f"{prefix}_{name}", out_dir / f"{prefix}_{name}.png", map_to_u8(arr))
        for suffix, picture in result.artifacts.items():
            submit(suffix, out_dir / f"{fit_name(stem or out_dir.name)}_{suffix}.png", picture)
    for future in futures:
        future.result()  # re-raise a failed write here
    written["scores"] = out_dir / "scores.json"
    write_json(written["scores"], result_summary(result, meta))
    if result.findings:
        written["findings"] = out_dir / "findings.csv"
        write_findings_csv(written["findings"], result)
    return written


def mask_to_u8(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) -> uint8 (H, W) 0/255 (a view's multiply: no bool-to-int conversion pass)."""
    return np.ascontiguousarray(mask, bool).view(np.uint8) * np.uint8(255)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as indented JSON atomically (temp file + rename)."""
    tmp = _temp_name(path, ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def record_timings(scores_path: Path, timings: Mapping[str, float]) -> dict[str, float]:
    """Merge the caller's timings into a written scores.json, atomically.

    `mammo predict` times what `write_result` cannot: the read before the pipeline and
    `write_result` itself. The pipeline's own steps stay where they are; `timings` keys go
    around them ("read" first, the others after), and "total" is their sum when not given.

    Args:
        scores_path: a `scores.json` written by `write_result`.
        timings: step name -> seconds, e.g. {"read": 0.07, "run": 0.45, "write": 0.2}.

    Returns:
        the timings now recorded (name -> seconds, rounded to 0.1 ms).
    """
    summary = json.loads(scores_path.read_text())
    extra = {k: round(float(v), 4) for k, v in timings.items()}
    merged = {k: v for k, v in extra.items() if k == "read"}
    merged.update((k, v) for k, v in summary.get("timings", {}).items() if k not in extra)
    merged.update((k, v) for k, v in extra.items() if k != "read")
    merged.setdefault("total", round(sum(v for k, v in extra.items() if k in ("read", "run", "write")), 4))
    summary["timings"] = merged
    write_json(scores_path, summary)
    return merged


def make_overlay(image: np.ndarray, masks: dict[str, np.ndarray], max_side: int = 2048) -> np.ndarray:
    """Overlay at viewing size: image and masks are shrunk first so the legend stays legible."""
    if max(image.shape) > max_side:
        size = view_size(image.shape, 1.0, max_side)  # each side >= 1 px whatever the aspect ratio
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        masks = {k: cv2.resize(np.ascontiguousarray(v, bool).view(np.uint8), size,
                               interpolation=cv2.INTER_NEAREST) > 0 for k, v in masks.items()}
    return downscale_for_view(overlay_masks(image, masks), max_side)


@contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """A new hidden folder beside `out_dir` to write one input's outputs into; when the block
    ends without error its files are moved into `out_dir`, and when it raises (or is
    interrupted) the folder is removed with whatever was written: a failed input leaves nothing.

    `out_dir` is made by one rename when it does not exist yet. When it exists (a re-run), its
    files of the same names are replaced one by one and any others are left alone: `--out .`
    with an input "src.png" must not delete a folder "src" of the user's.

    Raises:
        OSError: the folder cannot be made or filled (no space, no permission, a path too long).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not tempfile.mkdtemp: the folder keeps the umask's permissions (mkdtemp's are 0700)
    stage = out_dir.parent / f".{fit_name(out_dir.name, 100)}.{uuid.uuid4().hex[:12]}.partial"
    stage.mkdir()
    try:
        yield stage
        _move_into_place(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # nothing left once moved; everything on failure


def _move_into_place(stage: Path, out_dir: Path) -> None:
    """Rename the staged folder to `out_dir`, or move its files into an existing `out_dir`."""
    if not out_dir.exists():
        os.rename(stage, out_dir)
        return
    if not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    for item in sorted(stage.iterdir()):
        os.replace(item, out_dir / item.name)
