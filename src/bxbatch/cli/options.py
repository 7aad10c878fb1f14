"""Typer options made from the Settings fields' flags: a command's ``Annotated[Settings, Flags(...)]`` parameter.

A Settings field that has a command-line option carries it (``settings.flag``: name, help, panel,
range); its default is the field's. ``Flags`` names the fields a command takes; ``app.command``
turns that one parameter into a typer option per field and calls the command with the Settings
they make. Nothing about an option is written twice.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import typer

from bxbatch.db.dsn import resolve_dsn
from bxbatch.settings import Flag, Settings

_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_TYPES = typing.get_type_hints(Settings)

EVERY = tuple(name for name, f in _FIELDS.items() if "flag" in f.metadata)  # `run` and `resume` take them all


def flag_of(name: str) -> Flag:
    spec: Flag = _FIELDS[name].metadata["flag"]
    return spec


def parameter_name(name: str) -> str:
    """The typer parameter of a field: its own name (``no_progress`` for the negated ``progress``)."""
    return f"no_{name}" if flag_of(name).negated else name


def option_default(name: str) -> Any:
    """The option's default: the field's (negated for a --no-x flag)."""
    default = _FIELDS[name].default
    return not default if flag_of(name).negated else default


def _option(name: str, variant: Mapping[str, Any]) -> inspect.Parameter:
    spec = dataclasses.replace(flag_of(name), **variant)
    type_: Any = bool if spec.negated else _TYPES[name]
    metavar = None
    if typing.get_origin(type_) is Literal:  # a choice: checked by Settings.validate(), listed in --help
        metavar = "[" + "|".join(typing.get_args(type_)) + "]"
        type_ = str
    decls = [spec.name, spec.short] if spec.short else [spec.name]
    info = typer.Option(
        *decls,
        envvar=spec.envvar,
        help=spec.help,
        rich_help_panel=spec.panel,
        show_default=spec.show_default,
        metavar=metavar,
        min=spec.min,
        max=spec.max,
    )
    return inspect.Parameter(
        parameter_name(name),
        inspect.Parameter.KEYWORD_ONLY,
        default=option_default(name),
        annotation=Annotated[type_, info],
    )


class Flags:
    """The Settings fields a command takes as options, in Settings order; ``variants`` changes what a
    command shows of one (``{"report_path": {"help": ...}}``), never its default."""

    def __init__(self, *names: str, variants: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        unknown = [n for n in names if n not in EVERY]
        if unknown:
            raise TypeError(f"Settings fields without a flag: {unknown}")
        self.names = tuple(n for n in EVERY if n in names)
        self.variants = dict(variants or {})

    def parameters(self) -> list[inspect.Parameter]:
        return [_option(name, self.variants.get(name, {})) for name in self.names]

    def settings(self, values: dict[str, Any]) -> Settings:
        """The validated Settings of the options' values (popped from ``values``)."""
        given = {name: values.pop(parameter_name(name)) for name in self.names}
        for name in self.names:
            if flag_of(name).negated:
                given[name] = not given[name]
        given.setdefault("progress", False)  # a command without --no-progress draws no bars
        given["dsn"] = resolve_dsn(given.get("dsn"))  # --dsn / BXBATCH_DSN, then DATABASE_URL
        return Settings(**given).validate()


def flags_of(annotation: Any) -> Flags | None:
    """The ``Flags`` of an ``Annotated[Settings, Flags(...)]`` annotation, else None."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Flags)), None)
    return None


# The options most commands take, and those of a command that connects and prints.
BASIC = ("dsn", "migration", "log_format", "debug")
