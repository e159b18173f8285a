"""training.deepmica: the top-k loss, circle hits, the FROC operating points, and short real runs
on MIAS (pseudo-mask pictures, one engine epoch exported and reloaded, the ROI classifier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mammo.metrics import ImageDetections
from training.config import load_config
from training.deepmica.evaluate import MIN_RADIUS_MM, hits_of

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "deepmica_seg.yaml"


def test_topk_bce_keeps_positives_and_the_hardest_negatives() -> None:
    torch = pytest.importorskip("torch")
    from training.deepmica.task import topk_bce

    logits = torch.zeros(2, 1, 4, 4)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, 0] = 1.0                            # patch 0: one positive pixel
    logits[0, 0, 1, :] = torch.tensor([5.0, 4.0, 3.0, -9.0])  # its hardest negatives: 5, 4, 3
    logits[1, 0, 2, 2] = 7.0                            # patch 1: no positive, one very wrong pixel
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    loss = topk_bce(logits, target, k=3, min_negatives=1)
    kept = torch.cat([bce(torch.tensor([0.0, 5.0, 4.0, 3.0]), torch.tensor([1.0, 0, 0, 0]), reduction="none"),
                      bce(torch.tensor([7.0]), torch.tensor([0.0]), reduction="none")])
    assert float(loss) == pytest.approx(float(kept.mean()), rel=1e-6)
    everything = topk_bce(logits, target, k=3, min_negatives=16)  # more than there are: all pixels
    assert float(everything) == pytest.approx(float(bce(logits, target)), rel=1e-6)


def test_circle_hits_use_the_centroid_and_a_radius_floor() -> None:
    circles = [(100.0, 100.0, 30.0), (300.0, 300.0, 2.0)]  # the second is a 0.4 mm mark at 0.2 mm
    floor = MIN_RADIUS_MM / 0.2
    hits = hits_of([(120.0, 110.0), (300.0, 300.0 + floor - 0.5), (300.0, 300.0 + floor + 1), (10.0, 10.0)],
                   circles, 0.2)
    assert hits == [frozenset({0}), frozenset({1}), frozenset(), frozenset()]


def _film(image_id: str, n_circles: int):
    from training.deepmica.data import Film

    return Film(image_id, image_id, np.zeros((8, 8), np.float32), np.ones((8, 8), bool),
                circles=[(1.0, 1.0, 1.0)] * n_circles)


def test_operating_points_read_from_the_froc() -> None:
    from training.deepmica.measure import at_threshold, threshold_at

    films = [_film("a", 1), _film("b", 1), _film("n", 0)]
    dets = [ImageDetections(np.array([5.0, 2.0]), [frozenset({0}), frozenset()], 1),
            ImageDetections(np.array([1.0]), [frozenset({0})], 1),
            ImageDetections(np.array([4.0, 3.0]), [frozenset(), frozenset()], 0)]
    t = threshold_at(dets, 1.0)             # 3 films: up to 3 false clusters; 4, 3, 2 are false
    assert t == 1.0
    point = at_threshold(dets, films, t)
    assert point["sensitivity"] == 1.0 and point["hits"] == 2 and point["fp_per_film"] == 1.0
    assert point["fp_per_calc_film"] == 0.5 and point["fp_per_normal_film"] == 2.0
    strict = at_threshold(dets, films, threshold_at(dets, 0.34))  # one false cluster allowed: 4
    assert strict["threshold"] == 4.0 and strict["sensitivity"] == 0.5 and strict["fp_per_film"] == pytest.approx(1 / 3)


def _config(mias: Path, tmp_path: Path, **overrides):
    args = [f"data_root={mias}", f"out_dir={tmp_path}", *(f"{k}={v!r}" for k, v in overrides.items())]
    return load_config(CONFIG, args)


def test_pseudo_mask_pictures_of_the_validation_circles(shared_data: Path, tmp_path: Path) -> None:
    from training.deepmica.__main__ import pseudo_pictures

    config = _config(shared_data / "mias", tmp_path)
    assert pseudo_pictures(config, tmp_path / "pseudo", ("val",)) == 3  # 3 located CALC circles in val
    names = sorted(p.name for p in (tmp_path / "pseudo").iterdir())
    assert [n.split("_")[1] for n in names] == ["mdb219", "mdb236", "mdb253"]
    assert all(int(n.rsplit("_", 1)[1].removesuffix("px.png")) > 0 for n in names)  # every one has specks


@pytest.mark.timeout(900)  # a guard against a hang: about a minute on idle cores
def test_one_epoch_trains_exports_and_reloads(shared_data: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from training.engine import train
    from training.export import export_run

    config = _config(shared_data / "mias", tmp_path, name="tiny", epochs=1, batch_size=4, deepmica_positives=1,
                     deepmica_negatives=0.5, deepmica_val_normal=1, encoder_weights="")
    from training.deepmica.data import load_films

    train_films, val_films = load_films(config, "train", normal_limit=4), load_films(config, "val", normal_limit=1)
    result = train(config, tmp_path / "tiny", data=(train_films, val_films))
    assert result["n_train"] == 12 + 4 and result["n_val"] == 3 + 1
    assert set(result["val"]) >= {"sens_at_1fp", "fp_clusters_per_film", "dice_pseudo"}
    assert 0.0 <= result["val"]["score"] <= 1.25
    manifest = tmp_path / "manifest.yaml"
    entry = export_run(tmp_path / "tiny", "deepmica-seg", "deepmica", weights_dir=tmp_path / "weights",
                       manifest=manifest, val=val_films)
    assert entry["architecture"] == "unet/tu-tf_efficientnet_lite0" and entry["classes"] == ["calcification"]
    assert "pseudo-masks" in entry["training"]["data"]
    assert yaml.safe_load(manifest.read_text())["entries"][0]["name"] == "deepmica-seg"
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mammo.models.torch_deepmica import build_patch_unet

    exported = tmp_path / "weights" / "deepmica-seg.safetensors"
    with safe_open(str(exported), "pt") as handle:
        dtype = {"float16": torch.float16, "float32": torch.float32}[handle.metadata()["dtype"]]
    best = torch.load(tmp_path / "tiny" / "best.pt", weights_only=False)["model"]
    stored = load_file(exported)
    assert stored.keys() == best.keys()
    for key, value in best.items():  # the file holds exactly the best epoch, rounded to the stated dtype
        want = value.to(dtype) if value.is_floating_point() else value
        assert torch.equal(stored[key], want), key
    shipped, reference = build_patch_unet(config.encoder), build_patch_unet(config.encoder)
    shipped.load_state_dict({k: v.float() for k, v in stored.items()})
    reference.load_state_dict(best)
    # Random logits of a one-epoch network are fragile at single pixels, so compare probabilities on average.
    x = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        change = (shipped.eval()(x).sigmoid() - reference.eval()(x).sigmoid()).abs()
    assert float(change.mean()) < 0.005 and float(change.max()) < 0.1


def test_roi_classifier_learns_on_the_training_circles(shared_data: Path, tmp_path: Path) -> None:
    from training.deepmica.data import load_films
    from training.deepmica.roi import ROI_SIZE, predict, roi_records, roi_tensor, train_head

    config = _config(shared_data / "mias", tmp_path)
    records = roi_records([f for f in load_films(config, "val", normal_limit=0) if f.circles])
    assert [(r["id"], r["label"]) for r in records] == [("mdb219#0", 0), ("mdb236#0", 0), ("mdb253#0", 1)]
    rng = np.random.default_rng(0)
    x = roi_tensor(records[0], config.deepmica_work_mm, rng)
    assert x.shape == (ROI_SIZE, ROI_SIZE) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    model = train_head(records, config, epochs=1, augment=1)
    p = predict(model, records, config.deepmica_work_mm)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))


def test_real_masks_of_the_seed_layout_train_the_same_task(tmp_path: Path) -> None:
    """With INbreast / CBIS-DDSM masks (the seed's layout) the target is the real mask, brought to
    the working pixel size without losing single-pixel calcifications."""
    from test_datasets_deepmica import make_datasets

    from training.deepmica.data import load_films
    from training.deepmica.task import PatchSampler

    root = make_datasets(tmp_path)
    config = load_config(CONFIG, ["dataset=deepmica-png", f"data_root={root / 'INbreast'}", "split=''",
                                  "deepmica_source_mm=0.07", "deepmica_work_mm=0.1", "deepmica_positives=2"])
    films = load_films(config, "train")
    assert films and all(f.enhanced.shape == f.pseudo.shape for f in films)
    with_dots = [f for f in films if f.calc]
    assert with_dots and all(f.circles and f.pseudo.any() and not f.normal for f in with_dots)
    sampler = PatchSampler(films, config)
    assert len(sampler) == 2 * 2 * sum(len(f.circles) for f in films)  # positives, then as many negatives
    x, y = sampler[0]
    assert x.shape == y.shape == (1, 256, 256) and y.sum() > 0
