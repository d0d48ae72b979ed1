"""OpenVINO scorer: a plain class that Ray Data runs as a pool of actors (see jobs/score.py).

Batch contract (one batch == one chunk), input columns:
  pixels (B, 1, S, S) uint8, status str (storage.results.RowStatus: 'ok' | 'error') — plus any pass-through columns.
Output: the same rows without `pixels`, plus one float32 column per label (`prob_<Label>`, NaN where
status is 'error'), `infer_ms` (this chunk's inference time spread evenly over its ok rows), `infer_core_ms`
(the CPU time this process spent scoring the chunk, every OpenVINO thread included, spread the same way; not
written to the rows: it feeds the run manifest's `cost`), and what ran:
`precision` (read back from the compiled model: int8, fp32, bf16, int8+bf16) and `cpu_isa` (this node's ISA
class: avx2, avx512, avx512_vnni, amx), the same on every row of an actor.

The OpenVINO core and compiled model are created lazily inside the actor, once, with a compile cache so
that a restarted actor on the same node compiles in milliseconds. Threads and streams are sized to the
CPUs Ray gave the actor, with CPU pinning off (Ray packs several workers per node). The inference precision
is always set (IRPrecision.hint), so `fp32` runs in f32 on AMX / avx512_bf16 CPUs too.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from actors.openvino_ir import IRPrecision, RanPrecision, compile_ir, infer_async
from storage.artifacts import open_typed
from storage.results import CPU_ISA, INFER_CORE_MS, INFER_MS, PRECISION, STATUS, RowStatus
from xray.metadata.labels import prob_column
from xray.metadata.manifests import ArtifactKind

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "tilescope", "ov")


class Int8Scorer:
    """Scores chunks with the INT8 IR of a model artifact, or its FP32 IR in f32 or bf16 (IRPrecision)."""

    def __init__(self, artifact_uri: str, precision: IRPrecision | str = IRPrecision.INT8, threads: int = 1,
                 streams: int = 1, infer_batch: int = 8, endpoint: str | None = None,
                 cache_dir: str | None = None) -> None:
        self.artifact_uri = artifact_uri
        self.precision = IRPrecision(precision)
        self.threads = max(1, threads)
        self.streams = max(1, streams)
        self.infer_batch = infer_batch
        self.endpoint = endpoint
        self.cache_dir = cache_dir or DEFAULT_CACHE_DIR
        self._queue = None
        self._labels: list[str] = []
        self._ran: RanPrecision | None = None

    def _load(self) -> None:
        artifact, manifest = open_typed(self.artifact_uri, self.endpoint, "--model", ArtifactKind.MODEL)
        compiled = compile_ir(artifact, manifest.ir_path(self.precision.ir), self.threads, self.streams,
                              self.cache_dir, self.precision)
        self._queue = compiled.queue
        self._labels = list(manifest.labels)
        self._note_ran(compiled.ran)

    @property
    def ran(self) -> RanPrecision:
        """What this actor's compiled model runs (compiles it on first use)."""
        if not self._loaded():
            self._load()
        assert self._ran is not None
        return self._ran

    def _note_ran(self, ran: RanPrecision) -> None:
        self._ran = ran
        if ran.precision != self.precision.value:
            # Not an error: the rows say what ran. bf16 without bf16 hardware is the usual case (AVX2 CPUs).
            print(f"[scorer] --precision {self.precision} runs as {ran.precision} on this node "
                  f"(cpu_isa {ran.cpu}, native bf16: {'yes' if ran.cpu.bf16 else 'no'}); rows record "
                  f"{ran.precision}", file=sys.stderr, flush=True)

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) uint8 -> (N, L) float32, in sub-batches of infer_batch over async requests."""
        if self._queue is None:
            self._load()
        return infer_async(self._queue, pixels, self.infer_batch, len(self._labels))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk (the batch contract above): drops `pixels`, adds the score columns, `infer_ms` and
        `infer_core_ms`."""
        if not self._loaded():
            self._load()
        pixels = batch.pop("pixels")
        ok = batch[STATUS] == RowStatus.OK
        t0, cpu0 = time.perf_counter(), time.process_time()
        columns = self.score_columns(pixels, ok)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        # process_time, not thread_time: OpenVINO runs the requests on its own threads. Ray Data runs one call
        # of an actor at a time, so little else of this process runs meanwhile.
        core_ms = (time.process_time() - cpu0) * 1000.0
        n_ok = max(int(ok.sum()), 1)
        batch[INFER_MS] = np.where(ok, elapsed_ms / n_ok, 0.0).astype(np.float32)
        batch[INFER_CORE_MS] = np.where(ok, core_ms / n_ok, 0.0)
        batch.update(columns)
        batch[PRECISION] = np.full(len(ok), self.ran.precision, dtype=object)
        batch[CPU_ISA] = np.full(len(ok), str(self.ran.cpu), dtype=object)
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
        """(B, L) -> one (B,) column per label, named by xray.metadata.labels.prob_column."""
        return {prob_column(label): probs[:, j] for j, label in enumerate(self._labels)}
