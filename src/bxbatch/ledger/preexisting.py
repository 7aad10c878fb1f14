"""What the install already had of the migration's objects before bxbatch's first DDL: rollback never drops it."""

from __future__ import annotations

import asyncpg

from bxbatch.db.sqlfiles import queries
from bxbatch.migrations.loader import Migration

Q = queries("preexisting")


async def record_preexisting(conn: asyncpg.Connection, run_id: int | None, migration: Migration) -> bool:
    """Before bxbatch's first DDL: remember which of its objects the install already had. Once per database."""
    if await conn.fetchval(Q["preexisting_taken"]):
        return False
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM bxbatch.ddl_file)"):
        return False  # DDL applied by a bxbatch without this record: nothing trustworthy to take
    exp = migration.expected
    async with conn.transaction():
        await conn.execute(
            Q["record_preexisting"],
            migration.schema,
            list(exp.tables),
            list(exp.indexes),
            [c.name for c in exp.foreign_keys],
            list(exp.functions),
            [f"{table}.{column}" for table, column in exp.added_columns],
        )
        await conn.execute(Q["mark_preexisting_taken"], run_id)
    return True


async def preexisting(conn: asyncpg.Connection) -> set[tuple[str, str]]:
    """(kind, name) of every object recorded as there before bxbatch (empty with a ledger older than the record)."""
    if not await safety_ledger_present(conn):
        return set()
    return {(r["kind"], r["name"]) for r in await conn.fetch(Q["preexisting"])}


async def safety_ledger_present(conn: asyncpg.Connection) -> bool:
    """The rollback ledger tables exist (absent in a ledger older than them)."""
    return bool(await conn.fetchval(Q["safety_ledger_present"]))
