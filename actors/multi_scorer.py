"""Several models on each chunk in one actor: a plain class that Ray Data runs as a pool (see jobs/score.py).

`tilescope score --model A --model B ...` reads, inflates and decodes the archive once (once per distinct input
size) and runs every model on each chunk here; each model then gets its own run directory, written exactly as a
single-model run would write it (jobs/score_stages.py, write_chunks with one WriteTarget per model).

Batch contract: as Int8Scorer's (actors/scorer.py), except that the decoded images come as one column per size
(`pixels`, or `pixels@<size>` when the models differ in input size: jobs/score_stages.pixels_column). Output: the
shared columns as they came (pixels dropped), and each model's own columns (`prob_<Label>`, `infer_ms`,
`infer_core_ms`, `precision`, `cpu_isa`, and an ensemble's `heatmap` and `tile_max`) under the prefix `<k>/`, k the
model's index in `slots`. Each model is the same scorer class a single-model run uses, with the same settings, so
its probabilities are those of a single run on the same host, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.ensemble_scorer import EnsembleScorer
from actors.openvino_ir import IRPrecision
from actors.scorer import Int8Scorer
from storage.results import STATUS


@dataclass(frozen=True)
class ModelSlot:
    """One model of the pass: its artifact, whether it is a tile ensemble, and the column of its input pixels."""

    artifact_uri: str
    ensemble: bool
    pixels: str


def slot_prefix(k: int) -> str:
    """Where the batch holds model k's columns."""
    return f"{k}/"


class MultiScorer:
    """Scores each chunk with every model in `slots` (constructor settings as Int8Scorer's, for each model)."""

    def __init__(self, slots: list[ModelSlot], precision: IRPrecision | str = IRPrecision.INT8, threads: int = 1,
                 streams: int = 1, infer_batch: int = 8, endpoint: str | None = None,
                 cache_dir: str | None = None) -> None:
        self.slots = list(slots)
        self.scorers = [(EnsembleScorer if slot.ensemble else Int8Scorer)(
            slot.artifact_uri, precision=precision, threads=threads, streams=streams, infer_batch=infer_batch,
            endpoint=endpoint, cache_dir=cache_dir) for slot in self.slots]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = {slot.pixels: batch.pop(slot.pixels) for slot in self.slots if slot.pixels in batch}
        shared = dict(batch)
        for k, (slot, scorer) in enumerate(zip(self.slots, self.scorers, strict=True)):
            # The scorer adds its columns to the dict it is given and drops `pixels`: give it its own.
            scored = scorer({STATUS: shared[STATUS], "pixels": pixels[slot.pixels]})
            batch.update({slot_prefix(k) + name: column for name, column in scored.items() if name != STATUS})
        return batch
