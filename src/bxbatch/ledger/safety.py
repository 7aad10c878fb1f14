"""The safety net's ledger: backups taken (or skipped, and why), orphans found before VALIDATE, rollback progress."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bxbatch.db.sqlfiles import queries

Q = queries("safety_ledger")


async def record_backup(conn: asyncpg.Connection, run_id: int | None, status: str, **values: Any) -> None:
    """A backup outcome: verified (path, bytes, seconds, toc_entries, pg_dump, version) or skipped (reason)."""
    await conn.execute(
        Q["record_backup"],
        run_id,
        status,
        values.get("path"),
        values.get("bytes"),
        values.get("seconds"),
        values.get("toc_entries"),
        values.get("pg_dump"),
        values.get("pg_dump_version"),
        values.get("reason"),
    )


async def safety_state(conn: asyncpg.Connection) -> tuple[dict[str, Any] | None, int]:
    """The last backup row (None: none yet, or a ledger older than backups) and the rollback steps done."""
    if not await conn.fetchval(Q["backup_table_present"]):
        return None, 0
    row = await conn.fetchrow(Q["last_backup"])
    steps = int(await conn.fetchval(Q["rollback_steps_count"]))
    return (dict(row) if row else None), steps


async def record_orphan_report(
    conn: asyncpg.Connection,
    run_id: int | None,
    constraint: str,
    table: str,
    columns: list[str],
    referenced_table: str,
    orphans: int,
    sample: list[dict[str, Any]],
    duration_ms: int,
) -> None:
    """What the orphan count of one foreign key found (with a sample), before VALIDATE or the cleaning.

    (The rows the cleaning changes are saved in ``bxbatch.orphan_fix`` by the cleaning statement itself,
    in the same statement as the change: phases/constraints.py builds it.)"""
    await conn.execute(
        Q["insert_orphan_report"],
        run_id,
        constraint,
        table,
        columns,
        referenced_table,
        orphans,
        json.dumps(sample),
        duration_ms,
    )
