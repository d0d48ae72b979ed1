"""xray.evaluation.screening: thresholds for a target sensitivity, flag counts, the ranking, flag agreement between two
models and the per-label picks for heatmaps (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray.evaluation.screening import (
    flag_agreement,
    flag_counts,
    flags,
    pick_per_label,
    rank_by_top_probability,
    sensitivity_threshold,
    sensitivity_thresholds,
)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_threshold_reaches_the_target_on_the_fit_split_and_is_the_highest_that_does(target, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(2000) < 0.1).astype(int)
    s = np.round(rng.normal(size=2000) + 1.5 * y, 2)  # ties
    t = sensitivity_threshold(y, s, target)
    positives = s[y == 1]
    assert np.mean(positives >= t) >= target
    higher = positives[positives > t]
    if higher.size:  # the next distinct positive score above t misses the target
        assert np.mean(positives >= higher.min()) < target


def test_threshold_small_known_cases():
    y = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.1, 0.5, 0.4, 0.3, 0.2, 0.15, 0.12])
    # 10 positives: 90% = 9 of them -> the 9th highest positive score, 0.15.
    assert sensitivity_threshold(y, s, 0.9) == pytest.approx(0.15)
    assert sensitivity_threshold(y, s, 1.0) == pytest.approx(0.12)
    assert sensitivity_threshold(y, s, 0.1) == pytest.approx(0.9)
    # All positives tied: the threshold is their score and the sensitivity 1 (above the target).
    assert sensitivity_threshold(np.array([1, 1, 0]), np.array([0.5, 0.5, 0.2]), 0.6) == 0.5


def test_threshold_without_positives_is_nan_and_flags_nothing():
    assert math.isnan(sensitivity_threshold(np.zeros(4), np.arange(4.0), 0.9))
    f = flags(np.array([[0.9, 0.2], [np.nan, 0.8]]), np.array([math.nan, 0.5]))
    assert f.tolist() == [[False, False], [False, True]]


def test_threshold_rejects_a_bad_target():
    with pytest.raises(ValueError, match="target sensitivity"):
        sensitivity_threshold(np.ones(3), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="target sensitivity"):
        sensitivity_threshold(np.ones(3), np.ones(3), 1.5)


def test_thresholds_fit_on_one_split_applied_to_another():
    rng = np.random.default_rng(4)
    y = (rng.random((6000, 3)) < [0.05, 0.2, 0.5]).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=(6000, 3)) + 2.0 * y)))
    fit, test = slice(0, 4000), slice(4000, 6000)
    t = sensitivity_thresholds(y[fit], p[fit], 0.9)
    on_fit = flag_counts(y[fit], p[fit], t)
    assert np.all(on_fit.sensitivity >= 0.9)
    applied = flag_counts(y[test], p[test], t)
    # Same distribution: near the target (within 3 binomial standard errors), not exactly on it.
    assert np.all(np.abs(applied.sensitivity - 0.9) < 3 * np.sqrt(0.9 * 0.1 / applied.positives))
    assert applied.positives.tolist() == y[test].sum(axis=0).tolist()
    assert np.all(applied.flagged == applied.true_positives + applied.false_positives)


def test_flag_counts_and_rates_by_hand():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    p = np.array([[0.9, 0.1], [0.4, 0.7], [0.6, 0.2], [0.2, 0.3]])
    c = flag_counts(y, p, np.array([0.5, 0.25]))
    assert c.flagged.tolist() == [2, 2]  # label 0: rows 0, 2; label 1: rows 1, 3
    assert c.true_positives.tolist() == [1, 1] and c.false_positives.tolist() == [1, 1]
    assert c.positives.tolist() == [2, 1] and c.negatives.tolist() == [2, 3]
    assert c.sensitivity == pytest.approx([0.5, 1.0])
    assert c.specificity == pytest.approx([0.5, 2 / 3])
    assert c.ppv == pytest.approx([0.5, 0.5])
    empty = flag_counts(np.zeros((0, 2)), np.zeros((0, 2)), np.array([0.5, 0.5]))
    assert np.all(np.isnan(empty.sensitivity)) and empty.flagged.tolist() == [0, 0]


def test_ranking_highest_probability_first_ties_by_image_id():
    ids = np.array(["c.png", "a.png", "b.png", "d.png"], dtype=object)
    p = np.array([[0.2, 0.7], [0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    r = rank_by_top_probability(ids, p)
    assert ids[r.order].tolist() == ["a.png", "b.png", "c.png", "d.png"]
    assert r.top_label.tolist() == [0, 1, 1, 0]  # d.png ties: the first label wins
    assert r.top_prob.tolist() == [0.9, 0.7, 0.7, 0.5]


def test_ranking_refuses_missing_probabilities_and_mismatched_ids():
    with pytest.raises(ValueError, match="missing"):
        rank_by_top_probability(np.array(["a"]), np.array([[np.nan, 0.1]]))
    with pytest.raises(ValueError, match="do not match"):
        rank_by_top_probability(np.array(["a", "b"]), np.array([[0.1, 0.2]]))
    assert rank_by_top_probability(np.array([]), np.zeros((0, 3))).order.size == 0


def test_agreement_counts_flips_each_way_per_label():
    a = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=bool)
    b = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=bool)
    agree = flag_agreement(a, b)
    assert agree.images == 4
    assert agree.only_a.tolist() == [1, 0, 1] and agree.only_b.tolist() == [0, 1, 1]
    assert agree.flips.tolist() == [1, 1, 2] and agree.flip_share.tolist() == [0.25, 0.25, 0.5]
    assert agree.overall_share == pytest.approx(4 / 12)
    partial = flag_agreement(a, b, compared=np.array([True, False, True]))
    assert partial.flips.tolist() == [1, 0, 2] and math.isnan(partial.flip_share[1])
    assert partial.overall_share == pytest.approx(3 / 8)
    assert flag_agreement(a, a).flips.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="same"):
        flag_agreement(a, b[:, :2])


def test_pick_per_label_takes_turns_over_labels_preferring_boxed_images():
    p = np.array([[0.9, 0.8], [0.7, 0.95], [0.6, 0.1], [0.5, 0.2]])
    flagged = np.array([[1, 1], [1, 1], [1, 0], [0, 1]], dtype=bool)
    boxed = np.zeros((4, 2), dtype=bool)
    # Label 0 takes its best (row 0), label 1 its best not taken (row 1), then label 0 again (row 2), ...
    assert pick_per_label(p, flagged, boxed, 10) == [(0, 0), (1, 1), (2, 0), (3, 1)]
    assert pick_per_label(p, flagged, boxed, 1) == [(0, 0)]
    boxed[2, 0] = boxed[3, 1] = True  # a box for the label comes first, whatever its probability
    assert pick_per_label(p, flagged, boxed, 2) == [(2, 0), (3, 1)]
    assert pick_per_label(p, np.zeros((4, 2), dtype=bool), boxed, 5) == []
    # Ties in probability go to the lower row.
    assert pick_per_label(np.full((3, 1), 0.5), np.ones((3, 1), dtype=bool), np.zeros((3, 1), bool), 2) == \
        [(0, 0), (1, 0)]
