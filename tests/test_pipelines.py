"""Registry, the `breast` pipeline, and the `mammo` command on real DICOMs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import mammo
from mammo.export import write_result
from mammo.io import read_image
from mammo.pipelines import Pipeline, Result, get_pipeline, list_pipelines

REPO = Path(__file__).resolve().parents[1]


def test_registry_lists_and_errors() -> None:
    assert "breast" in list_pipelines()
    assert mammo.list_pipelines() == list_pipelines()
    with pytest.raises(KeyError, match="choose one of: breast"):
        get_pipeline("no-such-pipeline")
    pipe = get_pipeline("breast")
    assert isinstance(pipe, Pipeline)
    assert get_pipeline("breast") is pipe, "pipelines are built once per process"


def test_registry_entries_are_importable_strings() -> None:
    from mammo.pipelines.registry import PIPELINES

    for name, spec in PIPELINES.items():
        module, _, func = spec.builder.partition(":")
        assert module and func, name
        assert spec.framework in {"numpy", "torch", "keras"}


def test_breast_pipeline_on_real_dicom(cbis_dicoms) -> None:
    image, meta = read_image(cbis_dicoms[0])
    result = get_pipeline("breast").run(image, meta)
    assert isinstance(result, Result)
    result.check_shapes(image.shape)
    mask = result.masks["breast"]
    assert mask.dtype == bool and 0.1 < mask.mean() < 0.5
    y0, x0, y1, x1 = result.geometry["crop_box"]
    assert mask[:y0].sum() == 0 and mask[y1:].sum() == 0 and mask[:, x1:].sum() == 0


def test_read_predict_write_in_original_geometry(cbis_dicoms, tmp_path) -> None:
    """A ~4600x2800 DICOM: read, breast mask, mask PNG in original geometry. (Its speed is a
    benchmark, `python -m mammo.bench`, not a limit in this test.)"""
    pipe = get_pipeline("breast")
    for path in cbis_dicoms[:4]:
        image, meta = read_image(path)
        result = pipe.run(image, meta)
        written = write_result(tmp_path / path.stem, image, meta, result)
        saved = cv2.imread(str(written["mask_breast"]), cv2.IMREAD_UNCHANGED)
        assert saved.shape == image.shape == meta.original_shape
        np.testing.assert_array_equal(saved > 0, result.masks["breast"])


def test_bench_reports_ratios_to_the_reference(cbis_dicoms) -> None:
    from mammo.bench import run

    report = run(cbis_dicoms[:2])
    assert report["reference_forward_seconds"] > 0
    for part in ("read", "read_breast_write"):
        entry = report[part]
        assert entry["n"] == 2 and 0 < entry["median_seconds"] <= entry["max_seconds"]
        assert entry["median_over_reference"] > 0


def test_cli_predict_examples_and_bad_input(tmp_path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mammo", "predict", "--pipeline", "breast", "--out", str(out),
           "--quiet", "--examples", str(bad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr  # 8 written, 1 refused
    assert "notes.png" in proc.stderr and "1 of 9" in proc.stderr
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(dirs) == 8
    for d in dirs:
        scores = json.loads((d / "scores.json").read_text())
        assert scores["pipeline"] == "breast"
        assert scores["meta"]["laterality"] in ("L", "R") and scores["meta"]["view"] in ("CC", "MLO")
        mask = cv2.imread(str(d / "mask_breast.png"), cv2.IMREAD_UNCHANGED)
        assert list(mask.shape) == scores["meta"]["original_shape"]
        overlay = cv2.imread(str(d / "overlay.png"))
        assert overlay.ndim == 3 and max(overlay.shape[:2]) <= 2048
    assert not (out / "notes").exists(), "nothing is written for a refused input"


def test_cli_lists_pipelines_and_rejects_unknown() -> None:
    proc = subprocess.run([sys.executable, "-m", "mammo", "pipelines"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("breast")
    proc = subprocess.run([sys.executable, "-m", "mammo", "predict", "--pipeline", "nope", "x.png"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "choose one of" in proc.stderr
