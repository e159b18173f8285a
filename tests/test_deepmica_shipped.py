"""`deepmica` with its shipped weights: the registry build (sha256-checked, working pixel size from
the weights), the app's path with SHAP pictures, `/compare`, `mammo predict` and `python -m eval`,
on a full-field example DICOM and MIAS calcification films."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_ok, require_data, run_python

REPO = Path(__file__).resolve().parents[1]
ENTRIES = ("deepmica-seg", "deepmica-classifier")
CALC_FILM = "mdb219"  # validation: a benign cluster of coarse calcifications


@pytest.fixture(scope="module")
def pipeline():
    from mammo.weights import get_entry

    for name in ENTRIES:
        if not (REPO / get_entry(name).file).is_file():
            pytest.skip(f"{get_entry(name).file} is not bundled")
    from mammo.pipelines.registry import get_pipeline

    return get_pipeline("deepmica")


def test_full_field_dicom_runs_at_the_working_pixel_size(pipeline, cbis_dicoms: list[Path]) -> None:
    from mammo.io import read_image

    image, meta = read_image(cbis_dicoms[0])
    result = pipeline.run(image, meta)
    result.check_shapes(image.shape)
    geometry = result.geometry
    assert geometry["work_mm"] == pytest.approx(pipeline.work_mm, rel=0.01)
    assert max(geometry["work_shape"]) < max(image.shape) / 3  # ~0.045 mm -> 0.2 mm
    calcification, breast = result.masks["calcification"], result.masks["breast"]
    assert breast.mean() > 0.1 and not (calcification & ~breast).any()
    clusters = geometry["clusters"]
    assert len(clusters) == len(result.patches) <= pipeline.max_clusters
    assert all(c["confidence"] >= pipeline.min_confidence and 0 <= c["malignant"] <= 1 for c in clusters)
    assert result.scores["malignant"] == max((c["malignant"] for c in clusters), default=0.0)


def test_app_path_shows_cluster_boxes_and_shap_pictures() -> None:
    from mammo import demo
    from mammo.io import read_image

    available, reason = demo.availability("deepmica:explain")
    if not available:
        pytest.skip(reason)
    path = require_data("mias") / f"{CALC_FILM}.png"
    image, meta = read_image(path)
    pred = demo.run_pipeline("deepmica:explain", image, meta, str(path))
    assert pred.result.patches, "no cluster found on a film with an annotated calcification cluster"
    captions = [caption for _, caption in demo.map_views(pred)]
    assert "picture: shap_cluster1" in captions and any(c.startswith("saliency: malignant") for c in captions)
    assert demo.patch_view(pred) is not None
    shap = pred.result.artifacts["shap_cluster1"]
    assert shap.dtype == np.uint8 and shap.ndim == 3 and shap.shape[2] == 3
    assert "shap_sum" in pred.result.geometry["clusters"][0]


def test_compare_with_cascade() -> None:
    from mammo import demo

    path = require_data("mias") / f"{CALC_FILM}.png"
    names = [n for n in ("deepmica", "cascade") if demo.availability(n)[0]]
    if "deepmica" not in names:
        pytest.skip("deepmica weights are not bundled")
    preds, failed = demo.compare_file(str(path), names)
    assert not failed and [p.name for p in preds] == names
    assert preds[0].result.masks["calcification"].shape == preds[0].image.shape


def test_predict_and_eval_cli(pipeline, cbis_dicoms: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "predict"
    assert_ok(run_python(["-m", "mammo", "predict", "--pipeline", "deepmica", "--quiet", "--out", str(out),
                          str(cbis_dicoms[0])]))
    scores = json.loads((out / cbis_dicoms[0].stem / "scores.json").read_text())
    assert scores["pipeline"] == "deepmica" and 0.0 <= scores["scores"]["malignant"] <= 1.0
    folder = tmp_path / "films"
    folder.mkdir()
    for name in (CALC_FILM, "mdb010"):
        (folder / f"{name}.png").symlink_to(require_data("mias") / f"{name}.png")
    report = tmp_path / "eval"
    assert_ok(run_python(["-m", "eval", "--pipeline", "deepmica", "--dataset", f"folder:{folder}",
                          "--out", str(report)]))
    with (report / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(r["pipeline"] == "deepmica" for r in rows)
    assert all(0.0 <= float(r["malignant_pred"]) <= 1.0 for r in rows)
