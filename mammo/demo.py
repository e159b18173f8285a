"""The non-UI logic of the Gradio demo (`app.py`): which pipelines can run, running them on one
uploaded file, the pictures the page shows and the files it offers for download.

Nothing here imports gradio, torch or tensorflow: a pipeline's framework is imported by the
registry the first time that pipeline is built (`mammo.pipelines.registry.get_pipeline`, which
also keeps it for the rest of the process).

Pictures for the page are uint8 RGB (h, w, 3) with the long side at most `DISPLAY_SIDE`; the
masks offered for download stay in the input's original geometry.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from eval.table import Row, format_value, safe_name, write_rows
from mammo.errors import MammoInputError
from mammo.export import make_overlay, write_png, write_result
from mammo.io import ImageMeta, read_image
from mammo.pipelines.base import STANDARD_CLASSES, Result
from mammo.pipelines.registry import PIPELINES, check_name, get_pipeline
from mammo.viz import draw_boxes, heatmap_overlay, patch_labels, to_rgb8
from mammo.weights import (
    WeightsEntry,
    WeightsIntegrityError,
    WeightsNotFoundError,
    bundled_path,
    load_manifest,
)

DISPLAY_SIDE = 1024  # long side of the pictures sent to the page (a 4600x2800 PNG is ~10 MB)
OVERLAY_SIDE = 2048  # long side of the downloadable overlay, as `mammo predict` writes it
TISSUE_CLASSES = ("adipose", "fibroglandular", "pectoral")
REQUEST_MAX_AGE_S = 3600.0  # per-request download folders older than this are removed
_BUILD_LOCK = threading.Lock()  # the registry's cache is a plain dict: build one pipeline at a time
#: Failures caused by what the user chose or by missing weights: shown as a message, not a traceback.
USER_ERRORS = (MammoInputError, KeyError, WeightsNotFoundError, WeightsIntegrityError)


def error_message(err: BaseException) -> str:
    """The text to show for one of `USER_ERRORS` (a KeyError's str() would add quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


# -- which pipelines can run ------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineChoice:
    """One entry of the pipeline menu: "NAME" or "NAME:VARIANT", and whether it can run here."""

    name: str
    description: str
    framework: str
    available: bool
    reason: str = ""  # why it cannot run; "" when available


def pipeline_names() -> list[str]:
    """Every registry name, then its non-default variants ("cascade", "cascade:fgt", ...)."""
    names: list[str] = []
    for base, spec in PIPELINES.items():
        names.append(base)
        names.extend(f"{base}:{variant}" for variant in spec.variants[1:])
    return names


def required_weights(name: str, entries: dict[str, WeightsEntry]) -> list[str]:
    """Names of the manifest entries pipeline `name` loads.

    A pipeline whose entries are named "BASE-VARIANT" (glam-sep, glam-joint) needs the one of
    its variant (glam -> glam-sep, the first variant being the default); otherwise it needs every
    entry whose `pipeline` is BASE (cascade and cascade:fgt -> cascade-tissue, cascade-lesion).
    """
    base, variant = check_name(name)
    per_variant = {v: f"{base}-{v}" for v in PIPELINES[base].variants}
    if per_variant and any(entry in entries for entry in per_variant.values()):
        return [per_variant[variant or PIPELINES[base].variants[0]]]
    return [entry.name for entry in entries.values() if entry.pipeline == base]


def _weights_problem(entry: WeightsEntry) -> str:
    """"" when `entry`'s file is bundled (right size) or in the Hub cache, else what is wrong.

    Only sizes are compared here (hashing 50 MB per page load would be slow); `resolve` checks
    the sha256 when the pipeline is built.
    """
    path = bundled_path(entry)
    if path.is_file():
        size = path.stat().st_size
        return "" if size == entry.size_bytes else (
            f"{path.name} has {size} bytes, the manifest says {entry.size_bytes}")
    if entry.hub.revision is not None:
        from huggingface_hub import try_to_load_from_cache  # offline: looks at the cache only

        cached = try_to_load_from_cache(entry.hub.repo_id, entry.hub.filename, revision=entry.hub.revision)
        if isinstance(cached, str):
            return ""
    return f"weights {entry.name!r} not found (no {path}, not in the Hugging Face cache)"


def availability(name: str, entries: dict[str, WeightsEntry] | None = None) -> tuple[bool, str]:
    """(can run, reason if not) for pipeline `name`, without building it or importing its framework."""
    base, _ = check_name(name)
    framework = PIPELINES[base].framework
    if framework == "numpy":
        return True, ""
    if importlib.util.find_spec(framework) is None:
        return False, f"{framework} is not installed"
    entries = load_manifest() if entries is None else entries
    needed = required_weights(name, entries)
    if not needed:
        return False, f"the weights manifest has no weights for {base!r} yet"
    problems = [_weights_problem(entries[entry]) if entry in entries
                else f"the weights manifest has no entry {entry!r} yet" for entry in needed]
    problems = [problem for problem in problems if problem]
    return (not problems), "; ".join(problems)


def pipeline_choices() -> list[PipelineChoice]:
    """The menu: every pipeline and variant, with availability checked now (files may appear
    while the server runs, e.g. weights exported by a training job)."""
    entries = load_manifest()
    choices = []
    for name in pipeline_names():
        base, variant = check_name(name)
        spec = PIPELINES[base]
        description = f"{spec.description} Variant `{variant}`." if variant else spec.description
        available, reason = availability(name, entries)
        choices.append(PipelineChoice(name, description, spec.framework, available, reason))
    return choices


def menu_items(choices: list[PipelineChoice]) -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown: unavailable pipelines stay listed, marked as such."""
    return [(c.name if c.available else f"{c.name} (unavailable)", c.name) for c in choices]


def pipelines_markdown(choices: list[PipelineChoice]) -> str:
    """A Markdown table: name, framework, what it does, and the reason where it cannot run."""
    lines = ["| pipeline | framework | what it does | status |", "|---|---|---|---|"]
    for c in choices:
        status = "available" if c.available else f"unavailable: {c.reason}"
        lines.append(f"| `{c.name}` | {c.framework} | {c.description} | {status.replace('|', '/')} |")
    return "\n".join(lines)


# -- running ----------------------------------------------------------------------------------
@dataclass
class Prediction:
    """One pipeline's output on one image, with what the page and the downloads need.

    Attributes:
        name: the pipeline name asked for ("glam:joint").
        image: float32 (H, W) in [0, 1], as `read_image` returned it.
        meta: the `ImageMeta` of the file.
        result: the pipeline's `Result`; every map is (H, W).
        source: the uploaded file's name (its stem is the CSV's image_index).
        seconds: step -> seconds ("read", "load" (building the pipeline), "run").
    """

    name: str
    image: np.ndarray
    meta: ImageMeta
    result: Result
    source: str
    seconds: dict[str, float]

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def load_image(path: str | os.PathLike[str] | None) -> tuple[np.ndarray, ImageMeta, float]:
    """Read the uploaded file: (float32 (H, W) in [0, 1], meta, seconds taken).

    Raises:
        MammoInputError: no file, or a file `read_image` refuses (the message says why).
    """
    if not path:
        raise MammoInputError("No file: upload a mammogram (DICOM, PNG, JPEG, PGM or TIFF) first.")
    start = time.perf_counter()
    try:
        image, meta = read_image(path)
    except MammoInputError as err:  # the server's upload path means nothing to the user
        raise MammoInputError(str(err).replace(str(path), Path(path).name)) from err
    return image, meta, time.perf_counter() - start


def run_pipeline(name: str, image: np.ndarray, meta: ImageMeta, source: str,
                 read_seconds: float = 0.0) -> Prediction:
    """Build `name` (first use only; cached for the process) and run it on the image.

    Raises:
        KeyError: unknown pipeline name. MammoInputError: its weights cannot be found.
        WeightsIntegrityError: they differ from the manifest (the message says what to do).
    """
    available, reason = availability(name)
    if not available:  # say why in the words of the menu, before trying to build it
        raise MammoInputError(f"Pipeline {name!r} is unavailable: {reason}.")
    start = time.perf_counter()
    with _BUILD_LOCK:
        pipeline = get_pipeline(name)
    loaded = time.perf_counter()
    result = pipeline.run(image, meta)
    result.check_shapes(image.shape)
    seconds = {"read": read_seconds, "load": loaded - start, "run": time.perf_counter() - loaded}
    return Prediction(name, image, meta, result, source, seconds)


def predict_file(path: str | os.PathLike[str] | None, name: str) -> Prediction:
    """Read one file and run one pipeline on it (see `load_image`, `run_pipeline`)."""
    image, meta, read_seconds = load_image(path)
    return run_pipeline(name, image, meta, Path(path or "").name, read_seconds)


def compare_file(path: str | os.PathLike[str] | None,
                 names: list[str]) -> tuple[list[Prediction], dict[str, str]]:
    """Read one file once and run each pipeline of `names` on it.

    Returns:
        the predictions in the order asked, and name -> message for the pipelines that could
        not run (unknown name, weights missing); the others still run.

    Raises:
        MammoInputError: no pipeline chosen, or the file cannot be read.
    """
    if not names:
        raise MammoInputError("Pick at least one pipeline to compare.")
    image, meta, read_seconds = load_image(path)
    preds, failed = [], {}
    for name in dict.fromkeys(names):  # each once, in the order given
        try:
            preds.append(run_pipeline(name, image, meta, Path(path or "").name, read_seconds))
        except USER_ERRORS as err:
            failed[name] = error_message(err)
    return preds, failed


COMPARE_COLUMNS = ["pipeline", "benign", "malignant", "lesion area %", "masks", "seconds", "error"]


def comparison_rows(preds: list[Prediction], failed: dict[str, str]) -> list[list[Any]]:
    """One row per pipeline for a table with `COMPARE_COLUMNS` ("" where not applicable)."""
    rows: list[list[Any]] = []
    for pred in preds:
        scores, masks = pred.result.scores, pred.result.masks
        lesion = round(100 * float(masks["lesion"].mean()), 3) if "lesion" in masks else ""
        rows.append([pred.name, round(scores["benign"], 4) if "benign" in scores else "",
                     round(scores["malignant"], 4) if "malignant" in scores else "", lesion,
                     ", ".join(masks), round(pred.seconds["load"] + pred.seconds["run"], 2), ""])
    rows.extend([name, "", "", "", "", "", message] for name, message in failed.items())
    return rows


# -- pictures for the page --------------------------------------------------------------------
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
    h, w = array.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def overlay_view(pred: Prediction, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image with each mask in its class colour and a legend: uint8 RGB, long side <= `side`."""
    return make_overlay(pred.image, view_masks(pred.result), side)


def map_views(pred: Prediction, side: int = DISPLAY_SIDE) -> list[tuple[np.ndarray, str]]:
    """Each probability and saliency map as a heatmap over the image: (uint8 RGB, caption) pairs."""
    scale = _display_scale(pred.image.shape, side)
    small = _shrink(pred.image, scale)
    views = []
    for kind, maps in (("probability", pred.result.probabilities), ("saliency", pred.result.saliency)):
        for name, heat in maps.items():
            # Colours span 0..the map's maximum (a weak map still shows where it points); the colour
            # bar and the caption give the values, so a weak map is not mistaken for a confident one.
            caption = f"{kind}: {name} (max {float(heat.max()):.2f})"
            views.append((heatmap_overlay(small, _shrink(heat, scale)), caption))
    return views


def patch_view(pred: Prediction, side: int = DISPLAY_SIDE) -> np.ndarray | None:
    """The patch map (selected patches as boxes over the image), or None when there is none."""
    if not pred.result.patches:
        return None
    scale = _display_scale(pred.image.shape, side)
    boxes = [tuple(round(v * scale) for v in (p.y0, p.x0, p.y1, p.x1)) for p in pred.result.patches]
    return draw_boxes(to_rgb8(_shrink(pred.image, scale)), boxes, labels=patch_labels(pred.result.patches))


def score_rows(pred: Prediction) -> list[dict[str, Any]]:
    """Scores for a bar chart: [{"class": name, "score": value in [0, 1]}, ...] (may be empty)."""
    return [{"class": name, "score": float(value)} for name, value in pred.result.scores.items()]


def details(pred: Prediction) -> dict[str, Any]:
    """What the page shows as JSON: scores, mask areas, the metadata used, timings (seconds)."""
    meta = pred.meta
    return {
        "pipeline": pred.result.pipeline or pred.name,
        "file": pred.source,
        "scores": {name: float(value) for name, value in pred.result.scores.items()},
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
    """One line for the page: pipeline, file, size, laterality/view, photometric, window, time."""
    meta, (h, w) = pred.meta, pred.image.shape
    window = f", window {meta.window[0]:g}/{meta.window[1]:g}" if meta.window else ""
    side = " ".join(v for v in (meta.laterality, meta.view) if v) or "laterality/view unknown"
    return (f"**{pred.name}** on `{pred.source}`: {w}x{h} {meta.format}, {side}, {meta.photometric}"
            f"{window}; {pred.total_seconds:.2f} s (read {pred.seconds['read']:.2f}, load "
            f"{pred.seconds['load']:.2f}, run {pred.seconds['run']:.2f})")


# -- downloads --------------------------------------------------------------------------------
def prediction_row(pred: Prediction) -> Row:
    """The predictions.csv row `python -m eval` would write for this image (no labels, no
    reference masks, so no dice/iou columns)."""
    scores, stem = pred.result.scores, Path(pred.source).stem
    return {"image_index": stem, "patient_id": pred.meta.patient_id or stem,
            "laterality": pred.meta.laterality or "", "view": pred.meta.view or "",
            "pipeline": pred.result.pipeline or pred.name, "weights_sha256": pred.result.weights_sha256,
            "benign_pred": format_value(float(scores["benign"]) if "benign" in scores else None),
            "malignant_pred": format_value(float(scores["malignant"]) if "malignant" in scores else None),
            "benign_label": "", "malignant_label": "",
            "seconds": format_value(pred.seconds["read"] + pred.seconds["run"], 3), "error": ""}


def write_downloads(pred: Prediction, out_dir: Path) -> list[Path]:
    """Masks (0/255, original geometry), saliency maps, overlay.png, scores.json, predictions.csv.

    The pipeline's extra pictures (`artifacts`) are not written: they cost a second per image
    and `mammo predict` gives them.
    """
    written = write_result(out_dir, pred.image, pred.meta, dataclasses.replace(pred.result, artifacts={}),
                           overlay_side=OVERLAY_SIDE)
    # The page's overlay leaves out "breast" under the tissue classes; the download matches it.
    write_png(written["overlay"], make_overlay(pred.image, view_masks(pred.result), OVERLAY_SIDE))
    write_rows(out_dir / "predictions.csv", [prediction_row(pred)])
    return [*written.values(), out_dir / "predictions.csv"]


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
