"""The `cascade` pipeline with the bundled weights: geometry, outputs, accuracy, speed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammo.io import read_image
from mammo.metrics import dice_iou
from mammo.pipelines import get_pipeline
from mammo.pipelines.cascade import CascadePipeline, box_with_margin, image_type

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cascade() -> CascadePipeline:
    return get_pipeline("cascade")


def test_outputs_on_full_field_dicom(cascade, cbis_dicoms) -> None:
    image, meta = read_image(cbis_dicoms[0])
    result = cascade.run(image, meta)
    result.check_shapes(image.shape)
    for name in ("breast", "adipose", "fibroglandular", "pectoral", "lesion"):
        assert result.masks[name].dtype == bool and name in result.probabilities
    # tissue classes are a partition of the breast
    tissue = sum(result.masks[n].astype(int) for n in ("adipose", "fibroglandular", "pectoral"))
    assert tissue.max() <= 1 and np.array_equal(tissue > 0, result.masks["breast"])
    # lesion probability is 0 outside the stage-2 box
    y0, x0, y1, x1 = result.geometry["crop_box"]
    outside = result.probabilities["lesion"].copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0
    # the model's breast agrees with the classical one on this film
    classical = get_pipeline("breast").run(image, meta).masks["breast"]
    assert dice_iou(result.masks["breast"], classical)[0] > 0.85
    assert set(result.artifacts) == {"tissue_seg", "fgt_mask", "cancer_prob", "visualization"}
    assert result.weights_sha256.count(",") == 1


def test_tissue_dice_on_validation_films(cascade) -> None:
    """Original geometry, the committed val split; the numbers in the manifest come from
    `python -m training.measure_cascade`."""
    from conftest import require_data

    from mammo.datasets import load_dataset

    dices = {n: [] for n in ("adipose", "fibroglandular", "pectoral")}
    for sample in load_dataset("tissue-ddsm", require_data("tissue_ddsm"), split="val"):
        result = cascade.run(sample.image, sample.meta)
        for name in dices:
            dices[name].append(dice_iou(result.masks[name], sample.masks[name])[0])
    means = {k: float(np.mean(v)) for k, v in dices.items()}
    print("tissue val Dice", means)
    assert np.mean(list(means.values())) > 0.80


def test_lesion_found_on_cdd_cesm_validation(cascade) -> None:
    from conftest import require_data

    from mammo.datasets import load_dataset

    ds = load_dataset("cdd-cesm", require_data("cdd_cesm"), split="val")
    dices = [dice_iou(cascade.run(s.image, s.meta).masks["lesion"], s.masks["lesion"])[0]
             for s in (ds[i] for i in range(0, len(ds), 4))]
    print(f"lesion Dice on every 4th val image: mean {np.mean(dices):.3f} (n={len(dices)})")
    assert np.mean(dices) > 0.4


def test_speed_with_model_loaded(cascade, cbis_dicoms) -> None:
    times = []
    for path in cbis_dicoms[:3]:
        image, meta = read_image(path)
        t0 = time.perf_counter()
        cascade.run(image, meta)
        times.append(time.perf_counter() - t0)
    print(f"cascade.run median {np.median(times):.2f} s")
    assert np.median(times) < 2.0


def test_helpers() -> None:
    from mammo.io.meta import ImageMeta

    assert image_type(ImageMeta(path="/d/P12_L_CM_CC.jpg")) == "CM"
    assert image_type(ImageMeta(path="/d/P12_L_DM_CC.jpg")) == "DM"
    assert image_type(ImageMeta(path="/d/1-130.dcm")) == "DM"
    mask = np.zeros((100, 50), bool)
    assert box_with_margin(mask, 0.1) is None
    mask[40:60, 10:20] = True
    assert box_with_margin(mask, 0.1).box == (38, 9, 62, 21)


def test_cli_writes_original_tool_files(tmp_path, cbis_dicoms) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mammo", "predict", "--pipeline", "cascade", "--quiet",
                           "--out", str(out), str(cbis_dicoms[4])], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = out / cbis_dicoms[4].stem
    for suffix in ("tissue_seg", "fgt_mask", "cancer_prob", "visualization"):
        assert (d / f"{d.name}_{suffix}.png").is_file(), suffix
    fgt = cv2.imread(str(d / f"{d.name}_fgt_mask.png"), cv2.IMREAD_UNCHANGED)
    image, _ = read_image(cbis_dicoms[4])
    assert fgt.shape == image.shape
    assert (d / "scores.json").is_file() and (d / "mask_lesion.png").is_file()
