"""A committed run directory read the way README says, by pyarrow, pandas, polars and duckdb: every row once, the
sidecars (_run.json, _manifest.json) and a crash's hidden temporary file left out (no Ray)."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from storage.fs import resolve, write_json
from storage.results import RUN_CLAIM, RUN_MANIFEST, results_schema, results_table, write_chunk
from xray.metadata.labels import LABELS, prob_column


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    """Three chunk files of two shards (one an ensemble-less plain run), both sidecars, and a leftover temporary
    file of an interrupted write, as `tilescope score` leaves them."""
    root = tmp_path_factory.mktemp("readers") / "dwsep_cnn-0123456789ab"
    out = resolve(str(root))
    schema = results_schema(list(LABELS))
    rng = np.random.default_rng(0)
    for shard, k, last, n in (("images_001.tar.gz", 0, False, 5), ("images_001.tar.gz", 1, True, 3),
                              ("images_002.tar.gz", 0, True, 4)):
        ids = np.array([f"{shard[7:10]}{k}{i:04d}_000.png" for i in range(n)], dtype=object)
        batch = {"image_id": ids, "source": np.array([f"{shard}:images/{i}" for i in ids], dtype=object),
                 "status": np.array(["ok"] * (n - 1) + ["error"], dtype=object),
                 "error": np.array([None] * (n - 1) + ["corrupt or truncated image data"], dtype=object),
                 "decode_ms": np.ones(n, np.float32), "infer_ms": np.ones(n, np.float32)}
        probs = rng.random((n, len(LABELS)), dtype=np.float32)
        probs[-1] = np.nan
        batch.update({prob_column(label): probs[:, j] for j, label in enumerate(LABELS)})
        write_chunk(out, shard, k, last, results_table(batch, np.arange(n), schema, "dwsep_cnn", "ab" * 32, "int8",
                                                       "run-1"))
    write_json(out, RUN_CLAIM, {"run_id": "run-1"})
    write_json(out, RUN_MANIFEST, {"run_id": "run-1", "rows": 12, "ok": 11, "errors": 1})
    with open(root / ".part-images_003.tar.gz-00000.parquet.tmp-1a2b3c4d", "wb") as f:
        f.write(b"PAR1 half a file")
    return str(root)


def expected_ids(run_dir: str) -> list[str]:
    return sorted(i for f in sorted(os.listdir(run_dir)) if f.startswith("part-")
                  for i in pq.read_table(os.path.join(run_dir, f), columns=["image_id"]).column(0).to_pylist())


def test_pyarrow_reads_the_directory(run_dir):
    table = pq.read_table(run_dir)  # pyarrow skips names starting with '_' or '.'
    assert table.num_rows == 12 and sorted(table.column("image_id").to_pylist()) == expected_ids(run_dir)
    assert table.schema.field("prob_Hernia").type == "float" and table.column("status").to_pylist().count("error") == 3


def test_pandas_reads_the_directory(run_dir):
    frame = pd.read_parquet(run_dir)
    assert len(frame) == 12 and sorted(frame["image_id"]) == expected_ids(run_dir)
    assert frame["prob_Effusion"].isna().sum() == 3


def test_polars_reads_the_part_files_glob(run_dir):
    frame = pl.read_parquet(os.path.join(run_dir, "part-*.parquet"))
    assert frame.height == 12 and sorted(frame["image_id"].to_list()) == expected_ids(run_dir)
    lazy = pl.scan_parquet(os.path.join(run_dir, "part-*.parquet")).filter(pl.col("status") == "ok").collect()
    assert lazy.height == 9


def test_duckdb_reads_the_part_files_glob(run_dir):
    glob = os.path.join(run_dir, "part-*.parquet")
    rows = duckdb.sql(f"SELECT status, count(*) FROM read_parquet('{glob}') GROUP BY status ORDER BY status").fetchall()
    assert rows == [("error", 3), ("ok", 9)]
    ids = [r[0] for r in duckdb.sql(f"SELECT image_id FROM read_parquet('{glob}') ORDER BY image_id").fetchall()]
    assert ids == expected_ids(run_dir)


def test_report_names_a_wrong_typed_part_file(run_dir, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage.scored_runs import open_run

    copy = tmp_path / "dwsep_cnn-0123456789ab"
    shutil.copytree(run_dir, copy)
    assert open_run(str(copy)).image_id.size == 12  # as written: reads
    part = sorted(copy.glob("part-images_002*.parquet"))[0]
    table = pq.read_table(part)
    i = table.schema.get_field_index("prob_Mass")
    pq.write_table(table.set_column(i, "prob_Mass", pa.array([str(v) for v in table.column(i).to_pylist()])), part)
    with pytest.raises(ValueError, match=rf"{part.name}: not a tilescope results file \(prob_Mass is string\)"):
        open_run(str(copy))
    part.write_bytes(b"PAR1 not parquet PAR1")
    with pytest.raises(ValueError, match=rf"{part.name}: not a readable Parquet file"):
        open_run(str(copy))
