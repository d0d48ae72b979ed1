"""tilescope's version and source commit (cli/provenance.py), `tilescope --version`, and the one-line failure of
a job whose extra is not installed (jobs/__main__.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli import provenance
from tests.conftest import REPO

VERSION = tomllib.loads(Path(REPO, "pyproject.toml").read_text())["project"]["version"]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(root: Path, *args: str) -> str:
    # A scratch repository of the test's own, with a throwaway identity.
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def source_tree(root: Path, name: str = "tilescope", version: str = "9.8.7") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "{version}"\n')
    (root / "jobs").mkdir(exist_ok=True)
    (root / "jobs" / "__main__.py").write_text("")
    return root


def test_checkout_version_reads_tilescopes_own_pyproject_only(tmp_path):
    assert provenance.checkout_version(source_tree(tmp_path / "a")) == "9.8.7"
    assert provenance.checkout_version(source_tree(tmp_path / "b", name="other")) is None
    assert provenance.checkout_version(tmp_path / "missing") is None
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "pyproject.toml").write_text("[project\n")  # not TOML
    assert provenance.checkout_version(tmp_path / "c") is None


@needs_git
def test_git_commit_is_head_marked_dirty_when_tracked_files_changed(tmp_path):
    root = source_tree(tmp_path / "repo")
    git(root, "init", "-q")
    assert provenance.git_commit(root) is None  # no commit yet
    git(root, "add", "pyproject.toml", "jobs/__main__.py")
    git(root, "commit", "-q", "-m", "first")
    head = git(root, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head) and provenance.git_commit(root) == head
    (root / "notes.txt").write_text("untracked files do not count")
    assert provenance.git_commit(root) == head
    (root / "jobs" / "__main__.py").write_text("print('changed')\n")
    assert provenance.git_commit(root) == f"{head}-dirty"
    # An installed package that happens to sit inside some repository's tree is not that repository's code.
    nested = root / "venv" / "site-packages"
    nested.mkdir(parents=True)
    assert provenance.git_commit(nested) is None
    assert provenance.git_commit(tmp_path / "not-a-repo") is None


def test_shipped_code_takes_the_submitting_clients_version_and_commit(tmp_path):
    shipped = source_tree(tmp_path / "working_dir", version="1.2.3")  # a checkout copied without .git
    env = {provenance.VERSION_ENV: "4.5.6", provenance.COMMIT_ENV: "ab" * 20}
    assert provenance.find_version(shipped, env) == "1.2.3"  # the code's own pyproject wins
    assert provenance.find_commit(shipped, env) == "ab" * 20
    modules = tmp_path / "py_modules"  # the installed package shipped as py_modules: no pyproject.toml
    modules.mkdir()
    assert provenance.find_version(modules, env) == "4.5.6"
    assert provenance.find_commit(modules, {}) is None
    assert provenance.find_commit(modules, {provenance.COMMIT_ENV: ""}) is None


def test_this_checkout_records_its_version_and_what_a_submitted_job_inherits():
    assert provenance.version() == VERSION
    versions = provenance.tilescope_versions()
    assert versions["tilescope"] == VERSION
    assert versions.get("tilescope_commit") == provenance.commit()
    env = provenance.job_environment()
    assert env[provenance.VERSION_ENV] == VERSION and env.get(provenance.COMMIT_ENV) == provenance.commit()


@needs_git
def test_tilescope_version_prints_the_version_and_the_checkouts_commit():
    out = subprocess.run([sys.executable, "-m", "jobs", "--version"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    match = re.fullmatch(rf"tilescope {re.escape(VERSION)} \(commit ([0-9a-f]{{40}})(-dirty)?\)", out)
    assert match, out
    assert match.group(1) == git(Path(REPO), "rev-parse", "HEAD")


def test_a_job_whose_extra_is_missing_fails_in_one_line_that_names_it(tmp_path):
    # torch, torchvision and nncf made unimportable, as in a venv without [train].
    code = """
import contextlib, io, sys
for name in ("torch", "torchvision", "nncf"):
    sys.modules[name] = None
from jobs.__main__ import main
work = sys.argv[1]
runs = {job: [job, "--help"] for job in ("train", "train-tiles", "demo", "score", "report", "synth", "submit")}
runs.update({"run train": ["train", "--archive", work + "/a", "--out", work + "/ckpt"],
             "run train-tiles": ["train-tiles", "--archive", work + "/a", "--out", work + "/ens"],
             "run demo": ["demo", "--workdir", work + "/demo"]})
for name, argv in runs.items():
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    print(repr((name, code, err.getvalue(), "usage:" in out.getvalue())))
"""
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            check=True)
    outcomes = {row[0]: row[1:] for row in map(eval, result.stdout.splitlines())}
    for job in ("train", "train-tiles", "demo"):  # torch loads inside run(): --help works, running fails at once
        code, err, usage = outcomes[f"run {job}"]
        assert code == 2 and not usage, (job, err)
        assert err.count("\n") == 1 and err.startswith(f"tilescope {job}: needs the [train] extra"), err
        assert "pip install 'tilescope[train]'" in err
    assert list(tmp_path.iterdir()) == []  # nothing was written before the missing extra was found
    for job in ("train", "train-tiles", "demo", "score", "report", "synth", "submit"):  # every --help works
        assert outcomes[job] == (0, "", True), (job, outcomes[job])


def test_the_extra_of_a_missing_module_comes_from_pyproject_or_the_installed_metadata(monkeypatch):
    import importlib.metadata

    import jobs.__main__ as dispatcher

    # From this checkout's pyproject.toml.
    assert [dispatcher.extra_providing(m) for m in ("torch", "torchvision", "nncf", "intel_extension_for_pytorch")] == [
        "train", "train", "train", "ipex"]
    assert dispatcher.extra_providing("numpy") is None  # the base install has it
    # From an installed wheel's metadata, as in a score-only venv.
    monkeypatch.setattr(dispatcher.provenance, "checkout_version", lambda root=None: None)
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: [
        "numpy>=1.26", 'torch==2.14.1; extra == "train"', "nncf<3.5,>=3.4 ; extra == 'train'",
        'pytest>=8; extra == "dev"'])
    assert dispatcher.extra_providing("torch") == "train" and dispatcher.extra_providing("nncf") == "train"
    assert dispatcher.extra_providing("numpy") is None and dispatcher.extra_providing("pytest") == "dev"


def test_a_module_of_an_extra_missing_while_the_job_runs_fails_in_one_line_too(monkeypatch, capsys):
    # A job that imports its extra only on the path that needs it (as quantize imports torch and nncf).
    import types

    import jobs.__main__ as dispatcher

    def main(argv):
        import nncf_missing_for_this_test  # noqa: F401

    fake = types.ModuleType("tilescope_fake_job")
    fake.main = main
    monkeypatch.setitem(sys.modules, "tilescope_fake_job", fake)
    monkeypatch.setitem(dispatcher.JOBS, "fake", ("tilescope_fake_job", "a job for this test"))
    monkeypatch.setattr(dispatcher, "extra_requirements", lambda: [("train", "nncf-missing-for-this-test>=1")])
    assert dispatcher.main(["fake", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tilescope fake: needs the [train] extra, which is not installed "
                                                   "(no module 'nncf_missing_for_this_test')")
    # A missing module that no extra provides is a bug, not a set-up step: its traceback is kept.
    monkeypatch.setattr(dispatcher, "extra_requirements", lambda: [])
    with pytest.raises(ModuleNotFoundError):
        dispatcher.main(["fake"])
