"""`bxbatch preflight | backup | plan | validate | rollback`: the operator's safety net around a run."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from bxbatch.cli.app import command
from bxbatch.cli.options import BASIC, Flags
from bxbatch.cli.signals import drive
from bxbatch.errors import RollbackRefused
from bxbatch.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


@command()
def preflight(
    settings: Annotated[Settings, Flags(*BASIC, "skip_disk_check", "long_transaction_s", "table_group_size")],
    as_json: JsonOpt = False,
) -> None:
    """Check that the database is ready for the migration, changing nothing.

    Prints one row per check (pass / warn / fail, and why): server version (>= 12), the role's
    privileges, base tables and columns, free disk against database size, max_locks_per_transaction,
    maintenance_work_mem, another bxbatch run holding the lock, long transactions. Exit 4 when any
    check fails (7 when only the lock is held); `bxbatch run` refuses to start in the same cases.
    """
    from bxbatch.db.session import connect
    from bxbatch.phases.preflight import collect, raise_for, render

    async def go() -> Any:
        conn = await connect(settings, role="preflight")
        try:
            return await collect(conn, settings)
        finally:
            await conn.close()

    report = drive(go, settings.stop_grace_s)
    print(json.dumps(report.as_dict(), indent=2, default=str) if as_json else render(report))
    if not report.ok:
        raise_for(report)


@command()
def backup(
    settings: Annotated[Settings, Flags(*BASIC, "progress", "backup_path", "pg_dump")],
    as_json: JsonOpt = False,
) -> None:
    """Take a verified backup now: `pg_dump -Fc` to --backup-path, checked with `pg_restore --list`.

    The connection reaches pg_dump through libpq environment variables, never its command line.
    Exit 11 when pg_dump is missing, older than the server, fails, or the archive does not verify.
    Restore it with: pg_restore --clean --if-exists --no-owner -d DBNAME FILE
    """
    from bxbatch.db.session import connect
    from bxbatch.phases.backup import take_backup

    backup_path = "." if settings.backup_path is None else settings.backup_path  # no --backup-path: here

    async def go() -> Any:
        conn = await connect(settings, role="backup")
        try:
            return await take_backup(conn, settings, backup_path)
        finally:
            await conn.close()

    result = drive(go, settings.stop_grace_s)
    figures = {
        "path": str(result.path),
        "bytes": result.bytes,
        "seconds": result.seconds,
        "toc_entries": result.toc_entries,
        "pg_dump": result.pg_dump_version,
    }
    if as_json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"backup verified: {result.path} ({result.bytes / 1024**2:.1f} MiB, {result.toc_entries} archive "
            f"entries, {result.seconds:.1f}s, {result.pg_dump_version})"
        )


@command()
def plan(
    settings: Annotated[
        Settings,
        Flags(
            *BASIC,
            "concurrency",
            "target_chunk_ms",
            "initial_chunk_rows",
            "lock_timeout_ms",
            "table_group_size",
        ),
    ],
    sql: Annotated[bool, typer.Option("--sql", help="Print each pending statement (DDL files and indexes).")] = False,
    as_json: JsonOpt = False,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample",
            envvar="BXBATCH_PLAN_SAMPLE",
            help="Time a few real chunks of every backfill in one transaction that is rolled back "
            "(the pending schema files are applied inside it first, under --lock-timeout-ms), and "
            "estimate from their measured cost instead of default costs.",
        ),
    ] = False,
    sample_chunks: Annotated[
        int,
        typer.Option(
            "--sample-chunks",
            envvar="BXBATCH_PLAN_SAMPLE_CHUNKS",
            min=1,
            max=50,
            help="Chunks timed per backfill with --sample, spread over the key range.",
        ),
    ] = 3,
) -> None:
    """Show what a run would do and how long it should take, changing nothing.

    Every phase with its state; pending DDL files; user tables to get the activity trigger;
    each backfill job with estimated rows (planner statistics), chunks and duration; every index
    and foreign key still to build or validate. Estimates use --concurrency and the chunk options
    as `run` would.
    """
    from bxbatch.ops.plan import build_plan, render

    result = drive(lambda: build_plan(settings, sample=sample, sample_chunks=sample_chunks), settings.stop_grace_s)
    print(json.dumps(result, indent=2, default=str) if as_json else render(result, sql=sql))


@command()
def validate(
    settings: Annotated[Settings, Flags(*BASIC, "progress", "concurrency", "table_group_size")],
    as_json: JsonOpt = False,
) -> None:
    """Prove the migration: every expected table, column, index (valid) and constraint (validated).

    Each backfill is compared with what the base tables imply, both ways (missing and extra rows,
    with sample keys): enhanced views, permissions, the activity seeding of every user table; the
    activity trigger on every user table and no other; no orphans. One read-only snapshot, exported
    once and read by --concurrency connections, a group of user tables per transaction. Exit 9
    when anything is wrong.
    """
    from bxbatch.phases.validate import raise_for, render, validate_database

    report = drive(lambda: validate_database(settings), settings.stop_grace_s)
    print(json.dumps(report.as_dict(), indent=2, default=str) if as_json else render(report))
    if not report.ok:
        raise_for(report)


@command()
def rollback(
    settings: Annotated[Settings, Flags(*BASIC, "progress", "lock_timeout_ms")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Roll back without asking (for scripts). On a terminal, without it, bxbatch shows what it "
            "would drop and asks for the database name. No environment variable can say yes.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Roll back even though the new tables hold data the application wrote after the "
            "migration (comments, dashboards, newer activity); that data is lost.",
        ),
    ] = False,
    show_plan: Annotated[
        bool, typer.Option("--plan", help="Show what it would drop, by kind, with row counts, and stop.")
    ] = False,
    show_sql: Annotated[bool, typer.Option("--sql", help="With --plan: every step and its statement.")] = False,
    drop_history: Annotated[
        bool,
        typer.Option(
            "--drop-history",
            help="Also drop the run history (schema bxbatch_history, which a rollback otherwise keeps for "
            "`bxbatch history` and `bxbatch report`): the catalog is then exactly as before bxbatch.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove what bxbatch added, in reverse order: activity triggers, foreign keys, indexes, the new
    tables, the trigger functions, and the bxbatch schema last.

    Base tables and objects the install had before bxbatch are never touched. Each step is a short
    transaction recorded in the ledger: an interrupted rollback continues where it stopped, and a
    second one is a no-op. Refuses (exit 12) without --yes, and when the new tables hold application
    data unless --force. The alternative is restoring the backup taken by `run --backup-path`.
    """
    from bxbatch.ops.rollback import render_summary, rollback_database, rollback_plan

    if show_plan or (not yes and sys.stdin.isatty() and not as_json):
        listing = drive(lambda: rollback_plan(settings), settings.stop_grace_s)
        if as_json:
            print(json.dumps(listing, indent=2))
            return
        if not listing["steps"]:
            print("nothing to roll back")
            return
        for line in render_summary(listing["summary"]):
            print(line)
        for item in listing["application_data"]:
            print(f"application data: {item}")
        if show_plan:
            if show_sql:
                for step in listing["steps"]:
                    print(f"{step['step']:<50} {step['sql']}")
            return
        database = listing["summary"]["database"]
        typed = typer.prompt(f"type the database name ({database}) to roll back, anything else to stop", default="")
        if typed.strip() != database:
            raise RollbackRefused(
                f"rollback not confirmed ({typed.strip()!r} is not {database!r}); nothing was changed"
            )
        yes = True
    result = drive(
        lambda: rollback_database(settings, confirmed=yes, force=force, drop_history=drop_history),
        settings.stop_grace_s,
    )
    if as_json:
        print(
            json.dumps(
                {
                    "steps": [s.key for s in result.steps],
                    "done": result.done,
                    "skipped": result.skipped,
                    "seconds": result.seconds,
                },
                indent=2,
            )
        )
    elif not result.steps:
        print("nothing to roll back")
    else:
        print(f"rolled back: {result.done} steps ({result.skipped} already done) in {result.seconds:.1f}s")
