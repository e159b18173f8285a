"""`deepmica`: tiling and stitching, the pipeline's logic with stand-in networks, SHAP only on
request, the torch builders (shapes, packaged ImageNet weights really loaded) and loading from
manifest entries. No trained weights: every network here is random or a stand-in."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mammo.export import write_result
from mammo.io.meta import ImageMeta
from mammo.pipelines import deepmica as D
from mammo.pipelines import deepmica_roi as R
from mammo.preprocess import tiling as T
from mammo.pipelines.base import Pipeline, Result

PLANTED = {"A": [(200, 100), (208, 110), (196, 115), (212, 98)], "B": [(300, 60), (306, 70), (296, 72)]}
LONE = (420, 150)
SPACING = ImageMeta(pixel_spacing_mm=(0.2, 0.2), sources={"pixel_spacing_mm": "PixelSpacing"})


def scene(h: int = 600, w: int = 700) -> np.ndarray:
    """A half-disc breast on the left, two planted clusters of 3x3 bright specks and a lone one;
    the right third of the image is black (its patches must be skipped)."""
    yy, xx = np.mgrid[:h, :w]
    breast = (yy - h / 2) ** 2 + xx ** 2 < (0.45 * h) ** 2
    noise = 0.005 * np.random.default_rng(0).standard_normal((h, w))
    image = np.where(breast, 0.45 + noise, 0.0).astype(np.float32)
    for r, c in PLANTED["A"] + PLANTED["B"] + [LONE]:
        image[r - 1:r + 2, c - 1:c + 2] = 0.95
    return np.clip(image, 0, 1)


class SpeckNet:
    """Stand-in UNet: logit +10 on bright specks (white top-hat > 0.2), else -10; keeps its inputs."""

    input_size = T.PATCH

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1:] == (1, T.PATCH, T.PATCH)
        self.inputs.append(x)
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
        tophat = np.stack([cv2.morphologyEx(p, cv2.MORPH_TOPHAT, disc) for p in x[:, 0]])
        return np.where(tophat > 0.2, 10.0, -10.0).astype(np.float32)[:, None]


class FixedClassifier:
    """Stand-in ROI classifier: the k-th ROI of a call gets `logits[k]`."""

    input_size = 32

    def __init__(self, logits: list[float]) -> None:
        self.logits, self.inputs = logits, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.shape[1:] == (1, 32, 32) and 0 <= x.min() and x.max() <= 1
        self.inputs.append(x)
        return np.asarray(self.logits[:len(x)], np.float32)[:, None]


# --- tiling and stitching ----------------------------------------------------------------------

def test_tile_origins_cover_with_the_overlap() -> None:
    assert T.tile_origins(100) == [0] and T.tile_origins(256) == [0]
    for length in (257, 448, 600, 1000, 4084):
        starts = T.tile_origins(length)
        assert starts[0] == 0 and starts[-1] + T.PATCH == length
        assert all(0 < b - a <= T.PATCH - T.OVERLAP for a, b in itertools.pairwise(starts))
    assert T.tile_origins(448) == [0, 192]
    with pytest.raises(ValueError):
        T.tile_origins(600, overlap=T.PATCH)


@pytest.mark.parametrize(("shape", "overlap"), [((700, 530), 64), ((700, 530), 0), ((100, 300), 64)])
def test_stitching_identity_patches_gives_the_image(shape: tuple[int, int], overlap: int) -> None:
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    origins = T.tile_grid(shape, overlap=overlap)
    padded = T.pad_to_patch(image)
    patches = np.stack([padded[y:y + T.PATCH, x:x + T.PATCH] for y, x in origins])
    out = T.stitch(patches, origins, shape, overlap=overlap)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-6)


def test_overlaps_are_crossfaded() -> None:
    origins = T.tile_grid((256, 448))
    assert origins == [(0, 0), (0, 192)]
    halves = np.stack([np.zeros((256, 256), np.float32), np.ones((256, 256), np.float32)])
    out = T.stitch(halves, origins, (256, 448))
    row = out[128]
    assert np.all(row[:192] == 0) and np.all(row[256:] == 1)  # one patch alone: its value, unweighted
    fade = row[192:256]
    assert np.all(np.diff(fade) > 0) and 0 < fade[0] < 0.05 and 0.95 < fade[-1] < 1
    assert abs(fade[31] + fade[32] - 1) < 1e-6  # symmetric about the overlap's middle
    window = T.blend_window()
    assert window[128, 128] == 1 and window[0, 0] < window[0, 128] < window[32, 128]


def test_black_patches_are_not_run_and_stay_zero() -> None:
    image = scene()
    net = SpeckNet()
    prob, counts = D.segment(net, image)
    seen = np.concatenate(net.inputs)
    assert counts["patches_run"] == len(seen) > 0 and counts["patches_skipped"] > 0
    assert counts["patches_run"] + counts["patches_skipped"] == len(T.tile_grid(image.shape))
    assert seen.reshape(len(seen), -1).max(axis=1).min() > 0  # no all-black patch reached the net
    assert prob.shape == image.shape and prob.dtype == np.float32 and np.all(prob[:, 560:] == 0)
    assert prob[200, 100] > 0.99 and prob[150, 150] < 0.01


# --- the pipeline with stand-ins ---------------------------------------------------------------

def test_pipeline_finds_the_planted_clusters_and_scores_them() -> None:
    image = scene()
    classifier = FixedClassifier([2.0, -1.0, 0.5])
    pipe = D.DeepMicaPipeline(SpeckNet(), classifier)
    assert isinstance(pipe, Pipeline)
    result = pipe.run(image, SPACING)
    assert isinstance(result, Result) and result.pipeline == "deepmica"
    result.check_shapes(image.shape)
    assert set(result.masks) == {"breast", "calcification"} and set(result.probabilities) == {"calcification"}
    assert all(m.dtype == bool for m in result.masks.values())
    prob = result.probabilities["calcification"]
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    assert not np.any(prob[~result.masks["breast"]])
    geometry = result.geometry
    assert geometry["pixel_mm"] == 0.2 and geometry["pixel_mm_source"] == "PixelSpacing"
    clusters = geometry["clusters"]
    assert [c["count"] for c in clusters] == [4, 3]  # the lone speck is no cluster
    for cluster, name in zip(clusters, ("A", "B")):
        y0, x0, y1, x1 = cluster["box"]
        assert all(y0 <= r < y1 and x0 <= c < x1 for r, c in PLANTED[name])
        ry0, rx0, ry1, rx1 = cluster["roi"]
        assert ry0 <= y0 and rx0 <= x0 and y1 <= ry1 and x1 <= rx1 and ry1 - ry0 == rx1 - rx0 >= 16
    p = [1 / (1 + np.exp(-v)) for v in (2.0, -1.0)]
    assert [b.score for b in result.patches] == pytest.approx(p)
    assert [b.label for b in result.patches] == ["cluster 1", "cluster 2"]
    assert result.scores == pytest.approx({"malignant": p[0], "benign": 1 - p[0]})
    assert classifier.inputs[0].shape == (2, 1, 32, 32)
    assert set(result.timings) == {"preprocess", "segment", "cluster", "classify"}
    assert result.saliency == {} and result.artifacts == {}


def test_a_finer_image_runs_at_the_working_pixel_size_and_answers_in_its_own_pixels() -> None:
    fine = cv2.resize(scene(), None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)  # 0.05 mm per pixel
    meta = ImageMeta(pixel_spacing_mm=(0.05, 0.05), sources={"pixel_spacing_mm": "PixelSpacing"})
    net = SpeckNet()
    result = D.DeepMicaPipeline(net, FixedClassifier([1.0, 1.0])).run(fine, meta)
    result.check_shapes(fine.shape)
    assert np.concatenate(net.inputs).shape[0] == result.geometry["patches_run"]  # tiles of the 0.2 mm image
    assert result.geometry["work_shape"] == (600, 700) and result.geometry["work_mm"] == pytest.approx(0.2)
    clusters = result.geometry["clusters"]
    assert [c["count"] for c in clusters] == [4, 3]
    for cluster, name in zip(clusters, ("A", "B")):
        y0, x0, y1, x1 = cluster["box"]
        assert all(y0 <= 4 * r + 1 < y1 and x0 <= 4 * c + 1 < x1 for r, c in PLANTED[name])
        cy, cx = cluster["centroid"]
        assert np.hypot(cy - 4 * np.mean(PLANTED[name], axis=0)[0] - 1.5,
                        cx - 4 * np.mean(PLANTED[name], axis=0)[1] - 1.5) < 4
    assert result.masks["calcification"][4 * 200 + 1, 4 * 100 + 1]
    assert [c["confidence"] for c in clusters] == pytest.approx([4.0, 3.0], abs=0.01)


def test_min_confidence_and_max_clusters_limit_what_is_reported() -> None:
    image = scene()
    assert [c["count"] for c in D.DeepMicaPipeline(SpeckNet(), FixedClassifier([0.0]), min_confidence=3.5)
            .run(image, SPACING).geometry["clusters"]] == [4]
    result = D.DeepMicaPipeline(SpeckNet(), FixedClassifier([0.0]), max_clusters=1).run(image, SPACING)
    assert len(result.patches) == 1 and result.geometry["clusters_found"] == 2


def test_no_cluster_scores_zero_and_the_classifier_is_not_called() -> None:
    image = scene()
    image[image > 0.9] = 0.45
    classifier = FixedClassifier([3.0])
    result = D.DeepMicaPipeline(SpeckNet(), classifier, explain=True).run(image, SPACING)
    assert result.patches == [] and result.geometry["clusters"] == [] and classifier.inputs == []
    assert result.scores == {"malignant": 0.0, "benign": 1.0}
    assert result.masks["calcification"].sum() < 30  # what is left is a speck or two, no cluster


def test_pixel_size_precedence() -> None:
    assert D.pixel_size(SPACING, (600, 700)) == (0.2, "PixelSpacing")
    assert D.pixel_size(ImageMeta(), (600, 700), default=0.07) == (0.07, "pipeline default")
    assert D.pixel_size(ImageMeta(), (1024, 1024)) == (pytest.approx(0.2), "image size")  # MIAS


def test_cluster_window_is_square_inside_the_image_and_at_least_min_side() -> None:
    assert R.cluster_window((10, 10, 14, 30), (100, 100), 0.2) == (2, 10, 22, 30)  # 20 wide: square 20
    assert R.cluster_window((0, 0, 3, 3), (100, 100), 0.2) == (0, 0, 16, 16)       # 3.2 mm = 16 px, moved in
    assert R.cluster_window((90, 95, 99, 99), (100, 100), 0.2) == (84, 84, 100, 100)
    assert R.cluster_window((0, 0, 50, 120), (100, 100), 0.2) == (0, 0, 100, 100)  # larger than the image


# --- SHAP ----------------------------------------------------------------------------------------

def _torch_net(module, size: int):
    from mammo.models.torch_deepmica import TorchNet

    return TorchNet(module, batch_size=16, input_size=size)


def test_shap_values_of_a_linear_model_are_exact() -> None:
    """Expected gradients of f(x) = w.x with one reference b are w * (x - b), whatever the samples."""
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    net = _torch_net(linear, 8)
    rng = np.random.default_rng(2)
    x, b = rng.random((1, 1, 8, 8), dtype=np.float32), rng.random((1, 1, 8, 8), dtype=np.float32)
    values = net.explain(x, b, nsamples=4)
    w = linear[1].weight.detach().numpy().reshape(1, 1, 8, 8)
    assert values.shape == x.shape and values.dtype == np.float32
    np.testing.assert_allclose(values, w * (x - b), atol=1e-5)
    assert values.sum() == pytest.approx(float((net(x) - net(b))[0, 0]), abs=1e-4)


def test_shap_to_window_keeps_the_sum() -> None:
    values = np.random.default_rng(3).standard_normal((32, 32)).astype(np.float32)
    for window, shape in (((5, 7, 25, 27), (20, 20)), ((0, 0, 90, 90), (90, 90))):  # shrink, enlarge
        out = R.shap_to_window(values, window)
        assert out.shape == shape and out.sum() == pytest.approx(values.sum(), rel=1e-4)


def test_shap_maps_only_when_explaining_with_the_roi_shape(tmp_path: Path) -> None:
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    torch.manual_seed(0)
    nn = torch.nn
    tiny = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 1))
    pipe = D.DeepMicaPipeline(SpeckNet(), _torch_net(tiny, 32), shap_samples=8)
    image = scene()
    plain = pipe.run(image, SPACING)
    assert plain.saliency == {} and plain.artifacts == {} and "explain" not in plain.timings
    assert all("shap_sum" not in c for c in plain.geometry["clusters"])
    explained = pipe.run(image, SPACING, explain=True)
    explained.check_shapes(image.shape)
    assert explained.scores == plain.scores and "explain" in explained.timings
    clusters = explained.geometry["clusters"]
    assert sorted(explained.artifacts) == [f"shap_cluster{k + 1}" for k in range(len(clusters))] != []
    inside = np.zeros(image.shape, bool)
    for k, cluster in enumerate(clusters):
        y0, x0, y1, x1 = cluster["roi"]
        inside[y0:y1, x0:x1] = True
        picture = explained.artifacts[f"shap_cluster{k + 1}"]
        assert picture.shape == (y1 - y0, x1 - x0, 3) and picture.dtype == np.uint8
        assert np.isfinite(cluster["shap_sum"])
    for name in ("malignant", "benign"):
        sal = explained.saliency[name]
        assert sal.dtype == np.float32 and 0 <= sal.min() and sal.max() <= 1 and not sal[~inside].any()
    assert max(explained.saliency[n].max() for n in ("malignant", "benign")) == 1.0
    written = write_result(tmp_path / "out", image, SPACING, explained)  # JSON-ready geometry, PNG pictures
    assert json.loads(written["scores"].read_text())["geometry"]["clusters"][0]["roi"] == clusters[0]["roi"]
    assert {"saliency_malignant", "shap_cluster1"} <= set(written) and written["shap_cluster1"].is_file()


# --- torch builders and loading ------------------------------------------------------------------

def test_patch_unet_shape_and_packaged_vgg16_weights() -> None:
    from mammo.models import pretrained as P
    from mammo.models import torch_deepmica as T

    torch = T.torch
    net = T.build_patch_unet("vgg16", pretrained=True).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 256, 256))
    assert out.shape == (1, 1, 256, 256) and out.dtype == torch.float32
    packaged = P.imagenet_state_dict("vgg16")
    own = net.unet.encoder.state_dict()
    assert torch.equal(own["features.28.weight"], packaged["features.28.weight"])
    assert torch.allclose(own["features.0.weight"], packaged["features.0.weight"].sum(1, keepdim=True))
    random = T.build_patch_unet("vgg16").unet.encoder.state_dict()
    assert not torch.equal(random["features.28.weight"], packaged["features.28.weight"])


def _backbone_state(net) -> dict:
    """The classifier backbone's tensors under the packaged names (timm's without "model.")."""
    return {k.removeprefix("model."): v for k, v in net.backbone.state_dict().items()}


@pytest.mark.parametrize(("backbone", "key"), [("efficientnet-lite0", "blocks.6.0.conv_pwl.weight"),
                                               ("vgg16", "features.28.weight")])
def test_roi_classifier_shape_and_packaged_weights(backbone: str, key: str) -> None:
    from mammo.models import pretrained as P
    from mammo.models import torch_deepmica as T

    torch = T.torch
    net = T.build_roi_classifier(backbone, pretrained=True).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 224, 224))
    assert out.shape == (2, 1) and out.dtype == torch.float32
    packaged = P.imagenet_state_dict(T.BACKBONES[backbone])
    own = _backbone_state(net)
    assert torch.equal(own[key], packaged[key])
    first = "conv_stem.weight" if backbone != "vgg16" else "features.0.weight"
    assert torch.allclose(own[first], packaged[first].sum(1, keepdim=True))
    random = _backbone_state(T.build_roi_classifier(backbone))
    assert not torch.equal(random[key], packaged[key])


def _entry(name: str, architecture: str, path: Path, size: int) -> dict[str, object]:
    data = path.read_bytes()
    return {"name": name, "pipeline": "deepmica", "framework": "torch", "architecture": architecture,
            "file": f"weights/{path.name}", "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "hub": {"repo_id": "mammo-org/test", "filename": path.name, "revision": None},
            "input_size": [size, size], "classes": ["malignant"],
            "training": {"data": "none", "split": "splits/none.csv", "command": "none"},
            "metrics": {}, "licence": "Apache-2.0"}


def test_build_loads_both_manifest_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    from mammo.models import torch_deepmica as T
    from mammo.pipelines.registry import get_pipeline
    from mammo.weights import clear_hash_cache, get_entry

    folder = tmp_path / "weights"
    folder.mkdir()
    seg = T.build_patch_unet("tu-tf_efficientnet_lite0")
    classifier = T.build_roi_classifier("efficientnet-lite0", input_size=64)
    entries = []
    for name, arch, net, size in (("deepmica-seg", "unet/tu-tf_efficientnet_lite0", seg, 256),
                                  ("deepmica-classifier", "roi/efficientnet-lite0", classifier, 64)):
        state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
        save_file(state, str(folder / f"{name}.safetensors"))
        entries.append(_entry(name, arch, folder / f"{name}.safetensors", size))
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump({"entries": entries}))
    monkeypatch.setenv("MAMMO_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("MAMMO_WEIGHTS_MANIFEST", str(tmp_path / "manifest.yaml"))
    clear_hash_cache()
    plain, explaining = get_pipeline("deepmica", cache=False), get_pipeline("deepmica:explain", cache=False)
    assert not plain.explain and explaining.explain and explaining.name == "deepmica:explain"
    assert plain.classifier.input_size == 64 and len(plain.weights_sha256) == 33
    key = "unet.decoder.blocks.0.conv1.0.weight"
    T.torch.testing.assert_close(plain.seg_net.module.state_dict()[key], seg.state_dict()[key].half().float())
    with pytest.raises(ValueError, match="not 'unet/<name>'"):
        T.load_patch_unet(get_entry("deepmica-classifier"))


def test_build_without_manifest_entries_is_a_weights_error(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mammo.weights import WeightsNotFoundError

    (tmp_path / "manifest.yaml").write_text("entries: []\n")
    monkeypatch.setenv("MAMMO_WEIGHTS_MANIFEST", str(tmp_path / "manifest.yaml"))
    with pytest.raises(WeightsNotFoundError, match="'deepmica-seg'.*no trained weights yet"):
        D.build()
