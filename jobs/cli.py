"""The command line of every job, generated from its frozen config dataclass.

Each config field carries a one-line docstring (a string literal right after the field); that text becomes
the flag's --help. Field `archive_uri` becomes `--archive-uri`; bools become `--flag/--no-flag`; an enum-typed
field takes one of its members' values (listed in --help) and the config holds the member. job_main() is the
main() every job shares.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import os
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

C = TypeVar("C")
S = TypeVar("S")


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def _base_type(tp: Any) -> Any:
    """str | None -> str; tuple[str, ...] -> tuple."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


def _enum_type(tp: Any) -> type[enum.Enum] | None:
    """The enum class a field holds (Precision, Precision | None), or None for any other type."""
    base = _base_type(tp)
    return base if isinstance(base, type) and issubclass(base, enum.Enum) else None


def parser_for(cls: type, prog: str, description: str, positional: tuple[str, ...] = (),
               skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Flags for every field of `cls`; fields in `positional` become positional arguments (optional when they
    have a default), fields in `skip` get no argument (the caller sets them on the namespace itself)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = docs.get(f.name, "")
        kind = _enum_type(hints[f.name])
        # Strings on the command line, checked against the values; config_from_args makes them members.
        choices = [member.value for member in kind] if kind else None
        if f.name in positional:
            parser.add_argument(f.name, nargs=None if required else "?", default=default, choices=choices,
                                type=tp if tp in (int, float, str) else str, help=help_text)
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif tp is tuple:
            parser.add_argument(flag, nargs="*", default=default, required=required, help=help_text)
        else:
            conv = tp if tp in (int, float, str) else str
            parser.add_argument(flag, type=conv, default=default, required=required, choices=choices,
                                help=help_text)
    return parser


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    hints = typing.get_type_hints(cls)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, value in values.items():
        kind = _enum_type(hints[name])
        if isinstance(value, list):
            values[name] = tuple(value)
        elif kind is not None and value is not None:
            values[name] = kind(value)
    return cls(**values)


def coerce_choices(cfg: Any) -> list[str]:
    """Give each enum-typed field of a config built in code (tests and benchmarks pass plain strings) its
    member, in place; return one problem per value that is not one, naming the flag and the choices, for the
    job's validate() to collect. A config parsed from flags holds members already."""
    hints = typing.get_type_hints(type(cfg))
    problems = []
    for f in dataclasses.fields(cfg):
        kind, value = _enum_type(hints[f.name]), getattr(cfg, f.name)
        if kind is None or value is None or isinstance(value, kind):
            continue
        try:
            object.__setattr__(cfg, f.name, kind(value))  # frozen: the same value, as its member
        except ValueError:
            choices = ", ".join(str(member.value) for member in kind)
            problems.append(f"--{f.name.replace('_', '-')} {value!r} is not one of {choices}")
    return problems


def require_valid(problems: list[str]) -> None:
    """Raise one ValueError naming every problem (each names its flag)."""
    if problems:
        raise ValueError("invalid configuration:\n  - " + "\n  - ".join(problems))


def job_main(config_cls: type[C], run: Callable[[C], S], prog: str, doc: str | None,
             argv: list[str] | None, rewrite_argv: Callable[[list[str]], list[str]] | None = None,
             print_summary: Callable[[S], None] | None = None) -> int:
    """A job's `main(argv)`: flags from `config_cls` (the first line of `doc` describes them), then `run(cfg)`.
    A bad configuration or input (ValueError), or storage that fails (OSError), prints `<prog>: error: <msg>` and
    returns 2. `rewrite_argv` edits the arguments before parsing (report merges repeated --results);
    `print_summary` prints what run() returned."""
    args = list(sys.argv[1:] if argv is None else argv)
    if rewrite_argv is not None:
        args = rewrite_argv(args)
    parser = parser_for(config_cls, prog, doc.splitlines()[0] if doc else "")
    cfg = config_from_args(config_cls, parser.parse_args(args))
    try:
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


def remote_cause(exc: BaseException) -> BaseException:
    """The error a Ray task or actor raised, without Ray's wrapper (whose text is the whole remote traceback):
    a RayTaskError(ValueError) is both a ValueError and a RayTaskError, and `.cause` holds the original."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def user_error(exc: BaseException) -> BaseException | None:
    """The bad input or storage failure (ValueError / OSError) behind `exc`, unwrapped: exc itself, the cause
    of a Ray task error, or one found along the exception chain (Ray Data wraps a write task's OSError, e.g.
    an S3 outage that outlasted the retries, in its own exception). None when there is none: a bug, which
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
    return None


def connect_ray(num_cpus: int | None = None) -> None:
    """Join the cluster when submitted (RAY_ADDRESS is set by `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 _system_config=local_system_config(num_cpus or os.cpu_count() or 1))


def local_system_config(cpus: int) -> dict:
    """Ray settings for a Ray started here (the same goes into cluster.yaml and the KubeRay manifests).

    Ray keeps at most num_workers_soft_limit idle worker processes (default: the node's CPUs) and kills the
    rest after a second. A scoring run needs about three workers per CPU (the scorer actors plus the
    zero-CPU read and write tasks beside them), so with the default the read/write workers are killed between
    tasks and restarted, each restart importing pyarrow again: on 2 cores, 22 worker processes instead of 7
    and 4x the CPU time in read/write workers (bench/worker_reuse.py, docs/BENCHMARKS.md).
    """
    return {"num_workers_soft_limit": 3 * cpus + 2}
