"""Kill and restart, again and again: the driver killed at different points, then a lost results file; every
rerun converges on exactly one row per image, and a committed run is never reported short."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from jobs import score
from tests.conftest import REPO
from tests.reliability.cases import assert_exactly_once, config, make_archive

N_IMAGES = 120


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    return make_archive(str(tmp_path_factory.mktemp("kills") / "archive"), n_images=N_IMAGES, shards=3)


def _chunk_files(out: str) -> int:
    return len(glob.glob(os.path.join(out, "*", "part-*.parquet")))


def test_driver_killed_three_times_then_rerun_is_exactly_once(local_ray, tiny_models, archive, tmp_path):
    out = str(tmp_path / "scores")
    model = tiny_models["models"][0]
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "jobs.score", "--archive", archive, "--model", model, "--out", out,
           "--chunk-size", "4", "--actors", "1"]
    kills = 0
    for wanted in (2, 8, 14):  # kill after more and more chunk files are on storage
        driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _chunk_files(out) < wanted and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
            kills += 1
        driver.wait(timeout=60)
        assert not glob.glob(os.path.join(out, "*", "_manifest.json")) or driver.returncode == 0
    assert kills >= 2, "the runs finished before they could be killed"
    resumed = score.run(config(archive, model, out))
    assert resumed.rows == N_IMAGES and resumed.scored_now < N_IMAGES
    assert_exactly_once(resumed.results_uri, N_IMAGES)


def test_a_lost_results_file_of_a_committed_run_is_rescored_once(local_ray, tiny_models, archive, tmp_path):
    out = str(tmp_path / "scores")
    model = tiny_models["models"][0]
    first = score.run(config(archive, model, out))
    run_dir = first.results_uri
    # storage loses one shard's rows and the commit marker (what an S3 restart mid-commit can leave)
    os.remove(os.path.join(run_dir, "_manifest.json"))
    (lost,) = [f for f in os.listdir(run_dir) if f.startswith("part-images_002")]
    os.remove(os.path.join(run_dir, lost))
    again = score.run(config(archive, model, out))
    assert (again.scored_now, again.rows) == (N_IMAGES // 3, N_IMAGES)
    assert_exactly_once(run_dir, N_IMAGES)
