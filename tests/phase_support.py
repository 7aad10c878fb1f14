"""Fixtures shared by the index, constraint and trigger phase tests: templates and contexts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from bxbatch.ledger import runs as ledger
from bxbatch.phases import schema
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

BASE_SCHEMA = (Path(__file__).resolve().parent / "base_schema.sql").read_text()
LOG = structlog.get_logger("test")

# Decoys that must never get the trigger: names that LIKE 'database_table_%' would catch, and an
# orphan database_table_<n> whose id is not in database_table.
DECOYS = ("database_tablewebhook", "database_table_backup", "database_table_12_old", "database_table_99999")


# Valid base rows, then rows in the new tables whose references dangle. The foreign keys exist
# NOT VALID (so new writes are checked): session_replication_role = replica stands in for rows
# written before the keys existed.
ORPHAN_SEED = """
INSERT INTO auth_user (id, username) VALUES (1, 'ada');
INSERT INTO database_workspace (id, name) VALUES (1, 'w');
INSERT INTO database_database (id, workspace_id) VALUES (1, 1);
INSERT INTO database_table (id, database_id) VALUES (1, 1);
INSERT INTO database_field (id, table_id) VALUES (1, 1), (2, 1);
INSERT INTO database_view (id, table_id, type) VALUES (1, 1, 'kanban'), (2, 1, 'kanban');
SET session_replication_role = replica;
-- view 1 is fine; view 2's select field 888 is gone (SET NULL); view 999 is gone (CASCADE: the row goes)
INSERT INTO database_kanbanview (view_ptr_id, single_select_field_id) VALUES (1, 1), (2, 888), (999, 2);
-- NULL references are never orphans (the guide's NOT IN would get these wrong the other way round)
INSERT INTO database_comment (id, table_id, row_id, user_id, content, parent_id) VALUES
    (1, 1, 1, 1, 'ok', NULL),
    (2, NULL, 1, NULL, 'all null', NULL),
    (3, 1, 1, 4242, 'ghost user', 77),
    (4, 1, 2, 4242, 'ghost user again', 1);
SET session_replication_role = origin;
"""


def many_user_tables_sql(n: int) -> str:
    """``n`` Baserow-like user tables (a few rows in some), their database_table rows, and the decoys."""
    return f"""
INSERT INTO auth_user (id, username) VALUES (1, 'ada');
INSERT INTO database_workspace (id, name) VALUES (1, 'w');
INSERT INTO database_database (id, workspace_id) VALUES (1, 1);
INSERT INTO database_table (id, database_id) SELECT g, 1 FROM generate_series(1, {int(n)}) g;
SELECT setval(pg_get_serial_sequence('database_table', 'id'), {int(n)});
DO $$
BEGIN
    FOR i IN 1..{int(n)} LOOP
        EXECUTE format(
            'CREATE TABLE %I (id serial PRIMARY KEY, created_on timestamptz DEFAULT now(), '
            'updated_on timestamptz, trashed boolean NOT NULL DEFAULT false, "order" numeric(40, 20), '
            'field_%s text)', 'database_table_' || i, i);
        IF i % 7 = 0 THEN
            EXECUTE format('INSERT INTO %I (field_%s) SELECT ''r'' || g FROM generate_series(1, 3) g',
                           'database_table_' || i, i);
        END IF;
    END LOOP;
END
$$;
CREATE TABLE database_tablewebhook (id serial PRIMARY KEY, table_id int);
CREATE TABLE database_table_backup (id serial PRIMARY KEY);
CREATE TABLE database_table_12_old (id serial PRIMARY KEY);
CREATE TABLE database_table_99999 (id serial PRIMARY KEY);
ANALYZE;
"""


async def apply_schema_phase(dsn: str, extra_sql: str = "") -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(BASE_SCHEMA)
        await ledger.ensure_schema(conn)
        await schema.apply_phase(conn, Settings(dsn=dsn), None, LOG, phase="schema")
        # the backfill targets' keys, which a run adds in the backfill phase
        await schema.apply_phase(conn, Settings(dsn=dsn), None, LOG, phase="backfill")
        if extra_sql:
            await conn.execute(extra_sql)
    finally:
        await conn.close()


async def schema_applied_db(pg_server: Any, db_factory: Callable[..., Awaitable[str]]) -> str:
    """A database with the base schema and the schema phase applied, plus the backfill targets' keys (no
    indexes, no triggers yet)."""
    template = await pg_server.template("schema_applied", apply_schema_phase)
    dsn: str = await db_factory(template=template)
    return dsn


async def many_tables_db(pg_server: Any, db_factory: Callable[..., Awaitable[str]], n: int) -> str:
    """Like schema_applied_db, plus ``n`` user tables and the decoys."""

    async def build(dsn: str) -> None:
        await apply_schema_phase(dsn, many_user_tables_sql(n))

    template = await pg_server.template(("many_user_tables", n), build)
    dsn: str = await db_factory(template=template)
    return dsn


async def run_context(conn: asyncpg.Connection, settings: Settings) -> RunContext:
    record = await ledger.start_or_continue_run(conn, settings, "test")
    return RunContext(settings=settings, conn=conn, run_id=record.id, log=LOG)
