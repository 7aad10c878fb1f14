"""The per-table trigger installs: which user tables have the migration's trigger, and each one's high-water mark.

A table's row is written in the transaction that installs its trigger and reads ``max(id)``, so
per-table jobs seed exactly the rows below the mark and the trigger logs the rest.
"""

from __future__ import annotations

import asyncpg

from bxbatch.db.sqlfiles import queries

Q = queries("installs_ledger")


async def record_installs(
    conn: asyncpg.Connection, tables: list[tuple[int, str]], marks: dict[int, int], run_id: int | None
) -> dict[int, int]:
    """Record the installs (a table recorded earlier keeps its first mark); returns table_id -> its mark."""
    rows = await conn.fetch(
        Q["record_installs"],
        [tid for tid, _ in tables],
        [rel for _, rel in tables],
        [marks[tid] for tid, _ in tables],
        run_id,
    )
    return {int(r["table_id"]): int(r["high_water"]) for r in rows}


async def installed_ids(conn: asyncpg.Connection) -> set[int]:
    return {int(r["table_id"]) for r in await conn.fetch(Q["installed_ids"])}


async def installed_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(Q["installed_count"]))
