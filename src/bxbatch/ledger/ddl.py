"""The DDL ledger: which migration files and statements are applied (with checksums), and every index build.

A transactional file's row is written in the transaction that applies it; a non-transactional
file (``CREATE INDEX CONCURRENTLY``...) records each statement as it completes and its file row
last, so a resume continues after the last statement done. Index builds are recorded attempt by
attempt (``bxbatch.index_build``) with the monitor's last progress sample.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

from bxbatch.db.sqlfiles import SqlFile, queries

Q = queries("ddl_ledger")


async def applied_files(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    """Every applied file by name: sha256, phase, applied_at, duration_ms, run_id."""
    return {str(r["file"]): r for r in await conn.fetch(Q["applied_files"])}


async def record_file(conn: asyncpg.Connection, file: SqlFile, duration_ms: int | None, run_id: int | None) -> None:
    await conn.execute(Q["record_file"], file.name, file.sha256, file.phase, duration_ms, run_id)


async def applied_statements(conn: asyncpg.Connection, file: str) -> dict[int, str]:
    """Statements of a non-transactional file done so far: index -> the file's sha256 when it ran."""
    return {int(r["idx"]): str(r["file_sha256"]) for r in await conn.fetch(Q["applied_statements"], file)}


async def record_statement(
    conn: asyncpg.Connection, file: SqlFile, idx: int, started_monotonic: float, run_id: int | None
) -> None:
    """One statement of a non-transactional DDL file is done (resume continues after it)."""
    ms = int((time.monotonic() - started_monotonic) * 1000)
    await conn.execute(Q["record_statement"], file.name, idx, file.sha256, ms, run_id)


async def statement_done(conn: asyncpg.Connection, file: str, idx: int) -> bool:
    return bool(await conn.fetchval(Q["statement_done"], file, idx))


async def forget_statement(conn: asyncpg.Connection, file: str, idx: int) -> None:
    """The catalog lost what this statement made: forget it (and its file's row) so the phase runs it again."""
    await conn.execute(Q["forget_statement"], file, idx)


async def file_duration(conn: asyncpg.Connection, file: str) -> int:
    """Milliseconds a non-transactional file's statements took, summed (its file row's duration)."""
    return int(await conn.fetchval(Q["file_duration"], file))


async def index_states(conn: asyncpg.Connection, schema: str, names: list[str]) -> dict[str, bool]:
    """Validity of the named indexes that exist (catalog, for repair)."""
    return {str(r["relname"]): bool(r["valid"]) for r in await conn.fetch(Q["index_states"], schema, names)}


async def constraint_states(conn: asyncpg.Connection, schema: str, names: list[str]) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["constraint_states"], schema, names))


# --- index builds -----------------------------------------------------------------------------------
async def add_build(conn: asyncpg.Connection, *values: Any) -> int:
    """A build attempt starts: run, file, idx, index, table, action, status, attempt, backend pid, host,
    client pid, maintenance_work_mem, table rows and bytes. Returns its id."""
    return int(await conn.fetchval(Q["insert_build"], *values))


async def builds_done(conn: asyncpg.Connection, run_id: int) -> int:
    return int(await conn.fetchval(Q["builds_done"], run_id))


async def finish_build(
    conn: asyncpg.Connection,
    build_id: int,
    status: str,
    duration_ms: int,
    waited_ms: int | None,
    index_bytes: int | None,
    error: str | None,
) -> None:
    await conn.execute(Q["finish_build"], build_id, status, duration_ms, waited_ms, index_bytes, error)


async def abandon_builds(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Builds recorded running whose backend is gone: marked abandoned (their client died)."""
    return list(await conn.fetch(Q["abandon_builds"]))


async def save_build_progress(conn: asyncpg.Connection, build_id: int, sample: dict[str, Any]) -> None:
    await conn.execute(Q["save_progress"], build_id, json.dumps(sample))


async def running_builds(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Builds the ledger says are running, with their backend's live progress (empty on an older ledger)."""
    if not await conn.fetchval(Q["index_ledger_exists"]):
        return []
    return list(await conn.fetch(Q["builds_in_progress"]))
