"""What a run leaves for its report and history: samples, the plan's estimate, validation results, the archive.

Every read and write of ``bxbatch.sample``, ``estimate``, ``validation_result`` and the archive
schema ``bxbatch_history`` (which outlives a rollback), plus the report's reads of a run's rows.
``observe/`` turns these rows into the report, the history and the metrics.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import asyncpg

from bxbatch.db.sqlfiles import queries

Q = queries("observations_ledger")
Conn = asyncpg.Connection


async def relation_exists(conn: Conn, relation: str) -> bool:
    """A ledger or archive table exists (a ledger older than it, or after a rollback, lacks it)."""
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", relation))


# --- written while a run goes ------------------------------------------------------------------------
async def insert_samples(conn: Conn, run_id: int, host: str, pid: int, batch: list[dict[str, Any]]) -> None:
    """A batch of the time series (one JSON object per sample) of one process of the run."""
    await conn.execute(Q["insert_samples"], run_id, host, pid, json.dumps(batch))


async def has_estimate(conn: Conn, run_id: int) -> bool:
    return bool(await conn.fetchval(Q["has_estimate"], run_id))


async def save_estimate(conn: Conn, run_id: int, estimate: dict[str, Any]) -> None:
    """What `bxbatch plan` estimated at the start of the run, kept for the report."""
    await conn.execute(Q["save_estimate"], run_id, json.dumps(estimate, default=str))


async def save_validation(conn: Conn, run_id: int, result: dict[str, Any]) -> None:
    if await relation_exists(conn, "bxbatch.validation_result"):
        await conn.execute(Q["save_validation"], run_id, bool(result["ok"]), json.dumps(result, default=str))


# --- the report's reads of one run -------------------------------------------------------------------
async def run_row(conn: Conn, run_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["report_run"], run_id)


async def phases(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_phases"], run_id))


async def jobs(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_jobs"], run_id))


async def chunk_times(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_chunk_times"], run_id))


async def chunk_durations(conn: Conn, run_id: int, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_chunk_durations"], run_id, limit))


async def throttle_events(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_events"], run_id))


async def samples(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_samples"], run_id))


async def index_builds(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_index_builds"], run_id))


async def constraint_statements(conn: Conn, run_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["report_constraint_statements"], run_id))


async def estimate(conn: Conn, run_id: int) -> Any:
    return await conn.fetchval(Q["report_estimate"], run_id)


async def validation(conn: Conn, run_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["report_validation"], run_id)


async def latest_run_id(conn: Conn) -> int | None:
    """The newest run id, in the live ledger or the archive (after a rollback)."""
    ids = []
    if await relation_exists(conn, "bxbatch.run"):
        ids.append(await conn.fetchval("SELECT max(id) FROM bxbatch.run"))
    if await relation_exists(conn, "bxbatch_history.run"):
        ids.append(await conn.fetchval("SELECT max(id) FROM bxbatch_history.run"))
    found = [int(i) for i in ids if i is not None]
    return max(found) if found else None


# --- history and the archive -------------------------------------------------------------------------
async def history_runs(conn: Conn) -> list[asyncpg.Record]:
    """Every run of the live ledger with its totals (a ledger older than chunks and throttle states: runs only)."""
    if not await relation_exists(conn, "bxbatch.chunk") or not await relation_exists(conn, "bxbatch.throttle_state"):
        return list(await conn.fetch(Q["history_runs_bare"]))
    return list(await conn.fetch(Q["history_runs"]))


async def rollback_steps_done(conn: Conn) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["rollback_steps_done"])


async def archived_runs(conn: Conn) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["archived_runs"]))


async def archived_rollbacks(conn: Conn) -> list[asyncpg.Record]:
    return list(await conn.fetch(Q["archived_rollbacks"]))


async def archived_report(conn: Conn, run_id: int) -> Any:
    return await conn.fetchval(Q["archived_report"], run_id)


async def archive_run(conn: Conn, run_id: int, summary: dict[str, Any], data: dict[str, Any]) -> None:
    """One run's summary and report data into ``bxbatch_history`` (created if missing)."""
    await conn.execute(Q["archive_ensure"])
    await conn.execute(Q["archive_run"], run_id, json.dumps(summary, default=str), json.dumps(data, default=str))


async def archive_rollback(conn: Conn, host: str, started_at: datetime | None, steps_total: int) -> None:
    """The rollback itself, in the history (in its last transaction, the one that drops ``bxbatch``)."""
    await conn.execute(Q["archive_ensure"])
    runs = int(await conn.fetchval("SELECT count(*) FROM bxbatch_history.run"))
    await conn.execute(Q["archive_rollback"], started_at, host, os.getpid(), steps_total, runs)
