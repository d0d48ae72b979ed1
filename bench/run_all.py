"""Every benchmark, one after the other (never two at once: they time the same cores), each writing its own
section of docs/BENCHMARKS.md.

    make bench        (or: .venv/bin/python -m bench.run_all; about 115 minutes on 2 cores)
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("bench.core_scaling", "bench.inference", "bench.decode", "bench.scoring", "bench.worker_reuse", "bench.tiles",
              "bench.install_footprint", "bench.report", "bench.calibration")


def main() -> int:
    for module in BENCHMARKS:
        print(f"== {module}", flush=True)
        code = subprocess.call([sys.executable, "-m", module])
        if code != 0:
            print(f"{module} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
