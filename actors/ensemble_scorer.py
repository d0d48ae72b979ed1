"""OpenVINO tile-ensemble scorer: a plain class that Ray Data runs as a pool of actors (see jobs/score.py).

Batch contract as Int8Scorer (actors/scorer.py): input `pixels` (B, 1, S, S) uint8 at the ensemble's
image size plus `status`; output drops `pixels` and adds `prob_<Label>` (the joined image probability,
NaN on error rows), `heatmap` (B, L * C * C) float32 — the coarse heatmap per label, (label, row, col)
order, C x C cells of gcd(tile, stride) pixels, overlap-averaged — `tile_max` (B,) (the highest
probability any position gave any label), `infer_ms`, `precision` and `cpu_isa` (what ran, over all positions).

Each image is tiled once, in memory; every position model runs on its tiles; the join is the
artifact's default combiner (mean, max, or stacked with weights fit on validation at training time).
"""

from __future__ import annotations

import numpy as np

from actors.openvino_ir import RanPrecision, compile_ir, infer_async, precision_label
from actors.scorer import Int8Scorer
from storage.artifacts import open_typed
from storage.results import HEATMAP, TILE_MAX
from xray.metadata.manifests import ArtifactKind, EnsembleManifest
from xray.tiles.grid import TileGrid, tile_at
from xray.tiles.join import Combiner, StackedWeights, coarse_heatmap, combine


def heatmap_shape(manifest: EnsembleManifest) -> tuple[int, int, int]:
    """(L, C, C) of an ensemble's coarse heatmap."""
    return heatmap_shape_for(manifest.grid, len(manifest.labels))


def heatmap_shape_for(grid: TileGrid, n_labels: int) -> tuple[int, int, int]:
    """(L, C, C) of the coarse heatmap of n_labels labels over grid."""
    probe = coarse_heatmap(np.zeros((1, grid.n_positions, 1)), grid)
    return (n_labels, probe.shape[2], probe.shape[3])


def joint_ran(per_position: list[RanPrecision]) -> RanPrecision:
    """What an ensemble runs: its positions' compute layers together, in one label."""
    counts: dict[str, int] = {}
    for ran in per_position:
        for key, n in ran.compute.items():
            counts[key] = counts.get(key, 0) + n
    first = per_position[0]
    return RanPrecision(first.requested, precision_label(counts), first.hint, first.cpu, dict(sorted(counts.items())))


class EnsembleScorer(Int8Scorer):
    """Scores chunks with every position model of an ensemble artifact and joins them (same constructor
    and batch contract as Int8Scorer; `precision` picks each position's IR)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._queues: list | None = None  # one AsyncInferQueue per position, created lazily in the actor

    def _load(self) -> None:
        artifact, m = open_typed(self.artifact_uri, self.endpoint, "--model", ArtifactKind.ENSEMBLE)
        self._grid = m.grid
        self._labels = list(m.labels)
        self._combiner = Combiner(m.combiner)
        self._stacked = StackedWeights.from_json(m.stacked)
        compiled = [compile_ir(artifact, xml, self.threads, self.streams, self.cache_dir, self.precision)
                    for xml in m.ir_paths(self.precision.ir)]
        self._queues = [c.queue for c in compiled]
        self._note_ran(joint_ran([c.ran for c in compiled]))

    def position_probs(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) uint8 -> (N, T, L) float32: every position model on its tiles."""
        if self._queues is None:
            self._load()
        out = np.empty((pixels.shape[0], len(self._queues), len(self._labels)), dtype=np.float32)
        for p, queue in enumerate(self._queues):
            out[:, p] = infer_async(queue, tile_at(pixels, self._grid, p), self.infer_batch, len(self._labels))
        return out

    def _loaded(self) -> bool:
        return self._queues is not None

    def score_columns(self, pixels: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
        """The joined `prob_<Label>` columns, `heatmap` (B, L * C * C) and `tile_max` (B,); NaN on rows not ok."""
        n, n_labels = len(ok), len(self._labels)
        probs = np.full((n, n_labels), np.nan, dtype=np.float32)
        heat = np.full((n, int(np.prod(heatmap_shape_for(self._grid, n_labels)))), np.nan, dtype=np.float32)
        tile_max = np.full(n, np.nan, dtype=np.float32)
        if ok.any():
            per_position = self.position_probs(np.ascontiguousarray(pixels[ok]))
            probs[ok] = combine(per_position, self._combiner, self._stacked)
            heat[ok] = coarse_heatmap(per_position, self._grid).reshape(int(ok.sum()), -1)
            tile_max[ok] = per_position.max(axis=(1, 2))
        return {**self._prob_columns(probs), HEATMAP: heat, TILE_MAX: tile_max}
