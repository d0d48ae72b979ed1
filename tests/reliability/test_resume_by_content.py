"""Resume by content: a rerun resumes, scores new shards, and refuses what would lose or duplicate rows."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from jobs import score
from tests.reliability.cases import assert_exactly_once, config, copy_shard, make_archive


@pytest.fixture(scope="module")
def source_archive(tmp_path_factory) -> str:
    return make_archive(str(tmp_path_factory.mktemp("src") / "archive"), n_images=36, shards=3)


def _two_shard_archive(source_archive: str, path: str) -> str:
    os.makedirs(path)
    for name in ("images_001.tar.gz", "images_002.tar.gz", "Data_Entry_2017.csv"):
        shutil.copyfile(os.path.join(source_archive, name), os.path.join(path, name))
    return path


def test_an_interrupted_run_resumed_with_other_chunking_is_refused_and_loses_nothing(
        local_ray, tiny_models, source_archive, tmp_path):
    model, out = tiny_models["models"][0], str(tmp_path / "scores")
    first = score.run(config(source_archive, model, out, chunk_size=4))
    assert_exactly_once(first.results_uri, 36)
    # an interruption: the commit marker and one shard's rows are gone
    os.remove(os.path.join(first.results_uri, "_manifest.json"))
    lost = [f for f in os.listdir(first.results_uri) if f.startswith("part-images_002")]
    for name in lost:
        os.remove(os.path.join(first.results_uri, name))
    for other in (7, 3):
        with pytest.raises(ValueError, match=rf"--chunk-size {other}: run .* was started with --chunk-size 4"):
            score.run(config(source_archive, model, out, chunk_size=other))
    resumed = score.run(config(source_archive, model, out, chunk_size=4))
    assert resumed.scored_now == 12 and resumed.rows == 36
    assert_exactly_once(resumed.results_uri, 36)


def test_a_shard_added_after_the_commit_is_scored_and_committed(local_ray, tiny_models, source_archive, tmp_path):
    archive = _two_shard_archive(source_archive, str(tmp_path / "archive"))
    model, out = tiny_models["models"][0], str(tmp_path / "scores")
    first = score.run(config(archive, model, out))
    assert first.rows == 24
    copy_shard(source_archive, "images_003.tar.gz", archive, "images_003.tar.gz")
    second = score.run(config(archive, model, out))
    assert (second.already_complete, second.scored_now, second.rows) == (False, 12, 36)
    assert_exactly_once(second.results_uri, 36)
    assert score.run(config(archive, model, out)).already_complete


def test_a_changed_or_removed_shard_and_another_archive_are_refused(local_ray, tiny_models, source_archive, tmp_path):
    archive = _two_shard_archive(source_archive, str(tmp_path / "archive"))
    model, out = tiny_models["models"][0], str(tmp_path / "scores")
    score.run(config(archive, model, out))
    copy_shard(source_archive, "images_003.tar.gz", archive, "images_002.tar.gz")  # other bytes, same name
    with pytest.raises(ValueError, match=r"changed: images_002.tar.gz"):
        score.run(config(archive, model, out))
    os.remove(os.path.join(archive, "images_002.tar.gz"))
    with pytest.raises(ValueError, match=r"removed: images_002.tar.gz"):
        score.run(config(archive, model, out))
    # another archive into the same --out: under the default run id, and under the same run id
    with pytest.raises(ValueError, match=rf"--archive {source_archive}: .* holds run .* of archive {archive};"):
        score.run(config(source_archive, model, out))
    (run_dir,) = os.listdir(out)
    with open(os.path.join(out, run_dir, "_run.json")) as f:
        run_id = json.load(f)["run_id"]
    with pytest.raises(ValueError, match=rf"--archive {source_archive}: .* holds run {run_id} of archive"):
        score.run(config(source_archive, model, out, run_id=run_id))


def test_same_named_shards_in_two_folders_are_both_scored(local_ray, tiny_models, source_archive, tmp_path):
    archive = str(tmp_path / "archive")
    copy_shard(source_archive, "images_001.tar.gz", archive, "a/images_001.tar.gz")
    copy_shard(source_archive, "images_002.tar.gz", archive, "b/images_001.tar.gz")
    summary = score.run(config(archive, tiny_models["models"][0], str(tmp_path / "scores")))
    got = assert_exactly_once(summary.results_uri, 24)
    assert {r["source"].split(":")[0] for r in got} == {"a/images_001.tar.gz", "b/images_001.tar.gz"}
    assert sorted(f for f in os.listdir(summary.results_uri) if f.startswith("part-")) == [
        "part-a%2Fimages_001.tar.gz-00000_00002-last.parquet", "part-b%2Fimages_001.tar.gz-00000_00002-last.parquet"]
