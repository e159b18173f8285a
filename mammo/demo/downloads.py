"""The files the page offers for download, in per-request folders under gradio's upload folder.

Masks stay in the input's original geometry (0/255 PNG); predictions.csv has the columns of
`python -m eval`. Every file names the pipeline as it was asked for (`Prediction.name`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from eval.table import Row, format_value, safe_name, write_rows
from mammo.demo.predict import Prediction
from mammo.demo.views import view_masks
from mammo.export import make_overlay, meta_flags, write_png, write_result

OVERLAY_SIDE = 2048  # long side of the downloadable overlay, as `mammo predict` writes it
REQUEST_MAX_AGE_S = 3600.0  # per-request download folders older than this are removed


def prediction_row(pred: Prediction) -> Row:
    """The predictions.csv row `python -m eval` would write for this image (no labels, no
    reference masks, so no dice/iou columns). "qc" holds the reader's QC flags joined by ";";
    it is a column of the CSV where `eval.table.columns` lists it (`write_rows` writes only
    those)."""
    scores, stem = pred.result.scores, Path(pred.source).stem
    return {"image_index": stem, "patient_id": pred.meta.patient_id or stem,
            "laterality": pred.meta.laterality or "", "view": pred.meta.view or "",
            "pipeline": pred.name, "weights_sha256": pred.result.weights_sha256,
            "benign_pred": format_value(float(scores["benign"]) if "benign" in scores else None),
            "malignant_pred": format_value(float(scores["malignant"]) if "malignant" in scores else None),
            "benign_label": "", "malignant_label": "",
            "seconds": format_value(pred.seconds["read"] + pred.seconds["run"], 3),
            "qc": ";".join(meta_flags(pred.meta)[1]), "error": ""}


def write_downloads(pred: Prediction, out_dir: Path) -> list[Path]:
    """Masks (0/255, original geometry), saliency maps, overlay.png, scores.json, predictions.csv,
    and for a DICOM upload seg.dcm (DICOM SEG of the masks) and sr.dcm (TID 1500 SR of the scores
    and findings).

    The pipeline's extra pictures (`artifacts`) are not written: they cost a second per image
    and `mammo predict` gives them. scores.json's "pipeline" is the name asked for.
    """
    result = dataclasses.replace(pred.result, pipeline=pred.name, artifacts={})
    written = write_result(out_dir, pred.image, pred.meta, result, overlay_side=OVERLAY_SIDE)
    # The page's overlay leaves out "breast" under the tissue classes; the download matches it.
    write_png(written["overlay"], make_overlay(pred.image, view_masks(pred.result), OVERLAY_SIDE))
    write_rows(out_dir / "predictions.csv", [prediction_row(pred)])
    files = [*written.values(), out_dir / "predictions.csv"]
    if pred.meta.format == "dicom":  # seg.dcm and sr.dcm reference the uploaded DICOM's UIDs
        from mammo.export_dicom import write_dicom_outputs

        files += write_dicom_outputs(out_dir, pred.meta.path, pred.meta, result).values()
    return files


def write_comparison(preds: list[Prediction], out_dir: Path) -> list[Path]:
    """predictions.csv (one row per pipeline) and `<pipeline>_overlay.png` for each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for pred in preds:
        path = out_dir / f"{safe_name(pred.name)}_overlay.png"
        write_png(path, make_overlay(pred.image, view_masks(pred.result), OVERLAY_SIDE))
        files.append(path)
    write_rows(out_dir / "predictions.csv", [prediction_row(pred) for pred in preds])
    return [out_dir / "predictions.csv", *files]


def downloads_root() -> Path:
    """Where per-request folders go: under gradio's upload folder ($GRADIO_TEMP_DIR, else
    <system temp>/gradio), which gradio lets the app return files from."""
    base = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return Path(base) / "mammo-demo"


def request_dir(root: Path | None = None, max_age_s: float = REQUEST_MAX_AGE_S) -> Path:
    """A new empty folder for one request's files; folders older than `max_age_s` are removed
    first (gradio has copied their files to its own cache long since)."""
    root = root or downloads_root()
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request removed it first
            continue
    return Path(tempfile.mkdtemp(prefix="req-", dir=root))
