"""The decision budget of an INT8 model (xray.evaluation.decision_budget): flips at FP32's screening thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray.evaluation.decision_budget import DecisionBudget, decision_figures, fp32_thresholds


def test_flips_are_counted_at_fp32_thresholds_for_sensitivity_0_9():
    labels = np.array([[1, 0], [1, 0], [1, 1], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0],
                       [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]])
    p32 = np.zeros((20, 2))
    p32[:10, 0] = np.linspace(0.95, 0.5, 10)  # positives of label 0: the 9th highest is 0.55
    p32[10:, 0] = np.linspace(0.6, 0.1, 10)
    p32[:, 1] = np.linspace(0.9, 0.0, 20)
    thresholds = fp32_thresholds(labels, p32)
    assert thresholds[0] == pytest.approx(0.55) and thresholds[1] == pytest.approx(p32[2, 1])
    p8 = p32.copy()
    p8[8, 0] = 0.54  # a positive falls below: one flip
    p8[11, 0] = 0.56  # a negative rises above (0.5444 -> 0.56): another
    p8[5, 1] += 0.2  # far from label 1's threshold but now above it: a flip on label 1
    p8[2, 1] -= 1e-6  # the image label 1's threshold was fit on: any change flips it; left out (no test image sits
    # exactly on a threshold), as is row 8 for label 0 below
    f = decision_figures(("A", "B"), labels, p32, p8, thresholds)
    # Label 0's threshold 0.55 is row 8's own score: row 8 is left out, so its drop to 0.54 is not counted.
    assert f.flip_share == (pytest.approx(1 / 19), pytest.approx(1 / 19)) and f.at_threshold == 2
    p8[8, 0], p8[9, 0] = 0.55, 0.49  # row 9 (0.5, a positive under the threshold) falls further: no flip
    p8[12, 0] = 0.58  # a negative (0.489) rises above: a flip
    f = decision_figures(("A", "B"), labels, p32, p8, thresholds)
    assert f.flip_share == (pytest.approx(2 / 19), pytest.approx(1 / 19))
    assert f.worst_flips == pytest.approx(2 / 19) and f.worst_label == "A"
    assert f.mean_flips == pytest.approx(1.5 / 19)
    assert f.p99 == pytest.approx(np.quantile(np.abs(p8 - p32).ravel(), 0.99))
    budget = DecisionBudget(flips=0.05, p99=0.5)
    assert f.over(budget) == ["worst-label flips 10.5% (A) > 5.0%"] and not f.meets(budget)
    assert f.meets(DecisionBudget(flips=0.11, p99=0.5))
    body = f.to_json()
    assert body["worst_label_flips"] == pytest.approx(2 / 19) and body["flip_share"]["B"] == pytest.approx(1 / 19)
    assert body["left_out_at_threshold"] == 2


def test_a_label_without_positives_has_no_threshold_and_counts_no_flips():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p32 = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4], [0.2, 0.5]])
    thresholds = fp32_thresholds(labels, p32)
    assert math.isnan(thresholds[1])
    f = decision_figures(("A", "B"), labels, p32, p32 + 0.01, thresholds)
    assert math.isnan(f.flip_share[1]) and f.worst_flips == 0.0 and f.worst_label == "A"
    assert f.meets(DecisionBudget())
