"""Helpers shared by the safety-net tests (preflight, backup, validate, rollback): templates and snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

BASE_SCHEMA = (Path(__file__).resolve().parent / "base_schema.sql").read_text()

# A tiny Baserow install: base schema, one member with create_table rights, two user tables.
TINY_INSTALL = (
    BASE_SCHEMA
    + """
INSERT INTO auth_user (username) VALUES ('ada'), ('bob');
INSERT INTO database_workspace (name) VALUES ('w1');
INSERT INTO database_workspaceuser (workspace_id, user_id, permissions)
    VALUES (1, 1, '{"create_table": "true"}'), (1, 2, '{}');
INSERT INTO database_database (workspace_id) VALUES (1);
INSERT INTO database_table (database_id, created_by_id) VALUES (1, 1), (1, 2);
INSERT INTO database_view (table_id, type) VALUES (1, 'table'), (1, 'gallery'), (2, 'table');
CREATE TABLE database_table_1 (id serial PRIMARY KEY, created_on timestamptz, updated_on timestamptz,
    trashed boolean NOT NULL DEFAULT false, "order" numeric(40, 20), field_1 text);
CREATE TABLE database_table_2 (id serial PRIMARY KEY, created_on timestamptz, updated_on timestamptz,
    trashed boolean NOT NULL DEFAULT false, "order" numeric(40, 20), field_2 text);
INSERT INTO database_table_1 (field_1) SELECT 'r' || g FROM generate_series(1, 30) g;
INSERT INTO database_table_2 (field_2) SELECT 'r' || g FROM generate_series(1, 5) g;
"""
)


async def build_tiny(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TINY_INSTALL)
    finally:
        await conn.close()


async def bxbatch_traces(conn: asyncpg.Connection) -> list[str]:
    """Anything a run creates: the ledger schema, a new table, the trigger function."""
    rows = await conn.fetch(
        "SELECT nspname AS name FROM pg_namespace WHERE nspname = 'bxbatch' "
        "UNION ALL SELECT relname FROM pg_class WHERE relname IN ('database_comment', 'database_permission') "
        "UNION ALL SELECT proname FROM pg_proc WHERE proname = 'log_table_activity'"
    )
    return [r["name"] for r in rows]


# Catalog snapshot, table by table, by name (never by OID), structural columns only (no statistics).
# Not pg_class.relhastriggers: a hint ("has or once had triggers") that DROP TRIGGER leaves set and
# the next VACUUM clears; the triggers themselves are compared through pg_trigger.
CATALOG_QUERIES: dict[str, str] = {
    "pg_class": """
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relnatts, c.relhasindex,
               c.relchecks, pg_get_userbyid(c.relowner) AS owner, c.relacl::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'
    """,
    "pg_attribute": """
        SELECT c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               a.atthasdef, a.attisdropped, pg_get_expr(d.adbin, d.adrelid) AS default
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'
    """,
    "pg_constraint": """
        SELECT n.nspname, conname, c.relname, contype, convalidated, pg_get_constraintdef(k.oid) AS def
        FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
        LEFT JOIN pg_class c ON c.oid = k.conrelid
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    """,
    "pg_index": """
        SELECT c.relname AS index, t.relname AS table, i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    """,
    "pg_trigger": """
        SELECT c.relname, t.tgname, t.tgenabled, t.tgisinternal, p.proname
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
    """,
    "pg_proc": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) AS args
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
    """,
    "pg_namespace": "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_(toast_)?temp'",
    "pg_type": """
        SELECT n.nspname, t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'
    """,
}


async def catalog_snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    snap: dict[str, list[tuple[Any, ...]]] = {}
    for name, sql in CATALOG_QUERIES.items():
        snap[name] = sorted(tuple(str(v) for v in r.values()) for r in await conn.fetch(sql))
    return snap


SMALL_SCALE = 0.01


async def build_small_install(dsn: str) -> None:
    """A synthetic install (every data trap of synth), before the migration."""
    from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install

    conn = await asyncpg.connect(dsn)
    try:
        await build_install(conn, SynthSpec(scale=SMALL_SCALE, seed=7))
    finally:
        await conn.close()


async def build_migrated_install(dsn: str) -> None:
    """The same install after a complete `bxbatch run` (no backup)."""
    from bxbatch.ops.run import run_migration
    from bxbatch.settings import Settings

    await build_small_install(dsn)
    summary = await run_migration(Settings(dsn=dsn, progress=False, no_backup=True))
    assert summary.status == "completed"
