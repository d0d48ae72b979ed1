"""The command line of every job, generated from its frozen config dataclass (main() is cli/job_main.py).

Each config field carries a one-line docstring (a string literal right after the field); that text becomes
the flag's --help. Field `archive_uri` becomes `--archive-uri`; bools become `--flag/--no-flag`; an enum-typed
field takes one of its members' values and the config holds the member; a field with `metadata={"choices":
...}` (a registry's names) takes one of those. Choices are listed in --help, required flags say so, and a
flag is never matched by a prefix of its name (`--archiv` is an error, not `--archive`).

Every job also takes:
  --config FILE      flag values from a YAML file (keys = flag names), or the config recorded in a run's
                     `_run.json` / `_manifest.json` or an artifact's `manifest.json`: a replay. Flags given on
                     the command line win.
  --print-config     print the resolved config as such a YAML file and exit (nothing runs).
  --verbose          every third-party line as well (cli/console.py says what is hidden by default).

A job may keep old flag spellings for one release (`aliases`, e.g. {"model": "backbone"}): they still work,
with a warning naming the new flag, on the command line and as keys of a --config file.

jsonargparse was considered in place of this module: it would give dataclass flags, YAML and choices, but
enums by member name (`INT8`, where the values here are what users type and what manifests record), no
warning aliases, no replay from a run record's nested `config`, and a different help and error style from
the cluster commands (jobs/submit.py, jobs/runs.py) that use parser_for too; the few things it would save
are what this module adds below.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import shutil
import sys
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")
S = TypeVar("S")

COMMON_FLAGS = frozenset({"config", "print_config", "verbose"})
"""Options every job takes besides its config's fields (jobs/submit.py accepts them too)."""


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """A config's fields in flag order: its own, then the keyword-only ones it inherits (a shared settings base
    such as xray.models.training.TrainingSettings comes first in dataclasses.fields, but reads better last)."""
    return sorted(dataclasses.fields(cls), key=lambda f: bool(f.kw_only))


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass and of the dataclasses it inherits from, read from their source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
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


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (jobs reflow their prose in help_sections); a default is shown
    only where there is one: never `(default: None)`, and required flags say `(required)`."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break inside a flag name (argparse's wrapping splits `--actor-cpus` at its hyphen).
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)".strip()
        if "%(default)" in text or isinstance(action, argparse.BooleanOptionalAction):
            return text  # BooleanOptionalAction adds its own default
        default = action.default
        if default is None or default is argparse.SUPPRESS or default is False or default in ((), [], ""):
            return text
        return f"{text} (default: %(default)s)".strip()


class _OldSpelling(argparse.Action):
    """A flag's old spelling: stores into the new flag's field and warns on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new_flag: str = "", **kwargs: Any) -> None:
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        warn_old_spelling(parser.prog, option_string or self.option_strings[0], self.new_flag)
        setattr(namespace, self.dest, values)


def warn_old_spelling(prog: str, old: str, new: str) -> None:
    print(f"{prog}: warning: {old} is now {new}; the old spelling still works in this release only",
          file=sys.stderr, flush=True)


def parser_for(cls: type, prog: str, description: str, positional: tuple[str, ...] = (),
               skip: tuple[str, ...] = (), epilog: str | None = None, aliases: Mapping[str, str] | None = None,
               common: bool = False) -> argparse.ArgumentParser:
    """Flags for every field of `cls`; fields in `positional` become positional arguments (optional when they
    have a default), fields in `skip` get no argument (the caller sets them on the namespace itself).
    `aliases` maps old field-style names to fields (hidden flags that warn); `common` adds --config,
    --print-config and --verbose (job_main)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=HelpFormatter, allow_abbrev=False)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    old_of: dict[str, list[str]] = {}
    for old, new in (aliases or {}).items():
        old_of.setdefault(new, []).append(flag_of(old))
    for f in flag_fields(cls):
        if f.name in skip:
            continue
        flag = flag_of(f.name)
        tp = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = docs.get(f.name, "")
        if f.name in old_of:
            help_text += f" (was {', '.join(old_of[f.name])})"
        kind = _enum_type(hints[f.name])
        # Strings on the command line, checked against the values; config_from_args makes them members.
        choices = [member.value for member in kind] if kind else f.metadata.get("choices")
        choices = list(choices) if choices is not None else None
        conv = tp if tp in (int, float, str) else str
        if f.name in positional:
            parser.add_argument(f.name, nargs=None if required else "?", default=default, choices=choices,
                                type=conv, help=help_text)
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif tp is tuple:
            parser.add_argument(flag, nargs="*", default=default, required=required, help=help_text)
        else:
            parser.add_argument(flag, type=conv, default=default, required=required, choices=choices,
                                help=help_text)
    for old, new in (aliases or {}).items():
        target = next(a for a in parser._actions if a.dest == new)
        if isinstance(target, argparse.BooleanOptionalAction) or target.nargs is not None:
            raise TypeError(f"{prog}: old spelling {flag_of(old)} of {flag_of(new)}: only single-value flags")
        parser.add_argument(flag_of(old), dest=new, action=_OldSpelling, new_flag=flag_of(new), type=target.type,
                            choices=target.choices, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    if common:
        clash = COMMON_FLAGS & {f.name for f in dataclasses.fields(cls)}
        if clash:
            raise TypeError(f"{cls.__name__} has fields named like the options every job takes: {sorted(clash)}")
        group = parser.add_argument_group("options of every tilescope job")
        group.add_argument("--config", metavar="FILE", help=(
            "Flag values from a YAML file (keys = flag names), or the config recorded in a run's _run.json / "
            "_manifest.json or an artifact's manifest.json to replay it; local or s3://. Flags given here win."))
        group.add_argument("--print-config", action="store_true",
                           help="Print the resolved config as a --config YAML file and exit; nothing runs.")
        group.add_argument("--verbose", action="store_true", help=(
            "Show every line, third-party warnings and Ray's INFO lines included (also: TILESCOPE_VERBOSE=1)."))
    return parser


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    hints = typing.get_type_hints(cls)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, value in values.items():
        kind = _enum_type(hints[name])
        if isinstance(value, list):
            values[name] = tuple(value)
        elif kind is not None and value is not None and not isinstance(value, kind):
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
            problems.append(f"{flag_of(f.name)} {value!r} is not one of {choices}")
    return problems


def require_valid(problems: list[str]) -> None:
    """Raise one ValueError naming every problem (each names its flag)."""
    if problems:
        raise ValueError("invalid configuration:\n  - " + "\n  - ".join(problems))


def help_sections(doc: str | None) -> tuple[str, str | None]:
    """A job's module docstring -> (description, epilog): every prose paragraph, reflowed to the terminal
    (paragraphs that hold a list keep their lines), and the indented command blocks as `examples:`."""
    if not doc:
        return "", None
    width = max(min(shutil.get_terminal_size().columns, 120) - 2, 40)
    prose: list[str] = []
    examples: list[str] = []
    for block in textwrap.dedent(doc).strip("\n").split("\n\n"):
        lines = [line.rstrip() for line in block.strip("\n").splitlines()]
        if not lines:
            continue
        if all(line.startswith("    ") for line in lines):
            examples.append(textwrap.indent(textwrap.dedent("\n".join(lines)), "  "))
        elif any(line.lstrip().startswith(("- ", "* ")) for line in lines):
            prose.append("\n".join(lines))
        else:
            prose.append(textwrap.fill(" ".join(" ".join(lines).split()), width, break_on_hyphens=False))
    return "\n\n".join(prose), ("examples:\n" + "\n".join(examples) if examples else None)


def merge_repeated(argv: list[str], *flags: str) -> list[str]:
    """`--results a --results b` -> `--results a b`, for each of `flags`: a tuple field's flag takes several values
    after one flag (nargs='*'), where argparse would otherwise keep only the last occurrence."""
    for flag in flags:
        values, rest, i = [], [], 0
        while i < len(argv):
            if argv[i].startswith(flag + "="):
                values.append(argv[i].split("=", 1)[1])
            elif argv[i] == flag:
                i += 1
                while i < len(argv) and not argv[i].startswith("--"):
                    values.append(argv[i])
                    i += 1
                continue
            else:
                rest.append(argv[i])
            i += 1
        argv = [*rest, flag, *values] if values or flag in argv else rest
    return argv
