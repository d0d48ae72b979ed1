"""Localisation rows for bench.tile_resolution: every tile ensemble's heatmap against every single model's class
activation map, on the same BBox_List boxes of the archive's test images (jobs/localisation.py).

Not a benchmark of its own: bench.tile_resolution calls cam_vs_ensemble() after it has trained and scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from jobs.localisation import heatmap_vs_cam
from storage.metadata_files import load_metadata


class Scored(Protocol):
    """What bench.tile_resolution.Trained carries that this needs."""

    name: str
    model_uri: str
    results_uri: str
    ensemble: object | None


def cam_vs_ensemble(trained: Sequence[Scored], archive: str, work: str) -> str:
    """A markdown paragraph and table: one row per (ensemble, single model) pair. `work` is unused (the maps are
    computed in memory); it is part of the caller's signature."""
    del work
    meta_uri = f"{archive}/Data_Entry_2017.csv"
    meta = load_metadata(meta_uri)
    ensembles = [t for t in trained if t.ensemble is not None]
    singles = [t for t in trained if t.ensemble is None]
    rows = []
    for e in ensembles:
        for s in singles:
            r = heatmap_vs_cam(e.results_uri, s.model_uri, archive, meta, meta_uri)
            c = r.comparison
            if c is None:
                rows.append(f"| {e.name} | {s.name} | {r.cam_method} | 0 of {r.test_boxes} | | | | | | | | |")
                continue
            rows.append(f"| {e.name} | {s.name} | {r.cam_method} | {c.a.boxes} | {c.a.peak_in_box:.1%} | "
                        f"{c.a.chance:.1%} | {c.b.peak_in_box:.1%} | {c.b.chance:.1%} | {c.both} | {c.only_a} | "
                        f"{c.only_b} | {c.mcnemar_p:.3g} |")
    if not rows:
        return "Localisation: not measured (no ensemble and single model to compare)."
    return ("Localisation on the test images' BBox_List boxes: a hit when the label's map peaks in a cell "
            "overlapping the box; chance is the share of cells overlapping it (the hit rate of a random peak: a "
            "coarser map is easier to hit, so read each rate against its own chance). Ensemble: its scored INT8 "
            "tile heatmap; single model: the class activation map of its FP32 checkpoint (xray/models/cam.py; `cam` for "
            "GAP + Linear heads, `grad-cam` otherwise), cells placed where the layers centre them. Paired box by "
            "box; McNemar's exact test on the boxes only one of the two hits.\n\n"
            "| ensemble | single model | map | boxes | ensemble hit | chance | single hit | chance | both | "
            "ensemble only | single only | McNemar p |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
