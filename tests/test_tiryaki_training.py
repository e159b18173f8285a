"""`python -m training.tiryaki`: the three stages trained on a tiny synthetic `folder` set (each in
a fresh process, as a user runs them), a time-budget stop and resume, the export into a separate
manifest, and the pipeline built from it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
STEMS = [f"f{i}" for i in range(8)]
SPLIT = {"f0": "train", "f1": "train", "f2": "train", "f3": "train", "f4": "val", "f5": "val", "f6": "test", "f7": "test"}


def make_films(root: Path) -> None:
    """8 films 128x96: a half-disc breast on the left, a bright blob (the lesion) in f0-f5 (odd
    ones malignant), a film label in the top-right corner; breast and lesion masks; labels.csv."""
    for sub in ("images", "masks", "masks/breast"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, stem in enumerate(STEMS):
        breast = np.zeros((128, 96), np.uint8)
        cv2.circle(breast, (0, 64), 55, 255, -1)
        lesion = np.zeros_like(breast)
        if i < 6:
            cv2.circle(lesion, (20 + 2 * i, 50 + 3 * i), 8 + (i % 2) * 3, 255, -1)
        image = np.where(breast > 0, 110, 5) + (lesion > 0) * 100 + rng.integers(0, 20, breast.shape)
        image[4:14, 80:92] = 250
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.clip(image, 0, 255).astype(np.uint8))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), lesion)
        cv2.imwrite(str(root / "masks" / "breast" / f"{stem}.png"), breast)
        rows.append([stem, int(i < 6 and i % 2 == 1), int(i < 6 and i % 2 == 0), stem])
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["image", "malignant_label", "benign_label", "patient_id"], *rows])
    with (root / "split.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["image_id", "patient_id", "split"], *([s, s, SPLIT[s]] for s in STEMS)])


def write_configs(tmp: Path, data: Path) -> dict[str, Path]:
    source = f"{{dataset: folder, root: {data}, split: {data / 'split.csv'}}}"
    common = f"sources: [{source}]\nbatch_size: 2\nthreads: 1\n"
    texts = {
        "breast": "architecture: unet5l-f4\ninput_size: [32, 32]\nepochs: 2\ntime_budget_min: 0.0001\n",
        "mass": f"architecture: unetpp-vgg16-f4\ninput_size: [32, 32]\nfrozen_until: block3_conv1\n"
                f"breast_run: {tmp / 'breast.yaml'}\nepochs: 1\n",
        "classifier": "architecture: classifier-vgg16\ninput_size: [32, 32]\nepochs: 1\n",
    }
    paths = {}
    for stage, text in texts.items():
        paths[stage] = tmp / f"{stage}.yaml"
        paths[stage].write_text(f"name: tiny-{stage}\nstage: {stage}\nrun_dir: {tmp / 'runs' / stage}\n{common}{text}")
    return paths


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def logged_epochs(run_dir: Path) -> list[str]:
    with (run_dir / "train_losses.csv").open() as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


def test_config_error_exits_2_without_tensorflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstage: breast\n")
    proc = subprocess.run([sys.executable, "-m", "training.tiryaki", "train", str(bad)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.filterwarnings("ignore")
def test_classifier_cross_validation_resumes(tmp_path: Path) -> None:
    """`cv`: patient-grouped folds over train + val (f0-f5: 3 benign, 3 malignant), an AUC row per
    epoch; a second run keeps the finished folds."""
    make_films(tmp_path / "data")
    configs = write_configs(tmp_path, tmp_path / "data")
    cv_dir = tmp_path / "runs" / "classifier" / "cv"
    run("-m", "training.tiryaki", "cv", str(configs["classifier"]), "--folds", "2", "--epochs", "2")
    with (cv_dir / "cv.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["n"] == "6" and rows[0]["n_malignant"] == "3"
    assert (cv_dir / "cv.png").is_file() and (cv_dir / "folds.npz").is_file()
    stamps = [(cv_dir / f"fold_{i}.npz").stat().st_mtime_ns for i in range(2)]
    second = run("-m", "training.tiryaki", "cv", str(configs["classifier"]), "--folds", "2", "--epochs", "2")
    assert [(cv_dir / f"fold_{i}.npz").stat().st_mtime_ns for i in range(2)] == stamps  # finished folds kept
    assert "out-of-fold ROI AUC, 6 ROIs (3 malignant)" in second.stdout


@pytest.mark.timeout(900)  # a hang guard: four trainings in subprocesses take ~4 min on 2 idle cores
def test_three_stages_train_resume_export_and_run(tmp_path: Path) -> None:
    make_films(tmp_path / "data")
    configs = write_configs(tmp_path, tmp_path / "data")
    breast_dir = tmp_path / "runs" / "breast"
    first = run("-m", "training.tiryaki", "train", str(configs["breast"]))
    assert "time budget spent" in first.stdout and (breast_dir / "backup").is_dir()
    assert logged_epochs(breast_dir) == ["1"]
    second = run("-m", "training.tiryaki", "train", str(configs["breast"]))
    assert "resuming from" in second.stdout and not (breast_dir / "backup").exists()
    assert logged_epochs(breast_dir) == ["1", "2"] and (breast_dir / "train_losses.png").is_file()
    for stage in ("mass", "classifier"):
        run("-m", "training.tiryaki", "train", str(configs[stage]))
        assert (tmp_path / "runs" / stage / "best.weights.h5").is_file(), stage
    cache = np.load(tmp_path / "runs" / "mass" / "cache" / "train.npz")
    assert cache["x"].shape == (4, 32, 32, 1) and cache["y"].max() == 1.0  # f0-f3, lesions framed in

    weights, manifest = tmp_path / "weights", tmp_path / "manifest.yaml"
    weights.mkdir()
    for stage in ("breast", "mass", "classifier"):
        run("-m", "training.tiryaki", "export", str(configs[stage]), "--weights-dir", str(weights),
            "--manifest", str(manifest))
    names = sorted(p.name for p in weights.iterdir())
    assert names == ["tiny-breast.weights.h5", "tiny-classifier.weights.h5", "tiny-mass.weights.h5"]
    # The pipeline looks for entries named tiryaki-*: rename the tiny ones in the test manifest.
    text = manifest.read_text().replace("name: tiny-", "name: tiryaki-")
    if "name: tiryaki-classifier" not in text:
        pytest.fail(text)
    manifest.write_text(text)
    code = (
        "import sys, numpy as np\n"
        "from mammo.io import read_image\n"
        "from mammo.pipelines import get_pipeline\n"
        "image, meta = read_image(sys.argv[1])\n"
        "result = get_pipeline('tiryaki-mass').run(image, meta)\n"
        "result.check_shapes(image.shape)\n"
        "assert 0.0 <= result.scores['malignant'] <= 1.0\n"
        "print('breast', float(result.masks['breast'].mean()))\n"
    )
    proc = run("-c", code, str(tmp_path / "data" / "images" / "f6.png"),
               MAMMO_WEIGHTS_MANIFEST=str(manifest), MAMMO_WEIGHTS_DIR=str(weights))
    assert "breast" in proc.stdout
