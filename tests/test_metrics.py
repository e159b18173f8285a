"""mammo.metrics: Dice/IoU conventions, the accumulator, AUC/sens/spec, patient bootstrap, FROC."""

from __future__ import annotations

import numpy as np
import pytest

from mammo.metrics import (
    FROC_RATES,
    ImageDetections,
    MaskScore,
    SegmentationMeter,
    bootstrap,
    detect_candidates,
    dice_iou,
    froc_curve,
    froc_sensitivities,
    mask_score,
    match_detections,
    per_class_dice_iou,
    roc_auc,
    roc_band,
    sensitivity_specificity,
    split_by_reference,
    summarise_masks,
    with_ci,
)


def test_dice_iou_values() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5] = True          # 50 px
    b[:, :5] = True       # 50 px, overlap 25
    d, i = dice_iou(a, b)
    assert d == pytest.approx(0.5) and i == pytest.approx(25 / 75)
    assert dice_iou(a, a) == (1.0, 1.0)
    assert dice_iou(a, ~a) == (0.0, 0.0)


def test_empty_conventions() -> None:
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice_iou(empty, empty) == (1.0, 1.0)   # stated: nothing to find, nothing found
    assert dice_iou(full, empty) == (0.0, 0.0)
    assert dice_iou(empty, full) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_iou(empty, np.zeros((4, 5), bool))


def test_per_class_and_meter_means_over_images() -> None:
    truth = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 1], [2, 1]])
    scores = per_class_dice_iou(pred, truth, {"a": 1, "b": 2})
    assert scores["a"][0] == pytest.approx(2 / 3) and scores["b"][0] == pytest.approx(2 / 3)
    meter = SegmentationMeter()
    meter.add("lesion", np.ones((2, 2), bool), np.ones((2, 2), bool))   # 1.0
    meter.add("lesion", np.zeros((2, 2), bool), np.ones((2, 2), bool))  # 0.0
    summary = meter.summary()
    assert summary["lesion"] == {"dice": 0.5, "iou": 0.5, "n": 2}
    assert meter.mean_dice() == 0.5


def test_mask_score_areas() -> None:
    truth = np.zeros((10, 20), bool)
    truth[:2, :5] = True                                     # 10 of 200 px
    score = mask_score(truth[:, ::-1], truth)                # no overlap
    assert score == MaskScore(0.0, 0.0, 0.05, 0.05) and not score.reference_empty
    empty = mask_score(np.zeros_like(truth), np.zeros_like(truth))
    assert empty == MaskScore(1.0, 1.0, 0.0, 0.0) and empty.reference_empty
    assert not MaskScore(1.0, 1.0, None, float("nan")).reference_empty  # unknown counts as a reference


def test_headline_leaves_out_empty_references() -> None:
    scores = [MaskScore(0.6, 0.4, 0.1, 0.1), MaskScore(0.2, 0.1, 0.2, 0.05),
              MaskScore(1.0, 1.0, 0.0, 0.0), MaskScore(0.0, 0.0, 0.0, 0.02),
              MaskScore(1.0, 1.0, 0.0, 0.0), MaskScore(0.5, 0.3, None, float("nan"))]
    ref, empty = split_by_reference(scores)
    assert ref.tolist() == [0, 1, 5] and empty.tolist() == [2, 3, 4]
    summary = summarise_masks(scores)
    assert summary["dice"] == pytest.approx(1.3 / 3) and summary["iou"] == pytest.approx(0.8 / 3)
    assert summary["n_images"] == 3 and summary["empty_reference_images"] == 3
    assert summary["empty_reference_fp_rate"] == pytest.approx(1 / 3)
    assert summary["empty_reference_mean_pred_area"] == pytest.approx(0.02 / 3)
    none = summarise_masks(scores[2:3])
    assert none["dice"] is None and none["n_images"] == 0 and none["empty_reference_fp_rate"] == 0.0
    assert summarise_masks(scores[:1])["empty_reference_fp_rate"] is None  # no empty reference: undefined


def test_meter_ignore_empty_is_eval_convention_default_is_unchanged() -> None:
    lesion, nothing = np.ones((2, 2), bool), np.zeros((2, 2), bool)
    pairs = [(lesion, lesion), (nothing, lesion), (nothing, nothing), (nothing, nothing), (lesion, nothing)]
    old, new = SegmentationMeter(), SegmentationMeter(ignore_empty=True)
    for pred, truth in pairs:
        assert old.add("lesion", pred, truth) == new.add("lesion", pred, truth)
    assert old.summary()["lesion"] == {"dice": 0.6, "iou": 0.6, "n": 5}   # empty/empty counts 1 (training)
    assert new.summary()["lesion"] == {"dice": 0.5, "iou": 0.5, "n": 2}   # images with a lesion only
    assert new.mean_dice() == 0.5
    assert new.empty_reference()["lesion"] == {"empty_reference_images": 3,
                                               "empty_reference_fp_rate": pytest.approx(1 / 3),
                                               "empty_reference_mean_pred_area": pytest.approx(1 / 3)}
    only_empty = SegmentationMeter(ignore_empty=True)
    only_empty.add("pectoral", nothing, nothing)
    assert np.isnan(only_empty.summary()["pectoral"]["dice"]) and only_empty.summary()["pectoral"]["n"] == 0


# --- classification -------------------------------------------------------------------------

def test_roc_auc_hand_case_and_sklearn() -> None:
    from sklearn.metrics import roc_auc_score
    # Pairs (positive, negative): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4.
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)   # a tie counts 1/2
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)        # rounded: many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_roc_auc_undefined_and_invalid() -> None:
    assert roc_auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])) is None
    assert roc_auc(np.array([0, 0]), np.array([0.1, 0.2])) is None
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="0/1"):
        roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="same length"):
        roc_auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


def test_sensitivity_specificity() -> None:
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.2, 0.5, 0.1])
    # At 0.5 (score >= threshold is positive): TP 2 (0.9, 0.5), FN 1; FP 1 (0.5), TN 1.
    sens, spec = sensitivity_specificity(labels, scores, 0.5)
    assert sens == pytest.approx(2 / 3) and spec == pytest.approx(1 / 2)
    assert sensitivity_specificity(labels, scores, 0.95) == (0.0, 1.0)
    assert sensitivity_specificity(np.array([1, 1]), np.array([0.2, 0.8]), 0.5) == (0.5, None)
    assert sensitivity_specificity(np.array([0, 0]), np.array([0.2, 0.8]), 0.5) == (None, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        sensitivity_specificity(np.array([0, 1]), np.array([np.nan, 0.2]), 0.5)


# --- patient bootstrap ----------------------------------------------------------------------

def test_bootstrap_keeps_groups_together_and_is_seeded() -> None:
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in set(groups)}
    seen_sizes = set()

    def check_blocks(idx: np.ndarray) -> float:
        # idx must be whole groups, each group's images together, exactly 4 groups drawn.
        assert idx.dtype.kind == "i"
        k, n_drawn = 0, 0
        while k < len(idx):
            block = members[groups[idx[k]]]
            assert sorted(idx[k:k + len(block)].tolist()) == block
            k += len(block)
            n_drawn += 1
        assert n_drawn == 4
        seen_sizes.add(len(idx))
        return float(np.mean(idx))

    first = bootstrap(groups, check_blocks, n_resamples=200, seed=3)
    assert first.shape == (200,) and first.dtype == np.float64
    assert len(seen_sizes) > 1                                   # resamples do differ in size
    np.testing.assert_array_equal(first, bootstrap(groups, check_blocks, n_resamples=200, seed=3))
    assert not np.array_equal(first, bootstrap(groups, check_blocks, n_resamples=200, seed=4))


def test_bootstrap_skips_undefined_values() -> None:
    groups = [str(i) for i in range(6)]
    labels = np.array([0, 0, 0, 0, 0, 1])
    scores = np.linspace(0, 1, 6)
    values = bootstrap(groups, lambda idx: roc_auc(labels[idx], scores[idx]), n_resamples=300, seed=0)
    # P(patient 5 not drawn in 6 draws) = (5/6)^6 ~ 0.33: those resamples have one class -> skipped.
    assert 100 < values.size < 300
    assert np.all(values == 1.0)
    nan_values = bootstrap(groups, lambda idx: float("nan"), n_resamples=10)
    assert nan_values.size == 0


def test_with_ci() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, 120)
    groups = [f"p{i // 2}" for i in range(120)]                  # two images per patient
    result = with_ci(lambda idx: float(np.mean(x[idx])), groups, n_resamples=500, seed=1)
    low, high = result["ci95"]
    assert result["mean"] == pytest.approx(np.mean(x))
    assert low < result["mean"] < high and result["n_resamples"] == 500
    narrow = with_ci(lambda idx: float(np.mean(x[idx])), groups, n_resamples=500, seed=1, level=0.5)
    assert high - low > narrow["ci95"][1] - narrow["ci95"][0] > 0
    assert with_ci(lambda idx: None, groups) == {"mean": None, "ci95": None, "n_resamples": 0}
    one = with_ci(lambda idx: float(np.mean(x[idx])), groups, n_resamples=1)
    assert one["ci95"] is None and one["n_resamples"] == 1


def test_roc_band() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 150)
    scores = rng.random(150) + 0.5 * labels
    groups = [f"p{i // 3}" for i in range(150)]
    grid, low, high = roc_band(labels, scores, groups, n_resamples=200, seed=0)
    assert grid.shape == low.shape == high.shape == (101,)
    assert np.all(low <= high) and np.any(low < high)
    assert np.all((low >= 0) & (high <= 1)) and low[-1] == high[-1] == 1.0
    assert np.all(np.diff(low) >= -1e-12)                        # percentiles of monotone curves
    custom = np.array([0.0, 0.1, 0.5])
    assert roc_band(labels, scores, groups, n_resamples=20, grid=custom)[1].shape == (3,)
    with pytest.raises(ValueError, match="both classes"):
        roc_band(np.ones(10, int), rng.random(10), [str(i) for i in range(10)], n_resamples=5)


# --- lesion detection -----------------------------------------------------------------------

def _hand_drawn() -> tuple[np.ndarray, np.ndarray]:
    """Two lesions (A rows 0-1, B rows 4-5) and three candidates: X touches both (with diagonal
    steps, so 8-connectivity matters), Y touches B only, Z is a false positive."""
    truth = np.zeros((7, 10), bool)
    truth[0:2, 0:4] = True               # lesion A
    truth[4:6, 0:7] = True               # lesion B
    prob = np.zeros((7, 10))
    prob[1, 1], prob[2, 2], prob[3, 1], prob[4, 1] = 0.6, 0.8, 0.7, 0.55   # X, diagonal chain
    prob[5, 5:7] = [0.6, 0.65]           # Y (two columns from X: a separate component)
    prob[0, 8:10] = [0.95, 0.9]          # Z
    prob[1, 8] = 0.9
    prob[0, 6] = 0.3                     # below threshold: no candidate
    return prob, truth


def test_detect_candidates() -> None:
    prob, _ = _hand_drawn()
    labels, scores = detect_candidates(prob)
    assert labels.dtype == np.int32 and labels.shape == prob.shape and scores.shape == (3,)
    x, y, z = labels[1, 1], labels[5, 5], labels[0, 8]
    assert len({x, y, z}) == 3 and 0 not in {x, y, z}
    assert labels[2, 2] == labels[3, 1] == labels[4, 1] == x      # 8-connected across diagonals
    assert labels[0, 6] == 0
    assert scores[x - 1] == 0.8 and scores[y - 1] == 0.65 and scores[z - 1] == 0.95
    assert detect_candidates(prob, threshold=0.9)[1].tolist() == [0.95]
    with pytest.raises(ValueError, match="2-D"):
        detect_candidates(np.zeros((2, 2, 2)))


def test_match_detections() -> None:
    prob, truth = _hand_drawn()
    labels, _ = detect_candidates(prob)
    det = match_detections(prob, truth)
    assert det.n_lesions == 2
    by_score = {float(s): h for s, h in zip(det.scores, det.hits)}
    # Lesion 0 = A (first in raster order), 1 = B.
    assert by_score == {0.8: frozenset({0, 1}), 0.65: frozenset({1}), 0.95: frozenset()}
    assert det.hits[labels[0, 8] - 1] == frozenset()
    with pytest.raises(ValueError, match="shapes differ"):
        match_detections(prob, truth[:, :5])


def test_match_detections_bool_mask() -> None:
    prob, truth = _hand_drawn()
    det = match_detections(prob >= 0.5, truth)
    assert det.scores.tolist() == [1.0, 1.0, 1.0]
    assert sorted(det.hits, key=len) == [frozenset(), frozenset({1}), frozenset({0, 1})]
    empty = match_detections(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    assert empty.scores.shape == (0,) and empty.hits == [] and empty.n_lesions == 0


def _hand_froc_set() -> list[ImageDetections]:
    return [
        ImageDetections(np.array([0.9, 0.8, 0.3]), [frozenset({0}), frozenset(), frozenset({1})], 2),
        ImageDetections(np.array([0.7, 0.6]), [frozenset(), frozenset({0})], 1),
        ImageDetections(np.array([0.5]), [frozenset()], 0),
        ImageDetections(np.array([0.8, 0.2]), [frozenset({0}), frozenset({0})], 1),
    ]


def test_froc_curve_hand_computed() -> None:
    # 4 images, 4 lesions. FP scores: 0.8 (img 1), 0.7 (img 2), 0.5 (img 3).
    # Lesion thresholds (best hitting score): img1 L0 0.9, img1 L1 0.3, img2 L0 0.6, img4 L0 0.8
    # (its 0.2 candidate changes nothing). Distinct scores 0.9 0.8 0.7 0.6 0.5 0.3 0.2:
    #   t    inf  0.9  0.8  0.7  0.6  0.5  0.3  0.2
    #   FP    0    0    1    2    2    3    3    3    -> /4 images
    #   hit   0    1    2    2    3    3    4    4    -> /4 lesions
    fp, sens, thr = froc_curve(_hand_froc_set())
    np.testing.assert_allclose(fp, [0, 0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(sens, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2])


def test_froc_sensitivities_hand_computed() -> None:
    # From the table above: highest sensitivity with FP/image <= rate; the curve ends at 0.75
    # FP/image, so rates 1 and 4 take the last point (1.0), no extrapolation.
    got = froc_sensitivities(_hand_froc_set(), fp_rates=(0.0, 0.1, 0.25, 0.5, 1, 4))
    assert got == {0.0: 0.25, 0.1: 0.25, 0.25: 0.5, 0.5: 0.75, 1.0: 1.0, 4.0: 1.0}
    assert list(froc_sensitivities(_hand_froc_set())) == list(FROC_RATES)
    # Same images, but the image with no candidates counts in FP/image (5 images): 1 FP / 5 = 0.2.
    more = _hand_froc_set() + [ImageDetections(np.zeros(0), [], 0)]
    assert froc_sensitivities(more, fp_rates=(0.2,)) == {0.2: 0.5}


def test_froc_needs_lesions_and_valid_detections() -> None:
    no_lesions = [ImageDetections(np.array([0.4]), [frozenset()], 0)]
    with pytest.raises(ValueError, match="no true lesions"):
        froc_curve(no_lesions)
    with pytest.raises(ValueError, match="no true lesions"):
        froc_sensitivities([])
    with pytest.raises(ValueError, match="hit sets"):
        ImageDetections(np.array([0.4, 0.5]), [frozenset()], 1)
    with pytest.raises(ValueError, match="outside"):
        ImageDetections(np.array([0.4]), [frozenset({1})], 1)


# -- calibration and heat maps -------------------------------------------------------------------
def test_temperature_scaling_keeps_the_ranking_and_fixes_the_scale() -> None:
    from mammo.calibration import Temperature, fit_temperature, reliability

    rng = np.random.default_rng(0)
    true_logit = rng.normal(-1.0, 1.5, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    over = 1 / (1 + np.exp(-(3 * true_logit + 2)))  # overconfident and shifted scores
    fitted = fit_temperature(over, y)
    calibrated = fitted(over)
    assert 2.4 < fitted.temperature < 3.6 and -1.0 < fitted.bias < -0.3  # undoes 3z + 2
    assert np.all(np.diff(calibrated[np.argsort(over)]) >= -1e-12)  # monotone: the AUC is unchanged
    assert reliability(calibrated, y)["ece"] < reliability(over, y)["ece"] / 2
    assert abs(calibrated.mean() - y.mean()) < 0.03
    assert Temperature(1.0)(0.3) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.array([0.2, 0.4]), np.array([1, 1]))


def test_reliability_bins_and_ece() -> None:
    from mammo.calibration import reliability

    out = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]), bins=10)
    assert out["count"][0] == 2 and out["count"][9] == 2 and sum(out["count"]) == 4
    assert out["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_heatmap_is_visible_whatever_its_peak_and_has_a_colour_bar() -> None:
    from mammo.viz import heatmap_overlay

    image = np.full((200, 120), 0.5, np.float32)
    heat = np.zeros((200, 120), np.float32)
    heat[80:120, 40:80] = 0.2  # a map that peaks at 0.2, as GLAM's did
    out = heatmap_overlay(image, heat)
    assert out.shape[0] == 200 and out.shape[1] > 120  # the colour bar is appended on the right
    spot, plain = out[100, 60].astype(int), out[10, 10].astype(int)
    assert np.abs(spot - plain).max() > 60  # clearly coloured, not a faint tint
    same = heatmap_overlay(image, heat * 5, colorbar=False)
    assert np.array_equal(same, out[:, :120])  # scaled to its own peak: 0.2 shows like 1.0
    flat = heatmap_overlay(image, np.full((200, 120), 0.001, np.float32), colorbar=False)
    assert np.abs(flat.astype(int) - plain).max() <= 3  # near-zero noise is not blown up


def test_patch_boxes_are_numbered_by_score() -> None:
    from mammo.pipelines.base import PatchBox
    from mammo.viz import draw_boxes, patch_labels

    patches = [PatchBox(10, 10, 60, 60, 0.1), PatchBox(100, 100, 150, 150, 0.7)]
    assert patch_labels(patches) == ["2 0.10", "1 0.70"]
    rgb = np.zeros((200, 200, 3), np.uint8)
    plain = draw_boxes(rgb, [(p.y0, p.x0, p.y1, p.x1) for p in patches])
    labelled = draw_boxes(rgb, [(p.y0, p.x0, p.y1, p.x1) for p in patches], labels=patch_labels(patches))
    assert (labelled != plain).any(axis=2).sum() > 100  # the tabs with the text are drawn


def test_temperature_stays_bounded_on_scores_that_do_not_rank() -> None:
    from mammo.calibration import T_RANGE, fit_temperature

    y = np.array([1, 0, 1, 0, 0, 0, 1, 0])
    anti = np.array([0.1, 0.3, 0.12, 0.35, 0.4, 0.33, 0.11, 0.38])  # AUC 0: the wrong way round
    fitted = fit_temperature(anti, y)
    assert T_RANGE[0] <= fitted.temperature <= T_RANGE[1]
    out = fitted(anti)
    assert len(np.unique(np.round(out, 9))) == len(np.unique(anti))  # still an order, not a constant
