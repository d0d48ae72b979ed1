"""The docs cannot drift from the CLI: every `tilescope ...` command in a shell block of README.md and docs/guide/
is parsed by the parser the job itself builds (its config class and old spellings, as jobs/submit.py reads them),
so a renamed or removed flag, or a value outside a flag's choices, fails here. Commands are parsed, not run (they
name clusters, buckets and archives a test does not have); required flags may be left out of an example.
Also: README.md stays one screen deep (<= 200 lines) and every relative link in the docs resolves.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli.commands import JOBS
from cli.flags import parser_for
from jobs import runs, submission

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs" / "guide").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
STOP = {"&&", "||", "|", ";", "&", ">", ">>", "2>&1"}
SUBMIT_OWN = {"--address", "--follow", "--no-follow", "--working-dir", "--resume"}


def shell_commands(text: str) -> list[str]:
    """Logical lines of the shell blocks: continuations joined, comments dropped."""
    out = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def tilescope_calls(line: str) -> list[list[str]]:
    """Each `tilescope JOB args...` in a shell line (also as ~/venv/bin/tilescope), up to a shell operator."""
    try:
        tokens = shlex.split(line)
    except ValueError:
        return []
    calls, i = [], 0
    while i < len(tokens):
        if tokens[i].rsplit("/", 1)[-1] == "tilescope" and i + 1 < len(tokens) and tokens[i + 1] in JOBS:
            j = i + 1
            while j < len(tokens) and tokens[j] not in STOP:
                j += 1
            calls.append(tokens[i + 1:j])
            i = j
        else:
            i += 1
    return calls


def documented_calls() -> list[tuple[str, list[str]]]:
    return [(f"{doc.relative_to(REPO)}: tilescope {' '.join(call)}", call)
            for doc in DOCS for line in shell_commands(doc.read_text()) for call in tilescope_calls(line)]


def check_job_flags(job: str, args: list[str]) -> None:
    """Parse `args` with the job's own parser, required flags optional; SystemExit -> a failure naming why."""
    target = JOBS[job][0]
    module, _, function = target.partition(":")
    if module == "jobs.runs":
        cls = {"status_main": runs.StatusConfig, "logs_main": runs.LogsConfig, "stop_main": runs.StopConfig,
               "list_main": runs.ListConfig}[function]
        positional = ("run_id",) if "run_id" in cls.__dataclass_fields__ else ()
        parser = parser_for(cls, f"tilescope {job}", "", positional=positional)
    else:
        config, aliases = submission.job_config(module)
        parser = parser_for(config, f"tilescope {job}", "", aliases=aliases, common=True)
    for action in parser._actions:
        action.required = False
    parser.error = lambda message: pytest.fail(f"tilescope {job} {' '.join(args)}: {message}")  # type: ignore
    parser.parse_args(args)


def check_call(call: list[str]) -> None:
    job, args = call[0], call[1:]
    if job != "submit":
        check_job_flags(job, args)
        return
    own = {"--follow", "--no-follow"}
    rest, i = [], 0
    while i < len(args):  # submit's own flags, then the job and its flags
        if args[i] in SUBMIT_OWN:
            i += 1 if args[i] in own else 2
            continue
        rest.append(args[i])
        i += 1
    if rest:
        assert rest[0] in JOBS, f"tilescope submit: {rest[0]!r} is not a job"
        check_job_flags(rest[0], rest[1:])


CALLS = documented_calls()


def test_the_docs_hold_commands_of_every_main_job():
    jobs = {call[0] for _, call in CALLS} | {call[1] for _, call in CALLS if call[0] == "submit" and len(call) > 1}
    assert {"import", "quantize", "score", "report", "submit", "train-tiles", "synth"} <= jobs, jobs


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[name[:120] for name, _ in CALLS])
def test_every_documented_command_parses(call):
    check_call(call)


def test_the_check_catches_a_drifted_flag():
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --archiv"):
        check_call(["score", "--archiv", "x"])
    with pytest.raises(pytest.fail.Exception, match="invalid choice"):
        check_call(["submit", "score", "--precision", "int4", "--address", "http://127.0.0.1:8265"])


def test_the_readme_fits_on_a_screen_and_links_resolve():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
    for doc in [*DOCS, REPO / "docs" / "BENCHMARKS.md", REPO / "docs" / "RELIABILITY.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to missing {target}"
