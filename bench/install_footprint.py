"""What each install role costs: disk size and install time of a score-only venv (the base package, as score
workers and the score image install it) beside the training venv ([train]) and the full development venv
([train,dev], what `make test` builds), each a fresh venv from the wheel of this tree.

Install times are with pip's cache warm (a first, untimed install of each variant fills it), so they measure
resolving, unpacking and byte-compiling, not the network: what CI and a node rebuilt from a warm cache see.
Torch here is the package index's build, which carries CUDA: the PyTorch CPU wheel index cannot be reached from
this machine, so the train role as cluster.yaml installs it (torch from that index) is not measured.

    .venv/bin/python -m bench.install_footprint          (about 15 minutes on 2 cores; needs ~20 GB free in $BENCH_TMP or /tmp)
    .venv/bin/python -m bench.install_footprint --variants score --no-warm --no-doc   (under a minute: a check)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.doc_sections import machine_line, write_section
from tests.integration.installs import build_wheel, clean_env, create_venv, disk_bytes

TARGET_GB = 1.5
"""Issue 14's target for the score-only venv."""
VARIANTS = {"score": "", "train": "[train]", "full": "[train,dev]"}
"""Variant -> the extras installed with the wheel."""
LABELS = {"score": "score-only (base package)", "train": "training (`[train]`)",
          "full": "full development (`[train,dev]`, `make test`)"}
# Sizes per installed distribution, from each distribution's RECORD, as the venv's own interpreter sees them.
DIST_SIZES = """
import importlib.metadata as m, json, os
sizes = {}
for d in m.distributions():
    total = 0
    for f in d.files or ():
        p = d.locate_file(f)
        if os.path.isfile(p) and not os.path.islink(p):
            total += os.lstat(p).st_blocks * 512
    sizes[d.metadata["Name"]] = sizes.get(d.metadata["Name"], 0) + total
print(json.dumps(sizes))
"""


def install(root: Path, wheel: Path, extras: str, name: str) -> tuple[float, Path]:
    """(seconds, venv path) of one fresh venv with the wheel and its `extras`."""
    venv = root / name
    t0 = time.perf_counter()
    create_venv(venv, f"{wheel}{extras}")
    return time.perf_counter() - t0, venv


def dist_sizes(venv: Path) -> dict[str, int]:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", DIST_SIZES], env=clean_env(), capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-warm", action="store_true", help="skip the untimed install that fills pip's cache")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    rows, largest = [], {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        wheel = build_wheel(root / "dist")
        for variant in args.variants:
            extras = VARIANTS[variant]
            if not args.no_warm:
                _, warm = install(root, wheel, extras, f"warm-{variant}")
                subprocess.run(["rm", "-rf", str(warm)], check=True)
            seconds, venv = install(root, wheel, extras, variant)
            size = disk_bytes(venv)
            sizes = dist_sizes(venv)
            cuda = sum(v for k, v in sizes.items() if k.lower().startswith(("nvidia-", "triton")))
            rows.append(f"| {LABELS[variant]} | {gb(size)} | {seconds:.0f} | {len(sizes)} | "
                        f"{'none' if 'torch' not in sizes else gb(sizes['torch'])} | {gb(cuda)} |")
            largest[variant] = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
            if variant == "score":
                met = "met" if size <= TARGET_GB * 1e9 else "NOT met"
                verdict = f"Score-only venv {gb(size)} GB against the target of <= {TARGET_GB} GB: {met}."
            subprocess.run(["rm", "-rf", str(venv)], check=True)
    command = "".join(["" if args.variants == list(VARIANTS) else " --variants " + " ".join(args.variants),
                       " --no-warm" if args.no_warm else ""])
    md = f"""## Install footprint by role (issue 14)

Command: `.venv/bin/python -m bench.install_footprint{command}`
Machine: {machine_line()}.
Each variant is a fresh venv with this tree's wheel installed by pip (`pip install tilescope-<version>-py3-none-any.whl[EXTRAS]`),
dependencies from the package index; the install time is with pip's cache {'cold' if args.no_warm else 'warm'}.
Torch is the package index's CUDA build (the PyTorch CPU wheel index cannot be reached from this machine); a train
node installed as cluster.yaml installs it (torch from download.pytorch.org/whl/cpu) carries no nvidia/triton wheels.

| venv | size GB | install s | distributions | torch GB | nvidia + triton GB |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n\n" + (verdict + "\n\n" if "score" in args.variants else "") + "Largest distributions:\n\n" + "\n".join(
        f"- {variant}: " + ", ".join(f"{name} {gb(size)}" for name, size in top) for variant, top in largest.items()) + "\n"
    if not args.no_doc:
        write_section("install_footprint", md)
    print(md)


if __name__ == "__main__":
    main()
