"""`python -m training.measure_scores`: per-source held-out AUCs through `python -m eval`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import require_data
from training.measure_scores import main, parse_set


def test_set_syntax_is_checked():
    assert parse_set("film=mias:../shared/data/mias") == ("film", "mias", "../shared/data/mias")
    for bad in ("mias:../x", "film=mias", "tomo=mias:../x"):
        with pytest.raises(SystemExit):
            parse_set(bad)


def test_record_needs_whole_splits():
    with pytest.raises(SystemExit):
        main(["--entry", "glam-sep", "--limit", "3", "--record"])
    with pytest.raises(SystemExit):
        main(["--entry", "glam-sep", "--split", "test", "--calibrate"])


def test_measures_a_few_real_images(tmp_path):
    root = require_data("cdd_cesm")
    assert main(["--entry", "glam-sep", "--split", "test", "--limit", "6", "--out", str(tmp_path),
                 "--set", f"cesm=cdd-cesm-subtracted:{root}"]) == 0
    evidence = json.loads((tmp_path / "evidence-test.json").read_text())
    assert (tmp_path / "roc-test.png").stat().st_size > 1000
    assert (tmp_path / "cdd-cesm-subtracted-test" / "predictions.csv").is_file()
    for items in evidence.values():
        for item in items:
            assert item["n"] == 6 and item["source"] == "cesm" and item["ci95"][0] <= item["auc"] <= item["ci95"][1]
