"""xray.evaluation.comparison: a verdict never stronger than its interval, and the demo's lines built from it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xray.evaluation.comparison import PairedScores, delta_lines, verdict
from xray.evaluation.intervals import mean_auroc_interval, paired_auroc_delta


def test_a_win_is_claimed_only_when_the_interval_excludes_zero():
    assert verdict(0.031, 0.012, 0.050, 0.95) == "ensemble better by 0.0310 (95% CI 0.0120 to 0.0500)"
    assert verdict(-0.028, -0.051, -0.005, 0.95) == "single model better by 0.0280 (95% CI 0.0050 to 0.0510)"
    assert verdict(0.020, -0.004, 0.044, 0.95) == "no measured difference (+0.0200, 95% CI -0.0040 to +0.0440)"
    assert verdict(-0.020, -0.044, 0.004, 0.9) == "no measured difference (-0.0200, 90% CI -0.0440 to +0.0040)"


def test_an_interval_touching_zero_is_no_difference_and_a_missing_one_is_not_measured():
    assert verdict(0.02, 0.0, 0.04, 0.95).startswith("no measured difference")
    assert verdict(-0.02, -0.04, 0.0, 0.95).startswith("no measured difference")
    assert verdict(0.1, math.nan, math.nan, 0.95).startswith("not measured")
    assert verdict(math.nan, math.nan, math.nan, 0.95).startswith("not measured")


def test_the_names_are_the_callers():
    assert verdict(0.05, 0.01, 0.09, 0.95, a="int8", b="fp32") == "int8 better by 0.0500 (95% CI 0.0100 to 0.0900)"
    assert verdict(-0.05, -0.09, -0.01, 0.95, a="int8", b="fp32").startswith("fp32 better by 0.0500")


def _paired(n: int = 400, seed: int = 0) -> PairedScores:
    """Three labels: on A the ensemble sees the truth and the single model does not; on B the reverse; on C
    both are noise of the same kind."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(np.float32)
    sharp, noise = y + rng.normal(0, 0.5, y.shape), rng.normal(0, 1, y.shape)
    a = np.stack([sharp[:, 0], noise[:, 1], noise[:, 2]], axis=1)
    b = np.stack([noise[:, 0], sharp[:, 1], rng.normal(0, 1, n)], axis=1)
    return PairedScores(("A", "B", "C"), y, a, b)


def test_mean_delta_over_a_subset_is_the_evaluation_modules_on_those_columns():
    p = _paired()
    got = p.mean_delta(["C", "A", "Z"], 0.95)  # Z is not scored by both: left out
    want = mean_auroc_interval(p.truth[:, [2, 0]], p.a[:, [2, 0]], 0.95, baseline=p.b[:, [2, 0]])
    assert (got.mean, got.low, got.high, got.labels) == pytest.approx((want.mean, want.low, want.high, 2))
    assert p.mean_delta(["Z"], 0.95).labels == 0 and math.isnan(p.mean_delta([], 0.95).mean)


def test_delta_lines_word_each_row_from_its_own_interval():
    p = _paired()
    lines = delta_lines(p, ["A", "B", "C", "Hernia"], 0.95, focus_name="small-finding")
    assert lines[0] == "AUROC ensemble - single model on the 400 test images both scored (paired 95% CIs, DeLong):"
    rows = {line.split("  ")[1].strip(): line for line in lines[1:]}
    pos = [int(p.truth[:, j].sum()) for j in range(3)]
    assert set(rows) == {"mean of 3 labels", "mean of 3 small-finding labels", f"A ({pos[0]} positive)",
                         f"B ({pos[1]} positive)", f"C ({pos[2]} positive)"}  # Hernia: not scored, not printed
    d_a = paired_auroc_delta(p.truth[:, 0], p.a[:, 0], p.b[:, 0], 0.95)
    assert d_a.low > 0
    assert (f"ensemble {d_a.auroc_a:.4f} vs single model {d_a.auroc_b:.4f}: ensemble better by {d_a.delta:.4f}"
            in rows[f"A ({pos[0]} positive)"])
    assert "single model better by" in rows[f"B ({pos[1]} positive)"]
    assert "no measured difference" in rows[f"C ({pos[2]} positive)"]
    # A and B cancel: over all three labels the interval holds 0, and no win is claimed
    assert "no measured difference" in rows["mean of 3 labels"]


def test_a_label_without_positives_is_not_measured_and_shows_no_auroc():
    p = _paired()
    truth = p.truth.copy()
    truth[:, 2] = 0
    lines = delta_lines(PairedScores(p.labels, truth, p.a, p.b), ["C"], 0.95)
    assert lines[2].split("  ")[1] == "mean of 0 focus labels"
    assert lines[2].endswith("not measured (no interval: a class is missing or has one image)")
    assert lines[3].split()[:3] == ["C", "(0", "positive)"]
    assert lines[3].endswith("  not measured (no interval: a class is missing or has one image)")
    assert "nan" not in "".join(lines)
