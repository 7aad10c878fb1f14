"""Cleanup: VACUUM (ANALYZE) of every new table, outside a transaction, so the planner knows them."""

from __future__ import annotations

import structlog
from tests.safety_support import build_migrated_install

from bxbatch.migrations.loader import load_migration
from bxbatch.phases import cleanup
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion


async def test_every_new_table_is_vacuumed_and_analyzed(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("migrated_small", build_migrated_install))
    conn = await conn_to(dsn)
    # rows the planner does not know yet (fewer than autovacuum's threshold, so only cleanup counts them)
    await conn.execute("INSERT INTO database_comment (row_id, content) SELECT g, 'c' FROM generate_series(1, 20) g")
    assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'database_comment'") < 20
    figures = await cleanup.vacuum_tables(conn, Settings(dsn=dsn, progress=False), "public", structlog.get_logger())
    assert figures["tables_vacuumed"] == len(MIGRATION.expected.tables)
    assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'database_comment'") == 20
    seeded = await conn.fetchval("SELECT count(*) FROM database_activitylog")
    assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'database_activitylog'") == seeded
