"""Look after runs submitted with `tilescope submit`: status, logs (--follow), stop, list.

A run is named by its run id, the id of its first submission; resubmissions by `tilescope submit --resume`
are <run id>-r1, -r2, ... and status, logs and stop act on the latest of them. An attempt's own id also works.
The cluster's address and token are given as for `tilescope submit` (--address or RAY_ADDRESS; RAY_AUTH_MODE=token
with the token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN).

`status` and `list` take --json for scripts: one object (status) or a list of objects (list), with the run's
output location, its duration and, while a job prints progress lines ([score] 120/480 images ... ETA 3m05s),
the latest one parsed into images done / total and the ETA.

    tilescope status score-1f2e3d4c5b6a --address http://127.0.0.1:8265
    tilescope status score-1f2e3d4c5b6a --json --address http://127.0.0.1:8265
    tilescope logs score-1f2e3d4c5b6a --follow --address http://127.0.0.1:8265
    tilescope stop score-1f2e3d4c5b6a --address http://127.0.0.1:8265
    tilescope list --json --address http://127.0.0.1:8265
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, replace

from cli.flags import config_from_args, parser_for
from cli.progress import format_duration
from jobs.submit import (
    TERMINAL,
    attempt_of,
    attempts_of,
    connect,
    follow_logs,
    job_log_lines,
    outcome_line,
    report_errors,
    status_name,
    wait_until_done,
)


@dataclass(frozen=True)
class StatusConfig:
    run_id: str
    """Run id printed by `tilescope submit` or `tilescope list` (or one attempt's id, <run id>-rN)."""
    address: str | None = None
    """Ray Jobs API URL, e.g. http://127.0.0.1:8265; default $RAY_ADDRESS."""
    json: bool = False
    """Print one JSON object (status, times, output, progress) instead of text."""


@dataclass(frozen=True)
class LogsConfig:
    run_id: str
    """Run id printed by `tilescope submit` or `tilescope list` (or one attempt's id, <run id>-rN)."""
    address: str | None = None
    """Ray Jobs API URL, e.g. http://127.0.0.1:8265; default $RAY_ADDRESS."""
    follow: bool = False
    """Stream the logs until the run ends; exit 0 only if it SUCCEEDED."""


@dataclass(frozen=True)
class StopConfig:
    run_id: str
    """Run id printed by `tilescope submit` or `tilescope list` (or one attempt's id, <run id>-rN)."""
    address: str | None = None
    """Ray Jobs API URL, e.g. http://127.0.0.1:8265; default $RAY_ADDRESS."""
    wait_s: float = 60.0
    """Seconds to wait for the run to reach STOPPED."""


@dataclass(frozen=True)
class ListConfig:
    address: str | None = None
    """Ray Jobs API URL, e.g. http://127.0.0.1:8265; default $RAY_ADDRESS."""
    json: bool = False
    """Print a JSON list of runs (one object per submission) instead of a table."""


@dataclass(frozen=True)
class RunInfo:
    """One submission of a run, as the cluster reports it."""

    run_id: str
    submission_id: str
    attempt: int
    status: str
    job: str
    entrypoint: str
    message: str
    start_unix: float | None
    end_unix: float | None
    out: str = ""
    """The job's --out as submitted (absolute or s3://): where its results are."""
    progress: Progress | None = None

    @property
    def duration_s(self) -> float | None:
        if self.start_unix is None:
            return None
        return (self.end_unix or time.time()) - self.start_unix

    def describe(self) -> str:
        times = f"started {_when(self.start_unix)}" + (f", ended {_when(self.end_unix)}" if self.end_unix else "")
        if self.duration_s is not None:
            times += f" ({format_duration(self.duration_s)})"
        lines = [f"run {self.run_id} attempt {self.attempt} ({self.submission_id}): {self.status}", f"  {times}"]
        if self.out:
            lines.append(f"  output: {self.out}")
        if self.progress is not None:
            lines.append(f"  progress: {self.progress.line}")
        lines.append(f"  entrypoint: {self.entrypoint}")
        if self.message:
            lines.append(f"  {self.message}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "submission_id": self.submission_id, "attempt": self.attempt,
                "status": self.status, "job": self.job, "out": self.out or None, "entrypoint": self.entrypoint,
                "message": self.message, "start_unix": self.start_unix, "end_unix": self.end_unix,
                "duration_s": self.duration_s, "progress": self.progress.to_json() if self.progress else None}


_PROGRESS = re.compile(r"^\[(?P<job>[a-z-]+)\] .*$", re.M)
_DONE_TOTAL = re.compile(r"(?P<done>\d+)/(?P<total>\d+) (?:images|epochs)")
_ETA = re.compile(r"ETA (?P<eta>\S+)")


@dataclass(frozen=True)
class Progress:
    """The latest progress line a job printed ([score] ..., [train-tiles] ...), and what it says."""

    line: str
    done: int | None
    total: int | None
    eta: str | None

    def to_json(self) -> dict:
        return {"line": self.line, "done": self.done, "total": self.total, "eta": self.eta}


def progress_of(logs: str) -> Progress | None:
    """The last progress line in a run's logs, parsed; None when it printed none."""
    lines = [m.group(0).rstrip() for m in _PROGRESS.finditer(logs)]
    if not lines:
        return None
    line = lines[-1]
    counts, eta = _DONE_TOTAL.search(line), _ETA.search(line)
    return Progress(line, int(counts["done"]) if counts else None, int(counts["total"]) if counts else None,
                    eta["eta"] if eta else None)


def _message(message: str) -> str:
    """Ray's message for a failed job repeats the tail of its logs: keep its first sentence (`tilescope logs`
    prints the logs, once)."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return re.split(r",? last available logs", first, maxsplit=1)[0].strip()


def info_of(details) -> RunInfo:
    meta = details.metadata or {}
    return RunInfo(
        run_id=meta.get("run_id", details.submission_id), submission_id=details.submission_id,
        attempt=attempt_of(details), status=status_name(details.status), job=meta.get("job", ""),
        entrypoint=details.entrypoint, message=_message(details.message or ""),
        start_unix=details.start_time / 1000 if details.start_time else None,
        end_unix=details.end_time / 1000 if details.end_time else None, out=meta.get("out", ""),
    )


def latest_attempt(client, run_id: str):
    attempts = attempts_of(client, run_id)
    if not attempts:
        raise ValueError(f"no run {run_id!r} on this cluster (`tilescope list` shows the runs there)")
    return attempts[-1]


def status(cfg: StatusConfig) -> RunInfo:
    """The latest attempt's state, with the last progress line of its logs."""
    client = connect(cfg.address)
    details = latest_attempt(client, cfg.run_id)
    return replace(info_of(details), progress=progress_of(client.get_job_logs(details.submission_id) or ""))


def logs(cfg: LogsConfig, out=sys.stdout) -> RunInfo:
    """Write the latest attempt's logs to `out` (streamed until it ends with --follow, then a line with its
    final status); returns its state."""
    client = connect(cfg.address)
    details = latest_attempt(client, cfg.run_id)
    if cfg.follow:
        status = follow_logs(client, details.submission_id, out)
        print(outcome_line(client, details.submission_id, status), file=out, flush=True)
    else:
        out.write(job_log_lines(client.get_job_logs(details.submission_id)))
        out.flush()
    return info_of(client.get_job_info(details.submission_id))


def stop(cfg: StopConfig) -> RunInfo:
    """Stop the latest attempt and wait for STOPPED; a run that already ended is left as it is."""
    client = connect(cfg.address)
    details = latest_attempt(client, cfg.run_id)
    if status_name(details.status) not in TERMINAL:
        client.stop_job(details.submission_id)
        wait_until_done(client, details.submission_id, cfg.wait_s)
    return info_of(client.get_job_info(details.submission_id))


def list_runs(cfg: ListConfig) -> list[RunInfo]:
    """Every submission on the cluster, oldest first (jobs not submitted by tilescope included)."""
    client = connect(cfg.address)
    found = [info_of(job) for job in client.list_jobs() if job.submission_id is not None]
    return sorted(found, key=lambda run: run.start_unix or 0.0)


def _when(unix: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix)) if unix else "-"


EXAMPLES = {
    "status": ["tilescope status score-1f2e3d4c5b6a --address http://127.0.0.1:8265",
               "tilescope status score-1f2e3d4c5b6a --json | jq .progress.eta"],
    "logs": ["tilescope logs score-1f2e3d4c5b6a --address http://127.0.0.1:8265",
             "tilescope logs score-1f2e3d4c5b6a --follow   # until it ends; exit 0 only if it SUCCEEDED"],
    "stop": ["tilescope stop score-1f2e3d4c5b6a --address http://127.0.0.1:8265",
             "tilescope submit --resume score-1f2e3d4c5b6a --address http://127.0.0.1:8265   # continue it later"],
    "list": ["tilescope list --address http://127.0.0.1:8265",
             "tilescope list --json | jq '.[] | select(.status == \"FAILED\") | .run_id'"],
}


def _parse(cls: type, name: str, doc: str, argv: list[str]):
    positional = ("run_id",) if "run_id" in cls.__dataclass_fields__ else ()
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    parser = parser_for(cls, f"tilescope {name}", doc, positional=positional, epilog=epilog)
    return config_from_args(cls, parser.parse_args(argv))


def status_main(argv: list[str] | None = None) -> int:
    cfg = _parse(StatusConfig, "status", "The status of a submitted run.", list(argv or []))

    def show() -> int:
        info = status(cfg)
        print(json.dumps(info.to_json(), indent=2, sort_keys=True) if cfg.json else info.describe())
        return 0

    return report_errors("tilescope status", cfg.address, show)


def logs_main(argv: list[str] | None = None) -> int:
    cfg = _parse(LogsConfig, "logs", "A submitted run's logs (its latest attempt).", list(argv or []))

    def show() -> int:
        info = logs(cfg)
        return 0 if not cfg.follow or info.status == "SUCCEEDED" else 1

    return report_errors("tilescope logs", cfg.address, show)


def stop_main(argv: list[str] | None = None) -> int:
    cfg = _parse(StopConfig, "stop", "Stop a submitted run; `tilescope submit --resume` continues it.",
                 list(argv or []))

    def stop_it() -> int:
        info = stop(cfg)
        print(f"{info.submission_id}: {info.status}")
        return 0 if info.status in TERMINAL else 1

    return report_errors("tilescope stop", cfg.address, stop_it)


def list_main(argv: list[str] | None = None) -> int:
    cfg = _parse(ListConfig, "list", "Every run submitted to the cluster.", list(argv or []))

    def show() -> int:
        runs = list_runs(cfg)
        if cfg.json:
            print(json.dumps([run.to_json() for run in runs], indent=2, sort_keys=True))
            return 0
        print(f"{'SUBMISSION':<32} {'STATUS':<10} {'JOB':<12} {'STARTED':<24} {'TOOK':<8} {'RUN':<28} OUTPUT")
        for run in runs:
            took = format_duration(run.duration_s) if run.duration_s is not None else "-"
            print(f"{run.submission_id:<32} {run.status:<10} {run.job or '-':<12} {_when(run.start_unix):<24} "
                  f"{took:<8} {run.run_id:<28} {run.out or '-'}")
        return 0

    return report_errors("tilescope list", cfg.address, show)


COMMANDS = {"status": status_main, "logs": logs_main, "stop": stop_main, "list": list_main}


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.runs COMMAND [args]`, the same as `tilescope COMMAND [args]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m jobs.runs {{{','.join(COMMANDS)}}} [args]", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
