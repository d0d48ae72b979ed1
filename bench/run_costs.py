"""What a scoring run cost, read back from its own manifest (jobs/score_stages.py ScoringCost.record), and the
table bench.scoring writes from it (issue 26: where each core-ms goes)."""

from __future__ import annotations

import json
import os

from jobs.score import ScoreSummary


def run_cost(summary: ScoreSummary) -> dict:
    """The committed run manifest's `cost` (jobs/score_stages.py ScoringCost.record) of a local run."""
    with open(os.path.join(summary.results_uri, "_manifest.json")) as f:
        return json.load(f)["cost"]


COST_PARTS = ("read", "decode", "infer", "write", "rest", "idle")


def cost_table(costs: dict[str, dict], setting: str) -> str:
    """Where each core-ms of a run went, per image, as its run manifest records it (issue 26)."""
    rows = []
    for kind, c in costs.items():
        parts = " | ".join(f"{c[f'{p}_core_ms_per_image']:.2f}" for p in COST_PARTS)
        rows.append(f"| {kind} | {c['images_per_s']:.1f} | {c['wall_core_ms_per_image']:.2f} | {parts} | "
                    f"{c['overhead_core_ms_per_image']:.2f} | {c['efficiency']:.2f} |")
    return f"""
Where each core-ms goes (issue 26), from each run's own manifest (`cost`; {setting}): per image, the cores' wall
time (cores / T) = read (the read tasks inflating the shards) + decode + inference + write (Parquet) + Ray and
driver (every other CPU-second of Ray's processes and the driver over the stream, from their own counters:
scheduling, object transfers, serialisation) + idle (cores busy with nothing). Overhead = cores / T - decode -
inference (target <= 1 core-ms); efficiency = T * (decode + inference) / cores (target >= 0.9). These runs include
the pipeline's start-up (actors compiling the model), which the "once running" figures above cancel.

| run | T images/s | cores / T core-ms | read | decode | inference | write | Ray and driver | idle | overhead | efficiency |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
