"""Installing tilescope the way a user does: its wheel built from this tree, into a fresh venv or a plain directory.

Shared by the lean-install and submit tests and by bench/install_footprint.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "jobs", "cli", "actors", "storage", "xray")
"""What the wheel is built from (pyproject.toml's [tool.setuptools] packages and the project table)."""
PIP_TIMEOUT_S = 1800
"""A first install on a machine with an empty pip cache downloads about 300 MB."""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would leak the current venv or checkout into a child process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "RAY_ADDRESS", "__PYVENV_LAUNCHER__")}
    return {**env, **extra}


def build_wheel(dest: Path, version: str | None = None) -> Path:
    """tilescope's wheel, built from a clean copy of this tree's sources (so no stale build/ directory can add a
    deleted module), optionally at another `version`. Returns the .whl path under `dest`."""
    src = dest / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    if version is not None:
        pyproject = src / "pyproject.toml"
        text, n = re.subn(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text(), count=1)
        assert n == 1, "pyproject.toml has no version line"
        pyproject.write_text(text)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(dest), str(src)], check=True, capture_output=True, text=True, timeout=300)
    [wheel] = dest.glob("tilescope-*.whl")
    return wheel


def install_target(wheel: Path, target: Path) -> Path:
    """The wheel alone (no dependencies) unpacked into `target`, as into a site-packages directory."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    return target


def create_venv(path: Path, *requirements: str) -> Path:
    """A fresh venv at `path` (from this interpreter's base Python) with `requirements` installed by pip, which
    keeps its cache (~/.cache/pip): after the first time nothing is downloaded. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=clean_env(), timeout=300)
    python = path / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], env=clean_env(),
                            capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert result.returncode == 0, f"pip install {' '.join(requirements)} failed:\n{result.stderr[-4000:]}"
    return python


def installed_distributions(python: Path) -> dict[str, str]:
    """Normalised distribution name -> version, as that interpreter's importlib.metadata sees them."""
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    out = subprocess.run([str(python), "-c", code], env=clean_env(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def disk_bytes(path: Path) -> int:
    """Disk space the files under `path` take, as `du -s` counts it (allocated blocks; links not followed)."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in (*files, *dirs):
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.lstat(full).st_blocks * 512
    return total
