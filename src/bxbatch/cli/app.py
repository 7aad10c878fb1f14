"""The typer app: command registration behind the error boundary, Settings from flags, --help layout."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from bxbatch import __version__
from bxbatch.cli.boundary import error_boundary
from bxbatch.cli.options import flags_of
from bxbatch.observe.console import target_line
from bxbatch.observe.log import configure, human_bytes
from bxbatch.settings import (
    CHUNKING,
    CONNECTION,
    INDEXES,
    LIVE_SAFETY,
    OBSERVABILITY,
    OUTPUT,
    SAFETY_NET,
    TIMEOUTS,
)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 internal error, 2 usage, 3 connection, 4 preflight, 5 changed SQL file, "
    "6 SQL error, 7 another bxbatch holds the lock, 8 completed with failures, 9 validation failed, "
    "10 nothing to resume, 11 backup failed, 12 rollback refused, 13 stopped for a fix (a table, column or "
    "privilege the run needs is missing: fix it, then `bxbatch resume`), 14 the server's lock table is full "
    "(lower --table-group-size; resumable), 75 interrupted (resumable: run `bxbatch resume`)."
)

# `bxbatch --help` lists the commands in the order an operator uses them.
WORKFLOW = (
    "demo",
    "preflight",
    "plan",
    "backup",
    "run",
    "status",
    "pause",
    "continue",
    "set",
    "hold-before",
    "release",
    "cancel",
    "resume",
    "validate",
    "rollback",
    "history",
    "report",
    "synth",
    "version",
)
# A command's --help: its options under these headings, in this order ("Options": the command's own).
PANELS = (CONNECTION, OUTPUT, CHUNKING, TIMEOUTS, INDEXES, "Options", LIVE_SAFETY, SAFETY_NET, OBSERVABILITY)


class WorkflowGroup(TyperGroup):
    """Commands in workflow order; options of each command in panels (connection, chunking, ...)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return sorted(names, key=lambda n: WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and not isinstance(cmd, TyperGroup):
            cmd.format_options = types.MethodType(_format_grouped_options, cmd)  # type: ignore[method-assign]
        return cmd


def _format_grouped_options(self: Any, ctx: Any, formatter: Any) -> None:
    """Options under their panel's heading, byte defaults in MiB (plain text: no boxes at 80 columns)."""
    panels: dict[str, list[tuple[str, str]]] = {}
    for param in self.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        flags, text = record
        if param.name and param.name.endswith("bytes") and isinstance(param.default, int) and param.default:
            text = text.replace(f"default: {param.default}", f"default: {human_bytes(param.default)}")
        panel = getattr(param, "rich_help_panel", None) or "Options"
        panels.setdefault(panel, []).append((flags, text))
    for panel in sorted(panels, key=lambda p: PANELS.index(p) if p in PANELS else len(PANELS)):
        with formatter.section(panel):
            formatter.write_dl(panels[panel])


def _version(value: bool) -> None:
    if value:
        print(f"bxbatch {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=WorkflowGroup,
    name="bxbatch",
    help=(
        "Apply the Baserow schema expansion to a live PostgreSQL install: schema, resumable chunked "
        "backfills, indexes, constraints and triggers, with progress and throttling.\n\n"
        "Connection: --dsn, else BXBATCH_DSN, else DATABASE_URL, else the libpq variables "
        "(PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE). Try `bxbatch demo` first: it needs no server.\n\n"
        + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print bxbatch's version and exit.")
    ] = False,
) -> None:
    """Apply the Baserow schema expansion to a live PostgreSQL install."""


def command(name: str | None = None) -> Callable[[F], F]:
    """``app.command`` behind the error boundary. A parameter ``settings: Annotated[Settings, Flags(...)]``
    reaches typer as one option per flag, and the command gets the Settings they make: validated,
    logging configured, and (when it takes --dsn) its target named on stderr first."""

    def register(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
        shown = name or fn.__name__.replace("_", "-")
        settings_param, flags = None, None
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            found = flags_of(hints.get(param.name))
            if found is None:  # keyword-only, all of them: typer calls with keywords, the order stays free
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[param.name]))
            else:
                settings_param, flags = param.name, found
                params.extend(found.parameters())
        clash = [p.name for p in params if [q.name for q in params].count(p.name) > 1]
        if clash:
            raise TypeError(f"{fn.__name__}: parameters named like a Settings field: {clash}")

        def invoke(**values: Any) -> Any:
            with error_boundary(debug=bool(values.get("debug"))):
                if flags is not None and settings_param is not None:
                    settings = flags.settings(values)
                    configure(settings.log_format, debug=settings.debug)
                    if "dsn" in flags.names:  # the demo names its own throwaway server
                        print(target_line(shown, settings), file=sys.stderr, flush=True)
                    values[settings_param] = settings
                return fn(**values)

        invoke.__name__, invoke.__qualname__, invoke.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        invoke.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]  # what typer reads
        invoke.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(invoke)
        return fn

    return register


@command()
def version() -> None:
    """Print bxbatch's version."""
    print(__version__)


def main() -> None:
    app()
