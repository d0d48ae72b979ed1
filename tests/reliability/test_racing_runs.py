"""Runs that race for one --out: started together, exactly one writes (exit 0) and the others stop before writing
and name it (exit 2), locally and on the S3 server; every image ends with one row. A rerun of a committed run
verifies it and repairs what a crashed or racing writer left (duplicated chunk files, temporary files)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import boto3
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from jobs import score
from storage.fs import resolve
from storage.run_manifest import read_manifest
from tests.conftest import REPO
from tests.reliability.cases import assert_exactly_once, config, make_archive

N_IMAGES = 48
RACERS = 3


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    return make_archive(str(tmp_path_factory.mktemp("race") / "archive"), n_images=N_IMAGES, shards=2)


def _race(local_ray, archive: str, model: str, out: str, env: dict | None = None) -> list[tuple[int, str]]:
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address, **(env or {})}
    cmd = [sys.executable, "-m", "jobs.score", "--archive", archive, "--model", model, "--out", out,
           "--chunk-size", "4", "--actors", "1"]
    drivers = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(RACERS)]
    results = []
    for d in drivers:
        _, err = d.communicate(timeout=300)
        results.append((d.returncode, err))
    return results


def _check_one_winner(results: list[tuple[int, str]]) -> None:
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [2] * (RACERS - 1), [(c, e[-400:]) for c, e in results]
    for code, err in results:
        if code == 2:
            last = err.strip().splitlines()[-1]
            assert "is being written by run score-" in last and "nothing was written" in last, last


def test_runs_started_together_locally_end_with_one_writer(local_ray, tiny_models, archive, tmp_path):
    out = str(tmp_path / "scores")
    _check_one_winner(_race(local_ray, archive, tiny_models["models"][0], out))
    [run_dir] = glob.glob(os.path.join(out, "*"))
    assert_exactly_once(run_dir, N_IMAGES)
    assert not glob.glob(os.path.join(run_dir, "_lease.json"))  # the winner released it
    again = score.run(config(archive, tiny_models["models"][0], out))
    assert again.already_complete and again.rows == N_IMAGES


def test_runs_started_together_on_s3_end_with_one_writer(local_ray, tiny_models, archive, s3_endpoint, s3_bucket):
    out = f"s3://{s3_bucket}/scores"
    _check_one_winner(_race(local_ray, archive, tiny_models["models"][0], out,
                            {"TILESCOPE_S3_ENDPOINT": s3_endpoint}))
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=s3_bucket, Prefix="scores/")["Contents"]]
    parts = [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-")]
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.split("://")[1], scheme="http", region="us-east-1")
    table = pads.dataset([f"{s3_bucket}/{k}" for k in parts], filesystem=fs, format="parquet").to_table(
        columns=["source"])
    assert table.num_rows == N_IMAGES and len(set(table.column("source").to_pylist())) == N_IMAGES
    assert not [k for k in keys if k.endswith("_lease.json")]


def test_a_rerun_repairs_what_a_racing_or_crashed_writer_left(local_ray, tiny_models, archive, tmp_path):
    out = str(tmp_path / "scores")
    model = tiny_models["models"][0]
    first = score.run(config(archive, model, out))
    run_dir = first.results_uri
    compacted = sorted(glob.glob(os.path.join(run_dir, "part-*_*.parquet")))
    assert compacted, "the commit compacts each shard into one file"
    # what the race of two runs left before leases: chunk files of a shard beside its compacted file, and a
    # writer's temporary file
    name = os.path.basename(compacted[0])
    shard = name[len("part-"):name.index("-00000_")]
    shutil.copyfile(compacted[0], os.path.join(run_dir, f"part-{shard}-00000.parquet"))
    with open(os.path.join(run_dir, f".part-{shard}-00001.parquet.tmp-0badc0de"), "wb") as f:
        f.write(b"PAR1 half")
    assert len(pads.dataset(glob.glob(os.path.join(run_dir, "part-*.parquet"))).to_table()) > N_IMAGES
    repaired = score.run(config(archive, model, out))
    assert repaired.already_complete and repaired.rows == N_IMAGES
    assert_exactly_once(run_dir, N_IMAGES)
    assert not glob.glob(os.path.join(run_dir, ".*tmp-*"))
    manifest = read_manifest(resolve(run_dir))
    assert manifest is not None and manifest.rows == N_IMAGES
    # idempotent: the next rerun finds nothing to repair
    assert score.run(config(archive, model, out)).rows == N_IMAGES


def test_resuming_with_another_precision_is_refused_naming_both(local_ray, tiny_models, archive, tmp_path):
    out = str(tmp_path / "scores")
    model = tiny_models["models"][0]
    score.run(config(archive, model, out))
    with pytest.raises(ValueError, match="--precision fp32: run .* was started with --precision int8"):
        score.run(config(archive, model, out, precision="fp32"))
