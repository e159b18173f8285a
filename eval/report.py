"""report.html: one self-contained page (plotly.js inline once, pictures as data URIs) for an eval run.

The caller computes everything and passes it in a `ReportData`; this module only lays it out.
Sections whose inputs are empty are left out, never shown as zeros.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import plotly.graph_objects as go

from mammo.viz import compare_overlay

FROC_RATES = ("0.25", "0.5", "1", "2", "4")
#: Names shown, per section, for metrics.json keys whose own name says too little in the summary table.
_METRIC_NAMES = {"segmentation": {
    "dice": "Dice (images whose reference holds the class)",
    "iou": "IoU (images whose reference holds the class)",
    "n_images": "images whose reference holds the class",
    "reference_unknown_images": "images of unknown reference (older predictions.csv; in the Dice)",
    "empty_reference_images": "images with an empty reference",
    "empty_reference_fp_rate": "empty reference: share of images with a predicted pixel",
    "empty_reference_mean_pred_area": "empty reference: mean predicted area (% of the image)",
}}
_PERCENT_KEYS = {"empty_reference_mean_pred_area"}
_LABEL_COLORS = {"malignant": "#d62728", "benign": "#1f77b4"}
_PALETTE = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;text-align:center;font-size:.85em;max-width:260px}figure img{max-width:256px;height:auto}
.conv{white-space:pre-wrap;font-size:.9em;color:#444}"""


@dataclass
class RocCurve:
    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float | None = None
    auc_ci: list[float] | None = None
    band_fpr: np.ndarray | None = None
    band_low: np.ndarray | None = None
    band_high: np.ndarray | None = None
    n_pos: int = 0
    n_neg: int = 0


@dataclass
class FrocCurve:
    cls: str
    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    at_rates: dict[str, dict] = field(default_factory=dict)
    n_lesions: int = 0
    n_images: int = 0


@dataclass
class GalleryCase:
    image_id: str
    cls: str
    dice: float
    rgb: np.ndarray


@dataclass
class ReportData:
    title: str
    metrics: dict
    dice: dict[str, np.ndarray] = field(default_factory=dict)
    roc: list[RocCurve] = field(default_factory=list)
    froc: list[FrocCurve] = field(default_factory=list)
    worst: list[GalleryCase] = field(default_factory=list)
    best: list[GalleryCase] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


def make_case_picture(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray,
                      max_side: int = 512) -> np.ndarray:
    """Shrink to long side <= max_side (area for the image, nearest for masks), then draw the overlay."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        image = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        pred = _resize_mask(pred, size)
        truth = None if truth is None else _resize_mask(truth, size)
    return compare_overlay(image, truth, pred)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (w, h)."""
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)


def write_report(path: Path, data: ReportData) -> Path:
    """Render `data` and write it to `path` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(data)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the page is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def render_report(data: ReportData) -> str:
    """The whole page as a string."""
    figures = [("roc", "ROC curves", _roc_figure(data.roc)),
               ("dice", "Dice per class", _dice_figure(data.dice)),
               ("froc", "FROC", _froc_figure(data.froc)),
               ("calibration", "Reliability of the scores", _reliability_figure(data.metrics))]
    parts = [_header(data), _summary(data.metrics), _conventions(data.metrics)]
    first = True
    for anchor, heading, fig in figures:
        if fig is None:
            continue
        div = fig.to_html(include_plotlyjs=first, full_html=False, config={"responsive": True})
        parts.append(f'<section id="{anchor}"><h2>{heading}</h2>{div}</section>')
        first = False
    parts += [_gallery(data.worst, data.best), _errors(data.errors)]
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(data.title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _e(value: Any) -> str:
    """HTML-escape anything as text."""
    return html.escape(str(value), quote=True)


def fmt_ci(value: Any, percent: bool = False) -> str:
    """{"mean", "ci95", "undefined"} -> "0.712 (0.661–0.754)", "0.712" or "undefined: reason".

    percent: a fraction shown as a percentage with 3 significant digits ("0.0123%"), for areas.
    """
    if isinstance(value, dict):
        mean, ci = value.get("mean"), value.get("ci95")
        if mean is None or (isinstance(mean, float) and math.isnan(mean)):
            reason = value.get("undefined")
            return f"undefined: {reason}" if reason else "undefined"

        def num(x: float) -> str:
            return f"{100 * x:.3g}%" if percent else f"{x:.3f}"

        if ci and len(ci) == 2 and None not in ci:
            return f"{num(mean)} ({num(ci[0])}–{num(ci[1])})"
        return num(mean)
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metric_rows(section: str, entries: dict) -> list[tuple[str, str, str, str]]:
    """Flatten one metrics.json section into (section, name, metric, formatted value) rows."""
    rows = []
    for name, metrics in entries.items():
        for key, value in (metrics or {}).items():
            if key.endswith("_seconds"):
                continue  # a timing (older metrics.json kept bootstrap_seconds here), not a metric
            if key == "froc" and isinstance(value, dict):
                rows += [(section, name, f"sensitivity @ {r} FP/image", fmt_ci(v)) for r, v in value.items()]
            elif key == "calibration" and isinstance(value, dict):
                rows.append((section, name, "expected calibration error", fmt_ci(value.get("ece"))))
            else:
                rows.append((section, name, _METRIC_NAMES.get(section, {}).get(key, key),
                             fmt_ci(value, percent=key in _PERCENT_KEYS)))
    return rows


def _header(data: ReportData) -> str:
    """Title plus run facts (pipeline, dataset, split, counts, speed, weights, date)."""
    m = data.metrics
    sha = m.get("weights_sha256")
    spi = m.get("seconds_per_image")
    facts = [("pipeline", m.get("pipeline")), ("dataset", m.get("dataset")),
             ("split", m.get("split") or "all"),
             ("images", m.get("n_images")), ("errors", m.get("n_errors")),
             ("seconds per image", None if spi is None else f"{spi:.3g}"),
             *[(k.replace("_", " "), v) for k, v in (m.get("timings") or {}).items()],
             ("weights sha256", None if not sha else f"{sha[:12]}…"),
             ("generated", datetime.now().strftime("%Y-%m-%d %H:%M"))]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts if v is not None)
    return f'<header><h1>{_e(data.title)}</h1><table class="facts">{rows}</table></header>'


def _summary(metrics: dict) -> str:
    """Every number from the segmentation/classification/detection sections, CIs formatted."""
    rows = []
    for section in ("segmentation", "classification", "detection"):
        rows += _metric_rows(section, metrics.get(section) or {})
    if not rows:
        return ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return ('<section id="summary"><h2>Summary</h2><table><tr><th>task</th><th>class</th><th>metric</th>'
            f"<th>value (95% CI)</th></tr>{body}</table></section>")


def _conventions(metrics: dict) -> str:
    """The conventions text from metrics.json."""
    conv = metrics.get("conventions") or {}
    if not conv:
        return ""
    items = "".join(f'<dt>{_e(k)}</dt><dd class="conv">{_e(v)}</dd>' for k, v in conv.items())
    return f'<section id="conventions"><h2>Conventions</h2><dl>{items}</dl></section>'


def _color(name: str, i: int) -> str:
    """Stable colour for a label/class."""
    return _LABEL_COLORS.get(name, _PALETTE[i % len(_PALETTE)])


def _rgba(hex_color: str, alpha: float) -> str:
    """'#rrggbb' -> 'rgba(r,g,b,alpha)'."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _roc_figure(curves: list[RocCurve]) -> go.Figure | None:
    """ROC per label with its bootstrap band and the chance diagonal; None when there is nothing to plot."""
    curves = [c for c in curves if len(c.fpr)]
    if not curves:
        return None
    fig = go.Figure()
    for i, c in enumerate(curves):
        color = _color(c.label, i)
        if c.band_fpr is not None and c.band_low is not None and c.band_high is not None:
            fig.add_scatter(x=c.band_fpr, y=c.band_high, mode="lines", line={"width": 0}, showlegend=False,
                            hoverinfo="skip", legendgroup=c.label)
            fig.add_scatter(x=c.band_fpr, y=c.band_low, mode="lines", line={"width": 0}, fill="tonexty",
                            fillcolor=_rgba(color, 0.2), showlegend=False, hoverinfo="skip",
                            legendgroup=c.label)
        auc = fmt_ci({"mean": c.auc, "ci95": c.auc_ci})
        fig.add_scatter(x=c.fpr, y=c.tpr, mode="lines", line={"color": color, "width": 2},
                        legendgroup=c.label, name=f"{c.label}: AUC {auc} (n+={c.n_pos}, n−={c.n_neg})")
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"}, name="chance")
    fig.update_layout(xaxis_title="1 − specificity (FPR)", yaxis_title="sensitivity (TPR)", height=500,
                      xaxis={"range": [0, 1]}, yaxis={"range": [0, 1.02]}, legend={"x": 0.35, "y": 0.05})
    return fig


def _reliability_figure(metrics: dict) -> go.Figure | None:
    """Per label: fraction of positives against the mean score in each score bin (marker area ~
    images in the bin), beside the diagonal of perfect calibration; the legend gives the ECE."""
    fig, drawn = go.Figure(), False
    for i, (label, entry) in enumerate((metrics.get("classification") or {}).items()):
        cal = (entry or {}).get("calibration")
        if not cal:
            continue
        rel = cal["reliability"]
        keep = [j for j, n in enumerate(rel["count"]) if n]
        if not keep:
            continue
        sizes = [8 + 30 * (rel["count"][j] / max(rel["count"])) ** 0.5 for j in keep]
        fig.add_scatter(x=[rel["mean_score"][j] for j in keep], y=[rel["fraction_positive"][j] for j in keep],
                        mode="lines+markers", marker={"size": sizes, "color": _color(label, i)},
                        line={"color": _color(label, i)}, name=f"{label}: ECE {fmt_ci(cal['ece'])}",
                        text=[f"{rel['count'][j]} images" for j in keep])
        drawn = True
    if not drawn:
        return None
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"},
                    name="perfectly calibrated")
    fig.update_layout(xaxis_title="mean score in the bin", yaxis_title="fraction positive in the bin",
                      height=450, xaxis={"range": [0, 1]}, yaxis={"range": [-0.02, 1.02]})
    return fig


def _dice_figure(dice: dict[str, np.ndarray]) -> go.Figure | None:
    """Box with all points per class; None when no class has a finite Dice value."""
    fig = go.Figure()
    for i, (cls, values) in enumerate(dice.items()):
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            fig.add_box(y=v, name=f"{cls} (n={v.size})", boxpoints="all", jitter=0.4, pointpos=0,
                        marker={"size": 4, "color": _color(cls, i)}, boxmean=True)
    if not fig.data:
        return None
    fig.update_layout(yaxis={"title": "Dice", "range": [-0.02, 1.02]}, height=450, showlegend=False)
    return fig


def _froc_figure(curves: list[FrocCurve]) -> go.Figure | None:
    """Sensitivity vs. FP/image on a log x-axis, with the five operating points and their CIs."""
    curves = [c for c in curves if len(c.fp_per_image)]
    if not curves:
        return None
    all_rates = [float(r) for c in curves for r in c.at_rates] or [float(r) for r in FROC_RATES]
    left, right = min(0.125, min(all_rates) / 2), max(8.0, 2 * max(all_rates))
    fig = go.Figure()
    for i, c in enumerate(curves):
        color = _color(c.cls, i)
        x, y = froc_line(c.fp_per_image, c.sensitivity, [float(r) for r in c.at_rates], left)
        fig.add_scatter(x=x, y=y, mode="lines", line={"color": color, "shape": "hv"},
                        name=f"{c.cls} ({c.n_lesions} lesions, {c.n_images} images)", legendgroup=c.cls)
        rates = [r for r, v in c.at_rates.items() if v and v.get("mean") is not None]
        if rates:
            mean = np.array([c.at_rates[r]["mean"] for r in rates], float)
            ci = np.array([c.at_rates[r].get("ci95") or [np.nan, np.nan] for r in rates], float)
            fig.add_scatter(x=[float(r) for r in rates], y=mean, mode="markers", showlegend=False,
                            marker={"color": color, "size": 9}, legendgroup=c.cls, hovertext=rates,
                            error_y={"type": "data", "symmetric": False,
                                     "array": np.nan_to_num(ci[:, 1] - mean),
                                     "arrayminus": np.nan_to_num(mean - ci[:, 0])})
    fig.update_layout(xaxis={"type": "log", "range": [math.log10(left), math.log10(right)],
                             "title": "false positives per image",
                             "tickvals": [0.125, 0.25, 0.5, 1, 2, 4, 8]},
                      yaxis={"title": "sensitivity", "range": [0, 1.02]}, height=450)
    return fig


def froc_line(fp_per_image: np.ndarray, sensitivity: np.ndarray, rates: list[float],
              left: float) -> tuple[np.ndarray, np.ndarray]:
    """The FROC as drawn, x and y float64 (M,): a step line (plotly shape "hv") from `left` (> 0) to
    at least the largest of `rates`, through every operating point read off the curve.

    Why: `mammo.metrics.froc_sensitivities` reads the sensitivity at r as the best point with at most
    r FP/image, and past the curve's last point (every candidate above the threshold kept, so no more
    false positives can come) it keeps the last sensitivity. Joining only the curve's points with
    straight lines stops the line there (e.g. at 1.4 FP/image) and leaves the 2 and 4 FP/image values
    as lone dots; a log axis also drops the points at 0 FP/image. So the points are joined as steps,
    those left of `left` are drawn at `left`, and the last sensitivity is carried on to the largest rate.
    """
    x = np.maximum(np.asarray(fp_per_image, dtype=np.float64), left)
    y = np.maximum.accumulate(np.asarray(sensitivity, dtype=np.float64))
    end = max(rates, default=0.0)
    if x.size and end > x[-1]:
        x, y = np.append(x, end), np.append(y, y[-1])
    return x, y


def _png_uri(rgb: np.ndarray) -> str:
    """uint8 RGB -> PNG data URI."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _cases(heading: str, cases: list[GalleryCase]) -> str:
    """One row of pictures with captions."""
    figs = "".join(f'<figure><img src="{_png_uri(c.rgb)}" alt="{_e(c.image_id)}"><figcaption>{_e(c.image_id)}'
                   f"<br>{_e(c.cls)} · Dice {c.dice:.3f}</figcaption></figure>" for c in cases)
    return f'<h3>{_e(heading)}</h3><div class="gallery">{figs}</div>'


def _gallery(worst: list[GalleryCase], best: list[GalleryCase]) -> str:
    """Worst and best cases (red fill = prediction, green outline = truth)."""
    if not worst and not best:
        return ""
    rows = (_cases("Worst", worst) if worst else "") + (_cases("Best", best) if best else "")
    return ('<section id="gallery"><h2>Gallery</h2><p>Red fill: prediction; green outline: ground truth.</p>'
            f"{rows}</section>")


def _errors(errors: list[tuple[str, str]]) -> str:
    """Images that failed, with their messages."""
    if not errors:
        return ""
    rows = "".join(f"<tr><td>{_e(i)}</td><td>{_e(msg)}</td></tr>" for i, msg in errors)
    return (f'<section id="errors"><h2>Errors ({len(errors)})</h2>'
            f"<table><tr><th>image</th><th>error</th></tr>{rows}</table></section>")
