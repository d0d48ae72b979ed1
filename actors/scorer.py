"""OpenVINO scorer: a plain class that Ray Data runs as a pool of actors (see jobs/score.py).

Batch contract (one batch == one chunk), input columns:
  pixels (B, 1, S, S) uint8, status str ('ok' | 'error') — plus any pass-through columns.
Output: the same rows without `pixels`, plus one float32 column per label (`prob_<Label>`, NaN where
status is 'error') and `infer_ms` (this chunk's inference time spread evenly over its ok rows).

The OpenVINO core and compiled model are created lazily inside the actor, once, with a compile cache so
that a restarted actor on the same node compiles in milliseconds. Threads and streams are sized to the
CPUs Ray gave the actor, with CPU pinning off (Ray packs several workers per node).
"""

from __future__ import annotations

import os
import time

import numpy as np

from actors.openvino_ir import compile_ir, infer_async
from storage.artifacts import open_typed
from storage.results import INFER_MS, STATUS
from xray.labels import prob_column
from xray.manifests import ArtifactKind

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "tilescope", "ov")


class Int8Scorer:
    """Scores chunks with the INT8 (or FP32) IR of a model artifact."""

    def __init__(self, artifact_uri: str, precision: str = "int8", threads: int = 1, streams: int = 1,
                 infer_batch: int = 8, endpoint: str | None = None, cache_dir: str | None = None) -> None:
        self.artifact_uri = artifact_uri
        self.precision = precision
        self.threads = max(1, threads)
        self.streams = max(1, streams)
        self.infer_batch = infer_batch
        self.endpoint = endpoint
        self.cache_dir = cache_dir or DEFAULT_CACHE_DIR
        self._queue = None
        self._labels: list[str] = []

    def _load(self) -> None:
        artifact, manifest = open_typed(self.artifact_uri, self.endpoint, "--model", ArtifactKind.MODEL)
        self._queue = compile_ir(artifact, manifest.ir_path(self.precision), self.threads, self.streams,
                                 self.cache_dir)
        self._labels = list(manifest.labels)

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) uint8 -> (N, L) float32, in sub-batches of infer_batch over async requests."""
        if self._queue is None:
            self._load()
        return infer_async(self._queue, pixels, self.infer_batch, len(self._labels))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk (the batch contract above): drops `pixels`, adds the score columns and `infer_ms`."""
        if not self._loaded():
            self._load()
        pixels = batch.pop("pixels")
        ok = batch[STATUS] == "ok"
        t0 = time.perf_counter()
        columns = self.score_columns(pixels, ok)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        batch[INFER_MS] = np.where(ok, elapsed_ms / max(int(ok.sum()), 1), 0.0).astype(np.float32)
        batch.update(columns)
        return batch

    def _loaded(self) -> bool:
        return self._queue is not None

    def score_columns(self, pixels: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
        """pixels (B, 1, S, S) uint8 and the (B,) mask of ok rows -> the output columns, NaN on other rows:
        here one (B,) float32 `prob_<Label>` column per label. A subclass overrides this to add columns."""
        probs = np.full((len(ok), len(self._labels)), np.nan, dtype=np.float32)
        if ok.any():
            probs[ok] = self.infer(np.ascontiguousarray(pixels[ok]))
        return self._prob_columns(probs)

    def _prob_columns(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """(B, L) -> one (B,) column per label, named by xray.labels.prob_column."""
        return {prob_column(label): probs[:, j] for j, label in enumerate(self._labels)}
