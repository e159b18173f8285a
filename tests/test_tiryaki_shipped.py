"""`tiryaki-mass` with its shipped weights: the registry build (sha256-checked), the app's path,
`mammo predict` and `python -m eval`, on a full-field example DICOM and a MIAS film.

Everything that imports tensorflow runs in a subprocess (see `mammo.models.frameworks`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import assert_ok, require_data, run_python

REPO = Path(__file__).resolve().parents[1]
ENTRIES = ("tiryaki-breast", "tiryaki-mass", "tiryaki-classifier")

APP_PATH = """
import sys
import numpy as np
from mammo import demo
from mammo.io import read_image
from mammo.pipelines.registry import get_pipeline

for path in sys.argv[1:]:
    image, meta = read_image(path)
    result = get_pipeline("tiryaki-mass").run(image, meta)
    result.check_shapes(image.shape)
    breast, lesion = result.masks["breast"], result.masks["lesion"]
    assert breast.dtype == bool and lesion.dtype == bool and breast.mean() > 0.1, path
    assert not (lesion & ~breast).any(), "a mass outside the breast"
    masses = result.geometry["masses"]
    assert len(masses) == len(result.patches) <= 8
    assert all(0.0 <= m["malignant"] <= 1.0 for m in masses)
    assert result.scores["malignant"] == max((m["malignant"] for m in masses), default=0.0)
    pred = demo.run_pipeline("tiryaki-mass", image, meta, path)
    assert pred.result.masks["lesion"].shape == image.shape
print("ok")
"""


@pytest.fixture(scope="module")
def shipped() -> None:
    from mammo.weights import get_entry

    for name in ENTRIES:
        entry = get_entry(name)
        if not (REPO / entry.file).is_file():
            pytest.skip(f"{entry.file} is not bundled")


def test_registry_and_app_path(shipped: None, cbis_dicoms: list[Path]) -> None:
    film = require_data("mias") / "mdb010.png"
    proc = run_python(["-c", APP_PATH, str(cbis_dicoms[0]), str(film)])
    assert_ok(proc)
    assert proc.stdout.strip().endswith("ok")


def test_predict_and_eval_cli(shipped: None, cbis_dicoms: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "predict"
    assert_ok(run_python(["-m", "mammo", "predict", "--pipeline", "tiryaki-mass", "--quiet", "--out", str(out),
                          str(cbis_dicoms[0])]))
    scores = json.loads((out / cbis_dicoms[0].stem / "scores.json").read_text())
    assert scores["pipeline"] == "tiryaki-mass" and 0.0 <= scores["scores"]["malignant"] <= 1.0
    folder = tmp_path / "dicoms"
    folder.mkdir()
    for dicom in cbis_dicoms[:2]:
        (folder / dicom.name).symlink_to(dicom)
    report = tmp_path / "eval"
    assert_ok(run_python(["-m", "eval", "--pipeline", "tiryaki-mass", "--dataset", f"dicom-folder:{folder}",
                          "--out", str(report)]))
    with (report / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(r["pipeline"] == "tiryaki-mass" for r in rows)
