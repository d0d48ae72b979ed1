"""CPU time that Ray's processes spend, host by host: the counter behind a scoring run's `cost` (jobs/score.py).

A CpuSampler reads, every `every_s` (0.25 s), the CPU time (user + system) of the processes on its host that
belong to Ray: its workers (process titles `ray::...`: read, decode and scorer tasks and actors, writers), raylet,
gcs_server and Ray's Python agents, and keeps per process (pid and start time) the first and the last value seen.
Sampling, not two reads, because Ray Data stops its pool's actors as soon as the last batch is out, and an exited
process's time is gone (raylet does not collect its children's times): at most the last `every_s` of a process that
exits is lost. What it spent is the sum over processes of last - first (a process born meanwhile counts from 0).
The driver is counted apart (time.process_time()), since Ray Data's streaming executor runs in it; work outside Ray
on the same hosts (none on a dedicated batch node) is not counted.

The driver's host is sampled by a thread in the driver; every other host by a zero-CPU NodeCpuSampler actor pinned
to one of its nodes (jobs/score.py). Several raylets on one machine (ray.cluster_utils.Cluster in tests) see the
same processes: one sampler per host.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable

RAY_NAMES = frozenset({"raylet", "gcs_server"})


def is_ray_process(name: str, cmdline: Iterable[str]) -> bool:
    """Ray's own processes: its daemons by name, its workers by title (`ray::...`), its agents by the path of the
    `ray` package in their command line."""
    if name in RAY_NAMES:
        return True
    parts = list(cmdline)
    return any(p.startswith("ray::") for p in parts[:1]) or any(f"{os.sep}ray{os.sep}" in p for p in parts[:3])


def ray_process_times(exclude: Iterable[int] = ()) -> dict[tuple[int, float], float]:
    """(pid, start time) -> CPU seconds (user + system) so far, for this host's Ray processes, leaving out the pids
    in `exclude`; processes that vanish or may not be read are skipped."""
    import psutil

    skip = set(exclude)
    times: dict[tuple[int, float], float] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times", "create_time"]):
        info = proc.info
        if info["pid"] in skip or info["cpu_times"] is None:
            continue
        if is_ray_process(info["name"] or "", info["cmdline"] or ()):
            times[(info["pid"], info["create_time"] or 0.0)] = info["cpu_times"].user + info["cpu_times"].system
    return times


class CpuSampler:
    """Samples this host's Ray processes in a background thread between start() and stop() (module docstring)."""

    def __init__(self, every_s: float = 0.25, exclude: Iterable[int] = ()) -> None:
        self.every_s = every_s
        self.exclude = {os.getpid(), *exclude}
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for key, seconds in ray_process_times(self.exclude).items():
            self._first.setdefault(key, seconds if self._thread is None else 0.0)
            self._last[key] = seconds

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> None:
        self._sample()  # the processes alive now count from what they have spent so far
        self._thread = threading.Thread(target=self._run, name="tilescope-cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """CPU seconds the host's Ray processes spent since start()."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return sum(self._last[key] - self._first.get(key, 0.0) for key in self._last)


class NodeCpuSampler:
    """A CpuSampler on another host, run there as a zero-CPU actor (jobs/score.py makes it remote)."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.sampler = CpuSampler(every_s)

    def host(self) -> str:
        return socket.gethostname()

    def start(self) -> str:
        self.sampler.start()
        return socket.gethostname()

    def stop(self) -> float:
        return self.sampler.stop()


def other_hosts() -> list[str]:
    """Node ids of the connected cluster, one per host other than the driver's."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    nodes = {n["NodeID"]: n.get("NodeManagerHostname") for n in ray.nodes() if n.get("Alive")}
    local_host = nodes.get(here) or socket.gethostname()
    chosen: dict[str, str] = {}
    for node, host in nodes.items():
        if host != local_host and host not in chosen.values():
            chosen[node] = host
    return list(chosen)
