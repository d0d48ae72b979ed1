"""Triage figures and expert-vs-NIH statistics (xray.evaluation.triage, xray.evaluation.expert): pure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xray.evaluation.expert import label_agreement, side_by_side, weighted_auroc
from xray.evaluation.triage import ANY_FINDING, any_finding, any_finding_scores, triage, triage_curve, triage_point


def test_weighted_auroc_equals_the_auroc_of_the_repeated_images_ties_included():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    w = rng.integers(0, 4, (5, 300))
    got = weighted_auroc(y, s, np.vstack([np.ones(300), w]))
    assert got[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    for k in range(5):
        rep = np.repeat(np.arange(300), w[k])
        assert got[k + 1] == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-12)
    assert math.isnan(weighted_auroc(y, s, (~y)[None, :].astype(float))[0])  # no positive drawn


def test_side_by_side_is_paired_and_reproducible():
    rng = np.random.default_rng(1)
    truth = rng.random(500) < 0.2
    nih = np.where(rng.random(500) < 0.15, ~truth, truth)
    s = truth * 1.5 + rng.normal(size=500)
    a = side_by_side("x", truth, nih, s, 300, 0.95, np.random.default_rng(7))
    b = side_by_side("x", truth, nih, s, 300, 0.95, np.random.default_rng(7))
    assert a == b
    assert a.expert_auroc == pytest.approx(roc_auc_score(truth, s))
    assert a.nih_auroc == pytest.approx(roc_auc_score(nih, s))
    assert a.delta_low < a.delta < a.delta_high and a.delta_low > 0  # the scores follow the experts: a clear gap
    # Paired: the interval of the difference is narrower than the two intervals' spans added.
    assert a.delta_high - a.delta_low < (a.expert_high - a.expert_low) + (a.nih_high - a.nih_low)


def test_label_agreement_counts_and_rates():
    expert = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    nih = np.array([1, 0, 0, 1, 0, 0, 0, 1])
    a = label_agreement("Nodule or mass", expert, nih, 0.95)
    assert (a.both, a.only_nih, a.only_expert, a.neither, a.images) == (2, 1, 2, 3, 8)
    assert a.sensitivity == pytest.approx(2 / 4) and a.ppv == pytest.approx(2 / 3)
    assert 0 < a.sensitivity_low < 0.5 < a.sensitivity_high < 1


def test_triage_point_on_a_hand_made_case():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0])
    s = np.array([.9, .8, .7, .2, .1, .3, .05, .6, .85, .4, .1, .2, .5, .01])
    fit = np.arange(14) < 8
    apply = ~fit
    p = triage_point("x", y, s, fit, apply, 0.75, 0.95)
    assert p.threshold == pytest.approx(0.7)  # the 3rd highest of 4 fit positives
    assert (p.fit_images, p.fit_positives, p.apply_images, p.apply_positives) == (8, 4, 6, 2)
    assert p.fit_cleared == pytest.approx(5 / 8)  # .2 .1 .3 .05 .6 are below .7
    assert p.cleared == pytest.approx(5 / 6) and p.sensitivity == pytest.approx(0.5) and p.missed == 1
    unknown = y.copy()
    unknown[8] = -1  # a hedged read leaves the image out
    q = triage_point("x", unknown, s, fit, apply, 0.75, 0.95)
    assert (q.apply_images, q.apply_positives, q.sensitivity) == (5, 1, 0.0)


def test_any_finding_clears_only_below_every_labels_threshold():
    labels = np.array([[1, 0], [0, 1], [0, 0], [0, 0], [-1, 0], [1, -1]])
    assert any_finding(labels).tolist() == [1, 1, 0, 0, -1, 1]
    scores = np.array([[0.8, 0.1], [0.1, 0.4], [0.2, 0.1], [0.5, 0.3], [0.9, 0.9], [0.9, 0.9]])
    fit = np.ones(6, bool)
    any_score = any_finding_scores(labels, scores, fit, 1.0)  # thresholds: label 0 -> 0.8, label 1 -> 0.4
    np.testing.assert_allclose(any_score, [1.0, 1.0, 0.25, 0.75, 2.25, 2.25])
    points = triage(("a", "b"), labels, scores, fit, fit, 0.95, targets=(1.0,))
    assert [p.label for p in points] == ["a", "b", ANY_FINDING]
    any_point = points[-1]
    assert any_point.sensitivity == 1.0 and any_point.cleared == pytest.approx(2 / 5)


def test_triage_curve_runs_from_clearing_nothing_to_clearing_everything():
    y = np.array([1, 0, 1, 0, 0, -1])
    s = np.array([0.9, 0.1, 0.5, 0.5, 0.2, 0.3])
    sens, cleared = triage_curve(y, s)
    assert sens.tolist() == [1.0, 1.0, 1.0, 0.5, 0.0] and cleared.tolist() == [0.0, 0.2, 0.4, 0.8, 1.0]
    assert triage_curve(np.zeros(3), np.ones(3))[0].size == 0
