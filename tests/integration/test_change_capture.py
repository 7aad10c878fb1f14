"""Settle rounds driven by change capture: only the keys written since a job's main pass began are reconciled,
with the same result as reconciling everything; nothing is read again when nothing was written."""

from __future__ import annotations

from typing import Any

import pytest
from tests.backfill_support import assert_no_duplicates, expected_derived, only_phases, snapshot, synth_template

from bxbatch.backfill import changes
from bxbatch.migrations.loader import load_migration
from bxbatch.ops.run import run_migration
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion

SMALL_CHUNKS: dict[str, Any] = {
    "target_chunk_ms": 20,
    "initial_chunk_rows": 150,
    "min_chunk_rows": 20,
    "max_chunk_rows": 4000,
    "progress": False,
}


def test_ranges_cover_every_key_and_merge_close_ones() -> None:
    assert changes.ranges([]) == []
    assert changes.ranges([5]) == [(4, 5)]
    assert changes.ranges([9, 5, 5, 7]) == [(4, 9)]
    assert changes.ranges([1, 1000, 1010], gap=64) == [(0, 1), (999, 1010)]
    keys = [3, 70, 71, 500, 10_000]
    for k in keys:
        assert any(lo < k <= hi for lo, hi in changes.ranges(keys))


async def _reconcile_parts(conn: Any, run_id: int) -> dict[str, list[tuple[int, int]]]:
    rows = await conn.fetch(
        "SELECT p.job, pp.lo, pp.hi FROM bxbatch.pass AS p JOIN bxbatch.pass_part AS pp "
        "USING (run_id, job, seq) WHERE p.run_id = $1 AND p.kind = 'reconcile' ORDER BY p.job, pp.lo",
        run_id,
    )
    out: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        out.setdefault(str(r["job"]), []).append((int(r["lo"]), int(r["hi"])))
    return out


async def _capture_triggers(conn: Any) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bxbatch\\_chg\\_%'"))


async def test_no_writes_no_reconcile_reads(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install nobody writes to: the settle round's reconcile passes have no range at all, and the
    capture triggers are gone when the backfill is done."""
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 3))
    only_phases(monkeypatch)
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    conn = await conn_to(dsn)
    assert summary.phases["backfill"]["settle_rounds"] == 1
    assert await _reconcile_parts(conn, summary.run_id) == {}
    captured = await conn.fetch("SELECT job FROM bxbatch.change_capture WHERE run_id = $1", summary.run_id)
    assert sorted(r["job"] for r in captured) == ["enhanced_views", "permissions"]
    assert await _capture_triggers(conn) == 0
    actual = await snapshot(conn)
    assert_no_duplicates(actual)
    expected = await expected_derived(conn)
    for name in ("enhanced_views", "permissions"):
        assert actual[name] == expected[name], name


async def test_writes_after_the_main_pass_are_reconciled_by_key(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that land in ranges the main passes have done (between the main passes and the settle
    rounds): the reconcile passes cover exactly the written keys and repair every change both ways."""
    from bxbatch.phases import backfill as backfill_phase

    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 3))
    app = await conn_to(dsn)
    real = backfill_phase.add_target_keys
    seen: dict[str, Any] = {}

    async def in_the_window(conn: Any, job: Any = None, **kwargs: Any) -> int:
        if job is not None:  # the log's keys, straight after the seeding: not the window
            return await real(conn, job, **kwargs)
        seen["triggers"] = await _capture_triggers(app)
        grid = await app.fetchval("SELECT min(id) FROM database_view WHERE type = 'table'")
        other = await app.fetchval("SELECT min(id) FROM database_view WHERE type <> 'table'")
        await app.execute("UPDATE database_view SET type = 'kanban' WHERE id = $1", grid)
        await app.execute("UPDATE database_view SET type = 'table' WHERE id = $1", other)
        member = await app.fetchrow(
            "SELECT wu.id, wu.user_id FROM database_workspaceuser wu JOIN database_database d USING (workspace_id) "
            "JOIN database_table t ON t.database_id = d.id ORDER BY wu.user_id LIMIT 1"
        )
        await app.execute("DELETE FROM database_workspaceuser WHERE id = $1", member["id"])
        flipped = await app.fetchval(
            "UPDATE database_workspaceuser SET permissions = CASE WHEN permissions ->> 'create_table' = 'true' "
            "THEN '{}'::jsonb ELSE '{\"create_table\": true}'::jsonb END "
            "WHERE id = (SELECT max(id) FROM database_workspaceuser) RETURNING user_id"
        )
        seen["views"] = sorted([grid, other])
        seen["users"] = sorted({member["user_id"], flipped})
        return await real(conn, **kwargs)

    monkeypatch.setattr(backfill_phase, "add_target_keys", in_the_window)
    only_phases(monkeypatch)
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    assert summary.status == "completed"
    assert seen["triggers"] == len(changes.wanted(MIGRATION.job("enhanced_views"))) + len(
        changes.wanted(MIGRATION.job("permissions"))
    ), "the capture triggers must be in place while the main passes run"
    parts = await _reconcile_parts(app, summary.run_id)
    covered = {job: sorted({k for lo, hi in ranges for k in range(lo + 1, hi + 1)}) for job, ranges in parts.items()}
    for job, keys in (("enhanced_views", seen["views"]), ("permissions", seen["users"])):
        assert set(keys) <= set(covered[job]), (job, keys, parts[job])
        span = sum(hi - lo for lo, hi in parts[job])
        assert span <= len(keys) * changes.MERGE_GAP, (job, parts[job])  # not the whole key domain
    assert summary.phases["backfill"]["reconciled"] >= 4
    assert await _capture_triggers(app) == 0
    actual = await snapshot(app)
    assert_no_duplicates(actual)
    expected = await expected_derived(app)
    for name in ("enhanced_views", "permissions"):
        assert actual[name] == expected[name], name


async def test_a_table_change_reconciles_the_whole_job(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted table maps to no one member: the permission job's next reconcile pass covers every key."""
    from bxbatch.phases import backfill as backfill_phase

    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 3))
    app = await conn_to(dsn)
    real = backfill_phase.add_target_keys

    async def in_the_window(conn: Any, job: Any = None, **kwargs: Any) -> int:
        if job is not None:  # the log's keys, straight after the seeding: not the window
            return await real(conn, job, **kwargs)
        await app.execute(
            "DELETE FROM database_table WHERE id = (SELECT min(t.id) FROM database_table t "
            "JOIN database_database d ON d.id = t.database_id JOIN database_workspaceuser w USING (workspace_id) "
            "WHERE NOT EXISTS (SELECT 1 FROM bxbatch.trigger_install i WHERE i.table_id = t.id))"
        )
        return await real(conn, **kwargs)

    monkeypatch.setattr(backfill_phase, "add_target_keys", in_the_window)
    only_phases(monkeypatch)
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL_CHUNKS))
    parts = await _reconcile_parts(app, summary.run_id)
    top = await app.fetchval("SELECT max(user_id) FROM database_workspaceuser")
    assert parts["permissions"][0][0] == 0 and parts["permissions"][-1][1] >= top
    assert summary.phases["backfill"]["reconciled"] >= 1
    actual = await snapshot(app)
    expected = await expected_derived(app)
    assert actual["permissions"] == expected["permissions"]
