"""Storage that fails under a running score, for real: a full disk (a small tmpfs as --out), an S3 server stopped
mid-run, an S3 server that comes back empty. Each ends in one line naming the storage and the cause, exit 2,
wherever it happened (driver, read or write tasks, actors); a rerun once storage is back gives one row per image."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest

from tests.conftest import REPO
from tests.reliability.cases import assert_exactly_once, make_archive

N_IMAGES = 48


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    return make_archive(str(tmp_path_factory.mktemp("storage") / "archive"), n_images=N_IMAGES, shards=2)


def _score(local_ray, archive: str, model: str, out: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    return subprocess.Popen([sys.executable, "-m", "jobs.score", "--archive", archive, "--model", model, "--out", out,
                             "--chunk-size", "2", "--actors", "1", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_line_failure(proc: subprocess.Popen, timeout: float = 240) -> str:
    _, err = proc.communicate(timeout=timeout)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("tilescope score: error: "), err[-2000:]
    assert len(lines[0]) < 600
    return lines[0]


@pytest.fixture()
def small_tmpfs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_writers_is_one_line_and_a_rerun_completes(local_ray, tiny_models, archive,
                                                                         small_tmpfs):
    out = str(small_tmpfs / "scores")
    model = tiny_models["models"][0]
    line = _one_line_failure(_score(local_ray, archive, model, out))
    assert "No space left on device" in line and out in line
    [run_dir] = glob.glob(os.path.join(out, "*"))
    assert not glob.glob(os.path.join(run_dir, ".*.tmp-*")), "a failed write leaves no temporary file"
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    rerun = _score(local_ray, archive, model, out)
    _, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err[-2000:]
    assert_exactly_once(run_dir, N_IMAGES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3_objects(endpoint: str, bucket: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_an_s3_server_stopped_mid_run_is_one_line_and_a_rerun_completes(local_ray, tiny_models, archive, s3_endpoint):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    model = tiny_models["models"][0]
    proc = _score(local_ray, archive, model, "s3://outage/scores", "--s3-endpoint", endpoint)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len([k for k in _s3_objects(endpoint, "outage") if "/part-" in k]) >= 3:
            break
        time.sleep(0.2)
    server.stop()  # moto keeps its data in this process: a restart below brings the same bucket back
    try:
        line = _one_line_failure(proc)
        assert endpoint.split("//")[1] in line or "s3://outage" in line, line
    finally:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    try:
        rerun = _score(local_ray, archive, model, "s3://outage/scores", "--s3-endpoint", endpoint)
        _, err = rerun.communicate(timeout=240)
        assert rerun.returncode == 0, err[-2000:]
        parts = [k for k in _s3_objects(endpoint, "outage") if k.rsplit("/", 1)[-1].startswith("part-")]
        assert parts and all(k.startswith("scores/") for k in parts)
    finally:
        server.stop()


def test_an_s3_server_that_comes_back_empty_is_one_line(local_ray, tiny_models, archive):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="amnesia")
        proc = _score(local_ray, archive, tiny_models["models"][0], "s3://amnesia/scores", "--s3-endpoint", endpoint)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if len([k for k in _s3_objects(endpoint, "amnesia") if "/part-" in k]) >= 3:
                break
            time.sleep(0.2)
        # the server restarted and lost everything (moto's reset: every bucket and object gone)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        line = _one_line_failure(proc)
        assert "amnesia" in line, line
    finally:
        server.stop()
