"""The result row records what ran (results_schema_version 2): `precision` and `cpu_isa` come from the scorer's
batch, and a run's pairs are counted back from storage, older files without `cpu_isa` included."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import resolve
from storage.results import (
    CPU_ISA,
    DECODE_MS,
    ERROR,
    IMAGE_ID,
    INFER_MS,
    PRECISION,
    RESULTS_SCHEMA_VERSION,
    SOURCE,
    STATUS,
    count_precisions,
    results_schema,
    results_table,
    write_chunk,
)
from xray.metadata.labels import prob_column


def batch(n: int, precision: str | None, isa: str | None) -> dict[str, np.ndarray]:
    out = {IMAGE_ID: np.array([f"{i:08d}_000.png" for i in range(n)], dtype=object),
           SOURCE: np.array([f"s:{i}" for i in range(n)], dtype=object),
           STATUS: np.array(["ok"] * n, dtype=object), ERROR: np.array([None] * n, dtype=object),
           prob_column("Mass"): np.linspace(0, 1, n, dtype=np.float32),
           DECODE_MS: np.ones(n, np.float32), INFER_MS: np.ones(n, np.float32)}
    if precision is not None:
        out[PRECISION] = np.array([precision] * n, dtype=object)
    if isa is not None:
        out[CPU_ISA] = np.array([isa] * n, dtype=object)
    return out


def test_rows_carry_what_the_scorer_says_ran(tmp_path):
    schema = results_schema(["Mass"])
    assert RESULTS_SCHEMA_VERSION == 2 and schema.field(CPU_ISA).type == pa.string()
    table = results_table(batch(3, "bf16", "amx"), np.arange(3), schema, "m", "ab" * 32, "fp32", "run")
    assert table.column(PRECISION).to_pylist() == ["bf16"] * 3  # what ran, not the flag passed as fallback
    assert table.column(CPU_ISA).to_pylist() == ["amx"] * 3
    fallback = results_table(batch(2, None, None), np.arange(2), schema, "m", "ab" * 32, "int8", "run")
    assert fallback.column(PRECISION).to_pylist() == ["int8", "int8"]
    assert fallback.column(CPU_ISA).to_pylist() == ["unknown", "unknown"]


def test_a_runs_precisions_are_counted_from_its_files(tmp_path):
    out = resolve(str(tmp_path))
    schema = results_schema(["Mass"])
    write_chunk(out, "images_001.tar.gz", 0, False, results_table(batch(4, "int8", "avx2"), np.arange(4), schema,
                                                                   "m", "ab" * 32, "int8", "run"))
    write_chunk(out, "images_001.tar.gz", 1, True, results_table(batch(2, "int8", "amx"), np.arange(2), schema,
                                                                  "m", "ab" * 32, "int8", "run"))
    # A file written before schema version 2: a precision column only.
    old = pa.table({IMAGE_ID: ["x.png"], SOURCE: ["t:x"], STATUS: ["ok"], ERROR: pa.array([None], pa.string()),
                    PRECISION: ["int8"]})
    pq.write_table(old, str(tmp_path / "part-images_002.tar.gz-00000-last.parquet"))
    assert count_precisions(out) == [{"precision": "int8", "cpu_isa": "avx2", "rows": 4},
                                     {"precision": "int8", "cpu_isa": "amx", "rows": 2},
                                     {"precision": "int8", "cpu_isa": "unknown", "rows": 1}]
