"""Evaluation of a tile ensemble after training: fit the joins on validation, measure them on test.

Inputs are position probabilities (N, T, L) for validation and test, for the FP32 and INT8 IR. The
stacked combiner and per-label thresholds are fit on validation only; test AUROC is reported for every
combiner and both precisions; localisation asks, for every test box of BBox_List_2017 format, whether the
label's heatmap peak falls inside the box.

Localisation is scored the same way for any per-label map over the decoded image: the ensemble's tile heatmap
(`localise`) and a single model's class activation map (xray/models/cam.py, `localise_maps`) go through `box_hits`,
so the two compare box by box on the same image ids and labels (`compare_localisation`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from xray.evaluation.metrics import mean_auroc, per_label_auroc
from xray.metadata.labels import LABELS
from xray.metadata.manifests import IRKind
from xray.metadata.nih import BBox
from xray.tiles.grid import TileGrid
from xray.tiles.join import (
    Combiner,
    StackedWeights,
    coarse_heatmap,
    combine,
    fit_stacked,
    heatmap_cell,
    youden_thresholds,
)


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
    """val/test_probs: {IRKind.FP32: (N, T, L), IRKind.INT8: (N, T, L)}; dimensions: image id -> stored (width,
    height)."""
    stacked = fit_stacked(val_probs[IRKind.FP32], val_labels)
    thresholds = {}
    for c in Combiner:
        val_joined = combine(val_probs[IRKind.FP32], c, stacked)
        thresholds[c.value] = [None if math.isnan(t) else float(t) for t in youden_thresholds(val_joined, val_labels)]
    test_auroc: dict[str, dict[str, list[float]]] = {}
    for precision, probs in test_probs.items():
        test_auroc[precision] = {c.value: per_label_auroc(test_labels, combine(probs, c, stacked)) for c in Combiner}
    test_mean = {p: {c: mean_auroc(v) for c, v in by_c.items()} for p, by_c in test_auroc.items()}
    positions = [mean_auroc(per_label_auroc(test_labels, test_probs[IRKind.FP32][:, t]))
                 for t in range(test_probs[IRKind.FP32].shape[1])]
    return EnsembleEvaluation(stacked, thresholds, test_auroc, test_mean, positions,
                              localise(grid, test_probs[IRKind.FP32], test_ids, boxes, dimensions))


def localise(grid: TileGrid, probs: np.ndarray, ids: Sequence[str], boxes: Sequence[BBox],
             dimensions: Mapping[str, tuple[int, int]]) -> Localisation | None:
    """(N, T, L) position probabilities -> share of boxes whose label's heatmap peak overlaps the box, and the
    same for a random peak; None without a box on these images."""
    return ensemble_box_hits(grid, probs, ids, boxes, dimensions).summary()


def ensemble_box_hits(grid: TileGrid, probs: np.ndarray, ids: Sequence[str], boxes: Sequence[BBox],
                      dimensions: Mapping[str, tuple[int, int]]) -> BoxHits:
    """(N, T, L) position probabilities -> BoxHits of the coarse tile heatmap (N, L, C, C), cells of
    gcd(tile, stride) pixels of the image decoded at grid.image_size."""
    heat = coarse_heatmap(probs, grid)  # (N, L, C, C)
    edges = heatmap_cell(grid) * np.arange(heat.shape[-1] + 1, dtype=np.float64)
    return box_hits(heat, grid.image_size, edges, ids, boxes, dimensions)


def localise_maps(maps: np.ndarray, image_size: int, edges: np.ndarray, ids: Sequence[str], boxes: Sequence[BBox],
                  dimensions: Mapping[str, tuple[int, int]]) -> Localisation | None:
    """Any (N, L, h, w) per-label maps -> the same Localisation record as `localise`; None without a box on these
    images. A single model's CAM: xray.models.cam.ActivationMaps' maps, its input size and geometry.edges()."""
    return box_hits(maps, image_size, edges, ids, boxes, dimensions).summary()


@dataclass(frozen=True)
class BoxHits:
    """Box by box (K kept boxes): the box's index in the boxes given, its image and label, whether the
    label's map peaks in a cell overlapping it (hit (K,) bool), and the hit rate of a peak cell drawn at random
    (chance (K,) float: the share of cells overlapping it)."""

    index: np.ndarray
    image_ids: tuple[str, ...]
    labels: tuple[str, ...]
    hit: np.ndarray
    chance: np.ndarray

    def summary(self) -> Localisation | None:
        if self.hit.size == 0:
            return None
        return Localisation(int(self.hit.size), float(self.hit.mean()), float(self.chance.mean()))


def box_hits(maps: np.ndarray, image_size: int, edges: np.ndarray, ids: Sequence[str], boxes: Sequence[BBox],
             dimensions: Mapping[str, tuple[int, int]], labels: Sequence[str] = LABELS) -> BoxHits:
    """Score each box against its image's map for its label.

    maps (N, L, h, h): image k = ids[k] (rows past len(ids) unused), labels in `labels` order; edges (h + 1,)
    increasing: cell (r, c) owns pixels [edges[r], edges[r + 1]) x [edges[c], edges[c + 1]) of the image decoded
    at image_size x image_size (a tile heatmap's cells are gcd(tile, stride) squares and may reach past the
    image; a CAM's are the pixels nearest each cell centre, xray.models.cam.MapGeometry). dimensions: image id -> the
    stored image's (width, height), whose pixels the boxes are in. A box is kept when its image is in `ids` and
    in `dimensions` and its label is in `labels`. A hit: the peak cell overlaps the box; chance: the share of
    cells that overlap it (the hit rate of a peak drawn at random).
    """
    edges = np.asarray(edges, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[0] < len(ids) or maps.shape[1] != len(labels) or maps.shape[2] != maps.shape[3]:
        raise ValueError(f"maps {maps.shape} must be (N >= {len(ids)} ids, L={len(labels)}, h, h)")
    if edges.shape != (maps.shape[-1] + 1,) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be {maps.shape[-1] + 1} increasing cell boundaries; got {edges.tolist()}")
    row = {image_id: k for k, image_id in enumerate(ids)}
    kept: list[int] = []
    image_ids: list[str] = []
    box_labels: list[str] = []
    hits: list[bool] = []
    chance: list[float] = []
    for i, box in enumerate(boxes):
        k = row.get(box.image_index)
        if k is None or box.label not in labels or box.image_index not in dimensions:
            continue
        width, height = dimensions[box.image_index]
        sx, sy = image_size / width, image_size / height  # box pixels -> decoded image pixels
        scaled = (box.x * sx, box.y * sy, box.w * sx, box.h * sy)
        label_map = maps[k, labels.index(box.label)]
        kept.append(i)
        image_ids.append(box.image_index)
        box_labels.append(box.label)
        rows, cols = _overlapping(edges, scaled[1], scaled[3]), _overlapping(edges, scaled[0], scaled[2])
        peak_row, peak_col = np.unravel_index(int(np.argmax(label_map)), label_map.shape)
        hits.append(bool(rows[peak_row] and cols[peak_col]))
        chance.append(float(rows.mean() * cols.mean()))
    return BoxHits(np.array(kept, dtype=np.int64), tuple(image_ids), tuple(box_labels), np.array(hits, dtype=bool),
                   np.array(chance, dtype=np.float64))


def _overlapping(edges: np.ndarray, start: float, length: float) -> np.ndarray:
    """(h,) bool: which cells [edges[r], edges[r + 1]) overlap the interval [start, start + length)."""
    return (edges[:-1] < start + length) & (start < edges[1:])


@dataclass(frozen=True)
class LocalisationComparison:
    """Two maps scored on the same boxes (those both kept): each one's Localisation, the boxes both, only a and
    only b hit, and McNemar's exact two-sided p-value on the boxes where they disagree."""

    a: Localisation
    b: Localisation
    both: int
    only_a: int
    only_b: int
    mcnemar_p: float

    def to_json(self) -> dict:
        return {"boxes": self.a.boxes, "a": asdict(self.a), "b": asdict(self.b), "both": self.both,
                "only_a": self.only_a, "only_b": self.only_b, "mcnemar_p": self.mcnemar_p}


def compare_localisation(a: BoxHits, b: BoxHits) -> LocalisationComparison | None:
    """a and b scored from the same boxes sequence (box_hits) -> their paired comparison on the boxes both kept;
    None when they share none. Refuses two BoxHits whose shared indices name different images or labels."""
    common, ia, ib = np.intersect1d(a.index, b.index, assume_unique=True, return_indices=True)
    if common.size == 0:
        return None
    for i, j in zip(ia.tolist(), ib.tolist(), strict=True):
        if (a.image_ids[i], a.labels[i]) != (b.image_ids[j], b.labels[j]):
            raise ValueError(f"box {int(a.index[i])} is {a.image_ids[i]}/{a.labels[i]} in one and "
                             f"{b.image_ids[j]}/{b.labels[j]} in the other: score both from the same boxes")
    hit_a, hit_b = a.hit[ia], b.hit[ib]
    n = int(common.size)
    only_a, only_b = int((hit_a & ~hit_b).sum()), int((~hit_a & hit_b).sum())
    return LocalisationComparison(
        Localisation(n, float(hit_a.mean()), float(a.chance[ia].mean())),
        Localisation(n, float(hit_b.mean()), float(b.chance[ib].mean())),
        int((hit_a & hit_b).sum()), only_a, only_b, mcnemar_exact_p(only_a, only_b))


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: the discordant pairs as Binomial(only_a + only_b, 1/2); 1.0 with none."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # exact integers: no overflow for large n
    return min(1.0, 2.0 * tail)
