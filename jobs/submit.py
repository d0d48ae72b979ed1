"""Submit a tilescope job to a Ray cluster through Ray's Job Submission API, or resume a failed one.

What runs is the client's own code, never a node's install: run from a checkout, the checkout is uploaded as
the job's working_dir; run from an installed package (a wheel), its five packages (jobs, cli, actors, storage, xray)
are shipped as the job's py_modules, never site-packages. The entrypoint is `python -m jobs.JOB ...`; the
client's version and commit travel in the job's environment, so the manifests the job writes record them.
The submission id is the run id: the job's --run-id if given, else `<job>-<sha12 of the job and its flags>`,
so one command is one run (submitting it again while that run exists is refused). Jobs that take --run-id
(score) are given it, so the rows they write carry the submission's id. `--resume RUN_ID` submits a FAILED or
STOPPED run's entrypoint again as `<run id>-r1`, `-r2`, ... (Ray never reuses a submission id); the job keeps
its --run-id and --out, so it skips the work it had finished.

Token authentication: with RAY_AUTH_MODE=token in the environment, Ray's client sends the token it finds in
RAY_AUTH_TOKEN, in the file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token (in that order). tilescope
never reads, prints or stores the token.

    tilescope submit score --archive s3://b/nih --model s3://b/model --out s3://b/scores \
        --address http://127.0.0.1:8265 --follow
    tilescope submit --resume score-1f2e3d4c5b6a --address http://127.0.0.1:8265 --follow
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cli import console, provenance
from cli.commands import JOBS
from cli.flags import config_from_args, parser_for, require_valid
from jobs.submission import (
    absolute_paths,
    check_job,
    entrypoint_for,
    flag_value,
    job_fields,
    plan_run,
    unknown_flags,
)

PROJECT_ROOT = provenance.PACKAGE_ROOT
"""A checkout (pyproject.toml beside jobs/), or site-packages when tilescope is installed from its wheel."""
PACKAGES = ("jobs", "cli", "actors", "storage", "xray")
"""What an installed tilescope ships as the job's py_modules (pyproject.toml's [tool.setuptools] packages)."""
# Uploaded with every job: the code. Not the virtualenv, outputs, caches, VCS data, wheels, tests or benchmarks
# (Ray also honours .gitignore; these are listed so that an unusual .gitignore cannot ship gigabytes).
WORKING_DIR_EXCLUDES = (".venv", ".git", "runs", ".cache", "dist", "build", "tests", "bench", "*.egg-info",
                        "__pycache__", ".pytest_cache", ".ruff_cache")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
RESUMABLE = ("FAILED", "STOPPED")
# Ray puts the id in URLs (/api/jobs/<id>) and tilescope in file contents; keep it to a safe alphabet.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
METADATA_FLAGS = ("archive", "model", "out")
AUTH_HINT = ("set RAY_AUTH_MODE=token and give the cluster's token in ~/.ray/auth_token, in a file named by "
             "RAY_AUTH_TOKEN_PATH, or in RAY_AUTH_TOKEN")


@dataclass(frozen=True)
class SubmitConfig:
    job: str | None = None
    """Job to run: synth, train, import, quantize, train-tiles, score, report or demo; its own flags follow it,
    or follow --."""
    job_args: tuple[str, ...] = ()
    """The job's flags, passed to it unchanged."""
    address: str | None = None
    """Ray Jobs API URL, e.g. http://127.0.0.1:8265 (after `ray dashboard cluster.yaml`); default $RAY_ADDRESS."""
    resume: str | None = None
    """Run id of a FAILED or STOPPED run to submit again under the same run id; it skips finished work."""
    follow: bool = False
    """Stream the job's logs until it ends; exit 0 only if it SUCCEEDED."""
    working_dir: str | None = None
    """Checkout uploaded as the job's working_dir (.venv, .git, runs/, tests/ and caches left out); default: this
    checkout when run from one, else the installed package is shipped as py_modules."""


@dataclass(frozen=True)
class SubmitSummary:
    run_id: str
    submission_id: str
    attempt: int
    """0 for the first submission, N for <run id>-rN."""
    entrypoint: str
    status: str
    """PENDING right after submission; the final status with --follow."""


def submittable_jobs() -> dict[str, str]:
    """Job name -> module, from the dispatcher: every job except the cluster commands themselves."""
    return {name: target for name, (target, _) in JOBS.items() if ":" not in target and target != __name__}


def run_metadata(job: str, run_id: str, attempt: int, job_args: tuple[str, ...]) -> dict[str, str]:
    """What `tilescope list/status` and the Ray dashboard show about a submission (Ray wants str -> str)."""
    meta = {"job": job, "run_id": run_id, "attempt": str(attempt), "tilescope_version": provenance.version(),
            "tilescope_commit": provenance.commit() or ""}
    meta.update({key: flag_value(job_args, f"--{key}") or "" for key in METADATA_FLAGS})
    return meta


def from_checkout() -> bool:
    """True when this code is a tilescope source tree (its pyproject.toml beside jobs/), not an installed package."""
    return provenance.checkout_version(PROJECT_ROOT) is not None


def default_working_dir() -> str | None:
    return str(PROJECT_ROOT) if from_checkout() else None


def runtime_env(working_dir: str | None) -> dict[str, Any]:
    """The checkout as working_dir, or (None) the installed packages as py_modules; either way the client's
    version and commit as env_vars (cli/provenance.py), which every process of the job inherits."""
    env_vars = provenance.job_environment()
    if working_dir is not None:
        return {"working_dir": working_dir, "excludes": list(WORKING_DIR_EXCLUDES), "env_vars": env_vars}
    return {"py_modules": [str(PROJECT_ROOT / package) for package in PACKAGES],
            "excludes": ["__pycache__", "*.pyc"], "env_vars": env_vars}


def connect(address: str | None):
    """A JobSubmissionClient for `address` (default $RAY_ADDRESS). Ray attaches the token itself when
    RAY_AUTH_MODE=token; the constructor already calls the cluster, so a refusal surfaces here."""
    from ray.job_submission import JobSubmissionClient

    url = address or os.environ.get("RAY_ADDRESS")
    if not url:
        raise ValueError("--address is required (or set RAY_ADDRESS): the Ray Jobs API URL, e.g. "
                         "http://127.0.0.1:8265 after `ray dashboard cluster.yaml`")
    return JobSubmissionClient(url)


def attempt_of(details) -> int:
    try:
        return int((details.metadata or {}).get("attempt", "0"))
    except ValueError:
        return 0


def attempts_of(client, run_id: str) -> list:
    """Every submission of a run, oldest first: `run_id` itself, then <run id>-r1, -r2, ..."""
    found = [job for job in client.list_jobs() if job.submission_id is not None
             and (job.submission_id == run_id or (job.metadata or {}).get("run_id") == run_id)]
    return sorted(found, key=lambda job: (attempt_of(job), job.start_time or 0))


def status_name(status) -> str:
    return str(getattr(status, "value", status))


def wait_until_done(client, submission_id: str, timeout_s: float) -> str:
    """Poll until the submission ends or `timeout_s` passes; returns the last status seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = status_name(client.get_job_status(submission_id))
        if status in TERMINAL or time.monotonic() >= deadline:
            return status
        time.sleep(0.25)


# Ray's own lines in a job's log (the job supervisor's INFO lines, its "Running entrypoint" line): the job's own
# console is already quiet (cli/console.py); these are dropped the same way unless TILESCOPE_VERBOSE is set.
_RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(?:DEBUG|INFO) \S+:\d+ -- "
                           r"|^Running entrypoint for job ")


def job_log_lines(text: str) -> str:
    """A job's log with Ray's own INFO lines left out (all of it with TILESCOPE_VERBOSE)."""
    if console.verbose():
        return text
    return "".join(line for line in text.splitlines(keepends=True) if not _RAY_LOG_LINE.match(line))


def follow_logs(client, submission_id: str, out: TextIO = sys.stdout) -> str:
    """Stream a submission's logs to `out` until it ends (Ray's own lines left out); returns its final status."""

    async def tail() -> None:
        pending = ""
        # aclosing: on Ctrl-C the stream is closed inside the loop, so its HTTP session does not outlive the loop
        # (aiohttp would print "Unclosed client session" and a traceback at exit).
        async with contextlib.aclosing(client.tail_job_logs(submission_id)) as chunks:
            async for chunk in chunks:
                *lines, pending = (pending + chunk).split("\n")
                if lines:
                    out.write(job_log_lines("\n".join(lines) + "\n"))
                    out.flush()
        if pending:
            out.write(job_log_lines(pending))
            out.flush()

    asyncio.run(tail())
    # The log stream closes when the driver exits; the job's status follows within moments.
    return wait_until_done(client, submission_id, timeout_s=60.0)


def outcome_line(client, submission_id: str, status: str) -> str:
    """`<id>: STATUS`, with Ray's reason when it did not succeed (e.g. the entrypoint's exit code)."""
    message = client.get_job_info(submission_id).message if status != "SUCCEEDED" else ""
    return f"{submission_id}: {status}" + (f" ({message})" if message else "")


def validate(cfg: SubmitConfig, jobs: dict[str, str]) -> None:
    problems = []
    if cfg.resume is not None:
        if cfg.job or cfg.job_args:
            problems.append("--resume RUN_ID takes no job or job flags: the run's own entrypoint is submitted again")
    elif not cfg.job:
        problems.append(f"name a job to submit ({', '.join(jobs)}) or pass --resume RUN_ID")
    elif cfg.job not in jobs:
        problems.append(f"unknown job {cfg.job!r}: submit one of {', '.join(jobs)}")
    else:
        bad = unknown_flags(cfg.job_args, job_fields(jobs[cfg.job]))
        if bad:
            problems.append(f"{cfg.job} has no flag {', '.join(bad)} (see `tilescope {cfg.job} --help`)")
        else:
            _, missing = absolute_paths(cfg.job_args, os.getcwd())
            problems += missing
        explicit = flag_value(cfg.job_args, "--run-id")
        if explicit is not None and not RUN_ID.fullmatch(explicit):
            problems.append(f"--run-id {explicit!r}: use 1-100 letters, digits, '.', '_' or '-'")
    if not (cfg.address or os.environ.get("RAY_ADDRESS")):
        problems.append("--address is required (or set RAY_ADDRESS), e.g. http://127.0.0.1:8265")
    if cfg.working_dir is not None and not (Path(cfg.working_dir) / "jobs" / "__main__.py").is_file():
        problems.append(f"--working-dir {cfg.working_dir}: not the tilescope project (no jobs/__main__.py)")
    require_valid(problems)
    if cfg.job and not cfg.resume:
        check_job(cfg.job, jobs[cfg.job], absolute_paths(cfg.job_args, os.getcwd())[0])


def run(cfg: SubmitConfig) -> SubmitSummary:
    jobs = submittable_jobs()
    validate(cfg, jobs)
    client = connect(cfg.address)
    if cfg.resume is not None:
        run_id, attempt, entrypoint, metadata = _resubmission(client, cfg.resume)
    else:
        assert cfg.job is not None  # validate() checked it
        fields = job_fields(jobs[cfg.job])
        run_id, job_args = plan_run(cfg.job, absolute_paths(cfg.job_args, os.getcwd())[0], fields)
        existing = attempts_of(client, run_id)
        if existing:
            last = existing[-1]
            separate = "pass another --run-id" if "run_id" in fields else "change its flags"
            raise ValueError(f"run {run_id} was already submitted ({last.submission_id} is "
                             f"{status_name(last.status)}): follow it with `tilescope logs {run_id} --follow`, "
                             f"resume it if it failed with `tilescope submit --resume {run_id}`, or "
                             f"{separate} to start a separate run")
        attempt, entrypoint = 0, entrypoint_for(jobs[cfg.job], job_args)
        metadata = run_metadata(cfg.job, run_id, attempt, job_args)
    submission_id = run_id if attempt == 0 else f"{run_id}-r{attempt}"
    working_dir = cfg.working_dir if cfg.working_dir is not None else default_working_dir()
    client.submit_job(entrypoint=entrypoint, submission_id=submission_id, metadata=metadata,
                      runtime_env=runtime_env(working_dir))
    shipped = (f"working_dir {working_dir}" if working_dir is not None
               else f"py_modules of the installed tilescope {provenance.version()}")
    print(f"submitted {submission_id} (run {run_id}, attempt {attempt}): {entrypoint} [{shipped}]", flush=True)
    status = follow_logs(client, submission_id) if cfg.follow else "PENDING"
    if cfg.follow:
        print(outcome_line(client, submission_id, status), flush=True)
    return SubmitSummary(run_id, submission_id, attempt, entrypoint, status)


def _resubmission(client, run_id: str) -> tuple[str, int, str, dict[str, str]]:
    """(run id, attempt, entrypoint, metadata) to submit a FAILED or STOPPED run again."""
    attempts = attempts_of(client, run_id)
    if attempts and (attempts[-1].metadata or {}).get("run_id", run_id) != run_id:
        run_id = attempts[-1].metadata["run_id"]  # given one attempt's id (<run id>-rN): resume the run
        attempts = attempts_of(client, run_id)
    if not attempts:
        raise ValueError(f"--resume {run_id}: no run with that id on this cluster (`tilescope list` shows them)")
    last = attempts[-1]
    status = status_name(last.status)
    if status not in RESUMABLE:
        raise ValueError(f"--resume {run_id}: its latest submission {last.submission_id} is {status}; only a "
                         f"FAILED or STOPPED run is resumed" + (" (stop it first with `tilescope stop`)"
                                                               if status not in TERMINAL else ""))
    attempt = max(attempt_of(job) for job in attempts) + 1
    # The code is shipped again from this client: its version and commit, not the first attempt's.
    metadata = {**(last.metadata or {}), "run_id": run_id, "attempt": str(attempt), "resumes": last.submission_id,
                "tilescope_version": provenance.version(), "tilescope_commit": provenance.commit() or ""}
    return run_id, attempt, last.entrypoint, metadata


def report_errors(prog: str, address: str | None, command: Callable[[], int]) -> int:
    """Run a client command; on a refusal, an unreachable cluster or a bad request print the cause, return 2.
    Ctrl-C (while following logs, or waiting for a stop) prints one line, not asyncio's and Ray's tracebacks, and
    returns 130: only the client stops; the run goes on on the cluster."""
    from ray.exceptions import AuthenticationError

    url = address or os.environ.get("RAY_ADDRESS", "")
    console.quiet_job_client()
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; only this command stopped, the run goes on on the cluster (`tilescope status "
              "RUN` shows it, `tilescope stop RUN` stops it)", file=sys.stderr)
        return 130
    except AuthenticationError as exc:
        reason = str(exc).splitlines()[0]
        message = f"the Ray cluster at {url} refused the request ({reason}); {AUTH_HINT}"
    except OSError as exc:  # requests' ConnectionError is an OSError too
        message = (f"cannot reach the Ray Jobs API at {url} ({exc}); is the cluster up and its dashboard port "
                   f"forwarded (`ray dashboard cluster.yaml`)?")
    except (ValueError, RuntimeError) as exc:  # Ray reports a refused request (unknown id...) as RuntimeError
        message = str(exc)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def parse(argv: list[str]) -> SubmitConfig:
    """Submit's own flags may sit anywhere; every other argument after the job name is the job's. After `--`
    everything is the job's."""
    parser = parser_for(SubmitConfig, "tilescope submit", __doc__.splitlines()[0], positional=("job",),
                        skip=("job_args",))
    parser.allow_abbrev = False  # --out must never be read as an abbreviation of a submit flag
    tail: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, tail = argv[:split], argv[split + 1:]
    args, extra = parser.parse_known_args(argv)
    if args.job is None and tail:
        args.job, tail = tail[0], tail[1:]
    args.job_args = [*extra, *tail]
    return config_from_args(SubmitConfig, args)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(list(sys.argv[1:] if argv is None else argv))

    def submit() -> int:
        summary = run(cfg)
        return 0 if not cfg.follow or summary.status == "SUCCEEDED" else 1

    return report_errors("tilescope submit", cfg.address, submit)


if __name__ == "__main__":
    raise SystemExit(main())
