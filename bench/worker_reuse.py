"""Ray's idle-worker limit during a scoring run: Ray's default (as many idle workers as CPUs) vs tilescope's
(jobs/cli.local_system_config, also in cluster.yaml and the KubeRay manifest).

Per run: pipeline images/s, Ray worker processes started, and CPU seconds spent in the scorer actors vs in
every other Ray worker process (reads, writes and their start-up), summed from /proc per process.

    .venv/bin/python -m bench.worker_reuse           (about 8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import tempfile

import psutil

from bench.doc_sections import machine_line, write_section
from bench.poller import Poller
from bench.scoring import make_model
from cli.job_main import local_system_config
from jobs import score, synth

SYSTEM_ACTORS = ("_StatsActor", "_AutoscalingCoordinatorActor", "ActorLocationTracker", "DashboardAgent",
                 "RuntimeEnvAgent", "raylet", "gcs_server", "log_monitor", "dashboard")


class WorkerCpu(Poller):
    """CPU seconds per Ray worker process, polled every 0.5 s (a process's last reading counts when it exits)."""

    def __init__(self) -> None:
        super().__init__(every_s=0.5)
        self.cpu: dict[int, float] = {}
        self.scorer: set[int] = set()

    def poll(self) -> None:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if not cmd.startswith("ray::") or any(name in cmd for name in SYSTEM_ACTORS):
                continue
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            self.cpu[p.info["pid"]] = t.user + t.system
            if "Scorer" in cmd:
                self.scorer.add(p.info["pid"])


def run_once(archive: str, model: str, out: str, system_config: dict) -> tuple[float, int, float, float]:
    import ray

    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             _system_config=system_config)
    try:
        with WorkerCpu() as cpu:
            summary = score.run(score.ScoreConfig(archive=archive, model=model, out=out, actors=os.cpu_count() or 1))
    finally:
        ray.shutdown()
    scorer = sum(cpu.cpu[p] for p in cpu.scorer)
    return (summary.scored_now / summary.stream_seconds, len(cpu.cpu), scorer, sum(cpu.cpu.values()) - scorer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    configs = {f"Ray's default ({cpus} idle workers)": {},
               f"tilescope ({local_system_config(cpus)['num_workers_soft_limit']} idle workers)":
                   local_system_config(cpus)}
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        archive = os.path.join(tmp, "archive")
        synth.run(synth.SynthConfig(out=archive, n_images=args.images, size=1024, shards=8, seed=1))
        model = make_model(tmp, archive)
        for k, (name, system_config) in enumerate(configs.items()):
            rate, workers, scorer, other = run_once(archive, model, os.path.join(tmp, f"out-{k}"), system_config)
            rows.append(f"| {name} | {rate:.1f} | {workers} | {scorer:.1f} | {other:.1f} |")
    md = f"""## Idle-worker limit during scoring

Command: `.venv/bin/python -m bench.worker_reuse --images {args.images}`
Machine: {machine_line()}.
{args.images} synthetic 1024x1024 PNGs in 8 tar.gz shards, DenseNet-121 INT8, {cpus} scorer actors, default
--buffer-mb. "Other workers" are the read and write task workers, start-up included (Ray's own stats and
autoscaler actors, raylet and GCS excluded).

| num_workers_soft_limit | images/s | Ray worker processes | scorer actors CPU s | other workers CPU s |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    write_section("worker_reuse", md)
    print(md)


if __name__ == "__main__":
    main()
