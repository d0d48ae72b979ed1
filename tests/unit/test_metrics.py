"""xray.evaluation.metrics against scikit-learn's roc_auc_score, and the nan conventions for one-class labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xray.evaluation.metrics import auroc, mean_auroc, per_label_auroc


@pytest.mark.parametrize("seed", range(8))
def test_auroc_agrees_with_sklearn_on_heavily_tied_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
    y[0], y[1] = 0, 1  # both classes present
    # Few distinct values -> long runs of ties, across both classes.
    score = rng.integers(0, int(rng.integers(2, 8)), n).astype(np.float64) / 7.0
    assert len(np.unique(score)) < n / 2
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_auroc_agrees_with_sklearn_on_continuous_float32_scores(seed):
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 2, 1000)
    score = (rng.normal(size=1000) + 0.7 * y).astype(np.float32)
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-9)


def test_auroc_known_values():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auroc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # a tie counts one half
    # pos {0.4, 0.8} vs neg {0.4, 0.1, 0.5}: pairs won 0.5+1+0 + 1+1+1 = 4.5 of 6.
    assert auroc(np.array([1, 0, 1, 0, 0]), np.array([0.4, 0.4, 0.8, 0.1, 0.5])) == pytest.approx(0.75)


def test_auroc_is_invariant_to_order_and_monotone_transforms():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 5, 200).astype(float)
    perm = rng.permutation(200)
    base = auroc(y, s)
    assert auroc(y[perm], s[perm]) == pytest.approx(base, abs=1e-12)
    assert auroc(y, np.exp(s) * 3 - 1) == pytest.approx(base, abs=1e-12)
    assert auroc(y, -s) == pytest.approx(1 - base, abs=1e-12)


def test_auroc_accepts_bool_and_float_labels_and_2d_columns():
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    s = np.array([0.3, 0.6, 0.2, 0.1, 0.9])
    expected = roc_auc_score(y, s)
    assert auroc(y.astype(bool), s) == pytest.approx(expected, abs=1e-12)
    assert auroc(y, s) == pytest.approx(expected, abs=1e-12)
    assert auroc(y.reshape(-1, 1), s.reshape(-1, 1)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("label", [0, 1])
def test_auroc_is_nan_for_one_class(label):
    assert math.isnan(auroc(np.full(10, label), np.linspace(0, 1, 10)))


def test_auroc_is_nan_for_no_samples():
    assert math.isnan(auroc(np.array([]), np.array([])))


def test_auroc_rejects_length_mismatch():
    with pytest.raises(ValueError, match="3 values but score has 4"):
        auroc(np.array([0, 1, 0]), np.array([0.1, 0.2, 0.3, 0.4]))


def test_per_label_auroc_matches_sklearn_column_by_column():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (150, 14))
    y[:, 5] = 0  # a label with no positives
    y[:, 9] = 1  # a label with no negatives
    p = rng.integers(0, 10, (150, 14)) / 10.0
    out = per_label_auroc(y, p)
    assert isinstance(out, list) and len(out) == 14
    for j in range(14):
        if j in (5, 9):
            assert math.isnan(out[j])
        else:
            assert out[j] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-9)


def test_per_label_auroc_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(10, 4\)"):
        per_label_auroc(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        per_label_auroc(np.zeros((10, 3)), np.zeros((9, 3)))


def test_per_label_auroc_zero_labels():
    assert per_label_auroc(np.zeros((5, 0)), np.zeros((5, 0))) == []


def test_mean_auroc_ignores_nan():
    assert mean_auroc([0.5, math.nan, 1.0, math.nan]) == pytest.approx(0.75)
    assert mean_auroc([0.6]) == pytest.approx(0.6)
    assert isinstance(mean_auroc([0.6, 0.7]), float)


def test_mean_auroc_is_nan_when_no_label_counts():
    assert math.isnan(mean_auroc([math.nan, math.nan]))
    assert math.isnan(mean_auroc([]))
