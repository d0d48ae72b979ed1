"""`tilescope JOB [args]`: dispatch to the job modules, each of which is also `python -m jobs.JOB`.

A target is a module (its `main(argv)` runs) or `module:function` for the cluster commands that share a
module (status, logs, stop and list all live in jobs.runs).
"""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "synth": ("jobs.synth", "write a deterministic synthetic archive in the NIH layout"),
    "train": ("jobs.train", "train one whole-image model on an archive's train split"),
    "quantize": ("jobs.quantize", "export a checkpoint to OpenVINO IR and quantize it to INT8"),
    "train-tiles": ("jobs.train_tiles", "train one model per tile position on Ray actors into an INT8 ensemble"),
    "score": ("jobs.score", "score an archive with an INT8 artifact on Ray Data into Parquet"),
    "report": ("jobs.report", "AUROC with CIs, deltas, screening thresholds and an HTML page for a scored run"),
    "demo": ("jobs.demo", "synth -> train -> INT8 -> score on an embedded default"),
    "submit": ("jobs.submit", "submit a job to a Ray cluster; --resume RUN_ID resubmits a failed run"),
    "status": ("jobs.runs:status_main", "the status of a submitted run"),
    "logs": ("jobs.runs:logs_main", "a submitted run's logs; --follow streams them until it ends"),
    "stop": ("jobs.runs:stop_main", "stop a submitted run (tilescope submit --resume continues it)"),
    "list": ("jobs.runs:list_main", "every run submitted to the cluster"),
}


def usage() -> str:
    lines = ["usage: tilescope JOB [--help] [args]", "", "jobs:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in JOBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"tilescope: unknown job {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = JOBS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest))


if __name__ == "__main__":
    raise SystemExit(main())
