"""The backfill engine's ledger (jobs, passes, parts, chunks, workers): every read and write of it, by name.

Like procrastinate's ``JobManager``: the engine never writes SQL on these tables itself, so what it
records, and in which transaction, is read here in one place. ``BackfillLedger`` is bound to one
connection and one run (the driver's connection: passes, plan steps, heartbeats); the chunk
transaction's own statements (claim, finish, note a retry, fail) are module functions that take
the worker's pool connection, because they must run inside the chunk's transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from bxbatch.db.sqlfiles import queries
from bxbatch.ledger.runs import LOCK_CLASS

Q = queries("backfill_ledger")
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy  # a worker's chunk runs on a pooled connection

# One process creates a pass at a time: advisory lock (ENGINE_LOCK_CLASS, LOCK_PASS_CREATE). A class of
# its own, so that preflight's "another bxbatch run holds the run lock" check (any lock of
# runs.LOCK_CLASS) does not refuse a process joining a run while another one creates a pass.
ENGINE_LOCK_CLASS = LOCK_CLASS + 1
LOCK_PASS_CREATE = 20


@dataclass(frozen=True)
class PartSpec:
    """One key domain of a pass: a table's (lo, hi], or one user table's (0, high-water]."""

    part: int
    relname: str | None
    lo: int
    hi: int
    est: int | None = None
    exact: bool = False


@dataclass(frozen=True)
class PlannedChunk:
    """A chunk the planner cut: its segments (part, lo, hi) and the keys it covers."""

    parts: list[int]
    los: list[int]
    his: list[int]
    relnames: list[str | None] | None
    planned_rows: int


@dataclass
class BackfillLedger:
    """The ledger rows of one run's backfill jobs, read and written on ``conn``."""

    conn: asyncpg.Connection
    run_id: int

    # --- jobs ---------------------------------------------------------------------------------
    async def job(self, name: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow(Q["get_job"], self.run_id, name)

    async def add_job(self, name: str, order: int, sha256: str, expected: int | None) -> None:
        await self.conn.execute(Q["insert_job"], self.run_id, name, order, sha256, expected)

    async def set_job_status(self, name: str, status: str, detail: str = "{}") -> None:
        await self.conn.execute(Q["set_job_status"], self.run_id, name, status, detail)

    async def job_totals(self, window_s: float = 60.0) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(Q["job_totals"], self.run_id, window_s))

    async def reset_failed_chunks(self) -> None:
        """On resume: failed chunks get another try, and their passes are reopened."""
        await self.conn.execute(Q["reset_failed_chunks"], self.run_id)

    async def tables_to_seed(self, job: str, only_this_run: bool) -> list[asyncpg.Record]:
        """User tables with a high-water mark that no pass of ``job`` covered since their trigger went in."""
        return list(await self.conn.fetch(Q["tables_to_seed"], job, self.run_id if only_this_run else None))

    # --- passes -------------------------------------------------------------------------------
    async def pass_row(self, job: str, seq: int) -> asyncpg.Record | None:
        return await self.conn.fetchrow(Q["get_pass"], self.run_id, job, seq)

    @asynccontextmanager
    async def creating_passes(self) -> AsyncIterator[None]:
        """Hold the pass-creation lock: one process creates a pass at a time, every other one finds it made."""
        await self.conn.execute("SELECT pg_advisory_lock($1, $2)", ENGINE_LOCK_CLASS, LOCK_PASS_CREATE)
        try:
            yield
        finally:
            await self.conn.execute("SELECT pg_advisory_unlock($1, $2)", ENGINE_LOCK_CLASS, LOCK_PASS_CREATE)

    async def add_pass(
        self, job: str, seq: int, kind: str, round_: int, parts: Sequence[PartSpec], *, counts_expected: bool
    ) -> None:
        """The pass and its parts (the caller holds a transaction); a pass with no part is done at once.

        ``counts_expected``: a per-user-table job adds its new parts' row estimates to the job's total."""
        await self.conn.execute(Q["insert_pass"], self.run_id, job, seq, kind, round_)
        await self.conn.execute(
            Q["insert_parts"],
            self.run_id,
            job,
            seq,
            [p.part for p in parts],
            [p.relname for p in parts],
            [p.lo for p in parts],
            [p.hi for p in parts],
            [p.est for p in parts],
            [p.exact for p in parts],
        )
        if not parts:
            await self.set_pass_status(job, seq, "done")
        elif counts_expected:
            await self.conn.execute(Q["add_expected_rows"], self.run_id, job, sum(p.est or 0 for p in parts))

    async def set_pass_status(self, job: str, seq: int, status: str) -> None:
        await self.conn.execute(Q["set_pass_status"], self.run_id, job, seq, status)

    async def pass_totals(self, job: str, seq: int) -> asyncpg.Record:
        row = await self.conn.fetchrow(Q["pass_totals"], self.run_id, job, seq)
        assert row is not None  # an aggregate always returns its row
        return row

    async def pass_bounds(self, job: str, seq: int) -> asyncpg.Record:
        row = await self.conn.fetchrow(Q["pass_bounds"], self.run_id, job, seq)
        assert row is not None
        return row

    async def count_pending(self, job: str, seq: int) -> int:
        return int(await self.conn.fetchval(Q["count_pending"], self.run_id, job, seq))

    # --- a plan step (inside the planner's transaction) ---------------------------------------
    async def lock_pass(self, job: str, seq: int) -> str | None:
        """The pass's status, its row locked until the step commits: planners of one pass take turns."""
        status = await self.conn.fetchval(Q["lock_pass"], self.run_id, job, seq)
        return None if status is None else str(status)

    async def open_parts(self, job: str, seq: int, limit: int) -> list[asyncpg.Record]:
        return list(await self.conn.fetch(Q["open_parts"], self.run_id, job, seq, limit))

    async def add_chunks(self, job: str, seq: int, chunks: Sequence[PlannedChunk]) -> None:
        await self.conn.executemany(
            Q["insert_chunk"],
            [(self.run_id, job, seq, c.parts, c.los, c.his, c.relnames, c.planned_rows) for c in chunks],
        )

    async def advance_parts(self, job: str, seq: int, upto: dict[int, int]) -> None:
        """Each part's planning cursor moved to ``upto[part]`` (never backwards)."""
        await self.conn.executemany(Q["advance_part"], [(self.run_id, job, seq, part, hi) for part, hi in upto.items()])

    # --- workers ------------------------------------------------------------------------------
    async def heartbeat(self, host: str, pid: int, workers: Sequence[dict[str, Any]]) -> None:
        """Each worker's state as ``status`` shows it (one row per host, pid and worker index)."""
        await self.conn.execute(
            Q["heartbeat"],
            self.run_id,
            host,
            pid,
            [w["idx"] for w in workers],
            [w["job"] for w in workers],
            [w["chunk_id"] for w in workers],
            [w["state"] for w in workers],
            [w["chunks_done"] for w in workers],
            [w["rows_done"] for w in workers],
        )


async def jobs_table_present(conn: asyncpg.Connection) -> bool:
    """The engine's tables exist (absent on a ledger made before any backfill ran)."""
    return bool(await conn.fetchval(Q["jobs_table_present"]))


async def active_workers(conn: asyncpg.Connection, run_id: int, within_s: float) -> list[asyncpg.Record]:
    """Workers of the run that beat within ``within_s`` seconds and have not stopped."""
    return list(await conn.fetch(Q["active_workers"], run_id, within_s))


async def job_totals(conn: asyncpg.Connection, run_id: int, window_s: float) -> list[asyncpg.Record]:
    """Per job of a run: rows, chunks by state, retries, longest chunk, rows in the last ``window_s``."""
    return list(await conn.fetch(Q["job_totals"], run_id, window_s))


# --- the chunk transaction (on the worker's connection, inside its transaction) ---------------------
async def claim_chunk(conn: Conn, run_id: int, job: str, seq: int) -> asyncpg.Record | None:
    """The first pending chunk of the pass nobody holds, locked until the chunk's transaction ends."""
    return await conn.fetchrow(Q["claim_chunk"], run_id, job, seq)


async def claim_chunk_by_id(conn: Conn, chunk_id: int) -> asyncpg.Record | None:
    """The same chunk again (a retry), unless another worker has it or did it meanwhile."""
    return await conn.fetchrow(Q["claim_chunk_by_id"], chunk_id)


async def finish_chunk(conn: Conn, chunk_id: int, rows: int, ms: float, worker: str) -> None:
    """Mark the chunk done, in the transaction that applied it: exactly once."""
    await conn.execute(Q["finish_chunk"], chunk_id, rows, ms, worker)


async def note_retry(conn: Conn, chunk_id: int, error: str) -> None:
    await conn.execute(Q["note_retry"], chunk_id, error)


async def fail_chunk(conn: Conn, chunk_id: int, error: str, worker: str) -> None:
    await conn.execute(Q["fail_chunk"], chunk_id, error, worker)


async def prepare_chunk_statements(conn: Conn) -> None:
    """Prepare the chunk transaction's ledger statements on a fresh connection (no row matches id -1)."""
    await conn.fetchrow(Q["claim_chunk"], -1, "", -1)
    await conn.fetchrow(Q["claim_chunk_by_id"], -1)
    await conn.execute(Q["finish_chunk"], -1, 0, 0.0, "")


# --- bisection (backfill/split.py), in the transaction that splits or fails the chunk --------------
async def lock_chunk_for_split(conn: Conn, chunk_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["lock_chunk_for_split"], chunk_id)


async def shrink_chunk(conn: Conn, chunk_id: int, half: PlannedChunk, error: str) -> None:
    """The chunk's own row keeps the first half, still pending, its error noted."""
    await conn.execute(
        Q["shrink_chunk"], chunk_id, half.parts, half.los, half.his, half.relnames, half.planned_rows, error
    )


async def add_split_chunk(conn: Conn, run_id: int, job: str, seq: int, half: PlannedChunk, error: str) -> int:
    """A new pending row for the second half; returns its id."""
    new_id = await conn.fetchval(
        Q["insert_split_chunk"],
        run_id,
        job,
        seq,
        half.parts,
        half.los,
        half.his,
        half.relnames,
        half.planned_rows,
        error,
    )
    return int(new_id)


async def record_failed_key(
    conn: Conn,
    chunk: asyncpg.Record,
    part: int,
    relname: str | None,
    key: int,
    sqlstate: str | None,
    error: str,
) -> None:
    """The one key a chunk was bisected down to, with its error (the chunk itself is failed by the caller)."""
    await conn.execute(
        Q["record_failed_key"],
        chunk["run_id"],
        chunk["job"],
        chunk["seq"],
        part,
        relname,
        key,
        chunk["id"],
        sqlstate,
        error,
    )


async def clear_failed_keys(conn: asyncpg.Connection, run_id: int) -> None:
    """Forget the run's failed keys (their chunks are being retried)."""
    if await conn.fetchval(Q["failed_key_table_present"]):
        await conn.execute(Q["clear_failed_keys"], run_id)


# --- change capture (backfill/changes.py) -----------------------------------------------------------
async def forget_capture(conn: Conn, run_id: int, job: str) -> None:
    await conn.execute(Q["forget_capture"], run_id, job)


async def record_capture(conn: Conn, run_id: int, job: str) -> None:
    """The job's capture triggers are in place from now on (in the transaction that created them)."""
    await conn.execute(Q["record_capture"], run_id, job)


async def capture_recorded(conn: Conn, run_id: int, job: str) -> bool:
    return bool(await conn.fetchval(Q["capture_recorded"], run_id, job))


async def clear_changed_keys(conn: Conn, job: str) -> None:
    await conn.execute(Q["clear_changed_keys"], job)


async def take_changed_keys(conn: Conn, job: str) -> list[int | None]:
    """Consume the job's captured keys (None: the whole job changed, e.g. a TRUNCATE)."""
    return [None if r["key"] is None else int(r["key"]) for r in await conn.fetch(Q["take_changed_keys"], job)]


async def changed_keys_pending(conn: Conn, job: str) -> bool:
    return bool(await conn.fetchval(Q["changed_keys_pending"], job))
