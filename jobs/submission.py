"""The job a submission runs, prepared on the client before anything is uploaded: its flags read from the job's
own config class (the definitions its parser uses), parsed and validated exactly as the job will (a bad value,
a missing required flag or a failed check fails here, not on the cluster), its local paths made absolute and
checked (inputs must exist), and its run id planned.

A submitted job runs in a temporary copy of the working directory on a cluster node, so a relative path there
is a path into that copy: an output written there is lost when Ray deletes it. Absolute paths mean what they mean
on this machine, which for a cluster is right only where every node shares them (a local Ray head, a mount);
s3:// works everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shlex

from cli.flags import COMMON_FLAGS, parser_for
from cli.job_main import parse_job_args

PATH_FIELDS = frozenset({"archive", "model", "out", "checkpoint", "metadata", "results", "val_list", "weights",
                         "onnx", "ir", "init_weights", "work", "workdir", "boxes", "config"})
"""Config fields (and --config) whose values are local paths or URIs."""
OUTPUT_FIELDS = frozenset({"out", "work", "workdir"})
"""Of those, what a job creates: made absolute, not required to exist yet."""


def job_config(module: str) -> tuple[type, dict[str, str]]:
    """A job's config dataclass and its old flag spellings (FLAG_ALIASES, old name -> field): the definitions its
    own main() builds its parser from. Job modules import torch, OpenVINO and NNCF only inside run(), so this
    works on a client without the [train] extra."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ValueError(f"job module {module} cannot be imported here ({exc})") from exc
    configs = [obj for name, obj in vars(mod).items() if name.endswith("Config") and dataclasses.is_dataclass(obj)
               and isinstance(obj, type) and obj.__module__ == module]
    if len(configs) != 1:
        raise ValueError(f"{module} has {len(configs)} *Config dataclasses; one is needed to read its flags")
    return configs[0], dict(getattr(mod, "FLAG_ALIASES", {}))


def job_fields(module: str) -> frozenset[str]:
    """What the job accepts as flags: its config's fields, the options every job takes (--config,
    --print-config, --verbose) and its old spellings."""
    config, aliases = job_config(module)
    return frozenset(f.name for f in dataclasses.fields(config)) | COMMON_FLAGS | frozenset(aliases)


def flag_value(args: tuple[str, ...], flag: str) -> str | None:
    """The last value given for `flag` (`--flag V` or `--flag=V`), as argparse reads it."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def unknown_flags(args: tuple[str, ...], fields: frozenset[str]) -> list[str]:
    """Flags in `args` that no config field (nor its --no-FLAG form) accounts for."""
    unknown = []
    for arg in args:
        if not arg.startswith("--") or arg == "--":
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in fields and not (name.startswith("no_") and name[3:] in fields) and name != "help":
            unknown.append(arg.split("=", 1)[0])
    return unknown


def plan_run(job: str, job_args: tuple[str, ...], fields: frozenset[str]) -> tuple[str, tuple[str, ...]]:
    """(run id, the job's args). The job's own --run-id wins; otherwise the id derives from the job and its flags,
    and a job that takes --run-id is given it so that its outputs carry the same id."""
    explicit = flag_value(job_args, "--run-id")
    if explicit:
        return explicit, job_args
    run_id = f"{job}-{hashlib.sha256(json.dumps([job, *job_args]).encode()).hexdigest()[:12]}"
    return run_id, ((*job_args, "--run-id", run_id) if "run_id" in fields else job_args)


def entrypoint_for(module: str, job_args: tuple[str, ...]) -> str:
    return f"python -m {module} {shlex.join(job_args)}".rstrip()


def absolute_paths(job_args: tuple[str, ...], cwd: str) -> tuple[tuple[str, ...], list[str]]:
    """(the job's args with every local path made absolute against `cwd`, problems): an input that does not exist
    on this client is a problem naming the flag; s3:// and other URIs are left as they are."""
    out: list[str] = []
    problems: list[str] = []
    current: str | None = None

    def absolute(field: str, value: str) -> str:
        if "://" in value and not value.startswith("file://"):
            return value
        path = os.path.abspath(os.path.join(cwd, os.path.expanduser(value.removeprefix("file://"))))
        if field not in OUTPUT_FIELDS and not os.path.exists(path):
            problems.append(f"--{field.replace('_', '-')} {value}: not found on this client ({path}); a submitted job "
                            "runs on the cluster: give an s3:// URI, or an absolute path every node shares")
        return path

    for arg in job_args:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            field = name[2:].replace("-", "_")
            current = field if field in PATH_FIELDS else None
            if eq and current is not None:
                arg, current = f"{name}={absolute(current, value)}", None
        elif current is not None:
            arg = absolute(current, arg)
        out.append(arg)
    return tuple(out), problems


def check_job(job: str, module: str, job_args: tuple[str, ...]) -> None:
    """Parse and validate the job's flags on the client exactly as the job's main() and run() will; raises one
    ValueError naming the problem."""
    config, aliases = job_config(module)
    parser = parser_for(config, f"tilescope {job}", "", aliases=aliases, common=True)

    def refuse(message: str) -> None:
        raise ValueError(f"{job}: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    try:
        cfg, _ = parse_job_args(config, parser, list(job_args), aliases)
    except SystemExit as exc:  # --help, or argparse giving up on its own
        raise ValueError(f"{job}: its flags do not parse ({shlex.join(job_args)[:200]})") from exc
    validate = getattr(importlib.import_module(module), "validate", None)
    if validate is not None:
        try:
            validate(cfg)
        except ValueError as exc:
            raise ValueError(f"{job}: {exc}") from exc


