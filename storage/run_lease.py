"""Who may write a scoring run's output directory right now: a lease (`_lease.json`) that one run holds at a time.

`_run.json` (storage/run_claim.py) says *what* a run directory holds; the lease says *who* is writing it. Two
`tilescope score` commands into one --out (a resubmitted cluster job while the first still runs, two people on one
bucket) must not both write rows: the second stops before writing anything and names the holder (exit 2).

What each store guarantees (docs/RELIABILITY.md):
- local paths (and mounts whose flock works across the machines that share them): exclusive. Acquiring takes
  an flock on `_lease.lock` beside the lease, reads the lease and writes its own only when there is none or it
  is stale: two drivers cannot both hold.
- S3 (AWS, MinIO, Ceph, moto): pyarrow's filesystem has no conditional write, so the lease is written with a
  unique token, read back after SETTLE_S seconds, and held only if the token is still this run's; the holder
  verifies its token before every commit step (compaction, the manifest) and refuses to commit when it has lost
  it. Two drivers could both pass only if one paused for longer than SETTLE_S between reading "no lease" and
  writing its own; if that ever happens the loser's commit is refused and a rerun repairs the directory (score's
  rerun verifies a committed run and removes what does not belong). A store with conditional writes
  (If-None-Match) would make this exact; pyarrow does not expose them.

Stale leases: a driver that died leaves its lease behind. It is stale when its holder ran on this host and that
process is gone (checked by pid and the process's start time, so a reused pid does not count), or when its
heartbeat is older than the TTL (the holder renews it while it streams). A stale lease is taken over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from storage.fs import Location, StorageError, exists, read_bytes, write_bytes_atomic

LEASE = "_lease.json"
LOCK = "_lease.lock"
TTL_S = 600.0
"""A lease whose heartbeat is older than this is stale (its holder renews it every RENEW_S while it streams)."""
RENEW_S = 30.0
SETTLE_S = 2.0
"""S3: how long a new lease must stay this run's before it counts as held."""


class RunBusy(ValueError):
    """Another run holds the output directory: nothing was written (a bad-input error: exit 2)."""


@dataclass(frozen=True)
class Lease:
    token: str
    run_id: str
    host: str
    pid: int
    pid_start: str
    """The holder process's start time (/proc/<pid>/stat field 22), so a reused pid is not mistaken for it."""
    acquired_unix: float
    heartbeat_unix: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict) -> Lease:
        return cls(str(body["token"]), str(body["run_id"]), str(body["host"]), int(body["pid"]),
                   str(body.get("pid_start", "")), float(body["acquired_unix"]), float(body["heartbeat_unix"]))

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = dt.datetime.fromtimestamp(self.acquired_unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, since {since}, heartbeat "
                f"{max(now - self.heartbeat_unix, 0.0):.0f} s ago)")


def _process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot, or '' when it is not running (or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def stale(lease: Lease, ttl_s: float = TTL_S, now: float | None = None) -> bool:
    """Whether `lease` may be taken over: its holder on this host is gone, or its heartbeat is older than ttl_s."""
    now = time.time() if now is None else now
    if lease.host == socket.gethostname():
        start = _process_start(lease.pid)
        if not start or (lease.pid_start and start != lease.pid_start):
            return True
    return now - lease.heartbeat_unix > ttl_s


def read_lease(out: Location) -> Lease | None:
    target = out.join(LEASE)
    if not exists(target):
        return None
    try:
        return Lease.from_json(json.loads(read_bytes(target)))
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{target.uri}: not a tilescope lease ({type(exc).__name__}); if no run is writing "
                           f"{out.uri}, delete it and rerun") from exc


def _write(out: Location, lease: Lease) -> None:
    write_bytes_atomic(out.join(LEASE), json.dumps(lease.to_json(), indent=2, sort_keys=True).encode())


@contextlib.contextmanager
def _local_lock(out: Location) -> Iterator[None]:
    """An flock held while a lease is read and written (local paths only)."""
    os.makedirs(out.path, exist_ok=True)
    fd = os.open(os.path.join(out.path, LOCK), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _busy(out: Location, holder: Lease) -> RunBusy:
    return RunBusy(f"{out.uri} is being written by {holder.describe()}; nothing was written. Wait for it to "
                   f"finish (then rerun to verify), or, if that run is dead on another host, rerun after its "
                   f"heartbeat is {TTL_S:.0f} s old")


def acquire(out: Location, run_id: str, ttl_s: float = TTL_S, settle_s: float = SETTLE_S) -> Lease:
    """Hold `out` for this run, or raise RunBusy naming the run that does (see the module docstring)."""
    now = time.time()
    mine = Lease(uuid.uuid4().hex, run_id, socket.gethostname(), os.getpid(), _process_start(os.getpid()), now, now)
    if not out.is_s3:
        with _local_lock(out):
            held = read_lease(out)
            if held is not None and not stale(held, ttl_s):
                raise _busy(out, held)
            _write(out, mine)
        return mine
    held = read_lease(out)
    if held is not None and not stale(held, ttl_s):
        raise _busy(out, held)
    _write(out, mine)
    time.sleep(settle_s)
    now_held = read_lease(out)
    if now_held is None or now_held.token != mine.token:
        if now_held is None:
            raise RunBusy(f"{out.uri}: this run's lease vanished while it was taken; another run is contending for "
                          "it. Nothing was written; rerun")
        raise _busy(out, now_held)
    return mine


def verify(out: Location, lease: Lease, step: str) -> None:
    """Raise StorageError (nothing committed) unless `lease` still holds `out`; `step` names what was about to
    happen."""
    held = read_lease(out)
    if held is None or held.token != lease.token:
        who = held.describe() if held else "no run (the lease was removed)"
        raise StorageError(f"{out.uri}: this run lost its lease before {step}; it is now held by {who}. Nothing "
                           "was committed by this run; rerun after the holder finishes to verify the directory")


def renew(out: Location, lease: Lease) -> Lease:
    """The holder's heartbeat: verify it still holds `out`, then write the lease with a fresh heartbeat."""
    verify(out, lease, "renewing its lease")
    renewed = Lease(lease.token, lease.run_id, lease.host, lease.pid, lease.pid_start, lease.acquired_unix,
                    time.time())
    _write(out, renewed)
    return renewed


def release(out: Location, lease: Lease) -> None:
    """Give `out` up, if this run still holds it (never someone else's lease)."""
    if not out.is_s3:
        with _local_lock(out):
            held = read_lease(out)
            if held is not None and held.token == lease.token:
                out.fs.delete_file(out.join(LEASE).path)
        return
    held = read_lease(out)
    if held is not None and held.token == lease.token:
        out.fs.delete_file(out.join(LEASE).path)


class Holder:
    """A held lease as the writing run uses it: verify before each commit step, a heartbeat while streaming."""

    def __init__(self, out: Location, lease: Lease) -> None:
        self.out = out
        self.lease = lease
        self._renewed = time.monotonic()

    def verify(self, step: str) -> None:
        verify(self.out, self.lease, step)

    def heartbeat(self) -> None:
        """Renew the lease when RENEW_S have passed since the last renewal (cheap to call per batch)."""
        if time.monotonic() - self._renewed >= RENEW_S:
            self.lease = renew(self.out, self.lease)
            self._renewed = time.monotonic()


@contextlib.contextmanager
def holding(out: Location, run_id: str) -> Iterator[Holder]:
    """Hold `out` for the block (RunBusy if another run does); released on the way out, also on errors. A driver
    killed inside the block leaves a lease that `stale` recognises."""
    holder = Holder(out, acquire(out, run_id))
    try:
        yield holder
    except BaseException:
        # The error that ended the block is what the user sees (storage down: the lease cannot go either, and
        # the rerun on this host finds it stale because this process is gone).
        with contextlib.suppress(OSError):
            release(out, holder.lease)
        raise
    try:
        release(out, holder.lease)
    except OSError as exc:
        print(f"warning: {out.join(LEASE).uri} was not removed ({exc}); it goes stale by itself", file=sys.stderr)
