"""`Settings` on the command line and in the README: flags and the settings table, both
generated from the fields of `service.settings.Settings`, so neither repeats a default.

    python -m easerve.service.settings_cli README.md    # rewrite the README's settings table
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from easerve.service.settings import Flag, Settings

TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def flag_of(field: FieldInfo) -> Flag:
    """The field's `Flag` metadata (every setting has one)."""
    return next(item for item in field.metadata if isinstance(item, Flag))


def option_name(name: str, flag: Flag) -> str:
    return flag.name or "--" + name.replace("_", "-")


def shown_default(field: FieldInfo, flag: Flag) -> str:
    """The default as a person reads it in help text and the table."""
    if flag.shown_default is not None:
        return flag.shown_default
    default = field.default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return ", ".join(str(item) for item in default)
    return str(default)


def _value_type(annotation: Any) -> Any:
    """`int` for `int | None`; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation


def _argument_options(field: FieldInfo, flag: Flag) -> dict[str, Any]:
    value_type = _value_type(field.annotation)
    options: dict[str, Any] = {"help": f"{field.description} (default: {shown_default(field, flag)})"}
    if value_type is bool:
        return options | {"action": argparse.BooleanOptionalAction}
    if get_origin(value_type) is Literal:
        return options | {"choices": get_args(value_type)}
    if get_origin(value_type) is list:
        item_type = get_args(value_type)[0]
        if item_type is Path or flag.accumulates:
            return options | {"action": "append", "type": item_type, "metavar": flag.metavar}
        return options | {"nargs": "+", "metavar": flag.metavar}
    return options | {"type": value_type, "metavar": flag.metavar}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (except env-only ones), in the settings' groups; every default is
    None, so an absent flag leaves the environment and the field's default to decide."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, field in Settings.model_fields.items():
        flag = flag_of(field)
        if flag.env_only:
            continue
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        options = _argument_options(field, flag)
        groups[flag.group].add_argument(option_name(name, flag), dest=name, default=None, **options)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, for `Settings(**overrides)`; an accumulating list's flags come
    after its environment entries."""
    given = {key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None}
    for name, field in Settings.model_fields.items():
        if name in given and flag_of(field).accumulates:
            given[name] = [*getattr(Settings(), name), *given[name]]
    return given


def settings_table() -> str:
    """The README's table of settings: environment variable, flag, default, meaning."""
    prefix = Settings.model_config["env_prefix"]
    rows = ["| environment | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        flag = flag_of(field)
        option = "—" if flag.env_only else f"`{option_name(name, flag)}`"
        rows.append(f"| `{prefix}{name.upper()}` | {option} | {shown_default(field, flag)} | {field.description} |")
    return "\n".join(rows)


def with_settings_table(document: str) -> str:
    """`document` with the text between the table markers replaced by `settings_table()`."""
    head, start, rest = document.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"the document has no {TABLE_START} ... {TABLE_END} section")
    return f"{head}{TABLE_START}\n{settings_table()}\n{TABLE_END}{tail}"


def main(argv: list[str]) -> int:
    for path in map(Path, argv):
        path.write_text(with_settings_table(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
