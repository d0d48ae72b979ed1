"""Core-seconds of a measured run: CPU time of this process and of every process below it (Ray's raylet and
workers included), sampled by a background thread because Ray's workers are not reaped by this process, so
getrusage(RUSAGE_CHILDREN) would miss them. A process's last sample counts; the part of its life after it
(under one poll interval) is lost, so the figure is a lower bound to within `every_s` per short-lived process."""

from __future__ import annotations

import time

import psutil

from bench.poller import Poller


class CoreSeconds(Poller):
    def __init__(self, every_s: float = 0.5) -> None:
        super().__init__(every_s)
        self._me = psutil.Process()
        self._start_self = self._cpu(self._me)
        self._start_others = self._snapshot()
        self._last: dict[int, float] = {}
        self.wall = 0.0
        self._t0 = 0.0

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def _snapshot(self) -> dict[int, float]:
        out = {}
        for child in self._me.children(recursive=True):
            try:
                out[child.pid] = self._cpu(child)
            except psutil.Error:
                pass  # gone between the listing and the read: its last sample stands
        return out

    def poll(self) -> None:
        self._last.update(self._snapshot())

    def __enter__(self) -> CoreSeconds:
        self._t0 = time.perf_counter()
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.poll()
        super().__exit__(*exc)
        self.wall = time.perf_counter() - self._t0
        others = sum(cpu - self._start_others.get(pid, 0.0) for pid, cpu in self._last.items())
        self.seconds = self._cpu(self._me) - self._start_self + others
