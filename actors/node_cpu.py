"""CPU time that Ray's processes have spent, node by node: the counter behind a scoring run's `cost` (jobs/score.py).

On each alive node it sums user + system CPU time of the processes there that belong to Ray: its workers (process
titles `ray::...`: read, decode and scorer tasks and actors, writers), raylet, gcs_server and Ray's Python agents.
Read before and after a stream, the difference is what the cluster's Ray processes spent while it ran; the driver
is counted apart (time.process_time()), since Ray Data's streaming executor runs in it. What this cannot see: a
process that exited between the two reads (its time is lost; a scoring run's pool workers live across the stream)
and work outside Ray on the same nodes (none on a dedicated batch node).

The local node is read in-process; another node by a zero-CPU task pinned to it, which leaves itself out. Figures
are keyed by host: several raylets on one machine (ray.cluster_utils.Cluster in tests) see the same processes and
count once.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

RAY_NAMES = frozenset({"raylet", "gcs_server"})


def is_ray_process(name: str, cmdline: Iterable[str]) -> bool:
    """Ray's own processes: its daemons by name, its workers by title (`ray::...`), its agents by the path of the
    `ray` package in their command line."""
    if name in RAY_NAMES:
        return True
    parts = list(cmdline)
    return any(p.startswith("ray::") for p in parts[:1]) or any(f"{os.sep}ray{os.sep}" in p for p in parts[:3])


def ray_cpu_seconds(exclude: Iterable[int] = ()) -> float:
    """Seconds of CPU (user + system) spent so far by the Ray processes on this node, leaving out the pids in
    `exclude`; processes that vanish or may not be read are skipped."""
    import psutil

    skip = set(exclude)
    total = 0.0
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = proc.info
        if info["pid"] in skip or info["cpu_times"] is None:
            continue
        if is_ray_process(info["name"] or "", info["cmdline"] or ()):
            total += info["cpu_times"].user + info["cpu_times"].system
    return total


def _probe() -> tuple[str, float]:
    return socket.gethostname(), ray_cpu_seconds(exclude=(os.getpid(),))


def cluster_cpu_seconds() -> dict[str, float]:
    """Host -> ray_cpu_seconds() there, for every host of the connected Ray cluster's alive nodes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    nodes = {n["NodeID"]: n.get("NodeManagerHostname") for n in ray.nodes() if n.get("Alive")}
    local_host = nodes.get(here) or socket.gethostname()
    probe = ray.remote(num_cpus=0)(_probe)
    # One probe per other host; a raylet on the driver's host is read here.
    remote_hosts: dict[str, str] = {}
    for node, host in nodes.items():
        if node != here and host != local_host and host not in remote_hosts.values():
            remote_hosts[node] = host
    pending = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
               for node in remote_hosts]
    seconds = {local_host: ray_cpu_seconds(exclude=(os.getpid(),))}
    seconds.update(ray.get(pending))
    return seconds


def spent_between(before: dict[str, float], after: dict[str, float]) -> float:
    """CPU seconds spent between two cluster_cpu_seconds() reads (a host that joined in between counts from 0)."""
    return sum(max(0.0, seconds - before.get(node, 0.0)) for node, seconds in after.items())
