"""The constraint phase on a real server: orphan report first, cleaning only with the flag, then VALIDATE."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.phase_support import LOG, ORPHAN_SEED, schema_applied_db

from bxbatch.errors import ExitCode, OrphansFound
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import load_migration
from bxbatch.phases import constraints
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion

VALIDATE_FILE = next(f for f in MIGRATION.ddl_files("constraints"))


async def _seeded(pg_server, db_factory, conn_to):  # type: ignore[no-untyped-def]
    dsn = await schema_applied_db(pg_server, db_factory)
    conn = await conn_to(dsn)
    await conn.execute(ORPHAN_SEED)
    return dsn, conn


async def _ctx(conn, settings: Settings) -> RunContext:  # type: ignore[no-untyped-def]
    record = await ledger.start_or_continue_run(conn, settings, "test")
    return RunContext(settings=settings, conn=conn, run_id=record.id, log=LOG)


async def _snapshot(conn) -> list[str]:  # type: ignore[no-untyped-def]
    rows = await conn.fetch(
        "SELECT 'k' || to_jsonb(k)::text AS r FROM database_kanbanview k "
        "UNION ALL SELECT 'c' || to_jsonb(c)::text FROM database_comment c ORDER BY 1"
    )
    return [r["r"] for r in rows]


async def _unvalidated(conn) -> set[str]:  # type: ignore[no-untyped-def]
    rows = await conn.fetch("SELECT conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated")
    return {r["conname"] for r in rows}


async def test_orphans_stop_the_run_before_any_change(pg_server, db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    _dsn, conn = await _seeded(pg_server, db_factory, conn_to)
    before, unvalidated = await _snapshot(conn), await _unvalidated(conn)
    with pytest.raises(OrphansFound) as info:
        await constraints.run(await _ctx(conn, Settings()))
    assert info.value.exit_code == ExitCode.VALIDATION
    message = str(info.value)
    assert "4 foreign keys cannot be validated, nothing was changed" in message
    assert "database_kanbanview.view_ptr_id (fk_kanbanview_view_ptr): 1 rows reference missing database_view" in message
    assert "--clean-orphans" in message
    # nothing changed: data, constraints, ledger statements
    assert await _snapshot(conn) == before
    assert await _unvalidated(conn) == unvalidated
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_statement WHERE file = $1", VALIDATE_FILE.name) == 0
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.orphan_fix") == 0
    report = {
        r["constraint_name"]: (r["orphans"], json.loads(r["sample"]))
        for r in await conn.fetch("SELECT * FROM bxbatch.orphan_report WHERE orphans > 0")
    }
    assert set(report) == {
        "fk_kanbanview_view_ptr",
        "fk_kanban_single_select_field",
        "fk_comment_user",
        "fk_comment_parent",
    }
    assert report["fk_comment_user"][0] == 2
    assert sorted(s["row_key"] for s in report["fk_comment_user"][1]) == ["3", "4"]
    assert report["fk_comment_user"][1][0]["key"] == {"user_id": 4242}
    assert report["fk_kanban_single_select_field"][1] == [{"row_key": "2", "key": {"single_select_field_id": 888}}]


async def test_clean_orphans_then_every_key_validates(pg_server, db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    _dsn, conn = await _seeded(pg_server, db_factory, conn_to)
    detail = await constraints.run(await _ctx(conn, Settings(clean_orphans=True)))
    assert detail["orphans_found"] == 5 and detail["orphans_cleaned"] == 5
    assert detail["validated"] == len(VALIDATE_FILE.statements)
    assert await _unvalidated(conn) == set()
    kanban = [tuple(r) for r in await conn.fetch("SELECT * FROM database_kanbanview ORDER BY 1")]
    assert [(k[0], k[1]) for k in kanban] == [(1, 1), (2, None)]  # 999 deleted (CASCADE), 888 -> NULL
    comments = {r["id"]: (r["user_id"], r["parent_id"]) for r in await conn.fetch("SELECT * FROM database_comment")}
    assert comments == {1: (1, None), 2: (None, None), 3: (None, None), 4: (None, 1)}
    fixes = await conn.fetch("SELECT constraint_name, action, row_before FROM bxbatch.orphan_fix ORDER BY id")
    by_fk = {(f["constraint_name"], f["action"]) for f in fixes}
    assert by_fk == {
        ("fk_kanbanview_view_ptr", "delete"),
        ("fk_kanban_single_select_field", "set_null"),
        ("fk_comment_user", "set_null"),
        ("fk_comment_parent", "set_null"),
    }
    deleted = next(json.loads(f["row_before"]) for f in fixes if f["action"] == "delete")
    assert deleted["view_ptr_id"] == 999 and deleted["single_select_field_id"] == 2
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file WHERE file = $1", VALIDATE_FILE.name) == 1
    # Idempotent: a second pass finds everything validated and the file applied.
    again = await constraints.run(await _ctx(conn, Settings(clean_orphans=True)))
    assert again["validated"] == 0 and again["orphans_found"] == 0


async def test_validate_waits_under_lock_timeout_and_retries(pg_server, db_factory, conn_to) -> None:  # type: ignore[no-untyped-def]
    dsn = await schema_applied_db(pg_server, db_factory)
    conn = await conn_to(dsn)
    holder = await conn_to(dsn)
    await holder.execute("BEGIN; LOCK TABLE database_kanbanview IN SHARE UPDATE EXCLUSIVE MODE")
    settings = Settings(lock_timeout_ms=50, retry_base_ms=50, retry_max_ms=200, max_attempts=40)

    task = asyncio.ensure_future(constraints.run(await _ctx(conn, settings)))
    await asyncio.sleep(0.6)
    assert not task.done()
    await holder.execute("COMMIT")
    detail = await asyncio.wait_for(task, 30)
    assert detail["retries"] >= 1 and detail["validated"] == len(VALIDATE_FILE.statements)
    assert await _unvalidated(conn) == set()
