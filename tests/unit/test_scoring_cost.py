"""The run manifest's `cost` of a scoring run: core-ms per image measured in the decode step and the scorer,
summed per chunk by the writer and per run on the driver (jobs/score_stages.py, jobs/score.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from jobs.score import scoring_shape
from jobs.score_stages import ScoringCost, decode_chunk, write_chunks
from storage.results import (
    CHUNK,
    DATA,
    DECODE_CORE_MS,
    DECODE_MS,
    ERROR,
    IMAGE_ID,
    INFER_CORE_MS,
    INFER_MS,
    LAST,
    ROWS,
    SHARD,
    SOURCE,
    STATUS,
)
from xray.metadata.labels import LABELS, prob_column
from xray.metadata.manifests import EnsembleManifest, ModelManifest, SplitRecord
from xray.tiles.grid import TileGrid


def _png(seed: int, size: int = 300) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(blobs: list[bytes | None], shard: str = "s", chunk: int = 0) -> dict[str, np.ndarray]:
    n = len(blobs)
    ids = np.array([f"{shard}{chunk}_{i}.png" for i in range(n)], dtype=object)
    return {IMAGE_ID: ids, SOURCE: ids, SHARD: np.array([shard] * n, dtype=object), CHUNK: np.full(n, chunk),
            LAST: np.ones(n, bool), ROWS: np.full(n, n), DATA: np.array(blobs, dtype=object),
            ERROR: np.array([None if b is not None else "no data" for b in blobs], dtype=object)}


def test_decode_chunk_spreads_its_cpu_time_over_the_rows():
    decoded = decode_chunk(_chunk([_png(0), _png(1), None, _png(2)]), 128, 10**8)
    core = decoded[DECODE_CORE_MS]
    assert core.shape == (4,) and np.all(core == core[0]) and core[0] > 0.0  # decoding 3 PNGs takes CPU time
    assert list(decoded[STATUS]) == ["ok", "ok", "error", "ok"]


def _scored(batch: dict[str, np.ndarray], infer_core_ms: float) -> dict[str, np.ndarray]:
    """What the scorer adds: probabilities, what ran, and its times (infer spread over the ok rows)."""
    out = dict(batch)
    pixels = out.pop("pixels")
    ok = out[STATUS] == "ok"
    n = len(pixels)
    for label in LABELS:
        out[prob_column(label)] = np.where(ok, 0.5, np.nan).astype(np.float32)
    out[INFER_MS] = np.where(ok, 2.0, 0.0).astype(np.float32)
    out[INFER_CORE_MS] = np.where(ok, infer_core_ms / max(int(ok.sum()), 1), 0.0)
    out["precision"] = np.array(["int8"] * n, dtype=object)
    out["cpu_isa"] = np.array(["avx2"] * n, dtype=object)
    return out


def test_the_writer_sums_each_chunks_cost_and_the_driver_sums_the_run(tmp_path):
    first = _scored(decode_chunk(_chunk([_png(3), _png(4), None], chunk=0), 64, 10**8), infer_core_ms=30.0)
    second = _scored(decode_chunk(_chunk([_png(5)], chunk=1), 64, 10**8), infer_core_ms=12.0)
    batch = {k: np.concatenate([first[k], second[k]]) for k in first}
    summary = write_chunks(batch, str(tmp_path), None, list(LABELS), "m", "0" * 64, "int8", "run")
    assert summary["rows"].tolist() == [3, 1] and summary["ok"].tolist() == [2, 1]
    np.testing.assert_allclose(summary[INFER_CORE_MS], [30.0, 12.0])
    np.testing.assert_allclose(summary[INFER_MS], [4.0, 2.0])
    np.testing.assert_allclose(summary[DECODE_CORE_MS], [first[DECODE_CORE_MS].sum(), second[DECODE_CORE_MS].sum()])
    np.testing.assert_allclose(summary[DECODE_MS], [first[DECODE_MS].sum(), second[DECODE_MS].sum()], rtol=1e-6)
    # the cost columns stay out of the written rows
    written = pq.read_table(str(tmp_path / "part-s-00000-last.parquet"))
    assert written.num_rows == 3 and DECODE_CORE_MS not in written.column_names
    assert INFER_CORE_MS not in written.column_names

    cost = ScoringCost()
    cost.add(summary)
    cost.add(summary)  # a second batch of the stream: sums, not overwrites
    record = cost.record(positions=9, decode_size=512, model_input_size=256, images_per_s=20.0, scorer_cpus=2.0)
    decode_total = 2 * float(summary[DECODE_CORE_MS].sum())
    assert record["images"] == 8 and record["ok_images"] == 6
    assert record["positions_per_image"] == 9
    assert (record["decode_size"], record["model_input_size"]) == (512, 256)
    assert record["decode_core_ms_per_image"] == decode_total / 8
    assert record["infer_core_ms_per_image"] == 2 * 42.0 / 6
    assert record["infer_core_ms_per_position"] == 2 * 42.0 / 6 / 9
    assert record["core_ms_per_image"] == decode_total / 8 + 2 * 42.0 / 6
    assert record["infer_ms_per_image"] == 12.0 / 6 and record["images_per_s"] == 20.0
    assert record["scorer_cpus"] == 2.0


def test_an_attempt_that_scored_nothing_records_no_per_image_figures():
    record = ScoringCost().record(positions=1, decode_size=224, model_input_size=224, images_per_s=0.0,
                                  scorer_cpus=0.0)
    assert record["images"] == 0 and record["positions_per_image"] == 1 and record["decode_size"] == 224
    per_image = [k for k in record if k.endswith(("ms_per_image", "_per_position")) or k == "images_per_s"]
    assert len(per_image) == 7 and all(record[k] is None for k in per_image)
    assert not any(isinstance(v, float) and math.isnan(v) for v in record.values())


def test_scoring_shape_names_positions_and_sizes():
    single = ModelManifest(model="m", labels=LABELS, input_size=224, irs={"int8": "int8/model.xml"}, split=None)
    assert scoring_shape(single) == (1, 224, 224)
    grid = TileGrid(1024, 256, 192)  # 5x5 overlapping positions
    ensemble = EnsembleManifest(model="e", backbone="dwsep_cnn", labels=LABELS, grid=grid, positions=(),
                                combiner="mean", stacked={}, split=SplitRecord(0.15, 0, 1, 1, 1))
    assert scoring_shape(ensemble) == (25, 1024, 256)
