"""The three backfills on a real server: exactly the rows of the guide's set-based statements, no duplicates,
every range once; live application writes during the run; the benchmark entry point."""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest
from benchmarks.engine import run_job_once
from tests.backfill_support import (
    MIGRATION,
    apply_set_based,
    assert_ledger_exact,
    assert_no_duplicates,
    assert_same,
    expected_derived,
    only_phases,
    present_rows_logged_once,
    snapshot,
    synth_template,
)

from bxbatch.backfill.report import backfill_status
from bxbatch.errors import ChangedFileError
from bxbatch.ledger.backfill import ENGINE_LOCK_CLASS, LOCK_PASS_CREATE
from bxbatch.migrations.baserow_expansion.synth_live import mutate_once
from bxbatch.ops.run import run_migration
from bxbatch.ops.status import collect_status, render_status
from bxbatch.settings import Settings

SMALL_CHUNKS: dict[str, Any] = {
    "target_chunk_ms": 20,
    "initial_chunk_rows": 150,
    "min_chunk_rows": 20,
    "max_chunk_rows": 4000,
    "progress": False,
}


async def test_run_writes_exactly_the_set_based_rows(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = await synth_template(pg_server, 0.03, 3, user_tables=60)
    chunked, reference = await db_factory(template=template), await db_factory(template=template)

    only_phases(monkeypatch)
    summary = await run_migration(Settings(dsn=chunked, concurrency=3, **SMALL_CHUNKS))
    assert summary.status == "completed"
    detail = summary.phases["backfill"]
    assert detail["failed_chunks"] == 0 and detail["converged"] and detail["settle_rounds"] == 1

    only_phases(monkeypatch, ("preflight", "schema", "triggers"))
    await run_migration(Settings(dsn=reference, progress=False))
    ref = await conn_to(reference)
    await apply_set_based(ref)

    conn = await conn_to(chunked)
    actual, expected = await snapshot(conn), await snapshot(ref)
    assert_no_duplicates(actual)
    assert_same(actual, expected)
    assert all(expected[name] for name in expected), "the install must produce rows for every job"
    for name, figures in detail["jobs"].items():
        assert figures["rows"] == sum(expected[name].values())
        assert figures["expected"] == figures["rows"], name  # the estimate is exact on a quiet install

    ledger = await assert_ledger_exact(conn, summary.run_id)
    assert ledger["chunks"] > 30
    # tiny user tables shared chunks, and the giant one was split
    grouped = await conn.fetchval(
        "SELECT max(cardinality(parts)) FROM bxbatch.chunk WHERE run_id = $1 AND job = 'activity_seed'", summary.run_id
    )
    split = await conn.fetchval(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM bxbatch.chunk, unnest(parts) AS p "
        "WHERE run_id = $1 AND job = 'activity_seed' GROUP BY p) s",
        summary.run_id,
    )
    assert grouped >= 3 and split > 5, (grouped, split)
    # permissions were walked in the order of the unique key: chunks' user_id ranges ascend with their ids
    ranges = await conn.fetch(
        "SELECT los[1] AS lo FROM bxbatch.chunk WHERE run_id = $1 AND job = 'permissions' AND seq = 0 ORDER BY id",
        summary.run_id,
    )
    assert [r["lo"] for r in ranges] == sorted(r["lo"] for r in ranges)

    status = await collect_status(Settings(dsn=chunked))
    jobs = {j["job"]: j for j in status["backfill"]["jobs"]}
    assert set(jobs) == {"enhanced_views", "permissions", "activity_seed"}
    for name, j in jobs.items():
        assert j["status"] == "done" and j["chunks_pending"] == 0 and j["chunks_failed"] == 0
        assert j["rows_done"] == j["rows_expected"] == sum(expected[name].values())
        assert j["percent"] == 100.0 and j["eta_s"] is None and j["rows_per_s"] > 0
    assert status["backfill"]["workers"] == []  # the run is over: nobody is active
    text = render_status(status)
    assert "activity_seed" in text and "rows/s" in text

    # a second run changes nothing: the migration is complete (no table is seeded twice)
    only_phases(monkeypatch)
    again = await run_migration(Settings(dsn=chunked, concurrency=2, **SMALL_CHUNKS))
    assert again.run_id != summary.run_id
    assert again.phases["backfill"]["rows"] == 0
    assert_same(await snapshot(conn), expected)


async def test_live_writes_during_the_backfill(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application inserts, updates and deletes views, tables, members and user rows throughout the main
    and catch-up passes; afterwards the derived tables match the base tables and every present user row has
    exactly one row_created entry."""
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 4))
    only_phases(monkeypatch)
    app_conn = await conn_to(dsn)
    watch = await conn_to(dsn)
    rng = random.Random(20261124)
    done: list[str] = []
    settle_seen = anyio.Event()
    live_status: list[dict[str, Any]] = []

    async def settling() -> bool:
        if not await watch.fetchval("SELECT to_regclass('bxbatch.pass') IS NOT NULL"):
            return False
        return bool(await watch.fetchval("SELECT EXISTS (SELECT 1 FROM bxbatch.pass WHERE round >= 1)"))

    async def application() -> None:
        """Writes until the settle rounds begin. Each write holds the engine's pass-creation lock, so the
        first settle pass is created after the last write committed: the test is deterministic."""
        while not settle_seen.is_set():
            await app_conn.execute("SELECT pg_advisory_lock($1, $2)", ENGINE_LOCK_CLASS, LOCK_PASS_CREATE)
            try:
                if await settling():
                    settle_seen.set()
                    break
                done.append(await mutate_once(app_conn, rng))
            finally:
                await app_conn.execute("SELECT pg_advisory_unlock($1, $2)", ENGINE_LOCK_CLASS, LOCK_PASS_CREATE)
            if len(done) % 10 == 0 and await watch.fetchval("SELECT to_regclass('bxbatch.run') IS NOT NULL"):
                run_id = await watch.fetchval("SELECT max(id) FROM bxbatch.run")
                live_status.append((await backfill_status(watch, run_id))["backfill"])
            await anyio.lowlevel.checkpoint()

    result: dict[str, Any] = {}

    async def migration() -> None:
        result["summary"] = await run_migration(
            Settings(dsn=dsn, concurrency=2, **{**SMALL_CHUNKS, "target_chunk_ms": 30, "initial_chunk_rows": 60})
        )
        settle_seen.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(application)
        tg.start_soon(migration)

    summary = result["summary"]
    detail = summary.phases["backfill"]
    assert detail["converged"] and detail["failed_chunks"] == 0
    kinds = {k.split(":")[0] for k in done if not k.startswith("noop")}
    assert {"insert_row", "update_row", "delete_row", "insert_view", "insert_member", "delete_member"} <= kinds
    assert len([k for k in done if not k.startswith("noop")]) > 50
    # `status` during the run showed the jobs in progress and the active workers with their heartbeats
    assert any(st["workers"] for st in live_status)
    assert any(j["status"] == "running" and j["chunks_done"] > 0 for st in live_status for j in st["jobs"])
    conn = await conn_to(dsn)
    # some writes landed in ranges done earlier, and the reconcile passes repaired them
    assert detail["reconciled"] > 0
    actual = await snapshot(conn)
    assert_no_duplicates(actual)
    assert_same({k: actual[k] for k in ("enhanced_views", "permissions")}, await expected_derived(conn))
    checked, problems = await present_rows_logged_once(conn)
    assert checked > 5_000
    assert not problems, problems[:10]
    print({k: v.get("seconds") for k, v in summary.phases.items()}, summary.seconds)
    print(
        "mutations",
        len(done),
        "reconciled",
        detail["reconciled"],
        "rounds",
        detail["settle_rounds"],
        "seconds",
        detail["seconds"],
        "checked",
        checked,
    )
    await assert_ledger_exact(conn, summary.run_id)


async def test_run_job_once_for_benchmarks(pg_server: Any, db_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 3))
    only_phases(monkeypatch, ("preflight", "schema", "triggers"))
    await run_migration(Settings(dsn=dsn, progress=False))
    figures = await run_job_once(dsn, "permissions", 2, settings=Settings(**SMALL_CHUNKS))
    assert figures["rows"] > 0 and figures["rows"] == figures["expected"]
    assert figures["concurrency"] == 2
    assert figures["chunks"] > 3
    assert 0 < figures["p50_ms"] <= figures["longest_ms"]
    assert figures["rows_per_s"] > 0
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM database_permission") == figures["rows"]
        assert await conn.fetchval("SELECT status FROM bxbatch.run WHERE id = $1", figures["run_id"]) == "completed"
        # a benchmark empties the target and runs a job again: everything is written again
        seeded = await run_job_once(dsn, "activity_seed", 2, settings=Settings(**SMALL_CHUNKS))
        await conn.execute("TRUNCATE database_activitylog")
        again = await run_job_once(dsn, "activity_seed", 1, settings=Settings(**SMALL_CHUNKS))
        assert again["rows"] == seeded["rows"] > 0
        assert await conn.fetchval("SELECT count(*) FROM database_activitylog") == again["rows"]
    finally:
        await conn.close()


async def test_no_chunk_of_several_members_exceeds_its_row_budget(
    pg_server: Any, db_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big workspaces (synth's "founders" shape): one member yields up to thousands of permissions, so a
    chunk cut by members could hold any number of rows. Every chunk of several members stays within
    the row budget (here max_chunk_rows, 150 rows); only a chunk of one member may hold more."""
    dsn = await db_factory(template=await synth_template(pg_server, 0.1, 3, shape="founders"))
    only_phases(monkeypatch, ("preflight", "schema", "triggers"))
    await run_migration(Settings(dsn=dsn, progress=False))
    budget = 150
    figures = await run_job_once(
        dsn, "permissions", 2, settings=Settings(min_chunk_rows=10, initial_chunk_rows=100, max_chunk_rows=budget)
    )
    assert figures["rows"] == figures["expected"] > 10 * budget
    conn = await asyncpg.connect(dsn)
    try:
        per_user = {
            int(r["user_id"]): int(r["n"])
            for r in await conn.fetch(
                """SELECT wu.user_id, count(*) AS n FROM database_workspaceuser AS wu
                JOIN database_database AS d ON d.workspace_id = wu.workspace_id
                JOIN database_table AS t ON t.database_id = d.id GROUP BY wu.user_id"""
            )
        }
        assert sum(n > budget for n in per_user.values()) >= 3  # members heavier than a whole chunk
        chunks = await conn.fetch(
            """SELECT c.los[1] AS lo, c.his[1] AS hi, c.rows FROM bxbatch.chunk AS c
            JOIN bxbatch.pass AS p USING (run_id, job, seq)
            WHERE c.run_id = $1 AND p.kind = 'main' AND c.status = 'done'""",
            figures["run_id"],
        )
        assert len(chunks) > 10
        for c in chunks:
            members = [u for u in per_user if c["lo"] < u <= c["hi"]]
            assert c["rows"] <= budget or len(members) == 1, (dict(c), members[:5])
        # exactly once: the guide's statement finds nothing left to write
        assert await conn.execute(MIGRATION.job("permissions").sql("set_based")) == "INSERT 0 0"
    finally:
        await conn.close()


async def test_resume_refuses_a_changed_job_file(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 3))
    only_phases(monkeypatch)
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    conn = await conn_to(dsn)
    # as if the run had been interrupted during the backfill, and the file edited since
    await conn.execute("UPDATE bxbatch.run SET status = 'interrupted' WHERE id = $1", summary.run_id)
    await conn.execute(
        "UPDATE bxbatch.phase SET status = 'running' WHERE run_id = $1 AND name = 'backfill'", summary.run_id
    )
    await conn.execute("UPDATE bxbatch.job SET file_sha256 = 'edited' WHERE name = 'permissions'")
    with pytest.raises(ChangedFileError, match=r"020_permissions\.sql changed"):
        await run_migration(Settings(dsn=dsn, progress=False), resume_only=True)


async def test_reconcile_repairs_changes_in_done_ranges(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes that land where the keyset passes have already been: the reconcile passes repair them both ways."""
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 3))
    only_phases(monkeypatch)
    await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    conn = await conn_to(dsn)
    low_grid = await conn.fetchval("SELECT min(id) FROM database_view WHERE type = 'table'")
    low_other = await conn.fetchval("SELECT min(id) FROM database_view WHERE type <> 'table'")
    await conn.execute("UPDATE database_view SET type = 'kanban' WHERE id = $1", low_grid)  # enhanced row to delete
    await conn.execute("UPDATE database_view SET type = 'table' WHERE id = $1", low_other)  # enhanced row to add
    member = await conn.fetchrow(
        "SELECT wu.id, wu.user_id FROM database_workspaceuser wu JOIN database_database d USING (workspace_id) "
        "JOIN database_table t ON t.database_id = d.id ORDER BY wu.user_id LIMIT 1"
    )
    await conn.execute("DELETE FROM database_workspaceuser WHERE id = $1", member["id"])  # its permissions go
    await conn.execute(  # an existing user joins another workspace: rows below the permission pass's bound
        "INSERT INTO database_workspaceuser (workspace_id, user_id, permissions) "
        "SELECT d.workspace_id, 1, '{\"create_table\": true}' FROM database_database d "
        "WHERE NOT EXISTS (SELECT 1 FROM database_workspaceuser w "
        "                  WHERE w.workspace_id = d.workspace_id AND w.user_id = 1) "
        "AND EXISTS (SELECT 1 FROM database_table t WHERE t.database_id = d.id) LIMIT 1"
    )
    await conn.execute(  # a member's permissions change: level editor <-> viewer
        "UPDATE database_workspaceuser SET permissions = CASE WHEN permissions ->> 'create_table' = 'true' "
        "THEN '{}'::jsonb ELSE '{\"create_table\": true}'::jsonb END "
        "WHERE id = (SELECT max(id) FROM database_workspaceuser)"
    )
    await conn.execute(  # a table goes (permissions have no foreign key to cascade from)
        "DELETE FROM database_table WHERE id = (SELECT min(t.id) FROM database_table t "
        "JOIN database_database d ON d.id = t.database_id JOIN database_workspaceuser w USING (workspace_id) "
        "WHERE NOT EXISTS (SELECT 1 FROM bxbatch.trigger_install i WHERE i.table_id = t.id))"
    )
    before = await snapshot(conn)
    with pytest.raises(AssertionError, match="missing"):  # the derived tables are stale now
        assert_same({k: before[k] for k in ("enhanced_views", "permissions")}, await expected_derived(conn))
    again = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    detail = again.phases["backfill"]
    assert detail["reconciled"] >= 6 and detail["converged"]
    assert detail["jobs"]["activity_seed"]["rows"] == 0
    actual = await snapshot(conn)
    assert_no_duplicates(actual)
    assert_same({k: actual[k] for k in ("enhanced_views", "permissions")}, await expected_derived(conn))


async def test_application_lock_on_a_user_table_delays_but_never_breaks_the_backfill(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ALTER TABLE-like ACCESS EXCLUSIVE lock held by the application for 1.5 s on the biggest user table, taken
    once the seeding's pass is created, before its first chunk: planner probes and chunks wait lock_timeout, back
    off, retry, and the result is exact."""
    template = await synth_template(pg_server, 0.03, 3, user_tables=60)
    dsn, reference = await db_factory(template=template), await db_factory(template=template)
    only_phases(monkeypatch, ("preflight", "schema", "triggers"))
    await run_migration(Settings(dsn=dsn, progress=False))
    await run_migration(Settings(dsn=reference, progress=False))
    ref = await conn_to(reference)
    await apply_set_based(ref)

    app_conn, watch = await conn_to(dsn), await conn_to(dsn)
    locked = anyio.Event()

    async def biggest_part() -> str | None:
        # the seeding's own count of each table: pg_class.reltuples is -1 until autovacuum has analysed
        # the new install, and a lock on a table chosen by it could miss the work (flaky under load)
        return await watch.fetchval(
            "SELECT relname FROM bxbatch.pass_part WHERE job = 'activity_seed' "
            "ORDER BY est_rows DESC NULLS LAST LIMIT 1"
        )

    async def application() -> None:
        while (giant := await biggest_part()) is None:  # noqa: ASYNC110 (polling the database, not a task)
            await anyio.sleep(0.005)
        async with app_conn.transaction():
            await app_conn.execute(f'LOCK TABLE "{giant}" IN ACCESS EXCLUSIVE MODE')
            locked.set()
            await anyio.sleep(1.5)

    # The seeding runs first: its chunks would start as soon as its pass is created, before the application
    # (polling for that pass) takes its lock. Hold the engine there until the lock is in place, so the
    # chunks meet it whatever the machine's speed.
    from bxbatch.backfill.engine import Engine

    real_create_pass = Engine.create_pass

    async def create_pass(self: Engine, job: Any, seq: int, kind: str, round_: int, after: int) -> None:
        await real_create_pass(self, job, seq, kind, round_, after)
        if job.name == "activity_seed" and kind == "main":
            with anyio.fail_after(30):
                await locked.wait()

    monkeypatch.setattr(Engine, "create_pass", create_pass)
    only_phases(monkeypatch, ("preflight", "backfill"))
    settings = Settings(
        dsn=dsn,
        concurrency=2,
        lock_timeout_ms=100,
        retry_base_ms=20,
        retry_max_ms=200,
        max_attempts=60,
        **{**SMALL_CHUNKS, "initial_chunk_rows": 2000, "max_chunk_rows": 2000},
    )
    result: dict[str, Any] = {}

    async def migration() -> None:
        result["summary"] = await run_migration(settings)

    async with anyio.create_task_group() as tg:
        tg.start_soon(application)
        tg.start_soon(migration)
    assert locked.is_set()
    assert result["summary"].phases["backfill"]["failed_chunks"] == 0
    conn = await conn_to(dsn)
    actual, expected = await snapshot(conn), await snapshot(ref)
    assert_no_duplicates(actual)
    assert_same(actual, expected)
    chunk_retries = await conn.fetchval("SELECT sum(retries) FROM bxbatch.chunk WHERE job = 'activity_seed'")
    assert chunk_retries + result["summary"].phases["backfill"]["plan_retries"] > 0


TARGET_KEYS = ("fk_tableview_enhanced_view_ptr", "fk_permission_user", "fk_permission_granted_by")
LOG_KEYS = ("fk_activitylog_user", "fk_activitylog_workspace", "fk_activitylog_table", "fk_activitylog_field")


async def test_target_keys_come_after_the_load_and_orphans_meanwhile_are_repaired(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enhanced-view and permission keys are added after the main passes (load, then constrain);
    views and a user deleted in that window leave orphans that the settle rounds remove, so the
    keys validate and the derived rows are what the base tables say."""
    from bxbatch.phases import backfill as backfill_phase

    template = await synth_template(pg_server, 0.03, 5, user_tables=20)
    dsn = await db_factory(template=template)
    app = await conn_to(dsn)
    real = backfill_phase.add_target_keys
    seen: dict[str, Any] = {}

    async def in_the_window(conn: Any, job: Any = None, **kwargs: Any) -> int:
        if job is None:  # every job loaded: the window before the other targets' keys (050)
            return await other_targets(conn, **kwargs)
        assert job.name == "activity_seed", "the seeding runs first, its keys (051) straight after it"
        seen["log_keys_before"] = await app.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conname = ANY($1::text[])", [*TARGET_KEYS, *LOG_KEYS]
        )
        # the activity log's keys too: a trigger row by a user deleted before the key existed, and
        # the entries of a table deleted meanwhile, must end as the keys' ON DELETE SET NULL leaves them
        table_id, rel = await app.fetchrow(
            "SELECT t.id, c.relname FROM database_table t JOIN pg_class c ON c.relname = 'database_table_' || t.id "
            "WHERE EXISTS (SELECT 1 FROM database_activitylog l WHERE l.table_id = t.id) ORDER BY t.id LIMIT 1"
        )
        writer = await app.fetchval("SELECT id FROM auth_user ORDER BY id DESC LIMIT 1")
        async with app.transaction():
            await app.execute(f"SELECT set_config('app.current_user_id', '{writer}', true)")
            await app.execute(f"UPDATE {rel} SET id = id WHERE id = (SELECT min(id) FROM {rel})")
        seen["log_rows_of_table"] = await app.fetchval(
            "SELECT count(*) FROM database_activitylog WHERE table_id = $1", table_id
        )
        await app.execute("DELETE FROM auth_user WHERE id = $1", writer)
        await app.execute("DELETE FROM database_table WHERE id = $1", table_id)
        await app.execute(f"DROP TABLE {rel}")
        seen["log_table"], seen["log_writer"] = table_id, writer
        return await real(conn, job, **kwargs)

    async def other_targets(conn: Any, **kwargs: Any) -> int:
        seen["keys_before"] = await app.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conname = ANY($1::text[])", list(TARGET_KEYS)
        )
        views = [
            r["view_ptr_id"]
            for r in await app.fetch("SELECT view_ptr_id FROM database_tableview_enhanced ORDER BY view_ptr_id LIMIT 3")
        ]
        user = await app.fetchval(
            "SELECT p.granted_by_id FROM database_permission p JOIN database_workspaceuser wu "
            "ON wu.user_id = p.granted_by_id WHERE p.granted_by_id <> p.user_id LIMIT 1"
        )
        assert len(views) == 3 and user is not None, "the install must give the window something to orphan"
        await app.execute("DELETE FROM database_view WHERE id = ANY($1::int[])", views)
        await app.execute("DELETE FROM auth_user WHERE id = $1", user)
        seen["orphans"] = await app.fetchval(
            """SELECT (SELECT count(*) FROM database_tableview_enhanced e
                       WHERE NOT EXISTS (SELECT 1 FROM database_view v WHERE v.id = e.view_ptr_id))
                    + (SELECT count(*) FROM database_permission p
                       WHERE p.user_id = $1 OR p.granted_by_id = $1)""",
            user,
        )
        return await real(conn, **kwargs)

    monkeypatch.setattr(backfill_phase, "add_target_keys", in_the_window)
    only_phases(monkeypatch)
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    assert summary.status == "completed"
    assert seen["keys_before"] == 0, "the keys must not exist while the main passes load the targets"
    assert seen["log_keys_before"] == 0, "nor the log's while the seeding loads it"
    assert seen["orphans"] > 3, seen
    keys = await app.fetch(
        "SELECT conname, convalidated FROM pg_constraint WHERE conname = ANY($1::text[])", list(TARGET_KEYS)
    )
    assert sorted(k["conname"] for k in keys) == sorted(TARGET_KEYS)
    for k in keys:  # added NOT VALID; the constraint phase validates them, which now succeeds
        table = "database_tableview_enhanced" if "enhanced" in k["conname"] else "database_permission"
        await app.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {k['conname']}")
    for k in LOG_KEYS:  # the log's: present, and valid now (the repair UPDATE of 051 ran)
        await app.execute(f"ALTER TABLE database_activitylog VALIDATE CONSTRAINT {k}")
    assert seen["log_rows_of_table"] > 0
    assert await app.fetchval("SELECT count(*) FROM database_activitylog WHERE table_id = $1", seen["log_table"]) == 0
    assert await app.fetchval("SELECT count(*) FROM database_activitylog WHERE user_id = $1", seen["log_writer"]) == 0
    actual = await snapshot(app)
    assert_no_duplicates(actual)
    expected = await expected_derived(app)
    for name in ("enhanced_views", "permissions"):
        assert actual[name] == expected[name], name
