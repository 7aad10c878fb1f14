"""The trigger phase on thousands of user tables: every user table, nothing else, few locks at once, idempotent."""

from __future__ import annotations

import asyncio

import asyncpg
from tests.phase_support import DECOYS, many_tables_db, run_context

from bxbatch.migrations.loader import load_migration
from bxbatch.phases import triggers
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion

N_TABLES = 2000
GROUP = 10


async def trigger_map(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """relname -> sorted names of the triggers calling an activity function."""
    rows = await conn.fetch(
        "SELECT c.relname, array_agg(t.tgname::text ORDER BY t.tgname) AS names FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE NOT t.tgisinternal AND p.proname LIKE 'log\\_table\\_activity%' GROUP BY c.relname"
    )
    return {r["relname"]: list(r["names"]) for r in rows}


async def sample_locks(dsn: str, pid: int, stop: asyncio.Event) -> list[tuple[int, int]]:
    """(relation lock rows, distinct user tables locked) held by backend ``pid``, sampled continuously."""
    conn = await asyncpg.connect(dsn)
    seen: list[tuple[int, int]] = []
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                "SELECT count(*) AS locks, count(DISTINCT l.relation) FILTER "
                "(WHERE c.relname ~ '^database_table_[0-9]+$') AS user_tables "
                "FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation "
                "WHERE l.pid = $1 AND l.locktype = 'relation'",
                pid,
            )
            assert row is not None
            seen.append((int(row["locks"]), int(row["user_tables"])))
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return seen


async def test_trigger_on_every_user_table_and_nothing_else(pg_server, db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn = await many_tables_db(pg_server, db_factory, N_TABLES)
    conn = await conn_to(dsn)
    settings = Settings(dsn=dsn, trigger_group_size=GROUP, progress=False)
    ctx = await run_context(conn, settings)
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_locks(dsn, conn.get_server_pid(), stop))
    try:
        detail = await triggers.run(ctx)
    finally:
        stop.set()
    samples = await sampler
    assert detail["installed"] == N_TABLES and detail["tables_with_trigger"] == N_TABLES

    have = await trigger_map(conn)
    expected = sorted(MIGRATION.trigger.events)
    assert set(have) == {f"database_table_{i}" for i in range(1, N_TABLES + 1)}
    assert all(names == expected for names in have.values())
    assert not set(DECOYS) & set(have)
    # high-water marks: max(id) when installed (tables i % 7 == 0 hold 3 rows)
    marks = dict(await conn.fetch("SELECT table_id, high_water FROM bxbatch.trigger_install"))  # type: ignore[arg-type]
    assert len(marks) == N_TABLES
    assert all(marks[i] == (3 if i % 7 == 0 else 0) for i in range(1, N_TABLES + 1))

    # Never more than one group's tables locked at once, and a small number of lock rows overall.
    assert len(samples) > 50
    max_locks = max(s[0] for s in samples)
    max_tables = max(s[1] for s in samples)
    assert max_tables <= GROUP, max_tables
    assert max_locks <= 6 * GROUP + 10, max_locks  # table, its pkey and catalog locks
    print(f"trigger phase: {len(samples)} lock samples, max {max_locks} relation locks, {max_tables} user tables")

    # Idempotent: a second run installs nothing; installing again by hand is a no-op.
    again = await triggers.run(await run_context(conn, settings))
    assert again["installed"] == 0
    assert await triggers.install_one(conn, settings, ctx.profile, 7, "database_table_7", None) == 3
    assert (await trigger_map(conn))["database_table_7"] == expected
    # A trigger dropped by hand is put back by the next run; the table keeps its first mark.
    await conn.execute("DROP TRIGGER bxbatch_activity_upd ON database_table_14")
    await conn.execute("INSERT INTO database_table_14 (field_14) VALUES ('after')")
    fixed = await triggers.run(await run_context(conn, settings))
    assert fixed["installed"] == 1
    assert (await trigger_map(conn))["database_table_14"] == expected
    assert await conn.fetchval("SELECT high_water FROM bxbatch.trigger_install WHERE table_id = 14") == 3


async def test_busy_table_waits_alone_and_legacy_trigger_is_replaced(pg_server, db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn = await many_tables_db(pg_server, db_factory, N_TABLES)
    conn = await conn_to(dsn)
    app = await conn_to(dsn)
    # an earlier build's row-level trigger on table 3: replaced, so nothing is logged twice
    await conn.execute(
        "CREATE TRIGGER bxbatch_activity_log AFTER INSERT OR UPDATE OR DELETE ON database_table_3 "
        "FOR EACH ROW EXECUTE FUNCTION public.log_table_activity('3')"
    )
    await app.execute("BEGIN; INSERT INTO database_table_5 (field_5) VALUES ('in flight')")
    settings = Settings(dsn=dsn, trigger_group_size=GROUP, lock_timeout_ms=100, retry_base_ms=50, max_attempts=50)
    task = asyncio.ensure_future(
        triggers.install_tables(
            conn,
            settings,
            (await run_context(conn, settings)).profile,
            [(i, f"database_table_{i}") for i in range(1, 41)],
            None,
        )
    )
    await asyncio.sleep(0.8)
    # The other groups went in without waiting; table 5's group is set aside, its tables wait alone.
    installed = {r["table_id"] for r in await app.fetch("SELECT table_id FROM bxbatch.trigger_install")}
    assert set(range(11, 41)) <= installed and 5 not in installed
    await app.execute("COMMIT")
    marks = await asyncio.wait_for(task, 30)
    assert len(marks) == 40 and marks[5] == 1  # the in-flight row committed before the trigger: seeded, not logged
    await app.execute("INSERT INTO database_table_3 (field_3) VALUES ('once')")
    assert await app.fetchval("SELECT count(*) FROM database_activitylog WHERE table_id = 3") == 1
    assert (await trigger_map(conn))["database_table_3"] == sorted(MIGRATION.trigger.events)


class CapturedLog:
    """The events a phase logs, as (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def __getattr__(self, level: str) -> object:
        return lambda event, **fields: self.lines.append((level, event, fields))


async def test_a_lock_timeout_is_retried_through_the_one_retry_loop(pg_server, db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn = await many_tables_db(pg_server, db_factory, N_TABLES)
    conn = await conn_to(dsn)
    app = await conn_to(dsn)
    await app.execute("BEGIN; INSERT INTO database_table_9 (field_9) VALUES ('in flight')")  # ROW EXCLUSIVE
    settings = Settings(dsn=dsn, lock_timeout_ms=100, retry_base_ms=50, retry_max_ms=100, max_attempts=50)
    log = CapturedLog()
    profile = (await run_context(conn, settings)).profile
    task = asyncio.ensure_future(
        triggers.install_tables(conn, settings, profile, [(9, "database_table_9")], None, log=log)
    )
    await asyncio.sleep(1.0)
    assert not task.done()  # waiting in lock_timeout-bounded attempts, never queued behind the application for long
    await app.execute("COMMIT")
    marks = await asyncio.wait_for(task, 30)
    assert marks == {9: 1}
    retries = [fields for level, event, fields in log.lines if event == "trigger_retry"]
    # db/retry.py's loop logged each retry with the trigger policy's event: attempts 1, 2, ... with backoff
    assert len(retries) >= 3 and [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
    assert {r["table"] for r in retries} == {"database_table_9"} and {r["error"] for r in retries} == {
        "LockNotAvailableError"
    }
    assert all(0.025 <= float(str(r["delay_s"])) <= 0.1 for r in retries)
