"""Every input is accounted for: one row per member, bad ones with their reason, the job goes on."""

from __future__ import annotations

import os

import pyarrow.dataset as pads
import pytest

from jobs import score
from tests.integration.corpus import write_corpus


def read_rows(path: str) -> list[dict]:
    return pads.dataset(path, format="parquet").to_table().to_pylist()


def test_bad_corpus_gives_one_row_per_member(local_ray, tiny_models, tmp_path):
    archive = str(tmp_path / "corpus")
    expected = write_corpus(archive)
    before = sorted(os.listdir(archive))
    summary = score.run(score.ScoreConfig(archive=archive, model=tiny_models["models"][0],
                                          out=str(tmp_path / "out"), chunk_size=4, max_pixels=1_000_000))
    rows = read_rows(summary.results_uri)
    by_id = {r["image_id"]: r for r in rows}

    # The bad shard: exactly its 14 members, each with the expected status and reason.
    for exp in expected["images_001.tar.gz"]:
        row = by_id[exp.image_id]
        assert row["status"] == exp.status, (exp, row["error"])
        assert row["source"].startswith("images_001.tar.gz:")
        if exp.status == "error":
            assert exp.reason in row["error"]
            assert row["prob_Atelectasis"] is None
        else:
            assert row["error"] is None
            assert 0.0 <= row["prob_Hernia"] <= 1.0
    # The truncated shard: a prefix of its members read fine, then one error row naming the shard.
    cut = [r for r in rows if r["source"].startswith("images_002.tar.gz")]
    shard_errors = [r for r in cut if r["image_id"] == "images_002.tar.gz"]
    assert len(shard_errors) == 1 and "images_002.tar.gz" in shard_errors[0]["error"]
    read_ok = [r["image_id"] for r in cut if r["status"] == "ok"]
    all_ids = [e.image_id for e in expected["images_002.tar.gz"]]
    assert 0 < len(read_ok) < len(all_ids)
    assert sorted(read_ok) == all_ids[: len(read_ok)]
    assert len(cut) == len(read_ok) + 1
    # Totals, uniqueness, and nothing extracted next to the archive.
    assert summary.rows == len(rows) == 14 + len(read_ok) + 1
    assert summary.errors == sum(1 for e in expected["images_001.tar.gz"] if e.status == "error") + 1
    assert len({(r["image_id"], r["source"]) for r in rows}) == len(rows)
    assert sorted(os.listdir(archive)) == before


def test_bad_flags_fail_before_any_work(tiny_models, tmp_path):
    with pytest.raises(ValueError) as err:
        score.run(score.ScoreConfig(archive=tiny_models["archive"], model=tiny_models["models"][0],
                                    out=str(tmp_path / "o"), precision="int4", chunk_size=0))
    assert "--precision" in str(err.value) and "--chunk-size" in str(err.value)
    assert not (tmp_path / "o").exists()
    with pytest.raises(OSError, match="archive not found"):
        score.run(score.ScoreConfig(archive=str(tmp_path / "nope"), model=tiny_models["models"][0],
                                    out=str(tmp_path / "o")))
    with pytest.raises(OSError, match="not an artifact"):
        score.run(score.ScoreConfig(archive=tiny_models["archive"], model=str(tmp_path),
                                    out=str(tmp_path / "o")))
