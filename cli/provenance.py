"""Which tilescope produced an output: its version and, when the code is a git checkout, the source commit.

Every manifest records both (checkpoint, model and ensemble artifacts, a scoring run's _manifest.json,
report.json), and `tilescope --version` prints them. Where the code running is decides:

- a git checkout (this package's parent is a work tree's top level): the version in its pyproject.toml and
  `git rev-parse HEAD`, with `-dirty` appended when tracked files differ from that commit;
- code that `tilescope submit` shipped to a cluster (a copy of the checkout without .git, or the installed
  package as py_modules): what the submitting client found, passed in the job's environment as
  TILESCOPE_VERSION / TILESCOPE_COMMIT (a node's own install may be another version);
- an installed package: the version in its metadata; no commit.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The directory holding jobs/, actors/, storage/ and xray/: a checkout, or site-packages when installed."""
VERSION_ENV = "TILESCOPE_VERSION"
COMMIT_ENV = "TILESCOPE_COMMIT"


def checkout_version(root: Path = PACKAGE_ROOT) -> str | None:
    """The version in `root`/pyproject.toml when `root` is a tilescope source tree, else None."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return str(project["version"]) if project.get("name") == "tilescope" and "version" in project else None


def git_commit(root: Path = PACKAGE_ROOT) -> str | None:
    """HEAD of the work tree whose top level is `root` (`<sha>-dirty` when tracked files changed), or None when
    `root` is not a work tree's top level (an installed package inside some other repository's tree is not) or
    git is missing."""

    def git(*args: str) -> str:
        # --no-optional-locks: reading the status never takes index.lock from a concurrent commit.
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def find_version(root: Path, environ: Mapping[str, str]) -> str:
    """tilescope's version: the checkout's, the submitting client's, the installed package's, or 'unknown'."""
    found = checkout_version(root) or environ.get(VERSION_ENV)
    if found:
        return found
    try:
        return importlib.metadata.version("tilescope")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def find_commit(root: Path, environ: Mapping[str, str]) -> str | None:
    """The source commit: the checkout's HEAD, or the submitting client's; None for an installed package."""
    return git_commit(root) or environ.get(COMMIT_ENV) or None


@functools.cache
def version() -> str:
    """This process's tilescope version (looked up once: every manifest a process writes records the same)."""
    return find_version(PACKAGE_ROOT, os.environ)


@functools.cache
def commit() -> str | None:
    """This process's source commit, or None (looked up once, like version())."""
    return find_commit(PACKAGE_ROOT, os.environ)


def tilescope_versions() -> dict[str, str]:
    """The entries every manifest's `versions` gains: tilescope, and tilescope_commit when known."""
    sha = commit()
    return {"tilescope": version(), **({"tilescope_commit": sha} if sha else {})}


def job_environment() -> dict[str, str]:
    """What a submitted job needs to record the client's provenance (its runtime_env env_vars)."""
    sha = commit()
    return {VERSION_ENV: version(), **({COMMIT_ENV: sha} if sha else {})}


def describe() -> str:
    """`tilescope 0.1.0 (commit 1f2e...)`: what `tilescope --version` prints."""
    sha = commit()
    return f"tilescope {version()}" + (f" (commit {sha})" if sha else "")
