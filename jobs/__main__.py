"""`tilescope JOB [args]`: dispatch to the job modules, each of which is also `python -m jobs.JOB`.

A target is a module (its `main(argv)` runs) or `module:function` for the cluster commands that share a
module (status, logs, stop and list all live in jobs.runs). `tilescope --version` prints the version and the
source commit (cli/provenance.py). A job whose extra is not installed (train, quantize, train-tiles and demo
need `tilescope[train]`) fails in one line that names it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
import tomllib

from cli import provenance
from cli.commands import CLUSTER_MODULES, JOBS


def usage() -> str:
    """The command list: jobs, then cluster commands, one column wide enough for the longest name."""
    width = max(len(name) for name in JOBS) + 2
    cluster = {name for name, (target, _) in JOBS.items() if target.partition(":")[0] in CLUSTER_MODULES}
    lines = ["usage: tilescope JOB [--help] [args]", "       tilescope --version", "", "jobs:"]
    lines += [f"  {name:<{width}}{text}" for name, (_, text) in JOBS.items() if name not in cluster]
    lines += ["", "cluster:"]
    lines += [f"  {name:<{width}}{text}" for name, (_, text) in JOBS.items() if name in cluster]
    lines += ["", "Every job also takes --config FILE (YAML, or a run's _run.json to replay it), --print-config and",
              "--verbose; `tilescope JOB --help` lists its flags and examples."]
    return "\n".join(lines)


def extra_requirements() -> list[tuple[str, str]]:
    """(extra, requirement) for every optional dependency: from this checkout's pyproject.toml, else from the
    installed package's metadata (`Requires-Dist: torch==2.14.1; extra == "train"`)."""
    pyproject = provenance.PACKAGE_ROOT / "pyproject.toml"
    if provenance.checkout_version() is not None:
        extras = tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {})
        return [(extra, req) for extra, reqs in extras.items() for req in reqs]
    try:
        requires = importlib.metadata.requires("tilescope") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for req in requires:
        marker = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if marker:
            found.append((marker.group(1), req))
    return found


def extra_providing(module: str) -> str | None:
    """The extra whose requirements install the distribution named like `module` (torch, nncf, ...), or None."""
    wanted = re.sub(r"[-_.]+", "-", module).lower()
    for extra, req in extra_requirements():
        name = re.match(r"[A-Za-z0-9._-]+", req.strip())
        if name and re.sub(r"[-_.]+", "-", name.group(0)).lower() == wanted:
            return extra
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(provenance.describe())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"tilescope: unknown job {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = JOBS[name][0].partition(":")
    try:
        # A job module imports its extra's modules at the top, or (when only some paths need them) where it uses
        # them: either way a missing one ends here, in one line.
        return int(getattr(importlib.import_module(module_name), function or "main")(rest))
    except ModuleNotFoundError as exc:
        extra = extra_providing((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"tilescope {name}: needs the [{extra}] extra, which is not installed (no module {exc.name!r}): "
              f"pip install 'tilescope[{extra}]' (README, \"Install by role\": on CPU nodes torch from the PyTorch "
              f"CPU wheel index)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
