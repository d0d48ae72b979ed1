"""Evaluation of a tile ensemble after training: fit the joins on validation, measure them on test.

Inputs are position probabilities (N, T, L) for validation and test, for the FP32 and INT8 IR. The
stacked combiner and per-label thresholds are fit on validation only; test AUROC is reported for every
combiner and both precisions; localisation asks, for every test box of BBox_List_2017 format, whether the
label's heatmap peak falls inside the box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xray.join import (
    Combiner,
    StackedWeights,
    box_cell_fraction,
    coarse_heatmap,
    combine,
    fit_stacked,
    heatmap_cell,
    peak_in_box,
    youden_thresholds,
)
from xray.labels import LABELS
from xray.metadata import BBox
from xray.metrics import mean_auroc, per_label_auroc
from xray.tiles import TileGrid


@dataclass(frozen=True)
class Localisation:
    boxes: int
    peak_in_box: float
    chance: float


@dataclass(frozen=True)
class EnsembleEvaluation:
    stacked: StackedWeights
    thresholds: dict[str, list[float]]
    test_auroc: dict[str, dict[str, list[float]]]  # precision -> combiner -> per label
    test_mean_auroc: dict[str, dict[str, float]]
    position_test_mean_auroc: list[float]  # FP32, each position alone
    localisation: Localisation | None

    def to_json(self) -> dict:
        loc = self.localisation
        return {
            "test_auroc": self.test_auroc,
            "test_mean_auroc": self.test_mean_auroc,
            "position_test_mean_auroc": self.position_test_mean_auroc,
            "localisation": None if loc is None else {"boxes": loc.boxes, "peak_in_box": loc.peak_in_box,
                                                      "chance": loc.chance},
        }


def evaluate_ensemble(
    grid: TileGrid,
    val_probs: Mapping[str, np.ndarray],
    test_probs: Mapping[str, np.ndarray],
    val_labels: np.ndarray,
    test_labels: np.ndarray,
    test_ids: Sequence[str],
    boxes: Sequence[BBox],
    dimensions: Mapping[str, tuple[int, int]],
) -> EnsembleEvaluation:
    """val/test_probs: {'fp32': (N, T, L), 'int8': (N, T, L)}; dimensions: image id -> stored (width, height)."""
    stacked = fit_stacked(val_probs["fp32"], val_labels)
    thresholds = {}
    for c in Combiner:
        val_joined = combine(val_probs["fp32"], c, stacked)
        thresholds[c.value] = [None if math.isnan(t) else float(t) for t in youden_thresholds(val_joined, val_labels)]
    test_auroc: dict[str, dict[str, list[float]]] = {}
    for precision, probs in test_probs.items():
        test_auroc[precision] = {c.value: per_label_auroc(test_labels, combine(probs, c, stacked)) for c in Combiner}
    test_mean = {p: {c: mean_auroc(v) for c, v in by_c.items()} for p, by_c in test_auroc.items()}
    positions = [mean_auroc(per_label_auroc(test_labels, test_probs["fp32"][:, t]))
                 for t in range(test_probs["fp32"].shape[1])]
    return EnsembleEvaluation(stacked, thresholds, test_auroc, test_mean, positions,
                              localise(grid, test_probs["fp32"], test_ids, boxes, dimensions))


def localise(grid: TileGrid, probs: np.ndarray, ids: Sequence[str], boxes: Sequence[BBox],
             dimensions: Mapping[str, tuple[int, int]]) -> Localisation | None:
    """Share of boxes whose label's heatmap peak overlaps the box, and the same for a random peak."""
    row = {image_id: k for k, image_id in enumerate(ids)}
    hits, chance, n = 0, 0.0, 0
    heat = None
    cell = heatmap_cell(grid)
    for box in boxes:
        k = row.get(box.image_index)
        if k is None or box.label not in LABELS or box.image_index not in dimensions:
            continue
        if heat is None:
            heat = coarse_heatmap(probs, grid)
        width, height = dimensions[box.image_index]
        sx, sy = grid.image_size / width, grid.image_size / height  # box pixels -> decoded image pixels
        scaled = (box.x * sx, box.y * sy, box.w * sx, box.h * sy)
        label_map = heat[k, LABELS.index(box.label)]
        hits += peak_in_box(label_map, scaled, cell)
        chance += box_cell_fraction(label_map.shape, scaled, cell)
        n += 1
    if n == 0:
        return None
    return Localisation(n, hits / n, chance / n)
