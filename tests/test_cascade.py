"""The `cascade` pipeline with the bundled weights: geometry, outputs, accuracy. (Speed is a
benchmark, `python -m mammo.bench`, read as a ratio; no wall-clock limit here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mammo.io import read_image
from mammo.metrics import dice_iou
from mammo.pipelines import get_pipeline
from mammo.pipelines.cascade import (
    CascadePipeline,
    box_with_margin,
    image_type,
    lesion_findings,
    restrict_lesion,
)
from mammo.preprocess.breast import CropWindow
from mammo.preprocess.framing import frame, unframe, unframe_argmax

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cascade() -> CascadePipeline:
    return get_pipeline("cascade")


def test_outputs_on_full_field_dicom(cascade, cbis_dicoms) -> None:
    image, meta = read_image(cbis_dicoms[0])
    result = cascade.run(image, meta)
    result.check_shapes(image.shape)
    for name in ("breast", "adipose", "fibroglandular", "pectoral", "lesion"):
        assert result.masks[name].dtype == bool
    # the four full-size tissue maps (~200 MB) are built only when asked for
    assert set(result.probabilities) == {"lesion"}
    full = cascade.run(image, meta, probabilities=True)
    full.check_shapes(image.shape)
    assert set(full.probabilities) == {"breast", "adipose", "fibroglandular", "pectoral", "lesion"}
    for name, mask in result.masks.items():
        np.testing.assert_array_equal(mask, full.masks[name])
    # the labels decided at model resolution are the argmax of the restored maps (bar ties)
    tissue = np.stack([1 - full.probabilities["breast"]] + [full.probabilities[n] for n in
                                                            ("adipose", "fibroglandular", "pectoral")])
    labels = tissue.argmax(axis=0)
    for v, name in enumerate(("adipose", "fibroglandular", "pectoral"), start=1):
        assert np.count_nonzero((labels == v) != result.masks[name]) <= 10, name
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
    # no `fgt_mask` artifact: mask_fibroglandular.png is that mask
    assert set(result.artifacts) == {"tissue_seg", "cancer_prob", "visualization"}
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
    assert np.mean(list(means.values())) > 0.83  # 0.841 measured (flip TTA on)


def test_lesion_found_on_cdd_cesm_validation(cascade) -> None:
    from conftest import require_data

    from mammo.datasets import load_dataset

    ds = load_dataset("cdd-cesm", require_data("cdd_cesm"), split="val")
    dices = [dice_iou(cascade.run(s.image, s.meta).masks["lesion"], s.masks["lesion"])[0]
             for s in (ds[i] for i in range(0, len(ds), 4))]
    print(f"lesion Dice on every 4th val image: mean {np.mean(dices):.3f} (n={len(dices)})")
    assert np.mean(dices) > 0.4


def test_mias_normal_films_are_not_marked(cascade) -> None:
    """Lesion-free MIAS films (validation rows): at most 1% of the breast marked lesion on average
    (the issue's bound; 0.0 measured, with no finding on any of the 23 films)."""
    from conftest import require_data

    from training.measure_cascade import normal_refs

    shares = []
    for sample in normal_refs(str(require_data("mias")), "val"):
        result = cascade.run(sample.image, sample.meta)
        shares.append(result.masks["lesion"].sum() / max(1, result.masks["breast"].sum()))
    assert len(shares) >= 20 and np.mean(shares) <= 0.01


def test_speed_benchmark_reports_a_ratio(cascade) -> None:
    """Speed is a benchmark (`python -m training.measure_cascade --skip tissue lesion normals`),
    read as a ratio to a reference forward pass timed in the same run; no wall-clock limit here."""
    from training.measure_cascade import measure_speed

    speed = measure_speed(cascade)
    assert speed["reference_forward_seconds"] > 0 and speed["median_over_reference"] > 0
    assert speed["median_read_run_seconds"] <= speed["max_read_run_seconds"]
    assert {"read", "tissue", "lesion", "write"} <= set(speed["median_parts"])


def test_lesion_never_outside_breast_or_in_pectoral() -> None:
    lesion = np.full((40, 30), 0.9, np.float32)
    breast = np.zeros((40, 30), bool)
    breast[:, :24] = True
    pectoral = np.zeros((40, 30), bool)
    pectoral[:10, :8] = True
    out = restrict_lesion(lesion, breast, pectoral)
    assert out.dtype == np.float32
    assert (out[:10, :8] == 0).all() and (out[:, 24:] == 0).all()
    assert (out[20:, :24] == np.float32(0.9)).all()
    assert (restrict_lesion(lesion, breast)[:10, :8] > 0).all()


def test_pectoral_only_on_views_that_show_it() -> None:
    from mammo.io.meta import ImageMeta
    from mammo.pipelines.cascade import shows_pectoral

    assert shows_pectoral(ImageMeta(view="MLO")) and shows_pectoral(ImageMeta(view=None))
    assert not shows_pectoral(ImageMeta(view="CC")) and not shows_pectoral(ImageMeta(view="xccl"))


def test_findings_are_components_scored_by_their_maximum() -> None:
    prob = np.zeros((50, 50), np.float32)
    prob[5:10, 5:12] = 0.6
    prob[7, 8] = 0.8
    prob[30:40, 30:35] = 0.95
    prob[45, 45] = 0.49         # below the threshold: no finding
    boxes = lesion_findings(prob, 0.5)
    assert [(b.y0, b.x0, b.y1, b.x1) for b in boxes] == [(30, 30, 40, 35), (5, 5, 10, 12)]
    assert [b.score for b in boxes] == pytest.approx([0.95, 0.8]) and {b.label for b in boxes} == {"lesion"}
    assert lesion_findings(np.zeros((8, 8), np.float32), 0.5) == []


def test_findings_in_the_pipeline_result(cascade) -> None:
    from conftest import require_data

    from mammo.datasets import load_dataset

    ds = load_dataset("cdd-cesm", require_data("cdd_cesm"), split="val")
    sample = ds[next(i for i, name in enumerate(ds.ids) if name.endswith("_MLO"))]
    result = cascade.run(sample.image, sample.meta, probabilities=True)
    prob, tissue = result.probabilities["lesion"], result.masks
    from mammo.preprocess.breast import breast_mask

    sure_pectoral = result.probabilities["pectoral"] >= 0.97
    assert sample.meta.view == "MLO" and (prob[sure_pectoral] == 0).all()
    assert (prob[~(tissue["breast"] | breast_mask(sample.image))] == 0).all()
    assert not (result.masks["lesion"] & tissue["pectoral"]).any()
    for box in result.patches:
        assert box.label == "lesion" and box.score == pytest.approx(float(prob[box.y0:box.y1, box.x0:box.x1].max()))
    assert len(result.patches) == len(lesion_findings(prob, cascade.threshold))


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
    for suffix in ("tissue_seg", "cancer_prob", "visualization"):
        assert (d / f"{d.name}_{suffix}.png").is_file(), suffix
    assert not (d / f"{d.name}_fgt_mask.png").exists(), "the FGT mask is written once, as mask_fibroglandular"
    fgt = cv2.imread(str(d / "mask_fibroglandular.png"), cv2.IMREAD_UNCHANGED)
    image, _ = read_image(cbis_dicoms[4])
    assert fgt.shape == image.shape and set(np.unique(fgt)) <= {0, 255}
    assert (d / "mask_lesion.png").is_file() and not list(d.glob("prob_*.png"))
    timings = json.loads((d / "scores.json").read_text())["timings"]
    assert list(timings)[0] == "read" and {"tissue", "lesion", "run", "write", "total"} <= set(timings)
    assert timings["total"] >= max(timings["read"], timings["run"], timings["write"]) > 0


def _smooth_scores(k: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """float32 (k, h, w) softmax of smooth random fields: label regions with long boundaries."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 3, (k, size[0] // 8, size[1] // 8)).astype(np.float32)
    logits = np.stack([cv2.resize(c, size[::-1], interpolation=cv2.INTER_CUBIC) for c in coarse])
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shape", [(1500, 900), (130, 70)])  # upsampled; shrunk (INTER_AREA path)
def test_argmax_at_model_resolution_matches_the_restored_argmax(flip: bool, shape: tuple[int, int]) -> None:
    """The old way restored the (H, W, K) float map and took its argmax; `unframe_argmax` decides
    at model resolution and must give the same labels except on exact ties (here: none or a few)."""
    image = np.zeros(shape, np.float32)
    window = CropWindow(shape[0] // 10, shape[0] - 3, shape[1] // 7, shape[1], shape)
    _, framing = frame(image, (256, 128), window, flip)
    scores = _smooth_scores(4, (256, 128), seed=int(flip))
    old = unframe(np.ascontiguousarray(scores.transpose(1, 2, 0)), framing).argmax(axis=2)
    new = unframe_argmax(scores, framing)
    assert new.dtype == np.uint8 and new.shape == shape and len(np.unique(new)) == 4
    assert np.count_nonzero(new != old) <= 3
    assert (new[:window.y0] == 0).all() and (new[:, :window.x0] == 0).all()  # outside the window
    # a threshold as the argmax of (threshold, p): p > 0.5, as the restored map says
    planes = np.stack([np.full_like(scores[1], 0.5), scores[1]])
    sure = unframe_argmax(planes, framing) > 0
    restored = unframe(np.ascontiguousarray(scores[1]), framing) > 0.5
    assert np.count_nonzero(sure != restored) <= 3 and sure.any()
