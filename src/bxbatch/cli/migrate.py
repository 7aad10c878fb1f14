"""`bxbatch run | resume | status`: apply the migration, continue it, and show where it stands.

Like every command module, it imports the library inside the commands: `--help` stays quick.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from bxbatch.cli.app import command
from bxbatch.cli.boundary import printable
from bxbatch.cli.options import BASIC, EVERY, Flags
from bxbatch.cli.signals import drive
from bxbatch.observe.console import summary_lines
from bxbatch.settings import CONNECTION, OUTPUT, Settings

RunSettings = Annotated[Settings, Flags(*EVERY)]  # every option Settings has


def _print_summary(summary: Any) -> None:
    for line in summary_lines(summary):  # one line per phase, one per backfill job (console.py)
        print(line)


@command()
def run(
    settings: RunSettings,
    join: Annotated[
        bool,
        typer.Option(
            "--join",
            help="Add this process's workers to the run another process owns, with that run's settings "
            "(without it, a second `run` is refused with exit 7 while the owner lives).",
            rich_help_panel=CONNECTION,
        ),
    ] = False,
) -> None:
    """Run the migration: every phase in order. Continues an unfinished run if there is one (and
    repairs what `validate` found missing). One process owns a run: a second one is refused (exit 7)
    unless --join."""
    from bxbatch.ops.run import run_migration

    _print_summary(drive(lambda: run_migration(settings, command="run", join=join), settings.stop_grace_s))


@command()
def resume(settings: RunSettings) -> None:
    """Continue the last unfinished run from the ledger; refuses (exit 10) when there is none."""
    from bxbatch.ops.run import run_migration

    _print_summary(drive(lambda: run_migration(settings, resume_only=True, command="resume"), settings.stop_grace_s))


@command()
def status(
    settings: Annotated[Settings, Flags(*BASIC)],
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Machine-readable output (schema: README, "Status").', rich_help_panel=OUTPUT),
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
) -> None:
    """Show the run: one headline state (RUNNING, PAUSED, HELD, THROTTLED, STALLED, FAILED, INTERRUPTED,
    COMPLETED...), then phases, jobs (rows, rates, ETA), live workers, throttle. Changes nothing."""
    from bxbatch.ops.status import CHECK_EXIT, collect_status, render_status, to_json

    while True:  # `--watch` refreshes (not a retry)
        report = drive(lambda: collect_status(settings), settings.stop_grace_s)
        if watch and sys.stdout.isatty() and not as_json:
            print("\x1b[2J\x1b[H", end="")  # clear the screen between refreshes
        print(to_json(report) if as_json else printable(render_status(report)), flush=True)
        if not watch:
            break
        time.sleep(watch)
    if check:
        raise typer.Exit(int(CHECK_EXIT[report["state"]]))
