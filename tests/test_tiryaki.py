"""`tiryaki-mass`: framing, mass finding and the pipeline's logic (with stand-in networks, no
tensorflow), the Keras builders, the training config and the fp16 export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo.io.meta import ImageMeta
from mammo.pipelines.tiryaki import TiryakiPipeline, find_masses
from mammo.pipelines.tiryaki_prep import clean_mask, mass_input, roi_input, roi_window
from mammo.preprocess.breast import CropWindow


def film(h: int = 400, w: int = 300, right: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A bright half-disc breast against the left (or right) edge, a label blob in a corner."""
    yy, xx = np.mgrid[:h, :w]
    cx = w - 1 if right else 0
    breast = (yy - h / 2) ** 2 + (xx - cx) ** 2 < (0.45 * h) ** 2
    image = np.where(breast, 0.6, 0.02).astype(np.float32)
    image[5:25, (w - 40 if not right else 10):(w - 10 if not right else 40)] = 1.0  # a film label
    return image, breast


class Net:
    """A stand-in network: `fn(batch)` on (N, h, w, 1) input of `input_size`."""

    def __init__(self, size: tuple[int, int], fn) -> None:
        self.input_size, self.fn, self.calls = size, fn, []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:3] == self.input_size and batch.dtype == np.float32
        self.calls.append(batch)
        return self.fn(batch)


def test_clean_mask_keeps_largest_component_and_fills_holes() -> None:
    binary = np.zeros((50, 50), bool)
    binary[10:40, 10:40] = True
    binary[20:25, 20:25] = False  # a hole
    binary[0:3, 45:48] = True      # a speck
    out = clean_mask(binary)
    assert out[22, 22] and not out[1, 46] and out.sum() == 900


def test_mass_input_zeroes_background_crops_and_flips() -> None:
    image, breast = film(right=True)
    x, framing = mass_input(image, breast, (64, 64))
    assert x.shape == (64, 64, 1) and x.dtype == np.float32
    assert framing.flipped  # chest wall on the right -> turned to the left
    w = framing.window
    assert w.y1 - w.y0 < image.shape[0] and w.x1 - w.x0 < image.shape[1]  # cropped to the breast
    label_only = image.copy()
    label_only[breast] = 0.0
    x_label, _ = mass_input(label_only, breast, (64, 64))
    assert np.ptp(x_label) == 0.0  # the film label outside the breast is gone: a flat input


def test_roi_window_scales_with_the_mass_but_not_below_the_minimum() -> None:
    box = CropWindow(0, 1000, 0, 500, (1000, 1000))
    y0, x0, side = roi_window(500, 250, 200, box)
    assert side == 320 and (y0, x0) == (340, 90)
    assert roi_window(500, 250, 10, box)[2] == 80  # 8% of the box's long side


def test_roi_input_pads_outside_the_image_and_stretches() -> None:
    image = np.full((100, 100), 0.3, np.float32)
    image[40:60, 40:60] = 0.8
    roi = roi_input(image, -50, -50, 100, 32)
    assert roi.shape == (32, 32, 1) and roi.min() == 0.0 and roi.max() == 1.0
    assert roi[:16, :16].max() == 0.0  # padding, darker than any tissue


def test_find_masses_orders_by_detection_and_drops_specks() -> None:
    prob = np.zeros((100, 100), np.float32)
    prob[10:30, 10:30] = 0.7
    prob[50:80, 50:80] = 0.9
    prob[5, 90] = 0.99  # one pixel
    masses, labels = find_masses(prob, 0.5, min_area=4)
    assert [m["box"] for m in masses] == [(50, 50, 80, 80), (10, 10, 30, 30)]
    assert masses[0]["detection"] == pytest.approx(0.9) and masses[0]["area"] == 900
    assert labels[5, 90] > 0 and all(m["component"] != labels[5, 90] for m in masses)


def test_pipeline_reports_each_mass_and_the_highest_malignancy() -> None:
    image, breast = film()

    def breast_fn(batch):
        return (batch > 0.1).astype(np.float32)  # bright = breast

    def mass_fn(batch):
        out = np.zeros_like(batch)
        out[:, 20:30, 26:36] = 0.95  # two blobs inside the breast frame
        out[:, 40:44, 28:32] = 0.6
        return out

    def classify(batch):
        return np.array([[0.2], [0.7]][:len(batch)], np.float32)

    classifier = Net((32, 32), classify)
    pipe = TiryakiPipeline(Net((64, 48), breast_fn), Net((64, 64), mass_fn), classifier)
    result = pipe.run(image, ImageMeta())
    result.check_shapes(image.shape)
    assert result.masks["breast"].dtype == bool
    assert np.mean(result.masks["breast"] == breast) > 0.97
    assert not result.masks["breast"][10, -20]  # the film label is not breast
    masses = result.geometry["masses"]
    assert len(masses) == 2 and masses[0]["detection"] > masses[1]["detection"]
    assert [p.score for p in result.patches] == pytest.approx([0.2, 0.7])
    assert result.scores["malignant"] == pytest.approx(0.7)
    assert result.scores["benign"] == pytest.approx(0.3)
    assert len(classifier.calls) == 1 and classifier.calls[0].shape == (2, 32, 32, 1)
    assert not (result.masks["lesion"] & ~result.masks["breast"]).any()
    assert set(result.timings) == {"breast", "mass", "classify"}


def test_pipeline_without_masses_scores_zero() -> None:
    image, _ = film()
    classifier = Net((32, 32), lambda b: np.ones((len(b), 1), np.float32))
    pipe = TiryakiPipeline(Net((64, 48), lambda b: (b > 0.1).astype(np.float32)),
                           Net((64, 64), np.zeros_like), classifier)
    result = pipe.run(image, ImageMeta())
    assert result.scores["malignant"] == 0.0 and not result.patches and not result.masks["lesion"].any()
    assert not classifier.calls


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from training.tiryaki.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("name: x\nstage: breast\narchitecture: unet5l-f16\ninput_size: [64, 48]\nrun_dir: r\n"
                    "sources: [{dataset: mias, root: m, colour: red}]\n")
    with pytest.raises(ValueError, match="colour"):
        load_config(path)
    path.write_text(path.read_text().replace(", colour: red", "").replace("stage: breast", "stage: lungs"))
    with pytest.raises(ValueError, match="stage must be one of"):
        load_config(path)


def test_shipped_configs_parse() -> None:
    from mammo.models.keras_tiryaki import parse_architecture
    from training.tiryaki.config import load_config
    from training.tiryaki.measure import CONFIGS

    repo = Path(__file__).parents[1]
    stages = {load_config(repo / path).stage for path in CONFIGS.values()}
    assert stages == {"breast", "mass", "classifier"}
    configs = sorted((repo / "training" / "configs").glob("tiryaki_*.yaml"))
    assert len(configs) == 6  # the three shipped networks and the paper's comparison networks
    for path in configs:
        config = load_config(path)
        kind, encoder, _ = parse_architecture(config.architecture)
        assert kind == {"breast": "unet5l", "mass": "unetpp", "classifier": "classifier"}[config.stage], path
        assert not (config.pretrained and encoder in ("xception", "inceptionv3", "resnet50v2")), path
        if config.stage == "mass":
            assert load_config(repo / config.breast_run).stage == "breast"


# -- Keras -------------------------------------------------------------------------------------------

def test_builders_shapes_and_pretrained_encoder() -> None:
    from mammo.models import keras_tiryaki as kt
    from mammo.models.pretrained import vgg16_kernels_bgr

    unet = kt.build_unet5l(64, 48)
    assert unet.output_shape == (None, 64, 48, 1)
    model = kt.build_unetpp(64, 64, "vgg16", pretrained=True, frozen_until="block3_conv1")
    assert model.output_shape == (None, 64, 64, 1)
    encoder = model.get_layer("vgg16_encoder")
    kernel, _ = vgg16_kernels_bgr()[4]  # block3_conv1
    np.testing.assert_array_equal(encoder.get_layer("block3_conv1").get_weights()[0], kernel)
    assert not encoder.get_layer("block2_conv2").trainable and encoder.get_layer("block3_conv1").trainable
    classifier = kt.build_from_architecture("classifier-vgg16", (32, 32))
    assert classifier.output_shape == (None, 1)
    with pytest.raises(ValueError, match="no offline ImageNet Xception"):
        kt.build_unetpp(64, 64, "xception", pretrained=True)
    with pytest.raises(ValueError, match="unknown tiryaki architecture"):
        kt.build_from_architecture("unet7l", (64, 64))


def test_fp16_copy_loads_into_the_float32_network(tmp_path: Path) -> None:
    from mammo.models.keras_tiryaki import KerasNet, build_unet5l
    from training.tiryaki.export import fp16_copy

    model = build_unet5l(32, 32, top_filters=4)
    model.save_weights(str(tmp_path / "a.weights.h5"))
    fp16_copy(tmp_path / "a.weights.h5", tmp_path / "b.weights.h5")
    import h5py

    with h5py.File(tmp_path / "b.weights.h5") as f:
        dtypes = {f[k].dtype for k in _datasets(f)}
    assert dtypes == {np.dtype("float16"), np.dtype("float32")}  # kernels halved, BN/bias kept
    x = np.random.default_rng(0).random((2, 32, 32, 1), np.float32)
    a = KerasNet(model)(x)
    b = KerasNet.load("unet5l-f4", (32, 32), str(tmp_path / "b.weights.h5"))(x)
    assert np.abs(a - b).max() < 0.01 and not np.array_equal(a, b)


def _datasets(handle) -> list[str]:
    import h5py

    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def test_cv_folds_keep_patients_together() -> None:
    from training.tiryaki.cv import folds, patient_of
    from training.tiryaki.data import Roi

    box = CropWindow(0, 10, 0, 10, (10, 10))
    rois = [Roi(np.zeros((10, 10), np.uint8), box, 5, 5, 4, i % 2, f"mdb{n:03d}", "CIRC")
            for i, n in enumerate(range(1, 41))]
    assert patient_of(rois[0]) == patient_of(rois[1]) == "mias_001" and patient_of(rois[2]) == "mias_002"
    held = folds(rois, 4, seed=0)
    assert sorted(np.concatenate(held).tolist()) == list(range(40))
    for fold in held:
        inside = {patient_of(rois[i]) for i in fold}
        outside = {patient_of(r) for j, r in enumerate(rois) if j not in set(fold.tolist())}
        assert not inside & outside
