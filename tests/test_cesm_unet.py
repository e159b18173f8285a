"""`cesm-unet`: the INI config parser, train/evaluate/infer through the CLI on real images, the
pipeline in the original geometry, and cascade + cesm-unet (torch + tensorflow) in one process.

Everything that imports tensorflow runs in a subprocess (see `mammo.models.frameworks`), so this
file never changes the import order of the test process itself.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mammo.pipelines.cesm_unet_config import ConfigError, load_config
from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs" / "cesm_unet"

TINY = """\
[model]
model          = "TensorflowUNet"
image_width    = 64
image_height   = 64
image_channels = 2
num_classes    = 1
base_filters   = 4
base_kernels   = (5,5)
num_layers     = 3
dilation       = (1,1)
dropout_rate   = 0.05
learning_rate  = 0.001
loss           = "bce_dice_loss"
metrics        = ["dice_coef"]
generator      = True

[train]
images_dir     = "{root}/train/images"
masks_dir      = "{root}/train/masks"
epochs         = 2
batch_size     = 2
patience       = 10
reducer_factor = 0.4
reducer_patience = 4
epoch_change_infer = True
epoch_change_infer_dir = "{root}/epoch_change_infer"
num_infer_images = 2
model_dir      = "{root}/models"
eval_dir       = "{root}/eval"
save_weights_only = False
threads        = 2

[eval]
images_dir     = "{root}/train/images"
masks_dir      = "{root}/train/masks"

[infer]
images_dir     = "{root}/train/images"
output_dir     = "{root}/infer_out"

[mask]
binarize       = True
threshold      = 127

[segmentation]
binarize       = True
threshold      = 127
"""
TRAIN_IMAGES = ("P105_R_CM_CC", "P105_R_DM_CC", "P105_R_CM_MLO", "P105_R_DM_MLO")


def run_python(args: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` at the repo root; the output is kept for the failure message."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 0 (139 would be the tensorflow-before-torchvision segfault)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"


def write(tmp_path: Path, text: str, name: str = "c.config") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- config ------------------------------------------------------------------------------------

@pytest.fixture()
def tiny_text(tmp_path: Path) -> str:
    return TINY.format(root=tmp_path)


def test_shipped_configs_parse() -> None:
    published = load_config(CONFIGS / "train_eval_infer.config")
    m, t = published["model"], published["train"]
    assert (m["base_filters"], m["base_kernels"], m["num_layers"], m["dilation"]) == (16, (9, 9), 8, (1, 1))
    assert (m["learning_rate"], m["loss"], m["metrics"]) == (1e-4, "bce_dice_loss", ["dice_coef"])
    assert (t["reducer_factor"], t["reducer_patience"], t["patience"]) == (0.4, 4, 10)
    cpu = load_config(CONFIGS / "train_eval_infer_cpu.config")
    assert cpu["train"]["dataset"] == "cdd-cesm" and cpu["eval"]["split"] == "val"
    shipped = REPO / "weights" / "cesm-unet.config"
    if shipped.is_file():
        assert load_config(shipped)["model"] == cpu["model"]


@pytest.mark.parametrize("old,new,expected", [
    ("[mask]", "[masks]", r"\[masks\]: unknown section"),
    ("num_classes    = 1", "num_classes    = 1\nnum_filters = 3", r"\[model\] num_filters: unknown key"),
    ("base_filters   = 4\n", "", r"\[model\] base_filters: missing required key"),
    ("base_kernels   = (5,5)", "base_kernels   = (5,5", r"\[model\] base_kernels: cannot read .* \(9,9\)"),
    ("base_kernels   = (5,5)", "base_kernels   = 5", r"\[model\] base_kernels: got 5; expected a tuple"),
    ("epochs         = 2", "epochs         = __import__('os').getcwd()", r"\[train\] epochs: cannot read"),
    ('loss           = "bce_dice_loss"', "loss = bce_dice_loss", r"\[model\] loss: cannot read"),
    ('masks_dir      = "{root}/train/masks"\nepochs', "epochs", r"\[train\] masks_dir: images_dir is set"),
])
def test_config_errors_name_file_section_key(tmp_path: Path, tiny_text: str, old: str, new: str,
                                              expected: str) -> None:
    old, new = old.replace("{root}", str(tmp_path)), new.replace("{root}", str(tmp_path))
    assert old in tiny_text
    path = write(tmp_path, tiny_text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_cli_reports_config_error_without_tensorflow(tmp_path: Path, tiny_text: str) -> None:
    path = write(tmp_path, tiny_text.replace("[model]", "[model]\ncolour = 3", 1))
    proc = run_python(["-m", "training.cesm_unet", "train", str(path)], timeout=60)
    assert proc.returncode == 2 and "[model] colour: unknown key" in proc.stderr


# -- train, evaluate, infer on real images -------------------------------------------------------

def copy_images(tmp_path: Path) -> None:
    """Four CDD-CESM training images (one patient, DM and CM) and their masks, as a folder pair."""
    root = require_data("cdd_cesm")
    for sub in ("images", "masks"):
        (tmp_path / "train" / sub).mkdir(parents=True)
        for stem in TRAIN_IMAGES:
            shutil.copy(root / sub / f"{stem}.jpg", tmp_path / "train" / sub / f"{stem}.jpg")


def test_train_evaluate_infer_cli(tmp_path: Path, tiny_text: str) -> None:
    copy_images(tmp_path)
    config = write(tmp_path, tiny_text)
    assert_ok(run_python(["-m", "training.cesm_unet", "train", str(config)]))
    assert (tmp_path / "models" / "best.keras").is_file()
    for name in ("train_metrics", "train_losses"):
        assert (tmp_path / "eval" / f"{name}.csv").is_file() and (tmp_path / "eval" / f"{name}.png").is_file()
    with (tmp_path / "eval" / "train_losses.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]
    grids = sorted(p.name for p in (tmp_path / "epoch_change_infer").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png"]
    code = ("import sys; from training.cesm_unet.__main__ import main; "
            f"sys.exit(main(['evaluate', {str(config)!r}]) or main(['infer', {str(config)!r}]))")
    assert_ok(run_python(["-c", code]))
    with (tmp_path / "eval" / "evaluation.csv").open() as handle:
        rows = dict(csv.reader(handle))
    assert set(rows) == {"loss", "dice_coef"} and 0 <= float(rows["dice_coef"]) <= 1
    import cv2

    for stem in TRAIN_IMAGES:
        mask = cv2.imread(str(tmp_path / "infer_out" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        image = cv2.imread(str(tmp_path / "train" / "images" / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == image.shape and set(mask.ravel()) <= {0, 255}


def test_time_budget_stop_then_resume(tmp_path: Path, tiny_text: str) -> None:
    """Each run stops after one epoch (a tiny budget), keeps its backup, and the same command
    resumes at the next epoch; the logs continue; the finished run removes its backup."""
    copy_images(tmp_path)
    text = tiny_text.replace("epochs         = 2", "epochs         = 3\ntime_budget_min = 0.0001")
    text = text.replace("epoch_change_infer = True", "epoch_change_infer = False")
    config = write(tmp_path, text)
    backup = tmp_path / "models" / "backup"
    for epochs_logged in (["1"], ["1", "2"], ["1", "2", "3"]):
        proc = run_python(["-m", "training.cesm_unet", "train", str(config)])
        assert_ok(proc)
        with (tmp_path / "eval" / "train_losses.csv").open() as handle:
            assert [row["epoch"] for row in csv.DictReader(handle)] == epochs_logged
        assert backup.is_dir() == (len(epochs_logged) < 3), proc.stdout[-2000:]
    assert "resuming from" in proc.stdout


# -- the pipeline, with the torch pipelines in the same process ----------------------------------

BOTH = """
import sys
import numpy as np
from mammo import demo
from mammo.io import read_image
from mammo.pipelines.registry import get_pipeline

dicom, cesm = sys.argv[1], sys.argv[2]
# cesm-unet first: tensorflow is loaded before cascade needs torchvision/smp, the risky order
unet = get_pipeline("cesm-unet")
cascade = get_pipeline("cascade")
image, meta = read_image(dicom)
for pipe in (unet, cascade):
    result = pipe.run(image, meta)
    result.check_shapes(image.shape)
    assert result.masks["lesion"].dtype == bool, pipe.name
real, real_meta = read_image(cesm)
result = unet.run(real, real_meta)
assert result.masks["lesion"].shape == real.shape and result.geometry["image_type"] == "CM"
assert 0 <= result.probabilities["lesion"].min() and result.probabilities["lesion"].max() <= 1
for name in ("cesm-unet", "cascade"):  # the app's own path, on the smaller CDD-CESM image
    pred = demo.run_pipeline(name, real, real_meta, "P102_R_CM_CC.jpg")
    assert pred.result.masks["lesion"].shape == real.shape
print("ok")
"""


def test_cesm_unet_and_cascade_in_one_process(cbis_dicoms: list[Path]) -> None:
    weights = REPO / "weights" / "cesm-unet.weights.h5"
    if not weights.is_file():
        pytest.skip("weights/cesm-unet.weights.h5 is not bundled")
    cesm = require_data("cdd_cesm") / "images" / "P102_R_CM_CC.jpg"
    proc = run_python(["-c", BOTH, str(cbis_dicoms[0]), str(cesm)])
    assert_ok(proc)
    assert proc.stdout.strip().endswith("ok")
