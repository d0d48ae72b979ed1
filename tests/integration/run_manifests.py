"""What the score tests check in a committed run's `_manifest.json`, shared by the single-model and ensemble tests."""

from __future__ import annotations

import json
import os

import pytest


def read_cost(results_uri: str) -> dict:
    """The `cost` of a local run directory's manifest."""
    with open(os.path.join(results_uri, "_manifest.json")) as f:
        return json.load(f)["cost"]


def assert_cost(cost: dict, positions: int, decode_size: int, model_input_size: int, images: int) -> None:
    """A run manifest's `cost` (jobs/score_stages.py ScoringCost.record): the shape of the work, and every
    per-image figure measured, positive and finite (no timing is compared)."""
    assert (cost["positions_per_image"], cost["decode_size"], cost["model_input_size"]) == (
        positions, decode_size, model_input_size)
    assert cost["images"] == cost["ok_images"] == images
    for key in ("decode_core_ms_per_image", "infer_core_ms_per_image", "core_ms_per_image",
                "infer_core_ms_per_position", "decode_ms_per_image", "infer_ms_per_image", "images_per_s",
                "scorer_cpus"):
        assert isinstance(cost[key], float) and 0.0 < cost[key] < float("inf"), (key, cost[key])
    assert cost["core_ms_per_image"] == cost["decode_core_ms_per_image"] + cost["infer_core_ms_per_image"]
    assert cost["infer_core_ms_per_position"] * positions == pytest.approx(cost["infer_core_ms_per_image"])
    # Every core-ms of the stream accounted for (read + decode + inference + write + Ray and driver + idle = the
    # cores' wall time per image), from the processes' own counters; no figure is compared with a target.
    for key in ("read_core_ms_per_image", "write_core_ms_per_image", "all_core_ms_per_image",
                "wall_core_ms_per_image", "cores"):
        assert isinstance(cost[key], float) and 0.0 < cost[key] < float("inf"), (key, cost[key])
    # (with several models in one pass, their inference and writing too)
    parts = sum(cost[f"{p}_core_ms_per_image"] for p in ("read", "decode", "infer", "write", "rest", "idle",
                                                          "other_models_infer", "other_models_write"))
    assert parts == pytest.approx(cost["wall_core_ms_per_image"])
    work = cost["core_ms_per_image"] + cost["other_models_infer_core_ms_per_image"]
    assert cost["efficiency"] == pytest.approx(work / cost["wall_core_ms_per_image"])
    # Ray's processes did at least what the stages measured in them (decode and inference run inside Ray workers).
    assert cost["all_core_ms_per_image"] >= 0.9 * (cost["decode_core_ms_per_image"] + cost["infer_core_ms_per_image"])
