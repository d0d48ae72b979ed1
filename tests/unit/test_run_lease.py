"""The run lease: one holder at a time, stale leases of dead drivers taken over, a lost lease refuses to commit."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from storage.fs import StorageError, resolve
from storage.run_lease import LEASE, Lease, RunBusy, acquire, read_lease, release, renew, stale, verify


def test_one_holder_and_the_second_is_told_who(tmp_path):
    out = resolve(str(tmp_path / "run"))
    first = acquire(out, "run-a")
    with pytest.raises(RunBusy, match=r"being written by run run-a \(host .*pid " + str(os.getpid())):
        acquire(out, "run-b")
    verify(out, first, "compaction")  # still the holder
    release(out, first)
    assert read_lease(out) is None
    second = acquire(out, "run-b")
    assert second.token != first.token and read_lease(out) == second


def test_a_lost_lease_refuses_the_commit_and_release_never_frees_anothers(tmp_path):
    out = resolve(str(tmp_path / "run"))
    mine = acquire(out, "run-a")
    theirs = Lease("other-token", "run-b", "elsewhere", 1, "", time.time(), time.time())
    (tmp_path / "run" / LEASE).write_text(__import__("json").dumps(theirs.to_json()))
    with pytest.raises(StorageError, match="lost its lease before writing the manifest; it is now held by run run-b"):
        verify(out, mine, "writing the manifest")
    release(out, mine)
    assert read_lease(out) == theirs


def test_renew_moves_the_heartbeat(tmp_path):
    out = resolve(str(tmp_path / "run"))
    lease = acquire(out, "run-a")
    time.sleep(0.01)
    renewed = renew(out, lease)
    assert renewed.token == lease.token and renewed.heartbeat_unix > lease.heartbeat_unix
    assert read_lease(out) == renewed


def test_a_dead_driver_on_this_host_leaves_a_stale_lease():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = time.time()
    dead = Lease("t", "r", socket.gethostname(), proc.pid, "123", now, now)
    assert stale(dead)
    alive = Lease("t", "r", socket.gethostname(), os.getpid(), "", now, now)
    assert not stale(alive)
    # a live pid that started at another time is another process (pid reuse)
    assert stale(Lease("t", "r", socket.gethostname(), os.getpid(), "not-my-start", now, now))
    # another host: only the heartbeat says
    assert not stale(Lease("t", "r", "elsewhere", 1, "", now, now))
    assert stale(Lease("t", "r", "elsewhere", 1, "", now - 700, now - 700), ttl_s=600)


def _contend(path: str, name: str, results, done) -> None:
    try:
        acquire(resolve(path), name)
        results.put((name, "held"))
    except RunBusy:
        results.put((name, "busy"))
    done.wait(60)  # alive until every contender has tried: a dead holder's lease would be stale


def test_racing_processes_get_exactly_one_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    results, done = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "run"), f"run-{i}", results, done)) for i in range(4)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60)[1] for _ in procs)
    done.set()
    for p in procs:
        p.join(60)
    assert outcomes == ["busy", "busy", "busy", "held"]
