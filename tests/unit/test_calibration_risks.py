"""The rule that says a calibration source hurts a backbone, the file bench.calibration writes, and the warning
quantize prints (against a test file, never the shipped figures)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jobs import quantize, quantize_inputs
from xray.calibration.risks import (
    ACCURACY_CONTROL,
    DEFAULT,
    BackboneRisks,
    CalibrationRisks,
    Measured,
    RiskRule,
    load_risks,
    risks_from_json,
    warning_for,
)

RULE = RiskRule(max_auroc_drop=0.01, max_flip_share=0.02, min_fp32_auroc=0.6, min_prob_std=0.02)


def test_rule_hurts_on_drop_or_flips_and_does_not_judge_a_model_near_chance_or_flat():
    assert RULE.hurts(Measured(0.011, 0.1, 0.0), 0.8, 0.2) is True
    assert RULE.hurts(Measured(0.0, 0.1, 0.021), 0.8, 0.2) is True
    assert RULE.hurts(Measured(0.01, 0.5, 0.02), 0.8, 0.2) is False  # at the limits: fine
    assert RULE.hurts(Measured(-0.02, 0.1, 0.0), 0.8, 0.2) is False  # INT8 better than FP32 on these images
    assert RULE.hurts(Measured(math.nan, 0.1, 0.0), 0.8, 0.2) is False  # no label with both classes: flips decide
    assert RULE.hurts(Measured(0.2, 0.5, 0.3), 0.59, 0.2) is None  # near chance
    assert RULE.hurts(Measured(0.2, 0.5, 0.3), math.nan, 0.2) is None
    assert RULE.hurts(Measured(0.2, 0.5, 0.3), 0.8, 0.001) is None  # outputs too flat: any error flips flags
    assert "0.01" in RULE.text() and "2%" in RULE.text() and RULE.short() == "drop > 0.01 or flips > 2%"


def _risks() -> CalibrationRisks:
    """A made-up table: fractal hurts vgg16, synthetic does not; archive hurts resnet18 (only source measured);
    mobilenet_v3_small is near chance."""
    def row(drop, flips, speed=100.0, reached=True):
        return Measured(drop, 0.1, flips, 2 * flips, speed, reached)

    return CalibrationRisks(RULE, {"command": "test", "accuracy_control": "--max-drop 0.01 --max-prob-diff 0.1"}, {
        "vgg16": BackboneRisks(64, 3, 0.81, 0.2, 300, {
            "archive": {DEFAULT: row(0.004, 0.012), ACCURACY_CONTROL: row(0.001, 0.004)},
            "synthetic": {DEFAULT: row(0.006, 0.015), ACCURACY_CONTROL: row(0.003, 0.01)},
            "fractal": {DEFAULT: row(0.034, 0.051), ACCURACY_CONTROL: row(0.008, 0.018, 60.0)}}),
        "resnet18": BackboneRisks(64, 6, 0.75, 0.15, 300, {
            "archive": {DEFAULT: row(0.02, 0.01), ACCURACY_CONTROL: row(0.02, 0.01, None, False)}}),
        "mobilenet_v3_small": BackboneRisks(64, 8, 0.52, 0.2, 300, {"fractal": {DEFAULT: row(0.2, 0.3)}}),
        "densenet121": BackboneRisks(64, 3, 0.9, 0.001, 300, {"fractal": {DEFAULT: row(0.2, 0.3)}}),
    })


def test_hurts_by_backbone_and_source():
    risks = _risks()
    assert risks.hurts("vgg16", "fractal") is True
    assert risks.hurts("vgg16", "synthetic") is False and risks.hurts("vgg16", "archive") is False
    assert risks.hurts("resnet18", "archive") is True
    assert risks.hurts("resnet18", "fractal") is None  # not measured
    assert risks.hurts("mobilenet_v3_small", "fractal") is None  # model near chance: not judged
    assert risks.hurts("densenet121", "fractal") is None  # outputs too flat to judge flips
    assert risks.hurts("chexpert-onnx", "archive") is None  # not a measured backbone


def test_warning_names_the_measured_drop_the_better_source_and_accuracy_control():
    text = warning_for(_risks(), "vgg16", "fractal")
    assert text is not None and "\n" not in text
    assert text.startswith("--calibration fractal is known to hurt vgg16")
    assert "mean AUROC drop 0.034, 5.1% of flags flipped" in text
    assert "--calibration archive (mean AUROC drop 0.004, 1.2% of flags flipped)" in text  # the smallest drop
    assert "accuracy control (--max-drop 0.01 --max-prob-diff 0.1: mean AUROC drop 0.008" in text
    assert "64 px" in text and "drop > 0.01 or flips > 2%" in text
    # No better source measured, and accuracy control did not reach its limits: only the flags are suggested.
    other = warning_for(_risks(), "resnet18", "archive")
    assert other is not None and "--calibration" not in other.split("Consider")[1]
    assert other.endswith("accuracy control (--max-drop 0.01 --max-prob-diff 0.1)")
    for backbone, source in (("vgg16", "synthetic"), ("resnet18", "fractal"), ("mobilenet_v3_small", "fractal"),
                             ("densenet121", "fractal"), ("unknown", "archive")):
        assert warning_for(_risks(), backbone, source) is None


def test_the_file_round_trips_and_a_stored_verdict_must_match_the_rule(tmp_path):
    path = tmp_path / "risks.json"
    body = _risks().to_json()
    assert body["backbones"]["vgg16"]["sources"]["fractal"][DEFAULT]["hurts"] is True
    assert body["backbones"]["mobilenet_v3_small"]["sources"]["fractal"][DEFAULT]["hurts"] is None
    path.write_text(json.dumps(body))
    again = load_risks(str(path))
    assert again == _risks()
    body["backbones"]["vgg16"]["sources"]["fractal"][DEFAULT]["hurts"] = False
    with pytest.raises(ValueError, match="fractal.default says hurts=False, the rule says True"):
        risks_from_json(body, "risks.json")
    with pytest.raises(ValueError, match="not a calibration-risks file"):
        risks_from_json({"schema_version": 99}, "x.json")


def test_the_shipped_file_reads():
    risks = load_risks()
    assert isinstance(risks.rule, RiskRule)
    for name, entry in risks.backbones.items():  # whatever the last bench run measured, it obeys the rule
        for source in entry.sources:
            assert risks.hurts(name, source) in (True, False, None)


def test_quantize_prints_the_warning_on_stderr_unless_accuracy_control_is_on(monkeypatch, capsys):
    monkeypatch.setattr(quantize, "load_risks", _risks)
    source = quantize_inputs.Source("vgg16", ("Effusion",), 32, "", None, {}, None, {}, {}, {})
    images = quantize_inputs.ImageSubsets(np.zeros((3, 1, 32, 32), np.uint8), ("a.png",), np.zeros((1, 1, 32, 32),
                                   np.uint8), np.zeros((1, 1), np.float32))
    cfg = quantize.QuantizeConfig(checkpoint="c", out="o", archive="a", calibration="fractal")
    quantize.validate(cfg)
    quantize.warn_before_quantizing(cfg, source, images)
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tilescope quantize: warning: --calibration fractal is known to "
                                                   "hurt vgg16")
    controlled = quantize.QuantizeConfig(checkpoint="c", out="o", archive="a", calibration="fractal", max_drop=0.01)
    quantize.validate(controlled)
    quantize.warn_before_quantizing(controlled, source, images)
    fine = quantize.QuantizeConfig(checkpoint="c", out="o", archive="a", calibration="synthetic")
    quantize.validate(fine)
    quantize.warn_before_quantizing(fine, source, images)
    assert capsys.readouterr().err == ""
    # No archive: a second, louder warning says nothing was evaluated.
    blind = quantize.QuantizeConfig(checkpoint="c", out="o", calibration="fractal")
    quantize.validate(blind)
    quantize.warn_before_quantizing(blind, source, images)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no --archive" in err[0] and "NOT evaluated" in err[0] and "known to hurt" in err[1]
