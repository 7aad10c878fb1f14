"""Trigger phase: the migration's trigger on every user table, a small group of tables per short transaction.

User tables are the names of the migration's ``[user_tables]`` form matched exactly (regex, never
``LIKE``) whose id is in its registry table. Each table gets the statement-level triggers of
``[trigger.events]`` calling ``[trigger] function`` with the table id as argument (the Baserow
expansion: three activity triggers calling ``log_table_activity_stmt``, its ddl/009, with
transition tables: one INSERT ... SELECT per statement instead of a plpgsql call and an INSERT per
row, benchmarks/trigger_overhead.py).

A transaction covers ``trigger_group_size`` tables (a handful of locks each, far below
``max_locks_per_transaction``; one transaction over thousands of tables would exhaust it). It
takes SHARE ROW EXCLUSIVE on the group's tables with NOWAIT, so a group never queues the
application behind a busy table: a busy table is set aside and installed alone afterwards,
waiting at most ``lock_timeout`` per attempt, retried with backoff. Under that lock every earlier
insert has committed and every later one fires the trigger, so ``max(id)`` read in the same
transaction is the table's high-water mark (``[trigger] high_water``), recorded in
``bxbatch.trigger_install`` with the install: a per-table job reads rows up to it, the trigger
sees the rest. A committed group is
never redone (resumable); installing on a table that has the triggers is a no-op (idempotent).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from bxbatch.db.locks import lock_budget
from bxbatch.db.render import render
from bxbatch.db.retry import RetryPolicy, is_retryable, retry
from bxbatch.db.session import qualified, quote_ident
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger import installs
from bxbatch.migrations.loader import TriggerSpec, load_migration
from bxbatch.migrations.profile import Profile
from bxbatch.observe import progress
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

Q = queries("triggers")

Table = tuple[int, str]  # (user table id, relname)


async def _user_table_rows(conn: asyncpg.Connection, profile: Profile, lacking: list[str] | None) -> list[Any]:
    if not profile.has_user_tables:
        return []
    sql = render(Q["user_tables"], registry=(profile.schema, str(profile.user_table_registry)))
    return list(await conn.fetch(sql, profile.schema, profile.user_table_regex_sql, lacking))


async def user_tables(conn: asyncpg.Connection, profile: Profile) -> list[Table]:
    """(table_id, relname) of every user table: name matched exactly and id known to the registry table."""
    return [(r["table_id"], r["relname"]) for r in await _user_table_rows(conn, profile, None)]


def create_sql(spec: TriggerSpec, table: str, table_id: int, missing: list[str]) -> str:
    """CREATE TRIGGER statements of the ``missing`` triggers of ``spec`` on ``table`` (quoted), for ``table_id``."""
    function = qualified(spec.schema, spec.function)
    parts = []
    for name in missing:
        timing, event, *referencing = spec.events[name].split(maxsplit=2)  # "AFTER UPDATE REFERENCING ..."
        parts.append(
            f"CREATE TRIGGER {quote_ident(name)} {timing} {event} ON {table} {' '.join(referencing)} "
            f"FOR EACH STATEMENT EXECUTE PROCEDURE {function}('{int(table_id)}')"
        )
    return ";\n".join(parts)


class GroupBusy(Exception):
    """A table of a group was locked by someone else (NOWAIT) or vanished: install its tables one by one."""


async def _install_locked(
    conn: asyncpg.Connection, spec: TriggerSpec, profile: Profile, tables: list[Table], run_id: int | None
) -> dict[int, int]:
    """Inside the group's transaction, with the tables locked: create what is missing, record high-water marks."""
    names = [qualified(profile.schema, rel) for _tid, rel in tables]
    present: dict[str, set[str]] = {}
    for r in await conn.fetch(Q["present_triggers"], names, list(spec.events) + list(spec.legacy)):
        present.setdefault(r["relname"], set()).add(r["tgname"])
    ddl: list[str] = []
    for (tid, rel), table in zip(tables, names, strict=True):
        have = present.get(rel, set())
        ddl += [f"DROP TRIGGER {quote_ident(old)} ON {table}" for old in spec.legacy if old in have]
        missing = [t for t in spec.events if t not in have]
        if missing:
            ddl.append(create_sql(spec, table, tid, missing))
    if ddl:
        await conn.execute(";\n".join(ddl))
    hw = quote_ident(spec.high_water)
    hw_sql = " UNION ALL ".join(
        f"SELECT {int(tid)} AS table_id, coalesce(max({hw}), 0)::bigint AS hw FROM {table}"
        for (tid, _rel), table in zip(tables, names, strict=True)
    )
    marks = {int(r["table_id"]): int(r["hw"]) for r in await conn.fetch(hw_sql)}
    # A table installed earlier keeps its first mark: rows above it were logged by the trigger.
    return await installs.record_installs(conn, tables, marks, run_id)


async def _install_group(
    conn: asyncpg.Connection,
    settings: Settings,
    profile: Profile,
    tables: list[Table],
    run_id: int | None,
    *,
    wait: bool,
) -> dict[int, int]:
    """One transaction. ``wait`` False: lock with NOWAIT and raise GroupBusy rather than queue."""
    names = ", ".join(qualified(profile.schema, rel) for _tid, rel in tables)
    async with conn.transaction():
        await conn.execute(
            f"SET LOCAL lock_timeout = {int(settings.lock_timeout_ms)}; "
            f"SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}"
        )
        if wait:
            await conn.execute(f"LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE")
        else:
            try:
                async with conn.transaction():  # a savepoint: a busy table must not abort the group silently
                    await conn.execute(f"LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE NOWAIT")
            except (asyncpg.LockNotAvailableError, asyncpg.UndefinedTableError) as exc:
                raise GroupBusy(type(exc).__name__) from exc
        return await _install_locked(conn, _spec(settings), profile, tables, run_id)


async def install_tables(
    conn: asyncpg.Connection,
    settings: Settings,
    profile: Profile,
    tables: list[Table],
    run_id: int | None,
    *,
    log: Any = None,
    on_done: Any = None,
    group_size: int | None = None,
) -> dict[int, int]:
    """Install on ``tables`` in groups of ``group_size`` (default ``--trigger-group-size``); busy tables
    alone afterwards. Returns table_id -> high-water mark."""
    done: dict[int, int] = {}
    busy: list[Table] = []
    size = max(1, group_size or settings.trigger_group_size)
    ordered = sorted(tables)  # one lock order for every bxbatch process
    for start in range(0, len(ordered), size):
        group = ordered[start : start + size]
        try:
            marks = await _install_group(conn, settings, profile, group, run_id, wait=False)
        except Exception as exc:
            # A busy or vanished table, or a transient failure (deadlock, timeout): the group's
            # tables go in one by one, each with its own lock wait and retries.
            if not (isinstance(exc, GroupBusy) or is_retryable(exc)):
                raise
            if log is not None and not isinstance(exc, GroupBusy):
                log.warning("trigger_group_retry_alone", tables=len(group), error=type(exc).__name__)
            busy += group
            continue
        done.update(marks)
        if on_done is not None:
            on_done(len(group))
    for table in busy:
        hw = await _install_alone(conn, settings, profile, table, run_id, log)
        if hw >= 0:
            done[table[0]] = hw
        if on_done is not None:
            on_done(1)
    return done


# One table, waiting up to lock_timeout for its lock, then backing off and trying again (db/retry.py).
TRIGGER_RETRY = RetryPolicy(event="trigger_retry")


async def _install_alone(
    conn: asyncpg.Connection, settings: Settings, profile: Profile, table: Table, run_id: int | None, log: Any
) -> int:
    """One table, waiting up to lock_timeout for its lock, retried with backoff. -1: the table is gone."""
    name = qualified(profile.schema, table[1])

    async def install() -> int:
        if await conn.fetchval("SELECT to_regclass($1)", name) is None:
            return -1  # dropped by the application meanwhile: nothing to install or seed
        try:
            marks = await _install_group(conn, settings, profile, [table], run_id, wait=True)
        except asyncpg.UndefinedTableError:
            if await conn.fetchval("SELECT to_regclass($1)", name) is None:
                return -1  # dropped between the check and the lock
            raise
        return marks[table[0]]

    return await retry(install, TRIGGER_RETRY.for_settings(settings), log=log, fields={"table": table[1]})


async def install_one(
    conn: asyncpg.Connection, settings: Settings, profile: Profile, table_id: int, relname: str, run_id: int | None
) -> int:
    """Install on one table (idempotent) and return its high-water mark (-1: the table is gone)."""
    return await _install_alone(conn, settings, profile, (table_id, relname), run_id, None)


def _spec(settings: Settings) -> TriggerSpec:
    spec = load_migration(settings.migration).trigger
    assert spec is not None, "installs happen only for a migration with a [trigger]"
    return spec


async def install_missing(ctx: RunContext, *, show_progress: bool = False) -> dict[int, int]:
    """Install on every user table lacking one of the triggers. Returns table_id -> high_water of those."""
    spec = ctx.migration.trigger
    if spec is None:
        return {}  # a migration without a per-table trigger
    installed = await installs.installed_ids(ctx.conn)
    rows = await _user_table_rows(ctx.conn, ctx.profile, list(spec.events))
    todo = [(int(r["table_id"]), str(r["relname"])) for r in rows]
    for table_id, relname in todo:
        if table_id in installed:
            ctx.log.warning("activity_trigger_missing", table=relname, action="installed again, first high-water kept")
    if not todo:
        return {}
    bar = progress.bar(ctx.settings, len(todo), f"{spec.label}s", unit="table") if show_progress else None
    budget = await lock_budget(ctx.conn, ctx.settings, ctx.profile.schema)
    try:
        return await install_tables(
            ctx.conn,
            ctx.settings,
            ctx.profile,
            todo,
            ctx.run_id,
            log=ctx.log,
            on_done=bar.update if bar is not None else None,
            group_size=min(ctx.settings.trigger_group_size, budget.group_size),  # never past the lock budget
        )
    finally:
        if bar is not None:
            bar.close()


async def run(ctx: RunContext) -> dict[str, Any]:
    t0 = time.monotonic()
    done = await install_missing(ctx, show_progress=True)
    total = await installs.installed_count(ctx.conn)
    seconds = time.monotonic() - t0
    ctx.log.debug("triggers_installed", tables=len(done), total=total, seconds=round(seconds, 3))
    return {
        "installed": len(done),
        "tables_with_trigger": total,
        "group_size": ctx.settings.trigger_group_size,
        "label": ctx.migration.trigger.label if ctx.migration.trigger is not None else None,  # for the summary
    }
