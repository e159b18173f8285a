"""GLAM end to end: training task + export, the `glam` pipeline, `python -m mammo.glam run`, eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_data

from mammo.preprocess.framing import breast_window_and_flip, frame


def _synthetic(n: int, seed: int = 0):
    """Blobs make an image malignant (bright disc) or benign (dark ring): labels only, no masks."""
    from training.glam_task import LabelledImages

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        x = (0.3 + 0.05 * rng.random((128, 96))).astype(np.float32)
        kind = i % 3  # 0 normal, 1 benign, 2 malignant
        cy, cx = rng.integers(20, 108), rng.integers(20, 76)
        if kind == 2:
            cv2.circle(x, (int(cx), int(cy)), 8, 0.95, -1)
        elif kind == 1:
            cv2.circle(x, (int(cx), int(cy)), 8, 0.05, 3)
        xs.append(x[None])
        ys.append([float(kind == 1), float(kind == 2)])
    x = np.stack(xs)
    return LabelledImages(x, np.asarray(ys, np.float32), [f"s{i}" for i in range(n)],
                          np.ones((n,) + x.shape[-2:], np.uint8))


@pytest.mark.parametrize("scheme", ["joint", "sep"])
def test_glam_training_resume_and_export(tmp_path: Path, scheme: str) -> None:
    from mammo.models.torch_glam_predictor import GlamPredictor
    from mammo.weights import load_manifest
    from training.config import TrainConfig
    from training.engine import train
    from training.export import export_run

    cfg = TrainConfig(name="tiny-glam", task="glam", dataset="mias", input_size=[128, 96], epochs=2,
                      batch_size=4, lr=2e-3, t0=4, t_mult=1, glam_scheme=scheme, glam_global_epochs=1,
                      glam_global_width=8, glam_num_patches=2, glam_patch_size=[32, 32],
                      out_dir=str(tmp_path), val_overlays=2)
    data = (_synthetic(12), _synthetic(9, seed=1))
    run = tmp_path / "tiny-glam"
    first = train(cfg, run, data=data)
    assert first["n_train"] == 12 and {"auc_benign", "auc_malignant", "score"} <= set(first["val"])
    cfg.epochs = 3
    final = train(cfg, run, resume=True, data=data)
    assert [m["epoch"] for m in final["history"]] == [0, 1, 2]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("entries: []\n")
    entry = export_run(run, f"glam-{scheme}", "glam", weights_dir=tmp_path / "w", manifest=manifest, val=data[1])
    assert entry["architecture"] == f"glam/{scheme}" and entry["classes"] == ["benign", "malignant"]
    assert load_manifest(manifest)[f"glam-{scheme}"].framework == "torch"
    predictor = GlamPredictor(tmp_path / "w" / f"glam-{scheme}.safetensors")
    pred = predictor.predict(data[1].x[0, 0])
    assert pred.scores.shape == (2,) and pred.maps.shape == (2, 128, 96)
    assert 0 <= pred.maps.min() and pred.maps.max() <= 1 and pred.patch_locations.shape == (2, 2)


def test_patch_boxes_map_back_onto_the_original() -> None:
    from mammo.pipelines.glam import box_to_original

    image = np.zeros((900, 700), np.float32)
    image[100:850, 250:700] = 0.5  # a breast touching the right edge: the frame flips it
    image[400:430, 500:540] = 1.0  # a marker
    window, flip = breast_window_and_flip(image, 0.02)
    x, framing = frame(image, (256, 160), window, flip, clip_limit=0, median_ksize=1)
    assert flip
    ys, xs = np.nonzero(x > 0.9)
    top, left = int(ys.min()), int(xs.min())
    size = (int(ys.max()) - top + 1, int(xs.max()) - left + 1)
    y0, x0, y1, x1 = box_to_original(top, left, size, framing)
    assert abs(y0 - 400) <= 3 and abs(y1 - 430) <= 3 and abs(x0 - 500) <= 3 and abs(x1 - 540) <= 3


def test_glam_pipeline_on_mias_and_a_dicom(cbis_dicoms: list[Path]) -> None:
    from mammo.io import read_image
    from mammo.pipelines.registry import get_pipeline

    mias = require_data("mias")
    pipe = get_pipeline("glam")
    image, meta = read_image(next(p for p in sorted(mias.glob("mdb*.p*g"))))
    result = pipe.run(image, meta)
    result.check_shapes(image.shape)
    assert set(result.scores) == {"benign", "malignant"} and all(0 <= v <= 1 for v in result.scores.values())
    assert set(result.saliency) == {"benign", "malignant"} and result.masks["lesion"].dtype == bool
    assert len(result.patches) == 6
    assert all(0 <= p.y0 < p.y1 <= image.shape[0] and 0 <= p.x0 < p.x1 <= image.shape[1] for p in result.patches)
    # Speed is a benchmark (`python -m training.measure_glam`), not a limit in this test.
    image, meta = read_image(cbis_dicoms[0])
    result = pipe.run(image, meta)
    result.check_shapes(image.shape)
    assert set(result.scores) == {"benign", "malignant"} and len(result.patches) == 6


@pytest.mark.parametrize("scheme", ["sep", "joint"])
def test_no_patch_outside_the_breast(scheme: str, cbis_dicoms: list[Path]) -> None:
    """Every patch is at least half breast, on every MIAS validation film and every example DICOM
    (GLAM once put 2 of its 6 patches in the black background)."""
    from mammo.datasets import load_dataset
    from mammo.io import read_image
    from mammo.pipelines.registry import get_pipeline
    from mammo.preprocess import breast_mask
    from training.measure_glam import patches_outside

    pipe = get_pipeline(f"glam:{scheme}")
    images = [(s.image, s.meta, s.image_id) for s in load_dataset("mias", require_data("mias"), split="val")]
    images += [(*read_image(p), p.stem) for p in cbis_dicoms]
    bad = {}
    for image, meta, name in images:
        result = pipe.run(image, meta)
        if patches_outside(result, breast_mask(image)):
            bad[name] = [(p.y0, p.x0, p.y1, p.x1) for p in result.patches]
    assert not bad, bad


def test_glam_run_reproduces_the_authors_flow(tmp_path: Path) -> None:
    from mammo.glam.run import PREDICTION_COLUMNS, main

    sample = require_data("glam_sample")
    out = tmp_path / "out"
    assert main(["run", str(sample), str(out), "--model", "joint"]) == 0
    with (out / "predictions.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == PREDICTION_COLUMNS
    assert [r["image_index"] for r in rows] == ["0_L-CC", "0_R-CC", "0_L-MLO", "0_R-MLO"]
    assert [r["benign_label"] for r in rows] == ["0", "1", "0", "1"]  # right breast: benign finding
    assert all(0 <= float(r["malignant_pred"]) <= 1 for r in rows)
    assert (out / "data.pkl").is_file() and len(list((out / "cropped_images").glob("*.png"))) == 4
    from mammo.glam.exam_list import read_exam_list

    assert "best_center" in read_exam_list(out / "data.pkl")[0]["L-CC"][0] or \
        read_exam_list(out / "data.pkl")[0].get("best_center")
    picture = cv2.imread(str(out / "visualization" / "0_R-CC.png"))
    crop = cv2.imread(str(out / "cropped_images" / "0_R-CC.png"), cv2.IMREAD_UNCHANGED)
    panel = round(crop.shape[1] * 1024 / crop.shape[0])  # each image panel is 1024 px high
    assert picture is not None and picture.shape[1] >= 4 * panel  # four image panels + the patches
    # the benign ground truth of the right breast is drawn (green outline) on the first panel
    first = picture[:, :panel]
    green = (first[:, :, 1] > 200) & (first[:, :, 0] < 120) & (first[:, :, 2] < 120)
    assert green.sum() > 50


def test_glam_through_eval_gives_auc_with_ci(tmp_path: Path) -> None:
    from eval.cli import main

    mias = require_data("mias")
    out = tmp_path / "ev"
    main(["--pipeline", "glam", "--dataset", f"mias:{mias}", "--split", "val", "--limit", "8", "--out",
          str(out), "--quiet", "--resamples", "100", "--no-report"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pipeline"] == "glam" and metrics["n_errors"] == 0
    assert set(metrics["classification"]) == {"malignant", "benign"}
    assert "lesion" in metrics["segmentation"]
    ece = metrics["classification"]["malignant"]["calibration"]["ece"]["mean"]
    assert ece is not None and 0 <= ece <= 1


def test_pretraining_on_outlines_learns_the_lesion_map() -> None:
    """The cdd-cesm pretraining task: the malignant saliency learns to cover the masks."""
    from mammo.models.frameworks import import_torch
    from training.config import TrainConfig
    from training.glam_task import GlamTask, LabelledImages, pretrain_loss, validate_pretrain

    torch = import_torch()
    torch.manual_seed(0)
    data = _synthetic(12)
    masks = (data.x[:, 0] > 0.9).astype(np.uint8)  # the bright discs
    data = LabelledImages(data.x, data.y, data.ids, data.breast, masks)
    cfg = TrainConfig(name="pre", task="glam", dataset="cdd-cesm", input_size=[128, 96], glam_global_width=8,
                      glam_num_patches=2, glam_patch_size=[32, 32])
    task = GlamTask(cfg)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, m = torch.from_numpy(data.x), torch.from_numpy(masks.astype(np.float32))
    first = float(pretrain_loss(model, x, m))
    for _ in range(40):
        loss = pretrain_loss(model.train(), x, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    assert set(validate_pretrain(model, data)) == {"dice_lesion", "score"}


def test_calibration_is_fitted_into_the_manifest_and_applied(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from mammo.pipelines.glam import GlamPipeline
    from mammo.weights import load_manifest, manifest_path
    from training.measure_glam import calibrate

    manifest = tmp_path / "weights_manifest.yaml"
    shutil.copy(manifest_path(), manifest)
    monkeypatch.setenv("MAMMO_WEIGHTS_MANIFEST", str(manifest))
    rng = np.random.default_rng(1)
    labels = (rng.random((60, 2)) < 0.25).astype(int)
    raw = np.clip(0.15 + 0.1 * labels + rng.normal(0, 0.05, (60, 2)), 0.01, 0.99)  # low, squeezed scores
    fitted = calibrate("glam-sep", {"raw": raw, "labels": labels}, "val")
    entry = load_manifest(manifest)["glam-sep"]
    assert entry.calibration is not None and set(entry.calibration.classes) == {"benign", "malignant"}
    assert fitted["malignant"]["temperature"] == pytest.approx(entry.calibration.classes["malignant"].temperature)
    pipe = GlamPipeline.__new__(GlamPipeline)  # only the calibration step, no network
    pipe.calibration = dict(entry.calibration.classes)
    out = pipe.calibrate(np.array([0.15, 0.25], np.float32))
    assert out["malignant"] > 0.25 * 2 and 0 < out["benign"] < 0.5  # spread out, still probabilities
    assert "fitted_on: mini-MIAS val split (60 images)" in manifest.read_text()  # the copy was written
