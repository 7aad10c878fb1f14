"""The run history and the report data survive `bxbatch rollback` (archived in bxbatch_history); run ids go
on after a rollback; `rollback --drop-history` leaves the catalog exactly as before bxbatch."""

from __future__ import annotations

from tests.safety_support import build_small_install, catalog_snapshot

from bxbatch.observe.history import collect_history, render_history
from bxbatch.observe.html import render
from bxbatch.observe.report import collect
from bxbatch.ops.rollback import rollback
from bxbatch.ops.run import run_migration
from bxbatch.settings import Settings


def _settings(dsn: str) -> Settings:
    return Settings(dsn=dsn, progress=False, no_backup=True)


async def test_history_and_report_survive_rollback(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("small_install", build_small_install))
    conn = await conn_to(dsn)
    before = await catalog_snapshot(conn)
    first = await run_migration(_settings(dsn))
    live = await collect(conn, first.run_id)
    assert live["run"]["status"] == "completed" and live["validation"]["ok"] is True
    rows = sum(j["rows"] for j in live["jobs"])
    assert rows == await conn.fetchval(
        "SELECT sum(c.rows) FROM bxbatch.chunk c JOIN bxbatch.pass p USING (run_id, job, seq) "
        "WHERE c.status = 'done' AND p.kind <> 'reconcile' AND p.round = 0"
    )
    assert {p["name"] for p in live["phases"]} >= {"backfill", "indexes", "validate"}
    assert live["estimate"] is not None and any(e["estimate_s"] for e in live["estimate_vs_actual"])

    result = await rollback(conn, _settings(dsn))
    assert result.steps[-1].key == "schema:bxbatch"
    assert not await conn.fetchval("SELECT to_regnamespace('bxbatch') IS NOT NULL")

    # after the rollback: the history lists the run (archived) and the rollback; its report is the same data
    history = await collect_history(conn)
    assert [(e["kind"], e["id"], e["status"]) for e in history] == [
        ("run", first.run_id, "completed"),
        ("rollback", None, "completed"),
    ]
    assert history[0]["archived"] and history[0]["rows"] == await _archived_rows(conn, first.run_id)
    assert history[1]["steps"] == len(result.steps) and history[1]["runs_archived"] == 1
    text = render_history(history)
    assert f"#{first.run_id}" in text and "rollback" in text and "(archived)" in text
    archived = await collect(conn, first.run_id)
    assert archived["archived"] is True
    assert archived["jobs"] == live["jobs"] and archived["phases"] == live["phases"]
    assert "bxbatch run #" in render(archived)

    # a new run after the rollback: a new ledger whose run ids go on after the archived ones
    second = await run_migration(_settings(dsn))
    assert second.run_id == first.run_id + 1
    history = await collect_history(conn)
    assert [(e["kind"], e["id"]) for e in history] == [
        ("run", first.run_id),
        ("rollback", None),
        ("run", second.run_id),
    ]
    assert (await collect(conn)).get("archived") is None  # the newest run, live

    # the catalog is as before bxbatch once the history is dropped too
    await rollback(conn, _settings(dsn), drop_history=True)
    assert await collect_history(conn) == []
    after = await catalog_snapshot(conn)
    for table in before:
        assert after[table] == before[table], f"{table} differs after rollback --drop-history"


async def _archived_rows(conn, run_id: int) -> int:
    return int(await conn.fetchval("SELECT (summary->>'rows')::bigint FROM bxbatch_history.run WHERE id = $1", run_id))
