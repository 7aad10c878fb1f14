"""Cleanup phase: ``VACUUM (ANALYZE)`` of every new table, so the planner knows them before users arrive.

VACUUM cannot run in a transaction block: each table is its own autocommit statement, under
lock_timeout (retried with backoff) and without statement_timeout (a big activity log takes a
while). The backfilled tables are among the new ones (the migration's ddl/ creates them all).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from bxbatch.backfill import changes
from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import RetryCount, RetryPolicy, retry
from bxbatch.db.session import qualified
from bxbatch.migrations.loader import load_migration
from bxbatch.observe import progress
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

EXISTING_SQL = "SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace($1) AND relname = ANY($2::text[])"
# VACUUM waits at most lock_timeout for its table, then backs off and runs again (db/retry.py)
VACUUM_RETRY = RetryPolicy(event="vacuum_retry")


async def vacuum_tables(conn: asyncpg.Connection, settings: Settings, schema: str, log: Any) -> dict[str, Any]:
    wanted = list(load_migration(settings.migration).expected.tables)
    present = {r["relname"] for r in await conn.fetch(EXISTING_SQL, schema, wanted)}
    tables = [t for t in wanted if t in present]
    started = time.monotonic()
    retries = RetryCount()
    await set_local_timeouts(conn, is_local=False, lock=settings.lock_timeout_ms, statement=0)
    try:
        with progress.bar(settings, total=len(tables), desc="vacuum analyze", unit="table") as bar:
            for table in tables:
                t0 = time.monotonic()

                async def vacuum(table: str = table) -> None:
                    await conn.execute(f"VACUUM (ANALYZE) {qualified(schema, table)}")

                policy = VACUUM_RETRY.for_settings(settings)
                await retry(vacuum, policy, log=log, fields={"table": table}, on_retry=retries)
                log.debug("table_vacuumed", table=table, seconds=round(time.monotonic() - t0, 3))
                bar.update(1)
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout; RESET statement_timeout")
    seconds = round(time.monotonic() - started, 3)
    return {"tables_vacuumed": len(tables), "retries": retries.n, "vacuum_seconds": seconds}


async def run(ctx: RunContext) -> dict[str, Any]:
    for job in ctx.migration.jobs:  # change-capture triggers the backfill phase could not drop (a busy table)
        if job.changes:
            await changes.remove(ctx.conn, job, ctx.profile.schema, ctx.settings, ctx.log)
    return await vacuum_tables(ctx.conn, ctx.settings, ctx.profile.schema, ctx.log)
