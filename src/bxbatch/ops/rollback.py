"""``bxbatch rollback``: remove what bxbatch added, in reverse order, each step recorded and resumable.

Order: the migration's triggers on user tables, foreign keys, indexes, the new tables of its ddl/,
its functions, and the ``bxbatch`` schema (the ledger) last. What to remove is derived from
the DDL parse trees and the catalog, minus what the install already had before bxbatch first
changed anything (``bxbatch.preexisting``): base tables are never touched. Each step is one
short transaction under lock_timeout (retried), recorded in ``bxbatch.rollback_step`` in the
same transaction, so an interrupted rollback continues where it stopped; every statement is
also ``IF EXISTS``, so a second rollback is a no-op.

The alternative is restoring the verified backup (README, "Rolling back").
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bxbatch.db.locks import lock_budget
from bxbatch.db.retry import RetryPolicy, is_retryable, retry
from bxbatch.db.session import connect, qualified, quote_ident
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import LockBusy, RollbackRefused
from bxbatch.ledger import runs as ledger
from bxbatch.ledger.preexisting import preexisting, safety_ledger_present
from bxbatch.migrations.loader import Migration, load_migration
from bxbatch.observe.history import archive_runs, record_rollback
from bxbatch.observe.log import get_logger
from bxbatch.phases.preflight_server import check_other_run
from bxbatch.settings import Settings

Q = queries("rollback")
SCHEMA_STEP = "schema:bxbatch"
TRIGGER_DROP_GROUP = 50  # user tables whose triggers one rollback transaction drops, at most (and the lock budget)
# read by rollback itself (ledger present, steps done, objects kept, the run's end, live workers)
LEDGER_KEPT_TO_THE_END = ("run", "rollback_step", "preexisting", "worker", "control")
HISTORY_STEP = "schema:bxbatch_history"
# before the first ledger table goes: every run's history and report data into bxbatch_history
ARCHIVE_STEP = "ledger:(archive the run history)"
# a step waits at most lock_timeout for its table, then backs off and runs again (db/retry.py)
ROLLBACK_RETRY = RetryPolicy(event="rollback_retry")


TRIGGER_BATCH = 1000  # user tables read from the catalog at a time by a rollback (keyset; memory stays bounded)


@dataclass(frozen=True, slots=True)
class Step:
    key: str  # kind:name, unique; the ledger records it
    sql: str = ""  # empty for a trigger step a rollback did: its DROP TRIGGERs are built when its group runs
    table: str | None = None  # a trigger step: the qualified user table (steps of several tables share a transaction)


@dataclass(frozen=True, slots=True)
class TriggerTable:
    """A user table that still has the migration's triggers (one catalog row of a keyset batch)."""

    relname: str
    table: str  # qualified
    triggers: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"trigger:{self.relname}"

    @property
    def sql(self) -> str:
        return "; ".join(f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {self.table}" for name in self.triggers)


@dataclass
class RollbackResult:
    steps: list[Step]  # every step of this rollback in order (trigger steps by key only)
    done: int
    skipped: int
    seconds: float
    app_data: list[str]


async def trigger_tables(
    conn: asyncpg.Connection, migration: Migration, *, batch: int = TRIGGER_BATCH
) -> AsyncIterator[list[TriggerTable]]:
    """The user tables that still have the migration's triggers, in name order, ``batch`` at a time.

    Read from the catalog as it is when each batch is asked for (keyset on the table name): a
    table whose triggers a group dropped is gone from it, a table left busy is behind the key."""
    after = ""
    while True:
        rows = await conn.fetch(Q["trigger_tables"], migration.schema, list(migration.expected.functions), after, batch)
        if not rows:
            return
        yield [TriggerTable(r["relname"], qualified(migration.schema, r["relname"]), tuple(r["tgnames"])) for r in rows]
        after = rows[-1]["relname"]


async def count_trigger_tables(conn: asyncpg.Connection, migration: Migration) -> int:
    if not await ledger.ledger_exists(conn):
        return 0
    return int(await conn.fetchval(Q["trigger_tables_count"], migration.schema, list(migration.expected.functions)))


async def plan_steps(
    conn: asyncpg.Connection, migration: Migration, *, drop_history: bool = False, triggers: bool = True
) -> list[Step]:
    """The steps still to do, in order, from the catalog as it is now.

    With ``triggers`` (the listing of ``rollback --plan``) one step a user table with its SQL; a
    rollback itself passes False and reads those tables in keyset batches as it goes.
    The run history (``bxbatch_history``: every run's summary and report data, archived in the
    last step's transaction) stays, unless ``drop_history``: then the catalog is exactly as before."""
    schema = migration.schema
    exp = migration.expected
    ledger_present = await ledger.ledger_exists(conn)
    history = [Step(HISTORY_STEP, "DROP SCHEMA IF EXISTS bxbatch_history CASCADE")] if drop_history else []
    if not ledger_present:
        # no ledger: bxbatch never ran here, or its rollback finished (its archive may remain)
        return (
            history
            if drop_history and await conn.fetchval("SELECT to_regnamespace('bxbatch_history') IS NOT NULL")
            else []
        )
    kept = await preexisting(conn)
    steps: list[Step] = []
    if triggers:
        async for batch in trigger_tables(conn, migration):
            steps.extend(Step(t.key, t.sql, t.table) for t in batch)
    present_fks = {
        r["conname"]: r["relname"]
        for r in await conn.fetch(Q["constraints_present"], schema, [c.name for c in exp.foreign_keys])
    }
    for con in reversed(exp.foreign_keys):
        if con.name in present_fks and ("constraint", con.name) not in kept:
            table = present_fks[con.name]
            steps.append(
                Step(
                    f"constraint:{con.name}",
                    f"ALTER TABLE {qualified(schema, table)} DROP CONSTRAINT IF EXISTS {quote_ident(con.name)}",
                )
            )
    present = {r["relname"] for r in await conn.fetch(Q["relations_present"], schema, [*exp.indexes, *exp.tables])}
    for name in reversed(list(exp.indexes)):
        if name in present and ("index", name) not in kept:
            steps.append(Step(f"index:{name}", f"DROP INDEX IF EXISTS {qualified(schema, name)}"))
    added = [f"{table}.{column}" for table, column in exp.added_columns]
    columns = {r["name"] for r in await conn.fetch(Q["added_columns_present"], schema, added)}
    for table, column in reversed(exp.added_columns):  # columns added to base tables: the tables stay
        name = f"{table}.{column}"
        if name in columns and ("column", name) not in kept:
            sql = f"ALTER TABLE {qualified(schema, table)} DROP COLUMN IF EXISTS {quote_ident(column)}"
            steps.append(Step(f"column:{name}", sql))
    for table in reversed(list(exp.tables)):
        if table in present and ("table", table) not in kept:
            steps.append(Step(f"table:{table}", f"DROP TABLE IF EXISTS {qualified(schema, table)}"))
    for fn, fn_schema in exp.functions.items():
        if ("function", fn) not in kept and await conn.fetchval(Q["function_present"], fn_schema, fn):
            steps.append(Step(f"function:{fn}", f"DROP FUNCTION IF EXISTS {qualified(fn_schema, fn)}()"))
    # The ledger table by table, then the schema: one DROP SCHEMA ... CASCADE over every ledger table,
    # index, sequence and row type takes a lock on each in one transaction (hundreds: more than a small
    # lock table holds). The tables a rollback reads until its last step go with the schema.
    if not drop_history:
        steps.append(Step(ARCHIVE_STEP, "SELECT 'every run''s summary and report data into bxbatch_history'"))
    for r in await conn.fetch(Q["ledger_tables"], list(LEDGER_KEPT_TO_THE_END)):
        steps.append(
            Step(f"ledger:{r['relname']}", f"DROP TABLE IF EXISTS {qualified('bxbatch', r['relname'])} CASCADE")
        )
    steps.append(Step(SCHEMA_STEP, "DROP SCHEMA IF EXISTS bxbatch CASCADE"))
    return steps + history


async def application_data(conn: asyncpg.Connection, migration: Migration) -> list[str]:
    """Data in the new tables that no bxbatch backfill wrote: what a rollback would destroy.

    Tables no job writes must be empty; the migration's rollback guards count rows added to the
    others after the last run ended (entries the application logged, permissions it granted)."""
    exp, schema = migration.expected, migration.schema
    targets = {job.target for job in migration.jobs}
    kept = {name for kind, name in await preexisting(conn) if kind == "table"}
    present = {r["relname"] for r in await conn.fetch(Q["relations_present"], schema, list(exp.tables))}
    found: list[str] = []
    for table in exp.tables:
        if table in present and table not in kept and table not in targets:
            sql = f"SELECT EXISTS (SELECT 1 FROM {qualified(schema, table)})"
            if await conn.fetchval(sql):
                found.append(f"{table} has rows (no backfill writes it: the application did)")
    run_end = await conn.fetchval(Q["last_run_end"])
    if run_end is not None:
        for guard in migration.guards:
            if guard.table in present and guard.table not in kept:
                n = await conn.fetchval(migration.rollback_queries[guard.query], run_end)
                if n:
                    found.append(guard.message.format(n=n, run_end=f"{run_end:%Y-%m-%d %H:%M}"))
    return found


async def rollback(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    force: bool = False,
    drop_history: bool = False,
    log: Any = None,
) -> RollbackResult:
    """Run the remaining steps. Refuses (RollbackRefused) when new tables hold application data, unless ``force``.

    Before the ledger is dropped, in the same transaction, every run's history and report data
    is archived in ``bxbatch_history`` (observe/history.py), unless ``drop_history``."""
    log = log or get_logger("bxbatch")
    started = time.monotonic()
    started_at = datetime.now(UTC)
    async with ledger.advisory_lock(conn, ledger.LOCK_DDL, "changing the schema"):
        other = await check_other_run(conn, settings)
        if other.status != "pass":  # a run in progress (lock or live workers): never pull the schema from under it
            raise LockBusy(other.reason, hint="wait for the run to finish, or `bxbatch cancel` it first")
        migration = load_migration(settings.migration)
        steps = await plan_steps(conn, migration, drop_history=drop_history, triggers=False)
        if not steps:
            log.info("rollback_nothing_to_do")
            return RollbackResult([], 0, 0, 0.0, [])
        app_data = await application_data(conn, migration)
        if app_data and not force:
            raise RollbackRefused(
                f"rollback would destroy data written by the application: {'; '.join(app_data[:3])}",
                hint="export what you need first, then pass --force; or restore the verified backup instead",
            )
        # trigger steps are not in it: the catalog lists the tables whose triggers are left (and a group's
        # drops and its ledger rows commit together), so a resumed rollback needs no set of them
        done_keys = (
            {r["step"] for r in await conn.fetch(Q["steps_done"])} if await safety_ledger_present(conn) else set()
        )
        pending = [s for s in steps if s.key not in done_keys]
        skipped = len(steps) - len(pending)
        group_tables = min(TRIGGER_DROP_GROUP, (await lock_budget(conn, settings)).group_size)
        triggers_done = await _drop_triggers(conn, settings, migration, group_tables, log)
        done = len(triggers_done)
        for step in pending:
            t0 = time.monotonic()

            async def apply(step: Step = step, t0: float = t0) -> None:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(settings.lock_timeout_ms)}")
                    await conn.execute(f"SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}")
                    if step.key == ARCHIVE_STEP:
                        archived = await archive_runs(conn)
                        log.info("rollback_history_archived", runs=archived, schema="bxbatch_history")
                    if step.key == SCHEMA_STEP and not drop_history:
                        total = len(triggers_done) + len(steps)
                        await record_rollback(conn, settings.host, started_at, steps_total=total)
                    await conn.execute(step.sql)
                    if step.key != SCHEMA_STEP and await safety_ledger_present(conn):
                        await conn.execute(Q["record_step"], step.key, int((time.monotonic() - t0) * 1000))

            await retry(apply, ROLLBACK_RETRY.for_settings(settings), log=log, fields={"step": step.key})
            done += 1
            log.info("rollback_step_done", step=step.key, ms=int((time.monotonic() - t0) * 1000))
    seconds = round(time.monotonic() - started, 3)
    log.info("rollback_finished", steps=done, skipped=skipped, seconds=seconds)
    return RollbackResult(triggers_done + steps, done, skipped, seconds, app_data)


async def _drop_triggers(
    conn: asyncpg.Connection, settings: Settings, migration: Migration, group_tables: int, log: Any
) -> list[Step]:
    """Every user table's triggers, ``group_tables`` tables a transaction, read from the catalog in keyset
    batches (memory: a batch, plus a key a table done). A group with a busy table is retried table by
    table; a table still busy is set aside and done alone, waiting for its lock, after the others."""
    done: list[Step] = []
    busy: list[TriggerTable] = []
    async for batch in trigger_tables(conn, migration, batch=max(TRIGGER_BATCH, group_tables)):
        for start in range(0, len(batch), group_tables):
            group = batch[start : start + group_tables]
            if await _drop_trigger_group(conn, settings, group):
                done.extend(Step(t.key) for t in group)
                log.info("rollback_steps_done", steps=len(group), first=group[0].key, last=group[-1].key)
                continue
            for one in group if len(group) > 1 else []:  # a table of the group is in use: find it
                if await _drop_trigger_group(conn, settings, [one]):
                    done.append(Step(one.key))
                    log.info("rollback_step_done", step=one.key)
                else:
                    busy.append(one)
            if len(group) == 1:
                busy.append(group[0])
    for one in busy:
        t0 = time.monotonic()

        async def apply(one: TriggerTable = one, t0: float = t0) -> None:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(settings.lock_timeout_ms)}")
                await conn.execute(f"SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}")
                await conn.execute(one.sql)
                if await safety_ledger_present(conn):
                    await conn.execute(Q["record_step"], one.key, int((time.monotonic() - t0) * 1000))

        await retry(apply, ROLLBACK_RETRY.for_settings(settings), log=log, fields={"step": one.key})
        done.append(Step(one.key))
        log.info("rollback_step_done", step=one.key, ms=int((time.monotonic() - t0) * 1000))
    return done


async def _drop_trigger_group(conn: asyncpg.Connection, settings: Settings, group: list[TriggerTable]) -> bool:
    """The triggers of a group of user tables in one transaction, recorded with it. The tables are locked
    NOWAIT (DROP TRIGGER takes ACCESS EXCLUSIVE): a busy table, or any retryable failure, leaves the
    group to the one-table-per-transaction path (False), so a group never queues the application."""
    t0 = time.monotonic()
    names = ", ".join(t.table for t in group)
    try:
        async with conn.transaction():
            await conn.execute(
                f"SET LOCAL lock_timeout = {int(settings.lock_timeout_ms)}; "
                f"SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}"
            )
            await conn.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE NOWAIT")
            await conn.execute(";\n".join(t.sql for t in group))
            if await safety_ledger_present(conn):
                await conn.execute(Q["record_steps"], [t.key for t in group], int((time.monotonic() - t0) * 1000))
    except (asyncpg.LockNotAvailableError, asyncpg.UndefinedTableError):
        return False
    except Exception as exc:
        if not is_retryable(exc):
            raise
        return False
    return True


async def rollback_database(
    settings: Settings, *, confirmed: bool, force: bool = False, drop_history: bool = False
) -> RollbackResult:
    """The library call behind ``bxbatch rollback``: without ``confirmed`` it lists the steps and refuses."""
    conn = await connect(settings, role="rollback")
    try:
        if not confirmed:
            migration = load_migration(settings.migration)
            steps = await plan_steps(conn, migration, drop_history=drop_history, triggers=False)
            if not steps:
                return RollbackResult([], 0, 0, 0.0, [])
            tables = await count_trigger_tables(conn, migration)  # one trigger step a table, counted
            summary = await summarize(conn, steps, migration.schema, trigger_tables=tables)
            kinds = ", ".join(f"{n} {k}" for k, n in summary["kinds"].items() if k != "schema")
            total = tables + len(steps)
            raise RollbackRefused(
                f"rollback would run {total} step(s) ({kinds}, {summary['rows']:,} rows in dropped tables)",
                hint="on a terminal, confirm by typing the database name; in scripts pass --yes "
                "(`bxbatch rollback --plan` shows what it drops)",
            )
        return await rollback(conn, settings, force=force, drop_history=drop_history)
    finally:
        await conn.close()


ROW_COUNT_CAP = 1_000_000  # tables are counted exactly up to this many rows


async def summarize(
    conn: asyncpg.Connection, steps: list[Step], schema: str, *, trigger_tables: int = 0
) -> dict[str, Any]:
    """What the steps remove, by kind, with the rows of every table they drop (exact up to ROW_COUNT_CAP).

    ``trigger_tables``: trigger steps counted rather than listed in ``steps`` (rollback's own path)."""
    kinds: dict[str, int] = {"trigger": trigger_tables} if trigger_tables else {}
    tables: list[dict[str, Any]] = []
    for step in steps:
        kind, _, name = step.key.partition(":")
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "table":
            sql = f"SELECT count(*) FROM (SELECT 1 FROM {qualified(schema, name)} LIMIT {ROW_COUNT_CAP + 1}) s"
            rows = int(await conn.fetchval(sql))
            tables.append({"table": name, "rows": min(rows, ROW_COUNT_CAP), "more": rows > ROW_COUNT_CAP})
    tables.sort(key=lambda t: -t["rows"])
    return {
        "database": await conn.fetchval("SELECT current_database()"),
        "kinds": kinds,
        "tables": tables,
        "rows": sum(t["rows"] for t in tables),
    }


def render_summary(summary: dict[str, Any], limit: int = 8) -> list[str]:
    """A few lines: counts by kind, then the tables with the most rows."""
    labels = {
        "trigger": "triggers",
        "column": "added columns",
        "constraint": "foreign keys",
        "index": "indexes",
        "table": "tables",
        "function": "functions",
        "schema": "the bxbatch schema (ledger and run history)",
    }
    kinds = summary["kinds"]
    lines = [
        f"rollback of database {summary['database']} would drop: "
        + ", ".join(f"{n} {labels.get(k, k)}" if k != "schema" else labels[k] for k, n in kinds.items())
    ]
    shown = [t for t in summary["tables"] if t["rows"]][:limit]
    if shown:
        lines.append(f"  rows lost with the dropped tables: {summary['rows']:,}")
        for tbl in shown:
            lines.append(f"    {tbl['table']:<32} {tbl['rows']:>12,}{'+' if tbl['more'] else ''} rows")
        rest = [t for t in summary["tables"] if t["rows"]][limit:]
        if rest:
            lines.append(f"    ... and {len(rest)} more tables with {sum(t['rows'] for t in rest):,} rows")
    return lines


async def rollback_plan(settings: Settings) -> dict[str, Any]:
    conn = await connect(settings, role="rollback")
    try:
        migration = load_migration(settings.migration)
        steps = await plan_steps(conn, migration)
        app_data = await application_data(conn, migration) if steps else []
        return {
            "steps": [{"step": s.key, "sql": s.sql} for s in steps],
            "application_data": app_data,
            "summary": await summarize(conn, steps, migration.schema),
        }
    finally:
        await conn.close()
