"""quantize's decision budget and recipe search (jobs/quantize_recipes.py) on a tiny trained model: what is
measured, on which images, what is chosen, and that over-budget INT8 is refused unless asked for."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jobs import quantize
from jobs.quantize_recipes import BudgetNotMet
from storage.artifacts import open_artifact
from storage.metadata_files import load_metadata
from tests.integration.test_train_quantize import above_chance  # noqa: F401  (a fixture)
from xray.metadata.splits import split_by_patient


def _run(case: dict, out: str, **kw) -> quantize.QuantizeSummary:
    return quantize.run(quantize.QuantizeConfig(checkpoint=case["checkpoint"], archive=case["archive"],
                                                metadata=case["metadata"], out=out, calibration_size=16,
                                                eval_size=16, **{"bf16_metrics": False, **kw}))


def test_the_first_recipe_within_budget_is_kept_measured_on_validation(above_chance, tmp_path):  # noqa: F811
    out = str(tmp_path / "model")
    summary = _run(above_chance, out, budget_flips=1.0, budget_p99=1.0)
    decision = open_artifact(out).manifest["metrics"]["decision_budget"]
    assert decision["measured"] and decision["met"] and decision["chosen"] == "histogram-fast"
    assert [c["recipe"] for c in decision["candidates"]] == ["histogram-fast"]  # the search stops at the first
    assert decision["split"] == "val" and decision["target_sensitivity"] == 0.9
    # The budget images are the model's validation patients, never the test split.
    meta = load_metadata(above_chance["metadata"])
    record = open_artifact(above_chance["checkpoint"]).manifest["split"]
    split = split_by_patient(meta, record["val_fraction"], record["seed"])
    assert decision["images"] == min(500, len(split.val)) and not split.val & split.test
    assert summary.decision == decision
    candidate = decision["candidates"][0]
    assert candidate["float_compute_layers"] == 0 and candidate["int8_images_per_s"] > 0
    assert set(candidate["flip_share"]) == set(open_artifact(out).manifest["labels"])
    # Each threshold is fit on these images: the image it sits on is left out of its label's count.
    with_threshold = sum(t is not None for t in candidate["fp32_thresholds"].values())
    assert with_threshold > 0 and candidate["left_out_at_threshold"] >= with_threshold
    assert decision["bf16_reference"] is None  # bf16_metrics=False


def test_the_fp32_ir_in_bf16_is_measured_for_scale_with_what_ran(above_chance, tmp_path, capsys):  # noqa: F811
    out = str(tmp_path / "model")
    _run(above_chance, out, budget_flips=1.0, budget_p99=1.0, bf16_metrics=True)
    m = open_artifact(out).manifest
    bf16 = m["metrics"]["decision_budget"]["bf16_reference"]
    assert bf16["images"] == m["metrics"]["decision_budget"]["images"]
    assert set(bf16["flip_share"]) == set(m["labels"]) and 0.0 <= bf16["worst_label_flips"] <= 1.0
    # What ran is recorded as the CPU chose it (bf16 where native, else f32), as for the bf16_vs_fp32 metrics.
    assert bf16["ran"] == m["metrics"]["ran"]["bf16"]["precision"]
    assert bf16["native_bf16"] == m["metrics"]["ran"]["bf16"]["native_bf16"]
    assert f"for scale, the FP32 IR run as {bf16['ran']}" in capsys.readouterr().out


def test_over_budget_int8_is_refused_and_nothing_written(above_chance, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "model"
    with pytest.raises(BudgetNotMet) as info:
        _run(above_chance, str(out), budget_flips=0.0, budget_p99=1e-9, qat_epochs=0)
    message = str(info.value)
    for recipe in ("histogram-fast", "minmax-fast", "histogram-full", "minmax-full", "accuracy-control"):
        assert f"{recipe}:" in message
    assert "Nothing was written" in message and "--allow-over-budget" in message and not out.exists()
    lines = capsys.readouterr().out
    assert "[quantize] recipe minmax-full:" in lines and "-> over:" in lines


def test_allow_over_budget_writes_the_closest_and_records_it(above_chance, tmp_path, capsys):  # noqa: F811
    out = str(tmp_path / "model")
    _run(above_chance, out, budget_flips=0.0, budget_p99=1e-9, recipe="minmax-fast", allow_over_budget=True)
    decision = open_artifact(out).manifest["metrics"]["decision_budget"]
    assert decision["met"] is False and decision["chosen"] == "minmax-fast"
    assert "over the decision budget: writing minmax-fast" in capsys.readouterr().err


def test_quantization_aware_fine_tuning_exports_a_fully_int8_model(above_chance, tmp_path):  # noqa: F811
    out = str(tmp_path / "model")
    _run(above_chance, out, recipe="qat", qat_epochs=1, qat_size=32, allow_over_budget=True)
    m = open_artifact(out).manifest
    decision = m["metrics"]["decision_budget"]
    assert [c["recipe"] for c in decision["candidates"]] == ["qat"]
    assert decision["candidates"][0]["float_compute_layers"] == 0
    assert m["metrics"]["ran"]["int8"]["precision"] == "int8"
    p8 = np.array(m["metrics"]["int8_auroc"], dtype=float)
    assert np.isfinite(p8).any()  # evaluated on the test images like any INT8 model
    assert os.path.exists(os.path.join(out, "int8", "model.xml"))


def test_over_budget_the_closest_int8_candidate_is_written_never_an_all_float_one(above_chance, tmp_path):  # noqa: F811
    out = str(tmp_path / "model")
    _run(above_chance, out, budget_flips=0.0, budget_p99=1e-9, qat_epochs=0, allow_over_budget=True)
    decision = open_artifact(out).manifest["metrics"]["decision_budget"]
    chosen = next(c for c in decision["candidates"] if c["recipe"] == decision["chosen"])
    assert chosen["float_compute_layers"] < chosen["compute_layers"]
    assert open_artifact(out).manifest["metrics"]["ran"]["int8"]["precision"] == "int8"
