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
    f = decision_figures(("A", "B"), labels, p32, p8, thresholds)
    assert f.flip_share == (pytest.approx(2 / 20), pytest.approx(1 / 20))
    assert f.worst_flips == pytest.approx(0.1) and f.worst_label == "A" and f.mean_flips == pytest.approx(0.075)
    assert f.p99 == pytest.approx(np.quantile(np.abs(p8 - p32).ravel(), 0.99))
    budget = DecisionBudget(flips=0.05, p99=0.5)
    assert f.over(budget) == ["worst-label flips 10.0% (A) > 5.0%"] and not f.meets(budget)
    assert f.meets(DecisionBudget(flips=0.1, p99=0.5))
    body = f.to_json()
    assert body["worst_label_flips"] == pytest.approx(0.1) and body["flip_share"]["B"] == pytest.approx(0.05)


def test_a_label_without_positives_has_no_threshold_and_counts_no_flips():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p32 = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4], [0.2, 0.5]])
    thresholds = fp32_thresholds(labels, p32)
    assert math.isnan(thresholds[1])
    f = decision_figures(("A", "B"), labels, p32, p32 + 0.01, thresholds)
    assert math.isnan(f.flip_share[1]) and f.worst_flips == 0.0 and f.worst_label == "A"
    assert f.meets(DecisionBudget())
