"""The main() every job shares: parse (flags over a --config file over the defaults), quiet console, run(cfg),
and the one-line error for bad input or storage failures; plus connecting to Ray.

Built on cli/flags.py (the parser of a config dataclass) and cli/config_files.py (--config / --print-config).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from cli import config_files, console
from cli.flags import config_from_args, field_docs, flag_of, help_sections, merge_repeated, parser_for
from storage.fs import StorageError, check_reachable, resolve

C = TypeVar("C")
S = TypeVar("S")


def parse_job_args(config_cls: type[C], parser: argparse.ArgumentParser, args: list[str],
                   aliases: Mapping[str, str] | None = None) -> tuple[C, argparse.Namespace]:
    """(config, namespace) from the command line over a --config file over the defaults. Exits 2 naming the
    problem for a bad flag, a bad file or a bad key in it. A flag of several values may be repeated
    (`--model a --model b` is `--model a b`)."""
    args = merge_repeated(args, *(a.option_strings[0] for a in parser._actions if a.nargs == "*" and a.option_strings))
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [arg.split("=", 1)[0] for arg in args if arg.startswith("--") and arg.split("=", 1)[0] not in known
               and arg != "--"]
    if unknown:  # before argparse, which would first complain about a required flag the typo was meant to give
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        parser.error(f"unrecognized argument {unknown[0]}" + (f" (did you mean {close[0]}?)" if close else "")
                     + "; flags are never abbreviated")
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    pre.add_argument("--print-config", action="store_true")
    pre.add_argument("--s3-endpoint")
    early, _ = pre.parse_known_args(args)
    if early.config:
        try:
            values, replayed = config_files.read(early.config, early.s3_endpoint,
                                                 {f.name for f in dataclasses.fields(config_cls)})
            defaults = config_files.flag_values(parser, values, aliases or {})
        except ValueError as exc:
            parser.error(f"--config {early.config}: {exc}")
        if replayed:
            print(f"{parser.prog}: replaying the config recorded in {early.config}", file=sys.stderr, flush=True)
        parser.set_defaults(**defaults)
        for action in parser._actions:
            if action.dest in defaults:
                action.required = False
    if early.print_config:  # a template: what is missing prints as null, marked required
        for action in parser._actions:
            action.required = False
    namespace = parser.parse_args(args)
    return config_from_args(config_cls, namespace), namespace


def job_main(config_cls: type[C], run: Callable[[C], S], prog: str, doc: str | None,
             argv: list[str] | None, rewrite_argv: Callable[[list[str]], list[str]] | None = None,
             print_summary: Callable[[S], None] | None = None, aliases: Mapping[str, str] | None = None) -> int:
    """A job's `main(argv)`: flags from `config_cls` (help: `doc`'s prose, its indented commands as examples),
    an optional --config file under them, the quiet console (cli/console.py), then `run(cfg)`.
    A bad configuration or input (ValueError), or storage that fails (OSError), prints `<prog>: error: <msg>` and
    returns 2. `rewrite_argv` edits the arguments before parsing (report merges repeated --results);
    `print_summary` prints what run() returned; `aliases` are old flag spellings (old name -> field)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if rewrite_argv is not None:
        args = rewrite_argv(args)
    description, epilog = help_sections(doc)
    parser = parser_for(config_cls, prog, description, epilog=epilog, aliases=aliases, common=True)
    cfg, options = parse_job_args(config_cls, parser, args, aliases)
    if options.print_config:
        sys.stdout.write(config_files.render(config_cls, cfg, prog, field_docs(config_cls)))
        return 0
    with console.job_console(options.verbose):
        try:
            reachable_first(cfg)
            summary = run(cfg)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; what was written is kept, and the same command resumes where it can",
                  file=sys.stderr)
            return 130
        except Exception as exc:
            cause = user_error(exc)
            if cause is None:
                raise
            print(f"{prog}: error: {cause}", file=sys.stderr)
            return 2
        if print_summary is not None:
            print_summary(summary)
    return 0


def reachable_first(cfg: object) -> None:
    """Every s3:// URI the config names has a bucket that answers, before the job does any work: a wrong endpoint,
    credentials or bucket fail in seconds, in one line naming the flag, not after a read's retries (each bucket
    is probed once, with two attempts)."""
    if not dataclasses.is_dataclass(cfg):
        return
    endpoint = getattr(cfg, "s3_endpoint", None)
    seen: set[str] = set()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for uri in value if isinstance(value, (tuple, list)) else (value,):
            if not (isinstance(uri, str) and uri.startswith("s3://")):
                continue
            bucket = uri[len("s3://"):].split("/", 1)[0]
            if bucket in seen:
                continue
            seen.add(bucket)
            try:
                check_reachable(resolve(uri, endpoint))
            except StorageError as exc:
                raise StorageError(f"{flag_of(f.name)} {uri}: {exc}") from exc


def remote_cause(exc: BaseException) -> BaseException:
    """The error a Ray task or actor raised, without Ray's wrapper (whose text is the whole remote traceback):
    a RayTaskError(ValueError) is both a ValueError and a RayTaskError, and `.cause` holds the original."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


# What a remote storage failure leaves in the traceback text Ray delivers: tilescope's own StorageError line (it
# names the URI), else a built-in OSError line. Ray Data raises a UDF's exception as the cause of its own
# UserCodeException, and a cause is not pickled: on the driver only this text is left of it.
_REMOTE_STORAGE = re.compile(r"^storage\.fs\.StorageError: (?P<msg>.+)$", re.M)
_REMOTE_OSERROR = re.compile(r"^(?:builtins\.)?(?P<kind>OSError|FileNotFoundError|PermissionError|IsADirectoryError|"
                             r"NotADirectoryError|ConnectionError|ConnectionResetError|TimeoutError|"
                             r"pyarrow\.lib\.ArrowIOError): (?P<msg>.+)$", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MESSAGE_LIMIT = 400


def remote_storage_error(exc: BaseException) -> StorageError | None:
    """The storage failure a Ray task or actor raised, recovered from the remote traceback text of `exc` (see
    above); None when the text holds none."""
    text = _ANSI.sub("", "\n".join(filter(None, (str(exc), getattr(exc, "traceback_str", None)))))
    found = _REMOTE_STORAGE.findall(text)
    if found:
        return StorageError(found[-1][:MESSAGE_LIMIT])
    other = list(_REMOTE_OSERROR.finditer(text))
    if other:
        return StorageError(f"a Ray task failed on storage: {other[-1]['kind']}: {other[-1]['msg']}"[:MESSAGE_LIMIT])
    return None


def user_error(exc: BaseException) -> BaseException | None:
    """The bad input or storage failure (ValueError / OSError) behind `exc`, unwrapped: exc itself, the cause
    of a Ray task error, one found along the exception chain, or (Ray Data's UserCodeException arrives without
    its cause) a storage failure read from the remote traceback text. None when there is none: a bug, which
    keeps its traceback."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        inner = remote_cause(e)
        if inner is e and isinstance(e, (ValueError, OSError)):
            return e
        todo += [x for x in (inner, e.__cause__, e.__context__) if isinstance(x, BaseException) and x is not e]
    return remote_storage_error(exc)


def connect_ray(num_cpus: int | None = None) -> None:
    """Join the cluster when submitted (RAY_ADDRESS is set by `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    # Quiet (a job run from the command line without --verbose): every worker of the job runs the same
    # filters as this driver (cli/console.py). Merged with a submitted job's runtime_env (no key in common).
    quiet = {"runtime_env": {"worker_process_setup_hook": console.WORKER_SETUP_HOOK}} if console.quiet() else {}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, **quiet)
    else:
        # address="local": always a Ray of our own. Without it ray.init() joins whatever cluster `ray start` left
        # in /tmp/ray/ray_current_cluster on this machine, and refuses our _system_config there.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 _system_config=local_system_config(num_cpus or os.cpu_count() or 1), **quiet)
    console.quiet_driver_after_ray_start()


def local_system_config(cpus: int) -> dict:
    """Ray settings for a Ray started here (the same goes into cluster.yaml and the KubeRay manifests).

    Ray keeps at most num_workers_soft_limit idle worker processes (default: the node's CPUs) and kills the
    rest after a second. A scoring run needs about three workers per CPU (the scorer actors plus the
    zero-CPU read and write tasks beside them), so with the default the read/write workers are killed between
    tasks and restarted, each restart importing pyarrow again: on 2 cores, 22 worker processes instead of 7
    and 4x the CPU time in read/write workers (bench/worker_reuse.py, docs/BENCHMARKS.md).
    """
    return {"num_workers_soft_limit": 3 * cpus + 2}
