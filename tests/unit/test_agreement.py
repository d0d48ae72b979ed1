"""xray.evaluation.agreement: FP32 vs INT8/bf16 beyond AUROC: |dp| quantiles and flags that flip at FP32's threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray.evaluation.agreement import abs_diff_quantiles, flip_shares, precision_agreement


def test_quantiles_of_the_absolute_differences():
    ref = np.zeros((100, 2))
    other = np.zeros((100, 2))
    other[:, 0] = np.linspace(0.0, 0.99, 100)  # 100 values 0.00 .. 0.99, and 100 zeros in column 1
    q = abs_diff_quantiles(ref, other)
    assert q["max"] == pytest.approx(0.99)
    assert q["median"] == pytest.approx(0.0)
    assert q["p99"] == pytest.approx(np.quantile(np.r_[np.linspace(0, 0.99, 100), np.zeros(100)], 0.99))
    assert math.isnan(abs_diff_quantiles(np.zeros((0, 2)), np.zeros((0, 2)))["max"])


def test_flip_shares_at_a_threshold():
    ref = np.array([[0.1, 0.5], [0.6, 0.5], [0.7, 0.2], [0.2, 0.9]])
    other = np.array([[0.1, 0.49], [0.55, 0.5], [0.7, 0.2], [0.2, 0.9]])
    assert flip_shares(ref, other, np.array([0.58, 0.5])) == [0.25, 0.25]
    shares = flip_shares(ref, other, np.array([math.nan, 0.95]))
    assert math.isnan(shares[0]) and shares[1] == 0.0


def test_identical_runs_agree_perfectly():
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 3)) < 0.4).astype(np.float32)
    labels[:, 2] = 0  # one label without positives: no AUROC, no threshold, no flip share
    probs = rng.random((50, 3)).astype(np.float32)
    a = precision_agreement(labels, probs, probs.copy())
    assert a.images == 50 and a.auroc_drop == 0.0
    assert a.abs_prob_diff == {"median": 0.0, "p99": 0.0, "max": 0.0}
    assert a.flip_share[:2] == (0.0, 0.0) and math.isnan(a.flip_share[2]) and math.isnan(a.thresholds[2])
    assert math.isnan(a.auroc[2]) and a.to_json()["mean_auroc"] == a.mean_auroc


def test_a_perturbed_run_reports_its_drop_and_flips():
    labels = np.array([[1], [1], [0], [0]], np.float32)
    ref = np.array([[0.9], [0.8], [0.3], [0.1]], np.float32)
    other = np.array([[0.9], [0.2], [0.3], [0.1]], np.float32)  # one positive falls below one negative
    a = precision_agreement(labels, ref, other)
    assert a.reference_mean_auroc == 1.0 and a.mean_auroc == 0.75 and a.auroc_drop == 0.25
    assert a.thresholds == (pytest.approx(0.8),)  # Youden on FP32: flag p >= 0.8
    assert a.flip_share == (0.25,)
    assert a.abs_prob_diff["max"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="differ"):
        precision_agreement(labels, ref, other[:3])
