"""Chunk workers: claim a pending range, apply it and mark it done, all in ONE transaction.

``apply_chunk_transaction`` is the single place where a chunk transaction runs: timeouts are set
there (``SET LOCAL``), errors are classified there (retry with backoff, or fail the chunk), so
throttling and health work can hook in without touching the rest of the engine.

Why this is exactly-once: the ledger row is locked ``FOR UPDATE SKIP LOCKED`` by the transaction
that does the chunk's work and flips it to ``done`` in the same commit. A crash at any instant
either commits both or neither; a concurrent worker (in this process or another one on another
host) skips the locked row and can never take it while it is in flight.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.backfill.split import SplitOutcome, split_or_fail
from bxbatch.db.render import render
from bxbatch.db.retry import Outcome, Retry, RetryPolicy, classify, is_connection_lost, needs_fix, retry
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger import backfill as chunk_ledger
from bxbatch.migrations.jobs import Job, render_segments
from bxbatch.migrations.profile import Profile
from bxbatch.observe.log import scrub
from bxbatch.observe.observer import current as observer
from bxbatch.settings import Settings

if TYPE_CHECKING:
    from bxbatch.live.throttle import Throttle

Q = queries("engine")
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# A chunk meeting one of these raced with the live application (a user table dropped, a view or
# member deleted between our snapshot and the foreign key check): the next attempt sees the new
# state and does the right thing, so retry it. Seen on the third attempt of one chunk, it is a fact
# about the chunk's data, not a race: its outcome decides (bisect, or stop for a fix).
RACE_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.ForeignKeyViolationError,
    pgexc.UndefinedTableError,
    pgexc.UniqueViolationError,
)
RACE_ATTEMPTS = 3

# A chunk's transaction: the moment (lock timeout, deadlock, lost connection: a fresh one comes from
# the pool), a table altered under a cached plan, and races are retried up to --max-attempts; the
# worker notes each retry in the ledger.
CHUNK_RETRY = RetryPolicy(also=(pgexc.InvalidCachedStatementError,), races=RACE_ERRORS, race_attempts=RACE_ATTEMPTS)
# The bisection's and the ledger's own writes, through connection trouble.
LEDGER_WRITE_RETRY = RetryPolicy(max_attempts=5, base_ms=100, max_ms=2_000)


def _affected(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@dataclass(frozen=True)
class PassRef:
    """What a worker needs to know about the pass it works on."""

    run_id: int
    job: Job
    seq: int
    kind: str  # main | catchup | reconcile
    profile: Profile

    @property
    def statement(self) -> str:
        return "reconcile" if self.kind == "reconcile" else "chunk"


@dataclass
class ChunkResult:
    chunk_id: int
    status: str  # done | failed | split (bisected: both halves pending again) | gone (taken elsewhere meanwhile)
    rows: int = 0
    planned_rows: int = 0
    seconds: float = 0.0
    retries: int = 0
    segments: int = 1
    first_part: int = 0
    error: str | None = None
    failed_key: int | None = None  # the single key a bisected chunk failed on


@dataclass
class WorkerState:
    """In-memory state of one worker task, written to bxbatch.worker by the heartbeat."""

    idx: int
    job: str | None = None
    chunk_id: int | None = None
    state: str = "idle"
    chunks_done: int = 0
    rows_done: int = 0


def live_user_tables_sql(profile: Profile) -> str:
    """The query keeping the (table id, relname) pairs that still exist, physically and in the registry."""
    return render(Q["live_user_tables"], registry=(profile.schema, str(profile.user_table_registry)))


async def _apply(conn: Conn, ref: PassRef, row: asyncpg.Record) -> int:
    """Run the job's statement for the claimed chunk; returns rows written (or changed)."""
    job = ref.job
    lo, hi = int(row["los"][0]), int(row["his"][0])
    if not job.per_user_table:
        args = (lo, hi, *job.extra_args(ref.profile))
        if ref.kind == "reconcile":
            return int(await conn.fetchval(job.sql("reconcile"), *args))
        return _affected(await conn.execute(job.sql("chunk"), *args))
    parts = [int(p) for p in row["parts"]]
    relnames: list[str] = row["relnames"]
    live = await conn.fetch(live_user_tables_sql(ref.profile), parts, relnames, ref.profile.schema)
    keep = [int(r["i"]) - 1 for r in live]
    if not keep:
        return 0  # every table of the chunk was dropped: nothing to seed, the range is done
    sql = render_segments(job, [relnames[i] for i in keep], ref.profile.schema)
    status = await conn.execute(
        sql,
        [parts[i] for i in keep],
        [int(row["los"][i]) for i in keep],
        [int(row["his"][i]) for i in keep],
    )
    return _affected(status)


SET_LOCALS = (
    "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true), "
    "set_config('idle_in_transaction_session_timeout', $3, true), "
    "set_config('application_name', $4, true)"
)


def _set_local_args(settings: Settings, app_name: str) -> tuple[str, str, str, str]:
    return (
        f"{int(settings.lock_timeout_ms)}ms",
        f"{int(settings.statement_timeout_ms)}ms",
        f"{int(settings.idle_in_transaction_timeout_ms)}ms",
        app_name[:63],
    )


async def warm_connection(
    conn: Conn, settings: Settings, jobs: Sequence[Job] = (), profile: Profile | None = None
) -> None:
    """Prepare a pool connection's statements before the first chunk needs them (best effort).

    A fresh backend spends ~10 ms loading catalog entries and planning its first claim; done
    here, on every connection at once while the planner cuts the first ranges, it is off the
    critical path. Everything runs in a transaction that is rolled back, on ranges that match
    nothing, within lock_timeout: a table the application has locked only leaves it cold.
    """
    tx = conn.transaction()
    try:
        await tx.start()
        try:
            await conn.execute(SET_LOCALS, *_set_local_args(settings, "bxbatch:warm-up"))
            await chunk_ledger.prepare_chunk_statements(conn)
            for job in jobs:
                if job.per_user_table or profile is None:
                    continue  # its statements are rendered per group of tables
                await conn.execute(job.sql("chunk"), 0, 0, *job.extra_args(profile))
                if job.reconcile:
                    await conn.fetchval(job.sql("reconcile"), 0, 0, *job.extra_args(profile))
        finally:
            await tx.rollback()  # nothing the warm-up did may stay
    except (asyncpg.PostgresError, OSError) as exc:
        if is_connection_lost(exc):
            return  # the first chunk meets it and retries like any other connection trouble
        if not CHUNK_RETRY.covers(exc):
            raise


async def _claim(conn: Conn, ref: PassRef, chunk_id: int | None) -> asyncpg.Record | None:
    if chunk_id is None:
        return await chunk_ledger.claim_chunk(conn, ref.run_id, ref.job.name, ref.seq)
    return await chunk_ledger.claim_chunk_by_id(conn, chunk_id)


async def apply_chunk_transaction(
    pool: asyncpg.Pool,
    settings: Settings,
    ref: PassRef,
    worker_label: str,
    on_claim: Callable[[int], Any] | None = None,
    *,
    throttle: Throttle | None = None,
    app_name: str = "bxbatch:worker",
) -> ChunkResult | None:
    """Claim one pending chunk of the pass and apply it in one transaction, retrying what is retryable.

    Returns None when no chunk is pending (or all pending ones are in flight elsewhere). Retries go
    through db/retry.py's loop with ``CHUNK_RETRY``; what it finally raises decides the chunk: a
    failure for a reason in its data is split in the ledger (backfill/split.py) and returned as
    ``split`` (at a single key, ``failed``); a missing object stops the run (exit 13).
    """
    chunk_id: int | None = None
    claimed_range: tuple[list[int], list[int], list[int]] | None = None  # what the failing attempt ran
    claimed_relnames: list[str] = []
    retries = 0
    attempts = 0

    async def attempt() -> ChunkResult | None:
        nonlocal chunk_id, claimed_range, claimed_relnames, attempts
        attempts += 1
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(SET_LOCALS, *_set_local_args(settings, app_name))
            claimed = await _claim(conn, ref, chunk_id)
            if claimed is None:
                if chunk_id is None:
                    return None
                return ChunkResult(chunk_id, "gone", retries=retries)
            chunk_id = int(claimed["id"])
            claimed_relnames = list(claimed["relnames"] or [])
            claimed_range = (
                [int(v) for v in claimed["parts"]],
                [int(v) for v in claimed["los"]],
                [int(v) for v in claimed["his"]],
            )
            if on_claim is not None:
                on_claim(chunk_id)
            t0 = time.monotonic()
            rows = await _apply(conn, ref, claimed)
            seconds = time.monotonic() - t0
            await chunk_ledger.finish_chunk(conn, chunk_id, rows, seconds * 1000.0, worker_label)
        return ChunkResult(
            chunk_id,
            "done",
            rows=rows,
            planned_rows=int(claimed["planned_rows"]),
            seconds=seconds,
            retries=retries,
            segments=len(claimed["parts"]),
            first_part=int(claimed["parts"][0]),
        )

    async def retried(scheduled: Retry) -> None:
        nonlocal retries
        if chunk_id is None:
            return  # failed before a chunk was claimed (connection trouble): nothing to count or note
        if scheduled.outcome is Outcome.RETRY and throttle is not None:
            throttle.note_retry(f"chunk retried after {type(scheduled.error).__name__}")
        retries += 1
        observer().retry(scheduled.outcome.value)
        message = scrub(f"{type(scheduled.error).__name__}: {scheduled.error}")[:500]
        await _note(pool, chunk_ledger.note_retry, chunk_id, message)

    policy = CHUNK_RETRY.for_settings(settings)
    stopping = (lambda: throttle.stopping and chunk_id is not None) if throttle is not None else None
    try:
        return await retry(attempt, policy, on_retry=retried, stop=stopping)
    except Exception as exc:
        racing = policy.covers(exc, attempts)  # still a retryable error: the loop gave up on it
        outcome = classify(exc)
        if outcome is Outcome.STOP_FOR_FIX and not racing:
            if chunk_id is not None and claimed_range is not None and len(claimed_range[0]) > 1:
                # one table of a multi-table chunk lacks something (a column, a privilege): split by
                # table until the culprit stands alone, so the other tables' rows go in meanwhile
                outcome_ = await _split(pool, chunk_id, exc, worker_label, claimed_range)
                message = scrub(f"{type(exc).__name__}: {exc}")[:500]
                return ChunkResult(chunk_id, "split" if outcome_.action == "split" else "gone", error=message)
            # a table, column or function gone, a privilege revoked: no retry and no bisection can
            # cure it; stop the run now (the chunk rolled back and stays pending for the resume)
            raise needs_fix(exc, f"applying {_chunk_name(ref, claimed_relnames, claimed_range)}") from exc
        if chunk_id is None:
            raise  # failed before a chunk was claimed, past the retries: give up loudly
        message = scrub(f"{type(exc).__name__}: {exc}")[:500]
        if outcome is Outcome.BISECT and not racing:
            # retrying cannot help: bisect the chunk through the ledger down to the failing key
            split = await _split(pool, chunk_id, exc, worker_label, claimed_range)
            status = {"split": "split", "failed_key": "failed"}.get(split.action, "gone")
            return ChunkResult(chunk_id, status, retries=retries + 1, error=message, failed_key=split.key)
        if outcome is Outcome.RETRY and throttle is not None:
            throttle.note_retry(f"chunk retried after {type(exc).__name__}")
        if racing and throttle is not None and throttle.stopping:
            return ChunkResult(chunk_id, "gone", retries=retries)  # stopping: it stays pending for resume
        if racing and outcome is Outcome.RECONNECT:
            raise  # the server is gone for longer than our retries: the run stops, resumable
        await _note(pool, chunk_ledger.fail_chunk, chunk_id, message, worker_label)
        return ChunkResult(chunk_id, "failed", retries=retries + 1, error=message)


def _chunk_name(ref: PassRef, relnames: list[str], claimed: tuple[list[int], list[int], list[int]] | None) -> str:
    """ "a chunk of activity_seed (table database_table_7, keys (0, 120])": what the operator must look at."""
    details = []
    if relnames:
        details.append("table " + ", ".join(relnames[:3]) + (", ..." if len(relnames) > 3 else ""))
    if claimed is not None and len(claimed[0]) == 1:
        details.append(f"keys ({claimed[1][0]}, {claimed[2][0]}]")
    return f"a chunk of {ref.job.name}" + (f" ({', '.join(details)})" if details else "")


async def _split(
    pool: asyncpg.Pool,
    chunk_id: int,
    exc: BaseException,
    worker_label: str,
    failed_range: tuple[list[int], list[int], list[int]] | None,
) -> SplitOutcome:
    """Split (or at one key, fail and record) the chunk, retrying the ledger write through connection trouble."""

    async def split() -> SplitOutcome:
        async with pool.acquire() as conn:
            return await split_or_fail(conn, chunk_id, exc, worker_label, failed_range)

    return await retry(split, LEDGER_WRITE_RETRY)


async def _note(pool: asyncpg.Pool, record: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Record a retry or a failure outside the rolled-back chunk transaction (best effort)."""
    try:
        async with pool.acquire() as conn:
            await record(conn, *args)
    except Exception as exc:
        if not CHUNK_RETRY.covers(exc):
            raise


@dataclass
class WorkerStats:
    chunks: int = 0
    rows: int = 0
    failed: int = 0
    retries: int = 0
    longest_s: float = 0.0
    durations: list[float] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        self.retries += result.retries
        if result.status == "done":
            self.chunks += 1
            self.rows += result.rows
            self.longest_s = max(self.longest_s, result.seconds)
            self.durations.append(result.seconds)
        elif result.status == "failed":
            self.failed += 1
