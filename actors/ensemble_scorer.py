"""OpenVINO tile-ensemble scorer: a plain class that Ray Data runs as a pool of actors (see jobs/score.py).

Batch contract as Int8Scorer (actors/scorer.py): input `pixels` (B, 1, S, S) uint8 at the ensemble's
image size plus `status`; output drops `pixels` and adds `prob_<Label>` (the joined image probability,
NaN on error rows), `heatmap` (B, L * C * C) float32 — the coarse heatmap per label, (label, row, col)
order, C x C cells of gcd(tile, stride) pixels, overlap-averaged — `tile_max` (B,) (the highest
probability any position gave any label) and `infer_ms`.

Each image is tiled once, in memory; every position model runs on its tiles; the join is the
artifact's default combiner (mean, max, or stacked with weights fit on validation at training time).
"""

from __future__ import annotations

import time

import numpy as np

from actors.scorer import Int8Scorer, compile_ir, infer_async
from storage.artifacts import open_artifact
from xray.join import Combiner, StackedWeights, coarse_heatmap, combine
from xray.labels import prob_column
from xray.tiles import TileGrid, tile_at


def ensemble_grid(manifest: dict) -> TileGrid:
    g = manifest["grid"]
    return TileGrid(int(g["image_size"]), int(g["tile_size"]), int(g["stride"]))


def heatmap_shape(manifest: dict) -> tuple[int, int, int]:
    """(L, C, C) of an ensemble's coarse heatmap."""
    grid = ensemble_grid(manifest)
    probe = coarse_heatmap(np.zeros((1, grid.n_positions, 1)), grid)
    return (len(manifest["labels"]), probe.shape[2], probe.shape[3])


class EnsembleScorer(Int8Scorer):
    """Scores chunks with every position model of an ensemble artifact and joins them (same constructor
    and batch contract as Int8Scorer; `precision` picks each position's IR)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._queues: list | None = None  # one AsyncInferQueue per position, created lazily in the actor

    def _load(self) -> None:
        artifact = open_artifact(self.artifact_uri, self.endpoint)
        m = artifact.manifest
        self._grid = ensemble_grid(m)
        self._labels = list(m["labels"])
        self._combiner = Combiner(m["combiner"]["default"])
        self._stacked = StackedWeights.from_json(m["combiner"]["stacked"])
        positions = sorted(m["positions"], key=lambda p: p["position"])
        self._queues = [compile_ir(artifact, p[self.precision], self.threads, self.streams, self.cache_dir)
                        for p in positions]

    def position_probs(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) uint8 -> (N, T, L) float32: every position model on its tiles."""
        if self._queues is None:
            self._load()
        out = np.empty((pixels.shape[0], len(self._queues), len(self._labels)), dtype=np.float32)
        for p, queue in enumerate(self._queues):
            out[:, p] = infer_async(queue, tile_at(pixels, self._grid, p), self.infer_batch, len(self._labels))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._queues is None:
            self._load()
        pixels = batch.pop("pixels")
        ok = batch["status"] == "ok"
        n, n_labels = len(ok), len(self._labels)
        probs = np.full((n, n_labels), np.nan, dtype=np.float32)
        shape = heatmap_shape({"grid": {"image_size": self._grid.image_size, "tile_size": self._grid.tile_size,
                                        "stride": self._grid.stride}, "labels": self._labels})
        heat = np.full((n, int(np.prod(shape))), np.nan, dtype=np.float32)
        tile_max = np.full(n, np.nan, dtype=np.float32)
        t0 = time.perf_counter()
        if ok.any():
            per_position = self.position_probs(np.ascontiguousarray(pixels[ok]))
            probs[ok] = combine(per_position, self._combiner, self._stacked)
            heat[ok] = coarse_heatmap(per_position, self._grid).reshape(int(ok.sum()), -1)
            tile_max[ok] = per_position.max(axis=(1, 2))
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        batch["infer_ms"] = np.where(ok, elapsed_ms / max(int(ok.sum()), 1), 0.0).astype(np.float32)
        for j, label in enumerate(self._labels):
            batch[prob_column(label)] = probs[:, j]
        batch["heatmap"] = heat
        batch["tile_max"] = tile_max
        return batch
