"""`--config FILE` and `--print-config` for every job (cli/flags.py): a YAML file of flag values, or the config a
run recorded, replayed.

A config file is a YAML mapping whose keys are the job's flag names (`calibration-size: 300`; `calibration_size`
works too) and whose values are what the flags take (lists for flags that take several). `--print-config`
writes exactly such a file, every field with its help as a comment, so

    tilescope score --archive A --model M --out O --print-config > score.yaml
    tilescope score --config score.yaml --out O2

runs the same job into O2. A run record is any JSON file tilescope writes with the job's config under a
`config` key: a scoring run's `_run.json` (written first) or `_manifest.json` (written last), or an artifact's
`manifest.json` (train, quantize, train-tiles); `--config` on one of those replays that run's config.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import reprlib
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cli.flags import flag_fields, warn_old_spelling

RECORD_KEY = "config"
QUOTE_LIMIT = 200
"""The most characters of a user's input an error message quotes."""
_QUOTE = reprlib.Repr()  # keyword arguments only from Python 3.12
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlong = 3, QUOTE_LIMIT, QUOTE_LIMIT, 40
_QUOTE.maxtuple = _QUOTE.maxlist = _QUOTE.maxdict = _QUOTE.maxset = 6


def quoted(value: Any) -> str:
    """`value` as an error message quotes it: a repr that never walks more than a few levels and items of a
    nested value (YAML aliases can make a small file a huge structure), cut to QUOTE_LIMIT characters."""
    text = _QUOTE.repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT - 3] + "..."


def _refuse_aliases(data: bytes) -> None:
    """A flag file needs no YAML anchors or aliases, and aliases of aliases expand exponentially: refuse them
    before anything builds the value."""
    import yaml

    for token in yaml.scan(data, Loader=yaml.SafeLoader):
        if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
            kind = "alias" if isinstance(token, yaml.AliasToken) else "anchor"
            raise ValueError(f"YAML {kind}s ({'*' if kind == 'alias' else '&'}{quoted(token.value)[1:-1]}) are not "
                             "supported in a config file; write each value out")


def read(uri: str, endpoint: str | None, fields: Iterable[str]) -> tuple[dict[str, Any], bool]:
    """(key -> value, whether it came from a run record) from a YAML or JSON file, local or s3://."""
    import yaml

    try:
        if "://" in uri and not uri.startswith("file://"):
            from storage.fs import read_bytes, resolve

            data = read_bytes(resolve(uri, endpoint))
        else:
            data = Path(uri.removeprefix("file://")).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    try:
        _refuse_aliases(data)
        body = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML or JSON: {' '.join(str(exc).split())[:QUOTE_LIMIT]}") from None
    if body is None:
        return {}, False
    if not isinstance(body, dict):
        raise ValueError(f"holds a {type(body).__name__}, not a mapping of flag names to values")
    if isinstance(body.get(RECORD_KEY), dict) and RECORD_KEY not in set(fields):
        return dict(body[RECORD_KEY]), True
    return body, False


def flag_values(parser: argparse.ArgumentParser, values: Mapping[str, Any], aliases: Mapping[str, str],
                warn: Callable[[str, str, str], None] | None = None) -> dict[str, Any]:
    """The file's values as parser defaults (dest -> value as a flag would give it), checked like flags:
    raises one ValueError naming every unknown key and bad value. Old spellings warn (cli/flags.py)."""

    warn = warn or warn_old_spelling
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help",)
               and a.help is not argparse.SUPPRESS}
    problems: list[str] = []
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in aliases:
            warn(parser.prog, f"key {quoted(key)}", f"{aliases[name].replace('_', '-')!r}")
            name = aliases[name]
        action = actions.get(name)
        if action is None or name in ("config", "print_config", "verbose"):
            problems.append(f"{quoted(key)} is not a flag of {parser.prog}")
            continue
        if value is None:
            continue  # null: not given (a --print-config template's required keys)
        try:
            defaults[name] = _as_flag_value(action, value)
        except ValueError as exc:
            problems.append(f"{quoted(key)[1:-1] if isinstance(key, str) else quoted(key)}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return defaults


def _as_flag_value(action: argparse.Action, value: Any) -> Any:
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {quoted(value)}")
        return value
    if action.nargs == "*":
        items = value if isinstance(value, list) else [value]
        return [_scalar(action, item) for item in items]
    return _scalar(action, value)


def _scalar(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, (list, dict)):
        raise ValueError(f"expected one value, got {quoted(value)}")
    conv = action.type if callable(action.type) else str
    if conv in (int, float) and isinstance(value, bool):
        raise ValueError(f"expected a number, got {quoted(value)}")
    if conv is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {quoted(value)}")
        value = int(value)
    try:
        out = conv(value) if conv is not str else str(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid {getattr(conv, '__name__', 'value')} value {quoted(value)}") from None
    if action.choices is not None and out not in action.choices:
        raise ValueError(f"{quoted(out)} is not one of {', '.join(map(str, action.choices))}")
    return out


def render(cls: type, cfg: Any, prog: str, docs: Mapping[str, str]) -> str:
    """The config as a --config YAML file: every field under its flag name, its help as a comment."""
    import yaml

    lines = [f"# {prog} --config FILE: one key per flag; flags given on the command line win."]
    for f in flag_fields(cls):
        value = _plain(getattr(cfg, f.name))
        if docs.get(f.name):
            lines += textwrap.wrap(" ".join(docs[f.name].split()), 108, initial_indent="# ", subsequent_indent="# ")
        key = f.name.replace("_", "-")
        if isinstance(value, list):  # one line: `results: [a, b]`
            text = f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
        else:
            text = yaml.safe_dump({key: value}, default_flow_style=False, width=1 << 16).rstrip("\n")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        lines.append(text + ("  # required" if required and value is None else ""))
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
