"""Trigger phase: the activity trigger on every user table, one short transaction per table.

Each install records the table's high-water mark (max id under the trigger's lock) in
``bxbatch.trigger_install``: the activity seeding logs rows up to it, the trigger logs the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ..context import RunContext
from ..db import backoff_delay, is_retryable, quote_ident
from ..profile import USER_TABLE_REGEX_SQL, Profile
from ..settings import Settings

TRIGGER_NAME = "bxbatch_activity_log"

USER_TABLES_SQL = """
SELECT c.relname, substring(c.relname from '[0-9]+$')::integer AS table_id
FROM pg_class c
WHERE c.relnamespace = to_regnamespace($1)
  AND c.relkind IN ('r', 'p')
  AND c.relname ~ $2
  AND substring(c.relname from '[0-9]+$')::bigint <= 2147483647
  AND EXISTS (SELECT 1 FROM database_table t WHERE t.id = substring(c.relname from '[0-9]+$')::integer)
ORDER BY 2
"""


async def user_tables(conn: asyncpg.Connection, profile: Profile) -> list[tuple[int, str]]:
    """(table_id, relname) of every user data table: name matched exactly and id known to database_table."""
    rows = await conn.fetch(USER_TABLES_SQL, profile.schema, USER_TABLE_REGEX_SQL)
    return [(r["table_id"], r["relname"]) for r in rows]


async def install_one(
    conn: asyncpg.Connection, settings: Settings, profile: Profile, table_id: int, relname: str, run_id: int | None
) -> int:
    """Install the trigger on one table (idempotent) and return its high-water mark."""
    table = f"{quote_ident(profile.schema)}.{quote_ident(relname)}"
    attempt = 0
    while True:
        attempt += 1
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(settings.lock_timeout_ms)}")
                await conn.execute(f"SET LOCAL statement_timeout = {int(settings.statement_timeout_ms)}")
                existing = await conn.fetchval(
                    "SELECT high_water FROM bxbatch.trigger_install WHERE table_id = $1", table_id
                )
                present = await conn.fetchval(
                    "SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2",
                    table,
                    TRIGGER_NAME,
                )
                if existing is not None and present:
                    return int(existing)
                # SHARE ROW EXCLUSIVE: writers wait (for at most lock_timeout before we give up);
                # once we hold it, every earlier insert has committed or rolled back.
                await conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
                if not present:
                    await conn.execute(
                        f"CREATE TRIGGER {quote_ident(TRIGGER_NAME)} AFTER INSERT OR UPDATE OR DELETE ON {table} "
                        f"FOR EACH ROW EXECUTE PROCEDURE public.log_table_activity('{int(table_id)}')"
                    )
                high_water = int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}"))
                await conn.execute(
                    "INSERT INTO bxbatch.trigger_install (table_id, relname, high_water, run_id) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (table_id) DO UPDATE SET high_water = EXCLUDED.high_water",
                    table_id,
                    relname,
                    high_water,
                    run_id,
                )
                return high_water
        except asyncpg.UndefinedTableError:
            return -1  # dropped by the application meanwhile: nothing to install or seed
        except Exception as exc:
            if not is_retryable(exc) or attempt >= settings.max_attempts:
                raise
            await asyncio.sleep(backoff_delay(attempt, settings.retry_base_ms, settings.retry_max_ms))


async def install_missing(ctx: RunContext) -> dict[int, int]:
    """Install on every user table that has no install record yet. Returns table_id -> high_water."""
    installed = {r["table_id"] for r in await ctx.conn.fetch("SELECT table_id FROM bxbatch.trigger_install")}
    done: dict[int, int] = {}
    for table_id, relname in await user_tables(ctx.conn, ctx.profile):
        if table_id in installed:
            continue
        hw = await install_one(ctx.conn, ctx.settings, ctx.profile, table_id, relname, ctx.run_id)
        if hw >= 0:
            done[table_id] = hw
    return done


async def run(ctx: RunContext) -> dict[str, Any]:
    done = await install_missing(ctx)
    total = await ctx.conn.fetchval("SELECT count(*) FROM bxbatch.trigger_install")
    return {"installed": len(done), "tables_with_trigger": total}
