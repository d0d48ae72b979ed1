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

from storage.artifacts import Artifact, open_artifact
from xray.labels import prob_column

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "tilescope", "ov")


def compile_ir(artifact: Artifact, xml_path: str, threads: int, streams: int, cache_dir: str):
    """One IR of an artifact -> an AsyncInferQueue with one request per stream, sized to the actor's CPUs."""
    import openvino as ov

    xml = artifact.read(xml_path)
    weights = artifact.read(xml_path[: -len(".xml")] + ".bin")
    core = ov.Core()
    os.makedirs(cache_dir, exist_ok=True)
    core.set_property({"CACHE_DIR": cache_dir})
    model = core.read_model(model=xml.decode(), weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "ENABLE_CPU_PINNING": False,
        "PERFORMANCE_HINT": "THROUGHPUT",
    })
    # One infer request per stream keeps every stream busy with async requests.
    return ov.AsyncInferQueue(compiled, streams)


def infer_async(queue, pixels: np.ndarray, infer_batch: int, n_outputs: int) -> np.ndarray:
    """(N, 1, S, S) uint8 -> (N, n_outputs) float32, sub-batches of infer_batch over the queue's requests."""
    n = pixels.shape[0]
    out = np.empty((n, n_outputs), dtype=np.float32)

    def done(request, start: int) -> None:
        result = request.get_output_tensor(0).data
        out[start : start + result.shape[0]] = result

    queue.set_callback(done)
    for start in range(0, n, infer_batch):
        queue.start_async({0: np.ascontiguousarray(pixels[start : start + infer_batch])}, userdata=start)
    queue.wait_all()
    return out


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
        artifact = open_artifact(self.artifact_uri, self.endpoint)
        self._queue = compile_ir(artifact, artifact.manifest["precisions"][self.precision], self.threads,
                                 self.streams, self.cache_dir)
        self._labels = list(artifact.manifest["labels"])

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) uint8 -> (N, L) float32, in sub-batches of infer_batch over async requests."""
        if self._queue is None:
            self._load()
        return infer_async(self._queue, pixels, self.infer_batch, len(self._labels))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._queue is None:
            self._load()
        pixels = batch.pop("pixels")
        ok = batch["status"] == "ok"
        probs = np.full((len(ok), len(self._labels)), np.nan, dtype=np.float32)
        t0 = time.perf_counter()
        if ok.any():
            probs[ok] = self.infer(np.ascontiguousarray(pixels[ok]))
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        batch["infer_ms"] = np.where(ok, elapsed_ms / max(int(ok.sum()), 1), 0.0).astype(np.float32)
        for j, label in enumerate(self._labels):
            batch[prob_column(label)] = probs[:, j]
        return batch
