"""Validate: a clean run passes; a deleted derived row, an extra one, an INVALID index and a NOT VALID
constraint are each reported by name (with sample keys)."""

from __future__ import annotations

import asyncpg
import pytest
from tests.safety_support import build_migrated_install

from bxbatch.errors import ValidationFailed
from bxbatch.phases import validate
from bxbatch.settings import Settings


@pytest.fixture
async def migrated(pg_server, db_factory) -> str:
    return await db_factory(template=await pg_server.template("migrated_small", build_migrated_install))


async def test_complete_run_validates(migrated, conn_to):
    report = await validate.validate(await conn_to(migrated), Settings(dsn=migrated))
    assert report.ok, validate.render(report)
    checks = {f.check: f for f in report.findings}
    assert checks["backfill:activity_seed"].figures["expected"] > 1000
    assert checks["backfill:permissions"].figures["expected"] == checks["backfill:permissions"].figures["actual"]
    assert checks["triggers"].checked > 3


async def test_each_damage_is_reported_by_name(migrated, conn_to):
    conn: asyncpg.Connection = await conn_to(migrated)
    # a deleted derived row (permission) and a deleted seeded activity row
    gone = await conn.fetchrow(
        "DELETE FROM database_permission WHERE id = (SELECT min(id) FROM database_permission) "
        "RETURNING user_id, resource_id"
    )
    table_id, row_id = await conn.fetchrow(
        "DELETE FROM database_activitylog WHERE id = (SELECT min(id) FROM database_activitylog) "
        "RETURNING table_id, row_id"
    )
    # an extra derived row: an enhanced view for a view that is not a grid view
    extra_view = await conn.fetchval(
        "INSERT INTO database_tableview_enhanced (view_ptr_id) "
        "SELECT min(id) FROM database_view WHERE type <> 'table' RETURNING view_ptr_id"
    )
    # an INVALID index: a failed CREATE UNIQUE INDEX CONCURRENTLY leaves one behind
    user_id = await conn.fetchval("SELECT min(id) FROM auth_user")
    await conn.execute("DROP INDEX idx_comment_user")
    await conn.execute(
        "INSERT INTO database_comment (row_id, user_id, content) VALUES (1, $1, 'a'), (2, $1, 'b')", user_id
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_comment_user ON database_comment (user_id)")
    # a NOT VALID constraint
    await conn.execute("ALTER TABLE database_calendarview DROP CONSTRAINT fk_calendar_date_field")
    await conn.execute(
        "ALTER TABLE database_calendarview ADD CONSTRAINT fk_calendar_date_field FOREIGN KEY (date_field_id) "
        "REFERENCES database_field (id) ON DELETE SET NULL NOT VALID"
    )

    report = await validate.validate(conn, Settings(dsn=migrated))
    assert not report.ok
    problems = {(p["check"], p["object"]): p for p in report.problems()}
    perm = problems[("backfill:permissions", "database_permission")]
    assert "1 expected row(s) missing" in perm["reason"]
    assert perm["sample"] == [f"user {gone['user_id']}, table {gone['resource_id']}"]
    seeded = problems[("backfill:activity_seed", f"database_table_{table_id}")]
    assert seeded["sample"] == [f"table {table_id}, row {row_id}"]
    views = problems[("backfill:enhanced_views", "database_tableview_enhanced")]
    assert "1 row(s) the base tables do not imply" in views["reason"] and views["sample"] == [str(extra_view)]
    assert "INVALID" in problems[("indexes", "idx_comment_user")]["reason"]
    assert "NOT VALID" in problems[("constraints", "fk_calendar_date_field")]["reason"]
    assert len(report.problems()) == 5, validate.render(report)
    text = validate.render(report)
    for name in ("idx_comment_user", "fk_calendar_date_field", "database_permission", "database_tableview_enhanced"):
        assert name in text
    with pytest.raises(ValidationFailed) as info:
        validate.raise_for(report)
    assert info.value.exit_code == 9


async def test_missing_trigger_and_deleted_table_row_log(migrated, conn_to):
    conn: asyncpg.Connection = await conn_to(migrated)
    relname, tgname = await conn.fetchrow(
        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND c.relname ~ '^database_table_[0-9]+$' ORDER BY 1, 2 LIMIT 1"
    )
    await conn.execute(f'DROP TRIGGER "{tgname}" ON "{relname}"')
    report = await validate.validate(conn, Settings(dsn=migrated))
    problems = {(p["check"], p["object"]) for p in report.problems()}
    assert ("triggers", relname) in problems
