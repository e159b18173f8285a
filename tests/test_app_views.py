"""What the page shows of a prediction, in-process: a colour key readable at the page's size,
heatmaps with colour bars, numbered and scored patch boxes, and every label naming the pipeline
as it was asked for ("cascade:fgt", not the result's "cascade")."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mammo import demo
from mammo.demo import loading, predict
from mammo.io import ImageMeta
from mammo.pipelines.base import PatchBox, Result
from mammo.viz import CLASS_COLORS, draw_boxes, legend_box, patch_labels, to_rgb8
from tests.dicom_factory import mammogram_pixels
from tests.test_app_ui import app_module  # noqa: F401 - the fixture, reused

PAGE_HEIGHT = 640  # app.IMAGE_HEIGHT: the px the page shows a DISPLAY_SIDE picture in
MIN_TEXT_PX = 12  # on the page


def _prediction(image: np.ndarray, name: str = "fake", **result: object) -> demo.Prediction:
    return demo.Prediction(name, image, ImageMeta(), Result(**result), "case.png",
                           {"read": 0.0, "load": 0.0, "run": 0.0})


def _tissue_masks(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, bool) for name in ("adipose", "fibroglandular", "pectoral", "lesion")}


def _ink_rows(picture: np.ndarray, colour: tuple[int, int, int], columns: slice) -> np.ndarray:
    """Row indices where `columns` of `picture` hold exactly `colour` (text and swatches)."""
    return np.flatnonzero((picture[:, columns] == colour).all(axis=2).any(axis=1))


def test_colour_key_is_readable_on_the_page() -> None:
    """A 3000x2000 result: the overlay is 1024 px tall and shown 640 px tall; each class name
    (ink of its colour right of its swatch) is >= 12 px tall there, on a dark box (the old key's
    text was 5-6 px there)."""
    h, w = 3000, 2000
    image = np.full((h, w), 0.8, np.float32)  # bright everywhere: the key needs its own backing
    picture = demo.overlay_view(_prediction(image, masks=_tissue_masks((h, w))))
    assert max(picture.shape[:2]) == demo.DISPLAY_SIDE
    page_scale = PAGE_HEIGHT / demo.DISPLAY_SIDE
    names = list(_tissue_masks((1, 1)))
    box_w, box_h, row, text_h, _, _ = legend_box(picture.shape, names)
    assert text_h * page_scale >= MIN_TEXT_PX and text_h >= 0.025 * demo.DISPLAY_SIDE - 1
    x0 = picture.shape[1] - box_w  # both top corners equally bright: the key is at the right
    key = picture[:box_h, x0:]
    assert key.mean() < 0.4 * picture[box_h:].mean()  # the dark backing box
    text_columns = slice(round(2 * text_h), None)  # right of the swatches
    for i, name in enumerate(names):
        rows = _ink_rows(key, CLASS_COLORS[name], text_columns)
        rows = rows[(rows >= i * row) & (rows < (i + 1) * row + row // 2)]
        assert rows.size and (rows.max() - rows.min() + 1) * page_scale >= MIN_TEXT_PX - 1, name


def test_colour_key_goes_to_the_emptier_corner() -> None:
    """Breast on the right (bright), air on the left: the key covers air, not breast."""
    image = np.zeros((1024, 683), np.float32)
    image[:, 300:] = 0.8
    picture = demo.overlay_view(_prediction(image, masks=_tissue_masks(image.shape)))
    box_w, box_h, *_ = legend_box(picture.shape, list(_tissue_masks((1, 1))))
    assert (picture[:box_h, box_w:] == to_rgb8(image)[:box_h, box_w:]).all()  # right corner untouched
    assert (picture[:box_h, :box_w] != 0).any()  # the key is on the left


def test_heatmaps_have_colour_bars_and_patches_their_scores() -> None:
    """Each map scaled to its own maximum with a colour bar on the right; patch boxes labelled
    "rank score"."""
    image = np.random.default_rng(0).random((400, 300), dtype=np.float32)
    weak = np.zeros((400, 300), np.float32)
    weak[100:200, 100:200] = 0.2
    patches = [PatchBox(10, 10, 110, 110, 0.31), PatchBox(200, 100, 300, 200, 0.82)]
    pred = _prediction(image, saliency={"malignant": weak}, patches=patches)
    (view, caption), = demo.map_views(pred)
    assert caption == "saliency: malignant (max 0.20)" and view.shape == (400, 300 + 400 // 6, 3)
    labels = view[:, 300 + max(6, (400 // 6) // 3):]  # the colour bar's white panel, right of the ramp
    ink_rows = np.flatnonzero((labels < 128).all(axis=2).any(axis=1))
    assert ink_rows.min() > 0 and ink_rows.max() < 399  # "0.20" at the top is whole (it was cut)
    assert (np.diff(ink_rows) > 1).sum() == 2  # three labels: 0.00, 0.10, 0.20
    assert patch_labels(patches) == ["2 0.31", "1 0.82"]
    patch_map = demo.patch_view(pred)
    plain = draw_boxes(to_rgb8(image), [(p.y0, p.x0, p.y1, p.x1) for p in patches])
    assert patch_map is not None and (patch_map != plain).any()  # the labels are drawn


class _FakeCascade:
    """Reports "cascade" whatever variant it was built for, as the registry's pipelines did."""

    name, description, weights_sha256 = "cascade", "fake", "0" * 64

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        lesion = np.zeros(image.shape, bool)
        lesion[10:20, 10:20] = True
        return Result(masks={"lesion": lesion}, scores={"malignant": 0.5}, pipeline="cascade")


@pytest.fixture
def fake_cascade(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "_READY", {})
    monkeypatch.setattr(loading, "_STATES", {})
    monkeypatch.setattr(loading, "get_pipeline", lambda name: _FakeCascade())
    monkeypatch.setattr(predict, "availability", lambda name: (True, ""))


@pytest.mark.usefixtures("fake_cascade")
def test_variants_keep_their_names(tmp_path: Path) -> None:
    """cascade and cascade:fgt: two names in Details, scores.json, the summary and both CSVs."""
    from PIL import Image

    source = tmp_path / "case.png"
    Image.fromarray(mammogram_pixels((96, 64), bits=12).astype(np.uint16)).save(source)
    names = ["cascade", "cascade:fgt"]
    for name in names:
        pred = demo.predict_file(source, name)
        assert pred.result.pipeline == "cascade"  # what the fake (and the old registry) says
        assert demo.details(pred)["pipeline"] == name and f"**{name}**" in demo.summary(pred)
        files = {p.name: p for p in demo.write_downloads(pred, tmp_path / _safe(name))}
        assert json.loads(files["scores.json"].read_text())["pipeline"] == name
        assert _csv_pipelines(files["predictions.csv"]) == [name]
    preds, failed = demo.compare_file(source, names)
    assert not failed and [row[0] for row in demo.comparison_rows(preds, failed)] == names
    written = demo.write_comparison(preds, tmp_path / "compare")
    assert _csv_pipelines(written[0]) == names


def _safe(name: str) -> str:
    return name.replace(":", "_")


def _csv_pipelines(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        return [row["pipeline"] for row in csv.DictReader(handle)]


def test_qc_flags_and_warnings_are_shown(tmp_path: Path) -> None:
    """The reader's QC flags and warnings: in the summary line, the Details, scores.json and
    the predictions.csv row (its "qc" cell; a column once `eval.table` lists it)."""
    image = mammogram_pixels((96, 64), bits=8).astype(np.float32) / 255
    meta = ImageMeta(qc=["saturated", "small_image"], warnings=["WindowCenter 'abcd' is not a number; `x`"])
    pred = demo.Prediction("breast", image, meta, Result(masks={"breast": image > 0.3}), "case.png",
                           {"read": 0.0, "load": 0.0, "run": 0.0})
    line = demo.summary(pred)
    assert "QC: saturated, small_image; warning: WindowCenter 'abcd' is not a number; 'x'" in line
    info = demo.details(pred)
    assert info["qc"] == ["saturated", "small_image"] and info["warnings"] == meta.warnings
    assert demo.prediction_row(pred)["qc"] == "saturated;small_image"
    files = {p.name: p for p in demo.write_downloads(pred, tmp_path)}
    scores = json.loads(files["scores.json"].read_text())
    assert scores["qc"] == meta.qc and scores["warnings"] == meta.warnings
    plain = demo.Prediction("breast", image, ImageMeta(), pred.result, "case.png", pred.seconds)
    assert "QC" not in demo.summary(plain) and demo.details(plain)["qc"] == []


def test_endpoint_arguments_are_type_checked(tmp_path: Path) -> None:
    """What an API client sends is checked before use: a list as /predict's pipeline failed with
    "'list' object has no attribute 'partition'"; now each is a user error saying what to send."""
    from mammo.errors import MammoInputError

    source = tmp_path / "case.png"
    source.write_bytes(b"unused: the arguments are refused first")
    refused = [
        (lambda: demo.predict_file(str(source), ["breast"]), "one pipeline name .* not a list.*/compare"),
        (lambda: demo.predict_file(str(source), 3), "one pipeline name .* not int"),
        (lambda: demo.predict_file([str(source)], "breast"), "one uploaded file .* not a list"),
        (lambda: demo.predict_file({"path": str(source)}, "breast"), "one uploaded file .* not dict"),
        (lambda: demo.compare_file(str(source), "breast"), "a list of pipeline names, not str"),
        (lambda: demo.compare_file(str(source), ["breast", 3]), "it holds int 3"),
    ]
    for call, message in refused:
        with pytest.raises(MammoInputError, match=message):
            call()


def test_app_endpoints_answer_wrong_types_with_a_message(app_module, tmp_path: Path) -> None:  # noqa: F811
    """app.predict / app.compare turn a wrong type into a gr.Error with that message."""
    import gradio as gr

    with pytest.raises(gr.Error, match="one pipeline name"):
        app_module.predict(None, ["breast"])
    with pytest.raises(gr.Error, match="a list of pipeline names"):
        app_module.compare(None, "breast")
