"""Rollback: after a full run the catalog is exactly as before (table by table); a second rollback is a no-op;
refusals without confirmation and with application data; preexisting objects survive."""

from __future__ import annotations

import pytest
from tests.safety_support import build_small_install, build_tiny, catalog_snapshot

from bxbatch.errors import LockBusy, RollbackRefused
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import load_migration
from bxbatch.ops.rollback import plan_steps, rollback, rollback_database
from bxbatch.ops.run import run_migration
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion


def _settings(dsn: str) -> Settings:
    return Settings(dsn=dsn, progress=False, no_backup=True)


async def test_rollback_restores_the_catalog_exactly(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("small_install", build_small_install))
    conn = await conn_to(dsn)
    before = await catalog_snapshot(conn)

    summary = await run_migration(_settings(dsn))
    assert summary.status == "completed"
    assert await catalog_snapshot(conn) != before

    with pytest.raises(RollbackRefused, match="pass --yes"):
        await rollback_database(_settings(dsn), confirmed=False)

    result = await rollback(conn, _settings(dsn), drop_history=True)  # the run history too: nothing left
    assert result.done == len(result.steps) > 20
    kinds = [s.key.split(":")[0] for s in result.steps]
    assert kinds == sorted(kinds, key=["trigger", "constraint", "index", "table", "function", "ledger", "schema"].index)
    after = await catalog_snapshot(conn)
    for table in before:
        assert after[table] == before[table], f"{table} differs after rollback"

    again = await rollback(conn, _settings(dsn), drop_history=True)
    assert (again.steps, again.done) == ([], 0)
    assert await catalog_snapshot(conn) == after


async def test_rollback_refuses_application_data_unless_forced(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    conn = await conn_to(dsn)
    await run_migration(_settings(dsn))
    other = await conn_to(dsn)  # a run in progress elsewhere (its lock held): refused, nothing touched
    await other.execute("SELECT pg_advisory_lock($1, $2)", ledger.LOCK_CLASS, ledger.LOCK_DDL)
    with pytest.raises(LockBusy, match="holds the"):
        await rollback(conn, _settings(dsn))
    await other.close()
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.rollback_step") == 0
    await conn.execute("INSERT INTO database_comment (row_id, content) VALUES (1, 'written by a user')")
    await conn.execute("INSERT INTO database_table_1 (field_1) VALUES ('after the run')")  # trigger logs it now
    with pytest.raises(RollbackRefused, match="database_comment has rows") as info:
        await rollback(conn, _settings(dsn))
    assert "database_activitylog has 1 entries newer" in str(info.value)
    assert info.value.exit_code == 12
    assert await conn.fetchval("SELECT to_regclass('database_comment') IS NOT NULL")
    result = await rollback(conn, _settings(dsn), force=True)
    assert result.app_data and result.done == len(result.steps)
    assert not await conn.fetchval("SELECT to_regclass('database_comment') IS NOT NULL")
    assert await conn.fetchval("SELECT count(*) FROM database_table_1") == 31  # base data untouched


async def test_interrupted_rollback_resumes_and_keeps_preexisting_tables(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    conn = await conn_to(dsn)
    # the install already had one of the new tables: bxbatch must never drop it
    await conn.execute(
        "CREATE TABLE database_userpresence (id serial PRIMARY KEY, user_id integer, table_id integer, "
        "view_id integer, last_seen timestamptz DEFAULT now(), cursor_position jsonb, is_active boolean DEFAULT TRUE)"
    )
    await run_migration(_settings(dsn))
    steps = await plan_steps(conn, MIGRATION)
    assert "table:database_userpresence" not in {s.key for s in steps}
    # interrupt after the trigger steps: a lock held on a new table makes a later step time out
    locker = await conn_to(dsn)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE database_dashboard IN ACCESS SHARE MODE")
    fast = _settings(dsn).with_(lock_timeout_ms=50, max_attempts=2, retry_base_ms=10, retry_max_ms=20)
    with pytest.raises(Exception, match="lock"):
        await rollback(conn, fast)
    done = await conn.fetchval("SELECT count(*) FROM bxbatch.rollback_step")
    assert done > 0
    await tx.rollback()
    result = await rollback(conn, _settings(dsn))
    assert result.skipped == 0 and result.done == len(result.steps) < len(steps)
    assert await conn.fetchval("SELECT to_regclass('database_userpresence') IS NOT NULL")
    assert not await conn.fetchval("SELECT to_regnamespace('bxbatch') IS NOT NULL")


async def test_trigger_drops_share_transactions_but_never_queue_behind_a_busy_table(pg_server, db_factory, conn_to):
    """The triggers of many user tables go in a few transactions (tables locked NOWAIT); a table the
    application is using is set aside and waited for alone, while the others are done."""
    import asyncio

    dsn = await db_factory(template=await pg_server.template("small_install", build_small_install))
    conn = await conn_to(dsn)
    await run_migration(_settings(dsn))
    count = "SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname LIKE 'bxbatch_activity%'"
    tables = await conn.fetchval(count)
    assert tables >= 10
    steps = [s for s in await plan_steps(conn, MIGRATION) if s.key.startswith("trigger:")]
    assert len(steps) == tables and all(s.sql.count("DROP TRIGGER") == 3 for s in steps)  # one step a table
    busy = steps[len(steps) // 2]

    app = await conn_to(dsn)
    tx = app.transaction()
    await tx.start()
    await app.execute(f"SELECT count(*) FROM {busy.table}")  # an open transaction holds ACCESS SHARE on it
    worker = await conn_to(dsn)
    task = asyncio.create_task(rollback(worker, _settings(dsn).with_(lock_timeout_ms=200, max_attempts=50)))
    try:
        for _ in range(600):  # every other table loses its triggers while the busy one waits
            if await conn.fetchval(count) == 1:
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval(count) == 1 and not task.done()
        assert (
            await conn.fetchval(
                f"SELECT count(*) FROM pg_trigger WHERE tgrelid = '{busy.table}'::regclass AND NOT tgisinternal"
            )
            == 3
        )
    finally:
        await tx.rollback()
    result = await task
    assert result.done == len(result.steps) and await conn.fetchval("SELECT to_regnamespace('bxbatch')") is None


async def test_trigger_tables_come_from_the_catalog_in_keyset_batches(pg_server, db_factory, conn_to, monkeypatch):
    """Batches smaller than the user tables: an interrupted rollback (a table held busy past its retries)
    leaves exactly the unrecorded tables with triggers, and the next one drops only those, reading
    what is left from the catalog (no set of done trigger steps), with a busy table behind the key."""
    from bxbatch.ops import rollback as rollback_module

    monkeypatch.setattr(rollback_module, "TRIGGER_BATCH", 3)
    monkeypatch.setattr(rollback_module, "TRIGGER_DROP_GROUP", 2)
    dsn = await db_factory(template=await pg_server.template("small_install", build_small_install))
    conn = await conn_to(dsn)
    await run_migration(_settings(dsn))
    count = "SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname LIKE 'bxbatch_activity%'"
    tables = await conn.fetchval(count)
    assert tables > 3 * 3  # several batches
    listed = [s for s in await plan_steps(conn, MIGRATION) if s.key.startswith("trigger:")]
    assert len(listed) == tables and len({s.key for s in listed}) == tables
    busy = listed[1]  # in the first batch: the batches after it are read past it

    app = await conn_to(dsn)
    tx = app.transaction()
    await tx.start()
    await app.execute(f"SELECT count(*) FROM {busy.table}")
    fast = _settings(dsn).with_(lock_timeout_ms=50, max_attempts=2, retry_base_ms=10, retry_max_ms=20)
    with pytest.raises(Exception, match="lock"):
        await rollback(conn, fast)
    await tx.rollback()
    assert await conn.fetchval(count) == 1  # only the busy table's triggers are left
    recorded = {r["step"] for r in await conn.fetch("SELECT step FROM bxbatch.rollback_step")}
    assert recorded == {s.key for s in listed} - {busy.key}

    result = await rollback(conn, _settings(dsn))
    assert [s.key for s in result.steps if s.key.startswith("trigger:")] == [busy.key]
    assert result.skipped == 0 and result.done == len(result.steps)
    assert await conn.fetchval(count) == 0 and await conn.fetchval("SELECT to_regnamespace('bxbatch')") is None
