"""Microcalcification detector and clustering (mammo.preprocess.microcalc) on synthetic scenes.

The synthetic scene is defined in millimetres and rendered at 25 µm, then area-averaged to the
pixel size under test, so the same physical scene can be seen at 50 µm and at 200 µm.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammo.preprocess.breast import breast_mask
from mammo.preprocess.microcalc import (
    Cluster,
    circles_mask,
    cluster_calcifications,
    detect_microcalcifications,
    enhance,
    cluster_confidence,
    label_calcifications,
    pseudo_mask,
    score_clusters,
    to_pixel_size,
    white_tophat,
)

SIDE_MM = 40.0
FINE_MM = 0.025
# (row, col) in mm. Group A: 5 dots within ~4 mm; group B: 4 dots 2 mm apart; one lone dot.
GROUP_A = [(12.0, 12.0), (13.0, 14.0), (14.0, 10.5), (10.0, 13.0), (15.0, 15.0)]
GROUP_B = [(26.0, 28.0), (26.0, 30.0), (28.0, 28.0), (28.0, 30.0)]
LONE = [(32.0, 8.0)]
DOTS = GROUP_A + GROUP_B + LONE
BLOB = (10.0, 30.0)  # a mass-like bright blob, sigma 3 mm
LINE = (36.0, 36.4, 15.0, 25.0)  # rows, cols in mm: a 0.4 x 10 mm bright strand


def _scene(pixel_mm: float, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """float32 (H, W) in [0, 1] of the physical scene above, at `pixel_mm`."""
    n = round(SIDE_MM / FINE_MM)
    mm = (np.arange(n) + 0.5) * FINE_MM
    yy, xx = np.meshgrid(mm, mm, indexing="ij")
    img = 0.45 + 0.08 * np.sin(2 * np.pi * xx / 25.0) + 0.05 * yy / SIDE_MM
    img += 0.3 * np.exp(-((yy - BLOB[0]) ** 2 + (xx - BLOB[1]) ** 2) / (2 * 3.0**2))
    for r, c in DOTS:  # calcifications: Gaussian specks ~0.5 mm across
        img += 0.35 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 0.2**2))
    r0, r1, c0, c1 = LINE
    img[(yy >= r0) & (yy < r1) & (xx >= c0) & (xx < c1)] += 0.25
    size = round(SIDE_MM / pixel_mm)
    out = cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    out += np.random.default_rng(seed).normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _everywhere(image: np.ndarray) -> np.ndarray:
    return np.ones(image.shape, dtype=bool)


def _px(point_mm: tuple[float, float], pixel_mm: float) -> tuple[int, int]:
    return int(point_mm[0] / pixel_mm), int(point_mm[1] / pixel_mm)


def _near(mask: np.ndarray, point_mm: tuple[float, float], pixel_mm: float, radius_mm: float) -> bool:
    r, c = _px(point_mm, pixel_mm)
    k = max(1, round(radius_mm / pixel_mm))
    return bool(mask[max(0, r - k):r + k + 1, max(0, c - k):c + k + 1].any())


def _line_box(pixel_mm: float) -> tuple[slice, slice]:
    r0, r1, c0, c1 = LINE
    pad = 1.0 / pixel_mm  # 1 mm around the strand
    return (slice(int(r0 / pixel_mm - pad), int(r1 / pixel_mm + pad)),
            slice(int(c0 / pixel_mm - pad), int(c1 / pixel_mm + pad)))


@pytest.mark.parametrize("pixel_mm", [0.05, 0.1, 0.2])
def test_detects_every_dot_and_nothing_else(pixel_mm: float) -> None:
    img = _scene(pixel_mm)
    det = detect_microcalcifications(img, _everywhere(img), pixel_mm)
    assert det.dtype == bool and det.shape == img.shape
    for dot in DOTS:
        assert _near(det, dot, pixel_mm, 0.3), f"dot at {dot} mm missed at {pixel_mm} mm/px"
    # Every detection is one of the dots: the blob, the strand and the noise give none.
    assert label_calcifications(det)[1] == len(DOTS)
    assert not _near(det, BLOB, pixel_mm, 5.0)
    assert not det[_line_box(pixel_mm)].any()


@pytest.mark.parametrize("pixel_mm", [0.05, 0.2])
def test_size_filter_is_what_drops_the_strand(pixel_mm: float) -> None:
    img = _scene(pixel_mm)
    loose = detect_microcalcifications(img, _everywhere(img), pixel_mm, max_diameter_mm=20.0)
    assert loose[_line_box(pixel_mm)].sum() * pixel_mm**2 > 3.0, "the strand passes the top-hat"
    strict = detect_microcalcifications(img, _everywhere(img), pixel_mm)
    assert not strict[_line_box(pixel_mm)].any()


def test_min_area_in_mm2_drops_pixel_specks_at_fine_pixels() -> None:
    pixel_mm = 0.05
    img = _scene(pixel_mm)
    hot = [(20.0, 5.0), (20.5, 5.5), (21.0, 5.0)]  # three 2-pixel specks (0.005 mm²) 0.5 mm apart
    for point in hot:
        r, c = _px(point, pixel_mm)
        img[r, c:c + 2] = 1.0
    kept = detect_microcalcifications(img, _everywhere(img), pixel_mm, min_area_mm2=0.0)
    assert all(kept[_px(p, pixel_mm)] for p in hot), "the hot specks are bright enough to detect"
    det = detect_microcalcifications(img, _everywhere(img), pixel_mm)  # 0.01 mm² = 4 pixels here
    assert not any(_near(det, p, pixel_mm, 0.2) for p in hot)
    assert not any(c.box[0] < 22.0 / pixel_mm < c.box[2] and c.box[1] < 6.0 / pixel_mm
                   for c in cluster_calcifications(det, pixel_mm))


def test_detections_stay_inside_the_breast_away_from_its_edge() -> None:
    pixel_mm = 0.1
    img = _scene(pixel_mm)
    breast = np.zeros(img.shape, dtype=bool)
    breast[:, : int(31.0 / pixel_mm)] = True  # group B's col-30 dots lie 1 mm inside the border
    det = detect_microcalcifications(img, breast, pixel_mm)  # edge_mm=2
    assert not det[:, int(29.0 / pixel_mm):].any(), "the 2 mm edge band and outside are empty"
    assert all(_near(det, dot, pixel_mm, 0.3) for dot in GROUP_A + LONE + [(26.0, 28.0), (28.0, 28.0)])
    assert _near(detect_microcalcifications(img, breast, pixel_mm, edge_mm=0.0), (26.0, 30.0), pixel_mm, 0.3)


@pytest.mark.parametrize("pixel_mm", [0.05, 0.2])
def test_tophat_disc_is_sized_in_mm(pixel_mm: float) -> None:
    n = round(20.0 / pixel_mm)
    img = np.full((n, n), 0.3, dtype=np.float32)
    yy, xx = np.mgrid[0:n, 0:n] * pixel_mm
    img[(yy - 5.0) ** 2 + (xx - 5.0) ** 2 <= 0.5**2] = 0.8  # 1.0 mm across: a calcification
    img[(yy - 12.0) ** 2 + (xx - 12.0) ** 2 <= 1.5**2] = 0.8  # 3.0 mm across: too big
    th = white_tophat(img, pixel_mm, 1.5)
    assert th[int(5.0 / pixel_mm), int(5.0 / pixel_mm)] == pytest.approx(0.5)
    assert th[int(12.0 / pixel_mm) - 5:int(12.0 / pixel_mm) + 5, int(12.0 / pixel_mm)].max() < 0.05


@pytest.mark.parametrize("pixel_mm", [0.05, 0.1])
def test_specks_keep_their_half_maximum_size(pixel_mm: float) -> None:
    img = _scene(pixel_mm)
    det = detect_microcalcifications(img, _everywhere(img), pixel_mm)
    fwhm_area = np.pi * (1.1774 * 0.2) ** 2  # mm², a Gaussian of sigma 0.2 mm
    area = det.sum() * pixel_mm**2 / len(DOTS)
    assert 0.5 * fwhm_area < area < 1.6 * fwhm_area


def _centroids_mm(clusters: list[Cluster], pixel_mm: float) -> np.ndarray:
    return np.array([c.centroid for c in clusters]) * pixel_mm


def test_same_scene_at_two_pixel_sizes_gives_the_same_clusters() -> None:
    found = {}
    for pixel_mm in (0.05, 0.2):
        img = _scene(pixel_mm, seed=1)
        det = detect_microcalcifications(img, _everywhere(img), pixel_mm)
        found[pixel_mm] = cluster_calcifications(det, pixel_mm)
    fine, coarse = found[0.05], found[0.2]
    assert [c.count for c in fine] == [c.count for c in coarse] == [5, 4]  # the lone dot is no cluster
    np.testing.assert_allclose(_centroids_mm(fine, 0.05), _centroids_mm(coarse, 0.2), atol=0.3)
    truth = [np.mean(GROUP_A, axis=0), np.mean(GROUP_B, axis=0)]
    np.testing.assert_allclose(_centroids_mm(fine, 0.05), truth, atol=0.3)
    for a, b in zip(fine, coarse):  # boxes agree in mm to within a coarse pixel or two
        np.testing.assert_allclose(np.array(a.box) * 0.05, np.array(b.box) * 0.2, atol=0.45)


def _dots_mask(shape: tuple[int, int], centres: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for r, c in centres:
        mask[r - 1:r + 2, c - 1:c + 2] = True  # 3x3 specks
    return mask


def test_cluster_linkage_distance_in_mm() -> None:
    near = [(100, 100), (100, 140), (100, 180)]  # 40 px apart: 4 mm at 0.1 mm/px
    far = [(300, 100), (300, 160), (300, 220)]  # 60 px apart: 6 mm
    mask = _dots_mask((400, 400), near + far)
    clusters = cluster_calcifications(mask, 0.1, distance_mm=5.0, min_count=3)
    assert len(clusters) == 1
    c = clusters[0]
    assert c.count == 3 and c.box == (99, 99, 102, 182)  # end-exclusive
    assert c.centroid == pytest.approx((100.0, 140.0))
    assert c.mask.shape == (3, 83) and c.mask.sum() == 27
    assert c.full_mask(mask.shape).sum() == 27 and (c.full_mask(mask.shape) <= mask).all()
    labels, _ = label_calcifications(mask)
    assert set(np.unique(labels[c.full_mask(mask.shape)])) == set(c.labels)
    assert len(cluster_calcifications(mask, 0.1, distance_mm=7.0, min_count=3)) == 2
    # The same pixels at 0.2 mm/px are 8 and 12 mm apart: no cluster at 5 mm.
    assert cluster_calcifications(mask, 0.2, distance_mm=5.0, min_count=3) == []
    assert cluster_calcifications(mask, 0.1, distance_mm=5.0, min_count=4) == []


def test_single_linkage_chains_and_orders_by_count() -> None:
    chain = [(50, 20 + 40 * i) for i in range(6)]  # 6 specks, 4 mm steps, 20 mm end to end
    trio = [(200, 50), (200, 70), (220, 60)]
    mask = _dots_mask((300, 300), chain + trio)
    clusters = cluster_calcifications(mask, 0.1)
    assert [c.count for c in clusters] == [6, 3]
    assert cluster_calcifications(np.zeros((50, 50), dtype=bool), 0.1) == []


def test_pseudo_mask_is_restricted_to_the_circles() -> None:
    pixel_mm = 0.1
    img = _scene(pixel_mm)
    breast = _everywhere(img)
    centre = np.mean(GROUP_A, axis=0) / pixel_mm
    circle = (float(centre[0]), float(centre[1]), 4.0 / pixel_mm)
    pm = pseudo_mask(img, [circle], pixel_mm, breast)
    det = detect_microcalcifications(img, breast, pixel_mm)
    assert pm.dtype == bool and (pm <= det).all()
    assert all(_near(pm, dot, pixel_mm, 0.3) for dot in GROUP_A)
    assert not any(_near(pm, dot, pixel_mm, 1.0) for dot in GROUP_B + LONE)
    # Kept specks touch the circle; nothing lies further than a speck's size outside it.
    grown = cv2.dilate(circles_mask(img.shape, [circle]).astype(np.uint8), np.ones((21, 21), np.uint8))
    assert not (pm & ~grown.astype(bool)).any()
    empty = (5.0 / pixel_mm, 35.0 / pixel_mm, 3.0 / pixel_mm)  # background only
    assert not pseudo_mask(img, [empty], pixel_mm, breast).any()
    assert not pseudo_mask(img, [], pixel_mm, breast).any()


def test_to_pixel_size_keeps_a_specks_integrated_brightness() -> None:
    image = np.zeros((400, 400), np.float32)
    image[200:204, 100:104] = 1.0              # a 0.2 mm speck at 0.05 mm
    small = to_pixel_size(image, 0.05, 0.2)
    assert small.shape == (100, 100) and small.dtype == np.float32
    assert small.sum() * 16 == pytest.approx(image.sum())  # area average: 16 fine pixels per coarse one
    assert small[50, 25] == pytest.approx(1.0)
    assert to_pixel_size(image, 0.204, 0.2) is image  # within 5%: unchanged
    assert to_pixel_size(image[:100, :100], 0.4, 0.2).shape == (200, 200)


def test_cluster_confidence_sums_member_peaks_and_ranks_clusters() -> None:
    trio = [(50, 50), (50, 60), (60, 55)]
    quad = [(200, 200), (200, 215), (215, 200), (215, 215)]
    mask = _dots_mask((300, 300), trio + quad)
    prob = np.where(mask, 0.6, 0.0).astype(np.float32)
    for r, c in trio:
        prob[r, c] = 1.0                        # each trio member peaks at 1.0
    labels, _ = label_calcifications(mask)
    clusters = cluster_calcifications(mask, 0.1)
    assert [c.count for c in clusters] == [4, 3]
    assert cluster_confidence(clusters[0], labels, prob) == pytest.approx(4 * 0.6)
    assert cluster_confidence(clusters[1], labels, prob) == pytest.approx(3.0)
    scored = score_clusters(mask, prob, 0.1)   # highest confidence first: the trio (3.0 > 2.4)
    assert [(c.count, round(s, 3)) for c, s in scored] == [(3, 3.0), (4, 2.4)]
    assert [(c.count, s) for c, s in score_clusters(mask, None, 0.1)] == [(4, 4.0), (3, 3.0)]


def test_enhance_removes_label_and_keeps_range() -> None:
    h, w = 400, 240
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h / 2) / (0.42 * h)) ** 2 + (xx / (0.6 * w)) ** 2 <= 1
    img = np.where(inside, 0.5 + 0.05 * np.sin(yy / 9.0), 0.02).astype(np.float32)
    img[10:30, 200:225] = 1.0  # a film label outside the breast
    out = enhance(img, 0.2)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not out[10:30, 200:225].any(), "the label is removed"
    breast = breast_mask(img)
    assert not out[~breast].any()
    assert out[breast].std() > img[breast].std(), "CLAHE stretches the faint breast texture"


def test_bad_pixel_size_raises() -> None:
    img = _scene(0.2)
    with pytest.raises(ValueError):
        detect_microcalcifications(img, _everywhere(img), 0.0)
    with pytest.raises(ValueError):
        enhance(img, -0.1)


def test_real_mias_calcification_cluster_is_found(shared_data) -> None:
    from mammo.io import read_image

    image, _ = read_image(shared_data / "mias" / "mdb241.png")  # Info.txt: CALC M 453 678 38
    circle = (image.shape[0] - 678, 453, 38)
    breast = breast_mask(image)
    enhanced = enhance(image, 0.2, breast)
    clusters = cluster_calcifications(detect_microcalcifications(enhanced, breast, 0.2), 0.2)
    region = circles_mask(image.shape, [circle])
    assert any((c.full_mask(image.shape) & region).any() for c in clusters)
    pm = pseudo_mask(enhanced, [circle], 0.2, breast)
    assert label_calcifications(pm)[1] >= 5
