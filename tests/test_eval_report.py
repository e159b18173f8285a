"""eval/report.py: the self-contained report.html and the gallery pictures."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from eval.report import FrocCurve, GalleryCase, ReportData, RocCurve, fmt_ci, make_case_picture, write_report
from mammo.viz import PRED_COLOR, TRUTH_COLOR

RATES = ("0.25", "0.5", "1", "2", "4")


def _seg_metrics() -> dict:
    return {"lesion": {"dice": {"mean": 0.7123, "ci95": [0.6611, 0.7544]},
                       "iou": {"mean": 0.58, "ci95": [0.53, 0.62]}, "n": 131}}


def _cls_metrics() -> dict:
    return {"malignant": {"auc": {"mean": 0.88, "ci95": [0.80, 0.94]},
                          "sensitivity": {"mean": 0.8, "ci95": [0.7, 0.9]},
                          "specificity": {"mean": 0.75, "ci95": [0.6, 0.85]},
                          "threshold": 0.5, "n": 64, "n_pos": 30, "n_neg": 34},
            "benign": {"auc": {"mean": None, "ci95": None, "undefined": "only one class present"},
                       "n": 64, "n_pos": 0, "n_neg": 64}}


def _metrics(seg: bool = True, cls: bool = True) -> dict:
    m = {"pipeline": "cascade", "dataset": "cdd-cesm:/data/cdd", "split": "val", "n_images": 131,
         "n_errors": 1, "seconds_per_image": 0.8, "weights_sha256": "ab" * 32,
         "conventions": {"dice": "Dice is 1 when both masks are empty.",
                         "bootstrap": "1000 resamples of patients.",
                         "detection": "A hit is IoU >= 0.1."}}
    if seg:
        m["segmentation"] = _seg_metrics()
        m["detection"] = {"lesion": {"froc": {r: {"mean": 0.5, "ci95": [0.4, 0.6]} for r in RATES},
                                     "n_lesions": 40, "n_images": 82}}
    if cls:
        m["classification"] = _cls_metrics()
    return m


def _roc(label: str) -> RocCurve:
    fpr = np.linspace(0, 1, 20)
    grid = np.linspace(0, 1, 50)
    return RocCurve(label=label, fpr=fpr, tpr=np.sqrt(fpr), auc=0.88, auc_ci=[0.80, 0.94], band_fpr=grid,
                    band_low=np.clip(np.sqrt(grid) - 0.1, 0, 1), band_high=np.clip(np.sqrt(grid) + 0.1, 0, 1),
                    n_pos=30, n_neg=34)


def _froc() -> FrocCurve:
    fp = np.geomspace(0.05, 10, 30)
    rates = {r: {"mean": 0.5, "ci95": [0.4, 0.6]} for r in RATES}
    rates["4"] = {"mean": 0.9, "ci95": None}  # a CI that could not be computed
    return FrocCurve(cls="lesion", fp_per_image=fp, sensitivity=np.clip(0.4 + 0.1 * np.log2(fp + 1), 0, 1),
                     at_rates=rates,
                     n_lesions=40, n_images=82)


def _case(image_id: str, dice: float) -> GalleryCase:
    rng = np.random.default_rng(0)
    image = rng.random((300, 200), dtype=np.float32)
    truth = np.zeros((300, 200), bool)
    truth[100:200, 50:150] = True
    pred = np.roll(truth, 20, axis=0)
    return GalleryCase(image_id=image_id, cls="lesion", dice=dice, rgb=make_case_picture(image, truth, pred))


def _data(seg: bool = True, cls: bool = True, image_id: str = "P1_L_CC") -> ReportData:
    return ReportData(
        title="cascade on cdd-cesm (val split)", metrics=_metrics(seg, cls),
        dice={"lesion": np.random.default_rng(1).random(131)} if seg else {},
        roc=[_roc("malignant"), _roc("benign")] if cls else [],
        froc=[_froc()] if seg else [],
        worst=[_case(image_id, 0.1)] if seg else [], best=[_case("P9_R_MLO", 0.95)] if seg else [],
        errors=[("P5_R_CC", "unreadable DICOM")])


class _TagCounter(HTMLParser):
    """Counts start/end tags so the page can be checked for balance."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.starts[tag] = self.starts.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        self.ends[tag] = self.ends.get(tag, 0) + 1


_PLOTLY_JS = re.compile(r"<script>/\*\*\s*\* plotly\.js v.*?</script>", re.DOTALL)


def _read(path: Path) -> tuple[str, str]:
    """The page, and the page without the inline plotly.js bundle (whose text holds words like "AUC")."""
    page = path.read_text(encoding="utf-8")
    return page, _PLOTLY_JS.sub("", page, count=1)


def _sections(page: str) -> set[str]:
    return set(re.findall(r'<section id="([a-z]+)"', page))


def test_full_report_has_all_sections_and_inline_plotly_once(tmp_path: Path) -> None:
    out = write_report(tmp_path / "report.html", _data())
    assert out == tmp_path / "report.html"
    page, rest = _read(out)
    assert len(rest) < len(page) - 1_000_000  # the bundle (megabytes) is inline
    assert page.count("<html") == 1 and page.rstrip().endswith("</html>")
    assert _sections(page) == {"summary", "conventions", "roc", "dice", "froc", "gallery", "errors"}
    assert page.count("* plotly.js v") == 1  # the library itself, inline, exactly once
    assert page.count("window.PlotlyConfig") == 1
    assert page.count('class="plotly-graph-div"') == 3
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "cdn.plot.ly" not in rest and "https://" not in rest
    parser = _TagCounter()
    parser.feed(page)
    for tag in ("html", "body", "section", "table", "figure", "script"):
        assert parser.starts.get(tag, 0) == parser.ends.get(tag, 0), tag
    assert parser.starts["img"] == 2
    assert rest.count('src="data:image/png;base64,') == 2


def test_full_report_contents(tmp_path: Path) -> None:
    _, page = _read(write_report(tmp_path / "r.html", _data()))
    assert "0.712 (0.661–0.754)" in page
    assert "0.880 (0.800–0.940)" in page
    for task in ("segmentation", "classification", "detection"):
        assert f"<td>{task}</td>" in page
    assert "malignant: AUC 0.880 (0.800–0.940)" in page  # ROC legend
    assert '"fill":"tonexty"' in page  # CI band
    assert "undefined: only one class present" in page
    assert "sensitivity @ 0.25 FP/image" in page
    assert "Dice is 1 when both masks are empty." in page
    assert "cascade on cdd-cesm (val split)" in page
    assert "abababababab…" in page and "ab" * 32 not in page
    assert "P1_L_CC" in page and "Dice 0.100" in page and "Dice 0.950" in page
    assert page.index("Worst") < page.index("Best")
    assert "unreadable DICOM" in page
    assert '"type":"log"' in page  # FROC on a log x-axis


def test_segmentation_only_has_no_roc(tmp_path: Path) -> None:
    page, rest = _read(write_report(tmp_path / "r.html", _data(cls=False)))
    sections = _sections(page)
    assert "roc" not in sections and {"dice", "froc", "gallery"} <= sections
    assert not re.search(r"\bAUC\b", rest) and "<td>classification</td>" not in rest
    assert page.count("* plotly.js v") == 1


def test_classification_only_has_no_dice_or_gallery(tmp_path: Path) -> None:
    page, rest = _read(write_report(tmp_path / "r.html", _data(seg=False)))
    sections = _sections(page)
    assert "roc" in sections
    assert not {"dice", "froc", "gallery"} & sections
    assert "data:image/png" not in rest and "Dice per class" not in rest
    assert "<td>segmentation</td>" not in rest and "<td>detection</td>" not in rest
    assert page.count("* plotly.js v") == 1


def test_no_figures_means_no_plotly(tmp_path: Path) -> None:
    data = ReportData(title="empty", metrics={"pipeline": "x", "n_images": 0}, dice={"lesion": np.array([])},
                      roc=[], froc=[], worst=[], best=[], errors=[])
    page = write_report(tmp_path / "r.html", data).read_text(encoding="utf-8")
    assert "plotly" not in page.lower() and _sections(page) == set()


def test_text_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    data = _data(image_id=evil)
    data.title = evil
    data.errors = [(evil, "bad & <b>worse</b>")]
    data.metrics["conventions"]["dice"] = evil
    page = write_report(tmp_path / "r.html", data).read_text(encoding="utf-8")
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "bad &amp; &lt;b&gt;worse&lt;/b&gt;" in page


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "report.html"
    write_report(target, _data(seg=False))
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    before = target.read_text(encoding="utf-8")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("eval.report.os.replace", boom)
    with pytest.raises(OSError):
        write_report(target, _data())
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # temp file cleaned up
    assert target.read_text(encoding="utf-8") == before  # old page untouched


def test_fmt_ci() -> None:
    assert fmt_ci({"mean": 0.7123, "ci95": [0.6611, 0.7544]}) == "0.712 (0.661–0.754)"
    assert fmt_ci({"mean": 0.5, "ci95": None}) == "0.500"
    assert fmt_ci({"mean": None, "ci95": None, "undefined": "why"}) == "undefined: why"
    assert fmt_ci(131) == "131" and fmt_ci(0.5) == "0.500"


def test_make_case_picture_colours_and_size() -> None:
    h, w = 1200, 800
    image = np.full((h, w), 0.5, np.float32)
    truth = np.zeros((h, w), bool)
    truth[300:700, 200:600] = True
    pred = np.zeros((h, w), bool)
    pred[500:900, 300:700] = True
    rgb = make_case_picture(image, truth, pred)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert max(rgb.shape[:2]) <= 512 and rgb.shape[:2] == (512, 341)
    s = 512 / h
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    # inside the prediction, away from any outline: reddish translucent fill over grey
    cy, cx = int(800 * s), int(600 * s)
    assert r[cy, cx] > g[cy, cx] + 60 and r[cy, cx] > b[cy, cx] + 60
    # the truth's left edge (outside the prediction): green outline
    ty, tx = int(400 * s), int(200 * s)
    assert tuple(rgb[ty, tx]) == TRUTH_COLOR or tuple(rgb[ty, tx + 1]) == TRUTH_COLOR
    # far from both masks: untouched grey
    assert tuple(rgb[5, 5]) == (128, 128, 128)
    assert (np.all(rgb == PRED_COLOR, axis=2)).any()  # prediction outline present
    # no truth: no green at all
    none = make_case_picture(image, None, pred)
    assert not np.all(none == TRUTH_COLOR, axis=2).any()


def test_make_case_picture_small_image_unchanged_size() -> None:
    image = np.zeros((100, 60), np.float32)
    rgb = make_case_picture(image, np.zeros((100, 60), bool), np.zeros((100, 60), bool))
    assert rgb.shape == (100, 60, 3) and rgb.dtype == np.uint8 and not rgb.any()


def test_reliability_diagram_and_ece_when_scores_are_scored(tmp_path: Path) -> None:
    from eval.scoring import classification_entry

    rng = np.random.default_rng(0)
    labels = (rng.random(60) < 0.3).astype(int)
    scores = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.15, 60), 0, 1)
    entry = classification_entry(labels, scores, [f"p{i // 2}" for i in range(60)], 100, 0)
    cal = entry["calibration"]
    assert 0 <= cal["ece"]["mean"] <= 1 and len(cal["ece"]["ci95"]) == 2
    assert sum(cal["reliability"]["count"]) == 60 and len(cal["reliability"]["bin_edges"]) == 11
    data = _data()
    data.metrics["classification"]["malignant"] = entry
    page, _ = _read(write_report(tmp_path / "r.html", data))
    assert "calibration" in _sections(page)
    assert "expected calibration error" in page and "perfectly calibrated" in page


def _summary_table(page: str) -> str:
    start = page.index('<section id="summary">')
    return page[start:page.index("</section>", start)]


def test_timings_are_not_metric_rows(tmp_path: Path) -> None:
    data = _data()
    data.metrics["detection"]["lesion"]["bootstrap_seconds"] = 12.34  # where older versions put it
    data.metrics["timings"] = {"bootstrap_seconds": 56.78}
    _, page = _read(write_report(tmp_path / "r.html", data))
    summary = _summary_table(page)
    assert "sensitivity @ 4 FP/image" in summary
    assert "seconds" not in summary and "12.34" not in summary
    header = page[page.index("<header>"):page.index("</header>")]
    assert "<th>bootstrap seconds</th><td>56.78</td>" in header


def test_segmentation_rows_name_the_convention(tmp_path: Path) -> None:
    data = _data(cls=False)
    data.metrics["segmentation"]["lesion"].update(
        {"n_images": 30, "empty_reference_images": 34,
         "empty_reference_fp_rate": {"mean": 0.25, "ci95": [0.1, 0.4]},
         "empty_reference_mean_pred_area": {"mean": 0.000123, "ci95": [0.00005, 0.0002]}})
    summary = _summary_table(_read(write_report(tmp_path / "r.html", data))[1])
    assert "<td>Dice (images whose reference holds the class)</td><td>0.712 (0.661–0.754)</td>" in summary
    assert "<td>images with an empty reference</td><td>34</td>" in summary
    assert "<td>detection</td><td>lesion</td><td>n_images</td><td>82</td>" in summary  # not renamed there
    assert "0.250 (0.100–0.400)" in summary
    assert "0.0123% (0.005%–0.02%)" in summary  # an area of 1e-4 must not print as 0.000
    assert fmt_ci({"mean": 0.5, "ci95": None}, percent=True) == "50%"


def _lone_dot_froc() -> FrocCurve:
    """5 images, 5 lesions, 7 false positives in all: the curve stops at 1.4 FP/image."""
    from mammo.metrics import ImageDetections, froc_curve, froc_sensitivities

    dets = [ImageDetections(np.array([0.9, 0.8, 0.6]), [frozenset({0}), frozenset(), frozenset()], 1),
            ImageDetections(np.array([0.95, 0.7]), [frozenset(), frozenset({0})], 1),
            ImageDetections(np.array([0.85]), [frozenset()], 1),
            ImageDetections(np.array([0.75, 0.65, 0.55]), [frozenset({0}), frozenset(), frozenset()], 1),
            ImageDetections(np.array([0.99, 0.5]), [frozenset({0}), frozenset()], 1)]
    fp, sens, _ = froc_curve(dets)
    at = froc_sensitivities(dets)
    assert fp[-1] == pytest.approx(1.4)
    rates = {f"{r:g}": {"mean": v, "ci95": None} for r, v in at.items()}
    return FrocCurve(cls="lesion", fp_per_image=fp, sensitivity=sens, at_rates=rates, n_lesions=5, n_images=5)


def test_froc_line_goes_through_every_reported_point() -> None:
    from eval.report import _froc_figure

    curve = _lone_dot_froc()
    fig = _froc_figure([curve])
    line = next(t for t in fig.data if t.mode == "lines")
    dots = next(t for t in fig.data if t.mode == "markers")
    x, y = np.asarray(line.x, float), np.asarray(line.y, float)
    assert line.line.shape == "hv"
    assert x.max() >= max(float(r) for r in curve.at_rates) == 4.0  # reaches the 2 and 4 FP/image points
    assert (x > 0).all()  # nothing at 0, which a log axis cannot show
    for rate, sens in zip(np.asarray(dots.x, float), np.asarray(dots.y, float)):
        # a step line ("hv") at x is the y of the last vertex with x_vertex <= x
        on_line = y[np.searchsorted(x, rate, side="right") - 1]
        assert on_line == pytest.approx(sens), rate
