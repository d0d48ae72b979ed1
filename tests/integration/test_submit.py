"""`tilescope submit / status / logs / stop / list` against a real Ray head that this module starts, with token
authentication on: submit and follow, stop, resume under the same run id, and a wrong token refused; submitted
from the checkout (shipped as working_dir) and from tilescope installed from its wheel (its packages shipped as
py_modules, never site-packages), each run recording which tilescope wrote it."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from cli import provenance
from jobs import synth
from tests.conftest import REPO
from tests.integration.installs import build_wheel, install_target

N_IMAGES = 200  # scored in chunks of 1: a stop part-way leaves most of them to the resumed run


@dataclass(frozen=True)
class Head:
    address: str
    """The jobs API (dashboard) URL, on 127.0.0.1."""
    pid: int
    """`ray start --block`: every process of this head (GCS, raylet, workers, job drivers) descends from it."""
    env: dict
    """Environment of a client holding the cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH)."""
    temp_dir: str
    """The head's own directory: its token file, and Ray's session under ray/."""


def _free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1: all held open until all are chosen, so none is handed out twice."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for_api(address: str, head: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
        except urllib.error.HTTPError as exc:
            assert exc.code == 401, f"the jobs API answered {exc.code} without a token; token auth is not on"
            return
        except OSError:
            time.sleep(0.5)
            continue
        raise AssertionError("the jobs API answered without a token: token authentication is off")
    raise RuntimeError(f"the jobs API at {address} did not come up in {timeout_s}s:\n{log.read_text()[-3000:]}")


def _stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """Stop only this head: `ray stop` would stop every Ray on the machine, other tests' and benchmarks'
    included. `ray start --block` takes its node's processes down on SIGTERM; whatever of its descendants
    outlives it is killed."""
    descendants = psutil.Process(head.pid).children(recursive=True)
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(timeout=10)
    for proc in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    # A short path of its own: Ray's unix sockets live under it (107-byte limit). The GCS and raylet listen
    # as every local Ray does (`ray start` resolves 127.0.0.1 to the node's address for them) and check the
    # token; the HTTP jobs API, the one this module talks to, binds 127.0.0.1 only.
    temp_dir = tempfile.mkdtemp(prefix="tsray", dir="/tmp")
    token_file = Path(temp_dir, "auth_token")
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    # PATH: the job drivers run `python` from this venv, as the cluster's head runs its own venv's.
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    gcs, dashboard_port, client, agent_http, agent_grpc, metrics, runtime_env = _free_ports(7)
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
           "--num-cpus=2", f"--temp-dir={temp_dir}/ray", "--disable-usage-stats",
           # Every fixed default port moved to a free one, so that another Ray on the machine cannot collide.
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={runtime_env}"]
    log = Path(temp_dir, "head.log")
    # No drain on SIGTERM (30 s by default, for Serve): nothing here needs it, and teardown should be quick.
    head_env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # cwd: a job without a working_dir runs in the head's directory, which must not hold this checkout (as a
    # cluster's head does not): `python -m jobs.X` would import it from there instead of the shipped package.
    with open(log, "w") as log_file:
        head = subprocess.Popen(cmd, env=head_env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=temp_dir)
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_api(address, head, log)
        yield Head(address, head.pid, env, temp_dir)
    finally:
        _stop_head(head, temp_dir)


def tilescope(head: Head, *args: str, env: dict | None = None, cwd: str | Path = REPO) -> subprocess.CompletedProcess:
    """The real command line, in a process of its own (Ray's auth mode and token are per process)."""
    return subprocess.run([sys.executable, "-m", "jobs", *args, "--address", head.address], cwd=cwd,
                          env=env or head.env, capture_output=True, text=True, timeout=300)


def run_manifest(out: Path) -> dict:
    [manifest] = glob.glob(str(out / "*" / "_manifest.json"))
    return json.loads(Path(manifest).read_text())


def submitted_id(result: subprocess.CompletedProcess) -> str:
    match = re.search(r"^submitted (\S+) \(run \S+, attempt \d+\)", result.stdout, re.MULTILINE)
    assert match, f"no submission line in:\n{result.stdout}\n{result.stderr}"
    return match.group(1)


def part_files(out: Path) -> list[str]:
    return glob.glob(str(out / "*" / "part-*.parquet"))


# Ray's own processes on the head that the stop itself goes through; everything else the raylet runs is the job's.
RAY_SERVICES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::JobSupervisor")


def freeze_job_workers(head: Head) -> list[psutil.Process]:
    """SIGSTOP the workers running the job's tasks and actors (readers, scorers, writers, idle ones that could
    take over), so that a stop lands part-way through the run however fast this machine scores: once
    started, a run this small finishes within the time `tilescope stop` takes to start."""
    raylet = next(p for p in psutil.Process(head.pid).children() if p.name() == "raylet")
    frozen = []
    for worker in raylet.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            title = " ".join(worker.cmdline())
            if title.startswith("ray::") and not title.startswith(RAY_SERVICES):
                for proc in (worker, *worker.children(recursive=True)):
                    proc.suspend()
                    frozen.append(proc)
    return frozen


def thaw(processes: list[psutil.Process]) -> None:
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.resume()


def test_submit_and_follow_until_it_succeeds(ray_head, tmp_path):
    out = tmp_path / "archive"
    result = tilescope(ray_head, "submit", "synth", "--out", str(out), "--n-images", "8", "--size", "64", "--follow")
    assert result.returncode == 0, result.stderr
    run_id = submitted_id(result)
    assert run_id.startswith("synth-")
    assert re.search(r"^synth: 8 images of \d+ patients .* 2 shards", result.stdout, re.MULTILINE)  # job's log
    assert result.stdout.rstrip().endswith(f"{run_id}: SUCCEEDED")
    assert sorted(os.listdir(out)) == ["BBox_List_2017.csv", "Data_Entry_2017.csv", "images_001.tar.gz",
                                       "images_002.tar.gz", "test_list.txt", "tilescope_synth.json",
                                       "train_val_list.txt"]

    status = tilescope(ray_head, "status", run_id)
    assert status.returncode == 0 and f"run {run_id} attempt 0 ({run_id}): SUCCEEDED" in status.stdout
    logs = tilescope(ray_head, "logs", run_id)
    assert "synth: 8 images" in logs.stdout
    # The same command again is the same run: refused, with the ways forward named.
    again = tilescope(ray_head, "submit", "synth", "--out", str(out), "--n-images", "8", "--size", "64")
    assert again.returncode == 2 and f"run {run_id} was already submitted" in again.stderr


def test_stop_then_resume_under_the_same_run_id_skips_finished_work(ray_head, tiny_models, tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "scores"
    synth.run(synth.SynthConfig(out=str(archive), n_images=N_IMAGES, size=64, shards=4, seed=5))
    first = tilescope(ray_head, "submit", "score", "--archive", str(archive), "--model", tiny_models["models"][0],
                      "--out", str(out), "--chunk-size", "1", "--progress-every-s", "1")
    assert first.returncode == 0, first.stderr
    run_id = submitted_id(first)

    deadline = time.monotonic() + 120
    while not part_files(out):
        assert time.monotonic() < deadline, tilescope(ray_head, "logs", run_id).stdout
        time.sleep(0.02)
    frozen = freeze_job_workers(ray_head)
    try:
        stop = tilescope(ray_head, "stop", run_id)
    finally:
        thaw(frozen)  # whatever the stop left of them exits or is reused; writes are atomic and idempotent
    assert stop.returncode == 0 and stop.stdout.strip() == f"{run_id}: STOPPED", stop.stdout + stop.stderr
    done_before = len(part_files(out))
    assert 0 < done_before < N_IMAGES, "the run finished before it could be stopped"
    followed = tilescope(ray_head, "logs", run_id, "--follow")  # an ended run: its log, then its outcome
    assert followed.returncode == 1 and f"\n{run_id}: STOPPED" in followed.stdout
    assert f"run {run_id}: 4 shards (0 already complete)" in followed.stdout

    resumed = tilescope(ray_head, "submit", "--resume", run_id, "--follow")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr
    assert f"submitted {run_id}-r1 (run {run_id}, attempt 1)" in resumed.stdout
    complete = re.search(rf"run {run_id} complete: {N_IMAGES} rows, {N_IMAGES} ok, 0 errors\b.*?; (\d+) scored now",
                         resumed.stdout)
    assert complete, resumed.stdout[-3000:]
    assert 0 < int(complete.group(1)) <= N_IMAGES - done_before  # the chunks written before were skipped
    rows = pads.dataset(str(out), format="parquet").to_table(columns=["image_id", "run_id"])
    assert rows.num_rows == N_IMAGES and len(set(rows.column("image_id").to_pylist())) == N_IMAGES
    assert set(rows.column("run_id").to_pylist()) == {run_id}  # one run id across both attempts
    # The checkout was shipped without .git; the run still records the client's version and commit.
    versions = run_manifest(out)["versions"]
    assert versions["tilescope"] == provenance.version()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a checkout with git (CI's clean clone)
        assert versions["tilescope_commit"].removesuffix("-dirty") == head

    status = tilescope(ray_head, "status", run_id)
    assert f"run {run_id} attempt 1 ({run_id}-r1): SUCCEEDED" in status.stdout
    listing = tilescope(ray_head, "list").stdout
    assert re.search(rf"^{re.escape(run_id)}\s+STOPPED\s+score\b", listing, re.MULTILINE), listing
    assert re.search(rf"^{re.escape(run_id)}-r1\s+SUCCEEDED\s+score\b", listing, re.MULTILINE), listing
    again = tilescope(ray_head, "submit", "--resume", run_id)
    assert again.returncode == 2
    assert f"its latest submission {run_id}-r1 is SUCCEEDED; only a FAILED or STOPPED run is resumed" in again.stderr


def test_a_wrong_or_missing_token_is_refused_with_the_fix(ray_head):
    token = Path(ray_head.env["RAY_AUTH_TOKEN_PATH"]).read_text()
    wrong = tilescope(ray_head, "list", env={**ray_head.env, "RAY_AUTH_TOKEN": "0" * 64})
    assert wrong.returncode == 2
    assert f"the Ray cluster at {ray_head.address} refused the request (Authentication failed: Forbidden" in (
        wrong.stderr)
    assert "RAY_AUTH_MODE=token" in wrong.stderr
    missing = tilescope(ray_head, "list", env={k: v for k, v in ray_head.env.items() if k != "RAY_AUTH_MODE"})
    assert missing.returncode == 2 and "(Authentication required: Unauthorized" in missing.stderr
    for result in (wrong, missing):
        assert token not in result.stdout + result.stderr


def test_submit_from_an_installed_package_ships_its_packages_never_site_packages(ray_head, tiny_models, tmp_path):
    # A client with tilescope installed from its wheel and no checkout: the wheel is built at a version of its own,
    # so the run's manifest shows which code ran on the cluster (the head's own install is the checkout's).
    site = install_target(build_wheel(tmp_path / "dist", version="0.1.0+wheel"), tmp_path / "site-packages")
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == [
        "actors", "bin", "cli", "jobs", "storage", "xray"]
    client_dir = tmp_path / "client"  # no checkout here, nor on the head's side (see ray_head)
    client_dir.mkdir()
    env = {**ray_head.env, "PYTHONPATH": str(site)}
    version = subprocess.run([sys.executable, "-m", "jobs", "--version"], cwd=client_dir, env=env,
                             capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "tilescope 0.1.0+wheel"  # the installed package: no commit
    archive, out = tmp_path / "archive", tmp_path / "scores"
    synth.run(synth.SynthConfig(out=str(archive), n_images=12, size=64, shards=2, seed=9))
    result = tilescope(ray_head, "submit", "score", "--archive", str(archive), "--model", tiny_models["models"][0],
                       "--out", str(out), "--follow", env=env, cwd=client_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    run_id = submitted_id(result)
    assert "[py_modules of the installed tilescope 0.1.0+wheel]" in result.stdout
    assert result.stdout.rstrip().endswith(f"{run_id}: SUCCEEDED")
    rows = pads.dataset(str(out), format="parquet").to_table(columns=["image_id", "status", "run_id"])
    assert rows.num_rows == 12 and set(rows.column("status").to_pylist()) == {"ok"}
    versions = run_manifest(out)["versions"]
    assert versions["tilescope"] == "0.1.0+wheel" and "tilescope_commit" not in versions
    # What the head received: the four packages, unpacked from the job's py_modules, and nothing else of site-packages.
    shipped = Path(ray_head.temp_dir, "ray", "session_latest", "runtime_resources", "py_modules_files")
    received = {entry.name for package in shipped.iterdir() if package.is_dir() for entry in package.iterdir()}
    assert received == {"jobs", "cli", "actors", "storage", "xray"}, received


def test_relative_paths_are_resolved_on_the_client_and_rows_land_where_the_user_expects(ray_head, tiny_models,
                                                                                       tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_models["archive"], work / "archive")
    result = tilescope(ray_head, "submit", "score", "--archive", "archive", "--model", tiny_models["models"][0],
                       "--out", "scores", "--chunk-size", "16", "--follow", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"--archive {work / 'archive'}" in result.stdout and f"--out {work / 'scores'}" in result.stdout
    files = glob.glob(str(work / "scores" / "*" / "part-*.parquet"))
    assert files and sum(pq.read_metadata(f).num_rows for f in files) == 80  # every image, where it was asked
    # an input that is not there, and a value the job refuses: exit 2 on the client, nothing submitted
    missing = tilescope(ray_head, "submit", "score", "--archive", "nope", "--model", tiny_models["models"][0],
                        "--out", "scores2", cwd=work)
    assert missing.returncode == 2 and "--archive nope: not found on this client" in missing.stderr
    bad = tilescope(ray_head, "submit", "report", "--results", "scores", "--out", "report", cwd=work)
    assert bad.returncode == 2 and "the following arguments are required: --metadata" in bad.stderr
    assert not (work / "scores2").exists() and not (work / "report").exists()
