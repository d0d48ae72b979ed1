"""The report's summary box: conclusions worded from their intervals, badges on the labels that need care."""

from __future__ import annotations

import numpy as np

from jobs.report_stages import Evaluation, Screening
from jobs.report_summary import SummarySettings, badges, summarise
from xray.evaluation.intervals import AurocDelta, AurocEstimate, MeanInterval
from xray.evaluation.screening import FlagCounts, Ranking


def _counts(tp, pos, fp=(0, 0, 0), neg=(50, 50, 50)) -> FlagCounts:
    tp, pos, fp, neg = (np.array(v) for v in (tp, pos, fp, neg))
    return FlagCounts(tp + fp, tp, fp, pos, neg)


def _evaluation(delta: tuple[float, float, float] | None = None) -> Evaluation:
    est = [AurocEstimate(0.91, 0.86, 0.95, 40, 300), AurocEstimate(0.62, 0.45, 0.78, 6, 334),
           AurocEstimate(0.31, 0.20, 0.44, 30, 310)]
    mean_delta = None if delta is None else MeanInterval(delta[0], 0.01, delta[1], delta[2], 3)
    return Evaluation(("Effusion", "Nodule", "Mass"), est, MeanInterval(0.613, 0.02, 0.574, 0.652, 3), [], [],
                      mean_delta=mean_delta, deltas=[AurocDelta(0, 0, 0, 0, 0, 0)] * 3 if delta else None,
                      paired_images=340)


def _screening() -> Screening:
    fit = _counts((9, 2, 5), (10, 2, 5))
    applied = _counts((37, 5, 9), (40, 6, 30))
    return Screening(np.array([0.3, 0.4, 0.5]), fit, applied, np.zeros((3, 3), bool), np.ones(3, bool),
                     Ranking(np.arange(3), np.zeros(3), np.zeros(3, int)))


def _settings(**kw) -> SummarySettings:
    base = dict(names=("ensemble int8", "single int8"), eval_split="test", fit_split="val", apply_split="test",
                target_sensitivity=0.9, ci_level=0.95, evaluated_images=340, synthetic=True,
                metadata="Data_Entry_2017.csv")
    return SummarySettings(**{**base, **kw})


def test_badges_name_what_needs_care_and_nothing_else():
    marks = badges(_evaluation(), _screening(), 0.9, thresholds=True)
    assert marks["Effusion"] == ()  # 40 positives, CI above 0.5, sensitivity 0.925 for a 0.9 target
    assert marks["Nodule"] == ("few positives (6)", "CI includes 0.5", "threshold fit on 2 positives")
    assert marks["Mass"] == ("below chance", "threshold fit on 5 positives", "sensitivity 0.30 vs target 0.9")
    assert badges(_evaluation(), _screening(), 0.9, thresholds=False)["Mass"] == ("below chance",)


def test_conclusions_follow_their_intervals():
    better = summarise(_settings(), _evaluation(delta=(0.04, 0.01, 0.07)), _screening())
    assert better.conclusions[0] == ("ensemble int8: mean AUROC 0.613 (95% CI 0.574 to 0.652) over 3 labels on "
                                     "340 images of the test split.")
    assert "ensemble int8 better by 0.0400 (95% CI 0.0100 to 0.0700)" in better.conclusions[1]
    unclear = summarise(_settings(), _evaluation(delta=(0.02, -0.01, 0.05)), _screening())
    assert "no measured difference (+0.0200" in unclear.conclusions[1]
    assert any(c.startswith("Thresholds fit for sensitivity 0.9 on val reach 0.30 to 0.93 on test across 3 "
                            "labels; 1 fall") for c in better.conclusions)
    assert any(c.startswith("Read with care (2 labels): Nodule (few positives (6)") for c in better.conclusions)
    assert better.data_note.startswith("Data: a synthetic archive made by `tilescope synth`")
    assert "Not for diagnosing individual patients" in better.data_note
    real = summarise(_settings(synthetic=False, no_thresholds="no held-out patients"), _evaluation(), _screening())
    assert "text-mined" in real.data_note and "No screening thresholds: no held-out patients." in real.conclusions


def test_localisation_is_stated_with_its_interval_and_chance():
    from xray.evaluation.ensemble import Localisation

    loc = Localisation(boxes=40, peak_in_box=0.5, chance=0.1)
    text = summarise(_settings(localisation=loc), _evaluation(), _screening()).conclusions
    [line] = [c for c in text if c.startswith("Localisation:")]
    assert "for 20 of 40 boxed test images' findings, 50% (95% CI 35% to 65%)" in line and "hit 10%" in line
