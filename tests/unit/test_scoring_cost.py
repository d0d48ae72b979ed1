"""The run manifest's `cost` of a scoring run: core-ms per image measured in the decode step and the scorer,
summed per chunk by the writer and per run on the driver (jobs/score_stages.py, jobs/score.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from actors.node_cpu import CpuSampler, is_ray_process
from jobs.score import scoring_shape
from jobs.score_stages import ScoringCost, WriteTarget, cost_line, decode_chunk, write_chunks
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
    READ_CORE_MS,
    ROWS,
    SHARD,
    SOURCE,
    STATUS,
    WRITE_CORE_MS,
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
            ERROR: np.array([None if b is not None else "no data" for b in blobs], dtype=object),
            READ_CORE_MS: np.full(n, 1.5)}


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
    summary = write_chunks(batch, [WriteTarget(str(tmp_path), tuple(LABELS), "m", "0" * 64, "run")], None, "int8")
    assert summary["rows"].tolist() == [3, 1] and summary["ok"].tolist() == [2, 1]
    assert summary["target"].tolist() == [0, 0]
    np.testing.assert_allclose(summary[INFER_CORE_MS], [30.0, 12.0])
    np.testing.assert_allclose(summary[INFER_MS], [4.0, 2.0])
    np.testing.assert_allclose(summary[DECODE_CORE_MS], [first[DECODE_CORE_MS].sum(), second[DECODE_CORE_MS].sum()])
    np.testing.assert_allclose(summary[DECODE_MS], [first[DECODE_MS].sum(), second[DECODE_MS].sum()], rtol=1e-6)
    np.testing.assert_allclose(summary[READ_CORE_MS], [4.5, 1.5])  # carried from the read task through decode
    assert np.all(summary[WRITE_CORE_MS] > 0.0)  # building and writing a Parquet file takes CPU time
    # the cost columns stay out of the written rows
    written = pq.read_table(str(tmp_path / "part-s-00000-last.parquet"))
    assert written.num_rows == 3 and DECODE_CORE_MS not in written.column_names
    assert INFER_CORE_MS not in written.column_names and READ_CORE_MS not in written.column_names

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
    assert record["read_core_ms_per_image"] == 2 * 6.0 / 8
    assert record["write_core_ms_per_image"] == 2 * float(summary[WRITE_CORE_MS].sum()) / 8
    # Without the run's counters and cores: no overhead figures, and the completion line says only what it knows.
    assert record["efficiency"] is None and record["rest_core_ms_per_image"] is None
    assert "efficiency" not in cost_line(record) and cost_line(record).startswith(", ")


def test_every_core_ms_of_the_stream_is_accounted_for():
    cost = ScoringCost(images=100, ok=100, read_core_ms=50.0, decode_core_ms=300.0, infer_core_ms=800.0,
                       write_core_ms=30.0, all_core_ms=1500.0)
    record = cost.record(positions=1, decode_size=224, model_input_size=224, images_per_s=125.0, scorer_cpus=2.0,
                         cores=2.0)
    # 2 cores at 125 images/s: 16 core-ms per image of wall time.
    assert record["wall_core_ms_per_image"] == 16.0 and record["all_core_ms_per_image"] == 15.0
    parts = ("read", "decode", "infer", "write", "rest", "idle")
    got = [record[f"{p}_core_ms_per_image"] for p in parts]
    np.testing.assert_allclose(got, [0.5, 3.0, 8.0, 0.3, 3.2, 1.0])
    assert math.isclose(sum(got), 16.0)
    assert record["overhead_core_ms_per_image"] == 5.0 and record["efficiency"] == 11.0 / 16.0
    line = cost_line(record)
    assert "efficiency 0.69, overhead 5.0 core-ms per image" in line
    assert "(read 0.5, write 0.3, Ray and driver 3.2, idle 1.0)" in line


def test_rays_processes_are_told_from_others_and_counters_are_differenced_per_node():
    assert is_ray_process("raylet", ["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet"])
    assert is_ray_process("gcs_server", [])
    assert is_ray_process("python", ["ray::MapBatches(decode_chunk)->MapBatches(Int8Scorer)"])
    assert is_ray_process("python3", ["/venv/bin/python", "/venv/lib/python3.11/site-packages/ray/dashboard/agent.py"])
    assert not is_ray_process("python", ["/venv/bin/python", "-m", "pytest", "tests"])
    assert not is_ray_process("bash", ["bash", "-c", "echo ray::"])


def test_the_sampler_counts_what_processes_spent_also_those_that_exit_or_start_between_samples(monkeypatch):
    import actors.node_cpu as node_cpu

    readings = iter([
        {(1, 0.0): 10.0, (2, 0.0): 5.0},  # at start(): what they had spent before does not count
        {(1, 0.0): 11.0, (2, 0.0): 6.0, (3, 9.0): 0.5},  # 3 started meanwhile: counts from 0
        {(1, 0.0): 12.5, (3, 9.0): 2.0},  # 2 exited after its last sample: its 1.0 s stay counted
    ])
    monkeypatch.setattr(node_cpu, "ray_process_times", lambda exclude=(): next(readings))
    sampler = CpuSampler(every_s=3600)  # no sample from the thread: only start(), one by hand, stop()
    sampler.start()
    sampler._sample()
    assert sampler.stop() == 2.5 + 1.0 + 2.0


def test_an_attempt_that_scored_nothing_records_no_per_image_figures():
    record = ScoringCost().record(positions=1, decode_size=224, model_input_size=224, images_per_s=0.0,
                                  scorer_cpus=0.0)
    assert record["images"] == 0 and record["positions_per_image"] == 1 and record["decode_size"] == 224
    per_image = [k for k in record if k.endswith(("ms_per_image", "_per_position")) or k == "images_per_s"]
    assert len(per_image) == 16 and all(record[k] is None for k in per_image)
    assert record["efficiency"] is None and cost_line(record) == ""
    assert not any(isinstance(v, float) and math.isnan(v) for v in record.values())


def test_scoring_shape_names_positions_and_sizes():
    single = ModelManifest(model="m", labels=LABELS, input_size=224, irs={"int8": "int8/model.xml"}, split=None)
    assert scoring_shape(single) == (1, 224, 224)
    grid = TileGrid(1024, 256, 192)  # 5x5 overlapping positions
    ensemble = EnsembleManifest(model="e", backbone="dwsep_cnn", labels=LABELS, grid=grid, positions=(),
                                combiner="mean", stacked={}, split=SplitRecord(0.15, 0, 1, 1, 1))
    assert scoring_shape(ensemble) == (25, 1024, 256)


def test_a_pass_of_several_models_decodes_once_per_size_and_writes_each_models_rows_to_its_own_run(tmp_path):
    from jobs.score_stages import pixels_column, target_view

    sizes = (64, 32)
    decoded = decode_chunk(_chunk([_png(6), None, _png(7)]), 64, 10**8, sizes=sizes)
    assert decoded[pixels_column(64, sizes)].shape == (3, 1, 64, 64)
    assert decoded[pixels_column(32, sizes)].shape == (3, 1, 32, 32)
    assert "pixels" not in decoded and list(decoded[STATUS]) == ["ok", "error", "ok"]
    single = decode_chunk(_chunk([_png(6), None, _png(7)]), 32, 10**8)
    np.testing.assert_array_equal(decoded["pixels@32"], single["pixels"])  # the same input as a one-size pass
    # What MultiScorer leaves: shared columns, and each model's own under "<k>/".
    batch = {k: v for k, v in decoded.items() if not k.startswith("pixels")}
    for k, size in enumerate(sizes):
        scored = _scored({**{c: batch[c] for c in (STATUS,)}, "pixels": decoded[f"pixels@{size}"]}, 10.0 * (k + 1))
        batch.update({f"{k}/{name}": column for name, column in scored.items() if name != STATUS})
    view = target_view(batch, "1/")
    assert view[INFER_CORE_MS].sum() == 20.0 and view[STATUS] is batch[STATUS] and "1/infer_ms" not in view
    a, b = tmp_path / "a", tmp_path / "b"
    targets = [WriteTarget(str(a), tuple(LABELS), "ma", "a" * 64, "run-a", prefix="0/"),
               WriteTarget(str(b), tuple(LABELS), "mb", "b" * 64, "run-b", prefix="1/",
                           done=frozenset({("s", 0)}))]
    summary = write_chunks(batch, targets, None, "int8")
    # The chunk b already has is left alone there: one summary row, for a.
    assert summary["target"].tolist() == [0] and summary["rows"].tolist() == [3]
    np.testing.assert_allclose(summary[INFER_CORE_MS], [10.0])
    written = pq.read_table(str(a / "part-s-00000-last.parquet"))
    assert written.column("model").to_pylist() == ["ma"] * 3 and written.column("run_id")[0].as_py() == "run-a"
    assert not b.exists()


def test_a_pass_counts_every_models_inference_in_its_efficiency():
    cost = ScoringCost(images=10, ok=10, read_core_ms=10.0, decode_core_ms=30.0, infer_core_ms=50.0,
                       write_core_ms=5.0, all_core_ms=180.0, models_in_pass=2, other_infer_core_ms=70.0,
                       other_write_core_ms=5.0)
    r = cost.record(positions=1, decode_size=64, model_input_size=64, images_per_s=100.0, scorer_cpus=2.0, cores=2.0)
    assert r["core_ms_per_image"] == 8.0 and r["other_models_infer_core_ms_per_image"] == 7.0
    assert r["models_in_pass"] == 2 and r["wall_core_ms_per_image"] == 20.0
    assert r["efficiency"] == 15.0 / 20.0 and r["overhead_core_ms_per_image"] == 5.0
    assert math.isclose(r["rest_core_ms_per_image"], 18.0 - (1.0 + 3.0 + 5.0 + 7.0 + 0.5 + 0.5))
