"""`tilescope JOB [args]`: dispatch to the job modules, each of which is also `python -m jobs.JOB`."""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "synth": ("jobs.synth", "write a deterministic synthetic archive in the NIH layout"),
    "train": ("jobs.train", "train one whole-image model on an archive's train split"),
    "quantize": ("jobs.quantize", "export a checkpoint to OpenVINO IR and quantize it to INT8"),
    "score": ("jobs.score", "score an archive with an INT8 artifact on Ray Data into Parquet"),
    "demo": ("jobs.demo", "synth -> train -> INT8 -> score on an embedded default"),
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
    module = importlib.import_module(JOBS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":
    raise SystemExit(main())
