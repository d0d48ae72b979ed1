"""xray.evaluation.intervals: bootstrap AUROC intervals, DeLong paired deltas, the mean AUROC and mean delta with their
intervals, Wilson intervals, ROC curves and histograms (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xray.evaluation.intervals import (
    auroc_influence,
    auroc_intervals,
    bootstrap_auroc,
    class_histogram,
    mean_auroc_interval,
    paired_auroc_delta,
    percentile_interval,
    roc_curve,
    wilson_interval,
)
from xray.evaluation.metrics import auroc


def tied_data(seed: int, n: int, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, L) labels with label-dependent prevalence and (n, L) scores with many ties (rounded to 0.05)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < rng.uniform(0.03, 0.7, n_labels)).astype(np.int8)
    y[:2] = [[0] * n_labels, [1] * n_labels]
    p = np.round(1 / (1 + np.exp(-(rng.normal(size=(n, n_labels)) + 1.2 * y))) * 20) / 20
    return y, p.astype(np.float32)


def naive_stratified_bootstrap(y: np.ndarray, s: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = []
    for _ in range(resamples):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        out.append(auroc(y[idx], s[idx]))
    return np.array(out)


@pytest.mark.parametrize("seed", range(3))
def test_point_aurocs_agree_with_sklearn_on_tied_scores(seed):
    y, p = tied_data(seed, 700, 6)
    y[:, 4] = 0  # a label without positives
    assert len(np.unique(p)) <= 21
    estimates = auroc_intervals(y, p, resamples=50, level=0.95, seed=seed)
    for j, est in enumerate(estimates):
        if j == 4:
            assert math.isnan(est.auroc) and math.isnan(est.low) and math.isnan(est.high)
            assert (est.positives, est.negatives) == (0, 700)
            continue
        assert est.auroc == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-6)
        assert (est.positives, est.negatives) == (int(y[:, j].sum()), 700 - int(y[:, j].sum()))


@pytest.mark.parametrize("prevalence", [0.25, 0.8])  # 0.8: positives are the larger class (the roles swap)
def test_bootstrap_distribution_matches_a_naive_stratified_bootstrap(prevalence):
    rng = np.random.default_rng(11)
    y = (rng.random(300) < prevalence).astype(int)
    s = np.round(rng.normal(size=300) + 0.8 * y, 1)  # ties within and across the classes
    ours = bootstrap_auroc(y, s, 3000, np.random.default_rng(1))
    naive = naive_stratified_bootstrap(y, s, 3000, seed=2)
    assert ours.mean() == pytest.approx(naive.mean(), abs=0.004)
    assert ours.std() == pytest.approx(naive.std(), rel=0.08)
    assert np.quantile(ours, 0.025) == pytest.approx(np.quantile(naive, 0.025), abs=0.01)
    assert np.quantile(ours, 0.975) == pytest.approx(np.quantile(naive, 0.975), abs=0.01)
    assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_interval_contains_the_estimate_and_narrows_with_n():
    def width(n: int) -> tuple[float, float, float]:
        rng = np.random.default_rng(n)
        y = (rng.random(n) < 0.2).astype(int)
        s = rng.normal(size=n) + 1.0 * y
        est = auroc_intervals(y[:, None], s[:, None], resamples=1000, level=0.95, seed=0)[0]
        assert est.low < est.auroc < est.high
        return est.low, est.auroc, est.high

    small, large = width(300), width(12_000)
    # The width shrinks like 1/sqrt(n): 40x the images, about 1/6 the width.
    assert (large[2] - large[0]) < 0.3 * (small[2] - small[0])
    assert large[2] - large[0] < 0.05


def test_intervals_are_deterministic_and_independent_of_threads():
    y, p = tied_data(5, 500, 4)
    one = auroc_intervals(y, p, 200, 0.95, seed=3, workers=1)
    assert one == auroc_intervals(y, p, 200, 0.95, seed=3, workers=4)
    other = auroc_intervals(y, p, 200, 0.95, seed=4, workers=1)
    assert [e.auroc for e in one] == [e.auroc for e in other]  # the point estimate does not resample
    assert [e.low for e in one] != [e.low for e in other]
    # A label's interval does not depend on which labels sit beside it.
    assert auroc_intervals(y[:, :2], p[:, :2], 200, 0.95, seed=3)[1] == one[1]


def test_bootstrap_of_a_perfect_ranking_is_one_and_one_class_is_nan():
    y = np.array([0, 0, 0, 1, 1])
    assert np.all(bootstrap_auroc(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9]), 50, np.random.default_rng(0)) == 1.0)
    assert np.all(np.isnan(bootstrap_auroc(np.ones(5), np.arange(5.0), 10, np.random.default_rng(0))))
    assert percentile_interval(np.full(4, np.nan), 0.95) == (pytest.approx(math.nan, nan_ok=True),) * 2


def test_percentile_interval_levels():
    reps = np.arange(1001) / 1000.0
    assert percentile_interval(reps, 0.95) == pytest.approx((0.025, 0.975))
    assert percentile_interval(reps, 0.5) == pytest.approx((0.25, 0.75))


def test_paired_delta_values_and_identical_models():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    a = rng.normal(size=400) + 1.2 * y
    b = a + rng.normal(scale=0.8, size=400)
    d = paired_auroc_delta(y, a, b, 0.95)
    assert d.auroc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert d.auroc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert d.delta == pytest.approx(d.auroc_a - d.auroc_b, abs=1e-12)
    assert d.low < d.delta < d.high and d.high - d.low == pytest.approx(2 * 1.959964 * d.se, rel=1e-5)
    same = paired_auroc_delta(y, a, a, 0.95)
    assert same.delta == 0.0 and same.se == pytest.approx(0.0, abs=1e-12)


def test_paired_delta_se_agrees_with_a_paired_bootstrap():
    rng = np.random.default_rng(1)
    n = 600
    y = (rng.random(n) < 0.25).astype(int)
    a = np.round(rng.normal(size=n) + 1.0 * y, 1)
    b = np.round(0.6 * a + rng.normal(scale=0.8, size=n) + 0.3 * y, 1)
    d = paired_auroc_delta(y, a, b, 0.95)
    boot = []
    for _ in range(1500):
        i = rng.integers(0, n, n)
        if 0 < y[i].sum() < n:
            boot.append(auroc(y[i], a[i]) - auroc(y[i], b[i]))
    assert d.se == pytest.approx(np.std(boot), rel=0.1)


def test_paired_delta_is_nan_without_both_classes():
    d = paired_auroc_delta(np.zeros(5), np.arange(5.0), np.arange(5.0), 0.95)
    assert math.isnan(d.delta) and math.isnan(d.se)
    d = paired_auroc_delta(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9]), np.array([0.3, 0.2, 0.1]), 0.95)
    assert d.delta == pytest.approx(1.0) and math.isnan(d.se)  # one positive: no variance estimate


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_area_is_the_auroc_and_curve_is_monotone(seed):
    y, p = tied_data(seed, 500, 1)
    fpr, tpr = roc_curve(y[:, 0], p[:, 0], max_points=10_000)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert fpr.size == len(np.unique(p[:, 0])) + 1  # one point per distinct score
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]), abs=1e-9)


def test_roc_curve_is_thinned_for_plotting_and_empty_for_one_class():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 5000)
    fpr, tpr = roc_curve(y, rng.random(5000), max_points=150)
    assert fpr.size <= 150 and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert roc_curve(np.zeros(4), np.arange(4.0))[0].size == 0


def test_class_histogram_counts_each_class():
    y = np.array([1, 0, 0, 1, 0, 1])
    h = class_histogram(y, np.array([0.0, 0.04, 0.5, 0.96, 1.0, 1.0]), bins=10)
    assert h.edges.size == 11 and h.edges[0] == 0.0 and h.edges[-1] == 1.0
    assert h.positives.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 falls in the last bin
    assert h.negatives.tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_influence_components_give_delongs_variance_and_covariance():
    y, p = tied_data(3, 400, 2)
    a, psi = auroc_influence(y[:, 0], p[:, 0])
    b, psi_b = auroc_influence(y[:, 0], p[:, 1])
    assert a == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert abs(psi.sum()) < 1e-9  # centred within each class
    d = paired_auroc_delta(y[:, 0], p[:, 0], p[:, 1], 0.95)
    assert math.sqrt(np.square(psi - psi_b).sum()) == pytest.approx(d.se, rel=1e-9)
    # One label: the mean interval is DeLong's, and the mean delta interval is the paired delta's.
    one = mean_auroc_interval(y[:, :1], p[:, :1], 0.95)
    assert (one.mean, one.labels) == (pytest.approx(a), 1)
    assert one.se == pytest.approx(math.sqrt(np.square(psi).sum()))
    delta = mean_auroc_interval(y[:, :1], p[:, :1], 0.95, baseline=p[:, 1:2])
    assert (delta.mean, delta.low, delta.high) == (pytest.approx(d.delta), pytest.approx(d.low), pytest.approx(d.high))
    assert math.isnan(auroc_influence(np.zeros(5), np.arange(5.0))[0])


def test_mean_interval_matches_a_joint_bootstrap_over_images():
    """Labels scored on the same images are correlated; the summed components must see that: their se agrees
    with a bootstrap that resamples whole images (all labels together), and exceeds the independent-labels
    one when the labels' errors are shared."""
    rng = np.random.default_rng(5)
    n, n_labels = 3000, 4
    common = rng.random((n, 1)) < 0.15  # findings that come together (as effusion and atelectasis do)
    y = (common | (rng.random((n, n_labels)) < 0.05)).astype(np.int8)
    shared = rng.normal(size=(n, 1))  # one image-level factor in every label's score: correlated AUROCs
    p = 1.2 * y + shared + 0.6 * rng.normal(size=(n, n_labels))
    est = mean_auroc_interval(y, p, 0.95)
    assert est.mean == pytest.approx(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(n_labels)]))
    reps = []
    for _ in range(300):
        idx = rng.integers(0, n, n)
        reps.append(np.mean([auroc(y[idx, j], p[idx, j]) for j in range(n_labels)]))
    assert est.se == pytest.approx(np.std(reps), rel=0.2)
    independent = math.sqrt(sum(np.square(auroc_influence(y[:, j], p[:, j])[1]).sum() for j in range(n_labels))) / 4
    assert est.se > independent * 1.3  # 1.6 here: treating the labels as independent would be far too narrow
    assert est.low < est.mean < est.high and est.high - est.low == pytest.approx(2 * 1.959964 * est.se)


def test_mean_interval_skips_one_class_labels_and_is_nan_without_any():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2], [0.4, 0.4]])
    est = mean_auroc_interval(y, p, 0.9)
    assert est.labels == 1 and est.mean == 1.0
    empty = mean_auroc_interval(y[:, 1:], p[:, 1:], 0.9)
    assert empty.labels == 0 and math.isnan(empty.mean) and math.isnan(empty.low)
    with pytest.raises(ValueError, match="same"):
        mean_auroc_interval(y, p[:, :1], 0.9)


def test_wilson_interval_known_values_and_edges():
    low, high = wilson_interval(np.array([9, 0, 10, 0]), np.array([10, 10, 10, 0]), 0.95)
    assert low[0] == pytest.approx(0.5958, abs=1e-4) and high[0] == pytest.approx(0.9821, abs=1e-4)
    assert low[1] == 0.0 and high[1] == pytest.approx(0.2775, abs=1e-4)
    assert high[2] == 1.0 and low[2] == pytest.approx(0.7225, abs=1e-4)
    assert math.isnan(low[3]) and math.isnan(high[3])
    # Coverage over many binomial draws: about the level (Wilson is close to nominal for n = 40, p = 0.9).
    rng = np.random.default_rng(0)
    k = rng.binomial(40, 0.9, 4000)
    lo, hi = wilson_interval(k, np.full(k.size, 40), 0.95)
    assert 0.92 < np.mean((lo <= 0.9) & (0.9 <= hi)) < 0.98
