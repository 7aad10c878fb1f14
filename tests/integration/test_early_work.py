"""What the backfill phase starts early (phases/early.py): the activity log's index builds, after its keys and
an ANALYZE, GIN last, while the settle rounds run; the index phase then finds them built. The log's two partial
indexes, which no seeded row enters, are built on the empty log in the schema phase instead."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog
from tests.backfill_support import synth_template

from bxbatch.backfill.passes import analyze_target
from bxbatch.ledger import control
from bxbatch.ops.run import run_migration
from bxbatch.settings import Settings

SMALL: dict[str, Any] = {"target_chunk_ms": 20, "initial_chunk_rows": 150, "max_chunk_rows": 4000, "progress": False}
LOG_KEYS = ("fk_activitylog_user", "fk_activitylog_workspace", "fk_activitylog_table", "fk_activitylog_field")


async def test_log_indexes_start_in_the_backfill_after_its_keys_gin_last(
    pg_server: Any, db_factory: Any, conn_to: Any
) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 5, user_tables=20))
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, no_backup=True, **SMALL))
    assert summary.status == "completed"
    conn = await conn_to(dsn)
    builds = await conn.fetch(
        """SELECT b.index_name, b.started_at, p.finished_at AS backfill_done
           FROM bxbatch.index_build b, bxbatch.phase p
           WHERE p.name = 'backfill' AND b.index_name LIKE 'idx_activitylog%' AND b.status = 'done'
           ORDER BY b.started_at"""
    )
    assert len(builds) == 5, [b["index_name"] for b in builds]
    assert all(b["started_at"] < b["backfill_done"] for b in builds), "the log's builds start in the backfill phase"
    assert builds[-1]["index_name"] == "idx_activitylog_details_search", "the GIN build goes last"
    # the tables no job writes (the migration's new ones) had their builds started in the backfill phase too,
    # once every job's passes were done; the index phase found nothing left and says where they went
    others = await conn.fetch(
        """SELECT b.index_name, b.started_at FROM bxbatch.index_build b
           WHERE b.status = 'done' AND b.table_name NOT IN
                 ('database_activitylog', 'database_permission', 'database_tableview_enhanced')"""
    )
    assert len(others) == 17, [b["index_name"] for b in others]
    assert all(b["started_at"] < builds[0]["backfill_done"] for b in others)
    jobs_done = await conn.fetchval("SELECT max(finished_at) FROM bxbatch.pass WHERE kind <> 'reconcile'")
    assert all(b["started_at"] >= jobs_done for b in others), "after every job's passes"
    index_phase = summary.phases["indexes"]
    assert index_phase["indexes_built"] == 1, "only the reconciled permissions' index is left to it"
    assert index_phase["built_before"] == 5 + 17
    # the log's keys (051, after=activity_seed) were added before its first build (a key would wait for a
    # CONCURRENTLY build), straight after the seeding: the seeding ran first, and the other jobs loaded after
    # the log's keys, while its builds ran; their keys (050) came after their own loads
    keys_added = await conn.fetchval(
        "SELECT max(s.applied_at) FROM bxbatch.ddl_statement s WHERE s.file = '051_activitylog_keys.sql'"
    )
    assert keys_added is not None and keys_added <= builds[0]["started_at"]
    mains = await conn.fetch(
        "SELECT job, started_at, finished_at FROM bxbatch.pass WHERE kind = 'main' ORDER BY started_at"
    )
    assert [m["job"] for m in mains] == ["activity_seed", "enhanced_views", "permissions"]
    assert mains[0]["finished_at"] <= keys_added <= mains[1]["started_at"]
    other_keys = await conn.fetchval(
        "SELECT min(s.applied_at) FROM bxbatch.ddl_statement s WHERE s.file = '050_backfill_target_keys.sql'"
    )
    assert other_keys is not None and other_keys >= mains[2]["finished_at"]
    # the partial indexes: built on the empty log by the schema phase, valid, kept up by the seeding
    partial = await conn.fetch(
        """SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE c.relname IN ('idx_activitylog_field', 'idx_activitylog_workspace')"""
    )
    assert sorted((r["relname"], r["indisvalid"]) for r in partial) == [
        ("idx_activitylog_field", True),
        ("idx_activitylog_workspace", True),
    ]
    assert await conn.fetchval(
        """SELECT f.applied_at < (SELECT started_at FROM bxbatch.phase WHERE name = 'backfill')
           FROM bxbatch.ddl_file f WHERE f.file = '011_activitylog_partial_indexes.sql' AND f.phase = 'schema'"""
    )
    # the log was analysed by the backfill phase (before its builds) as well as by the cleanup's VACUUM ANALYZE
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    analysed = await conn.fetchval(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'public.database_activitylog'::regclass"
    )
    assert analysed == 2, analysed


async def test_a_hold_before_the_index_phase_holds_the_log_builds_too(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bxbatch hold-before indexes` placed during the backfill: no index build starts before the release, the
    log's early ones included; they all run in the index phase after it."""
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 5, user_tables=20))
    conn = await conn_to(dsn)
    from bxbatch.backfill.engine import Engine

    real_create_pass = Engine.create_pass

    async def create_pass(self: Engine, job: Any, seq: int, kind: str, round_: int, after: int) -> None:
        await real_create_pass(self, job, seq, kind, round_, after)
        if job.name == "activity_seed" and kind == "main":  # the operator holds while the seeding runs
            assert await control.set_hold(conn, self.run_id, "indexes", "operator") is not None

    monkeypatch.setattr(Engine, "create_pass", create_pass)
    result: dict[str, Any] = {}

    async def migration() -> None:
        result["summary"] = await run_migration(Settings(dsn=dsn, concurrency=2, no_backup=True, **SMALL))

    held_phase = "SELECT status FROM bxbatch.phase WHERE name = $1"
    async with anyio.create_task_group() as tg:
        tg.start_soon(migration)
        with anyio.fail_after(120):
            while await conn.fetchval("SELECT to_regclass('bxbatch.phase')") is None:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            while await conn.fetchval(held_phase, "backfill") != "done":  # noqa: ASYNC110 (polling the ledger)
                await anyio.sleep(0.05)
        await anyio.sleep(1.5)  # three reads of the control row: the run waits before the index phase
        assert await conn.fetchval(held_phase, "indexes") is None, "held before the index phase"
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.index_build") == 0, "no build started"
        built = await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'idx_activitylog_%'")
        assert built == 2, "only the log's two partial indexes (schema phase)"
        run_id = await conn.fetchval("SELECT max(id) FROM bxbatch.run")
        await control.set_hold(conn, run_id, None, "operator")
    assert result["summary"].status == "completed"
    builds = await conn.fetch(
        """SELECT b.index_name FROM bxbatch.index_build b, bxbatch.phase p
           WHERE p.name = 'indexes' AND b.index_name LIKE 'idx_activitylog%' AND b.status = 'done'
             AND b.started_at >= p.started_at"""
    )
    assert len(builds) == 5, "the log's five builds ran in the index phase"


async def test_the_early_analyze_leaves_json_columns_to_the_cleanup(fresh_db: str, conn_to: Any) -> None:
    """A target's ANALYZE before its builds covers every column but the JSON ones (no key, check or validation
    query filters on them; the log's ``details`` were a third of its cost); a table without one is analysed whole."""
    conn = await conn_to(fresh_db)
    await conn.execute(
        "CREATE TABLE t (id int, kind text, details jsonb, extra json);"
        "INSERT INTO t SELECT g, 'k' || g % 7, jsonb_build_object('a', g), '{}' FROM generate_series(1, 2000) g;"
        "CREATE TABLE plain (id int, kind text); INSERT INTO plain SELECT g, 'x' FROM generate_series(1, 100) g"
    )
    log = structlog.get_logger()
    assert await analyze_target(conn, "public", "t", 1000, log)
    assert await analyze_target(conn, "public", "plain", 1000, log)
    stats = "SELECT array_agg(attname::text ORDER BY attname) FROM pg_stats WHERE tablename = $1"
    assert await conn.fetchval(stats, "t") == ["id", "kind"]
    assert await conn.fetchval(stats, "plain") == ["id", "kind"]
    assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 't'") == 2000
