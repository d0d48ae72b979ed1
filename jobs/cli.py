"""The command line of every job, generated from its frozen config dataclass.

Each config field carries a one-line docstring (a string literal right after the field); that text becomes
the flag's --help. Field `archive_uri` becomes `--archive-uri`; bools become `--flag/--no-flag`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C")


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
        if f.name in positional:
            parser.add_argument(f.name, nargs=None if required else "?", default=default,
                                type=tp if tp in (int, float, str) else str, help=help_text)
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif tp is tuple:
            parser.add_argument(flag, nargs="*", default=default, required=required, help=help_text)
        else:
            conv = tp if tp in (int, float, str) else str
            parser.add_argument(flag, type=conv, default=default, required=required, help=help_text)
    return parser


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def require_valid(problems: list[str]) -> None:
    """Raise one ValueError naming every problem (each names its flag)."""
    if problems:
        raise ValueError("invalid configuration:\n  - " + "\n  - ".join(problems))


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
