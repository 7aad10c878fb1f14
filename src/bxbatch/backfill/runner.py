"""The engine's driver: runs backfill jobs as ledger-recorded passes, each planned ahead of a pool of chunk workers.

A job is a sequence of passes, numbered in the ledger (``bxbatch.pass.seq``) in the order the
driver creates them:

1. ``main``: the key domain as it is when the job starts, (0, max key] (for activity_seed, each
   user table's (0, high-water]).
2. ``catchup`` passes: keys that appeared after the previous pass's bound (new views, new
   users; for activity_seed, user tables created since, which get the trigger first), repeated
   until a pass finds nothing new.
3. settle rounds, across all jobs: a catch-up pass, then for jobs that support it a
   ``reconcile`` pass, until a whole round changes no row (at most ``MAX_SETTLE_ROUNDS``).

The driver is deterministic given the ledger: a pass is created once (under an advisory lock,
with its parts: the key domains it covers) and every decision depends only on passes already
recorded, so a resumed run, or a second process joining the run, replays the same sequence and
picks up the work where it is. Chunks of a pass are claimed with SKIP LOCKED by every process.

Why reconciliation (and why chunked anti-joins rather than triggers on the base tables): the
key-ordered passes cannot see changes that land in ranges already done, e.g. a new membership
of an existing user (its user_id is below the permission pass's bound), a membership removed
(its permission rows stay), a view switched to or from the grid type, a table deleted (no
foreign key can cascade from the polymorphic ``resource_id``). A reconcile chunk compares, in
one range and one transaction, what the chunk statement would produce now with what is there,
both ways: it inserts what is missing, deletes what the backfill would no longer produce, and
corrects changed values. It needs no triggers or DDL on the application's tables, is bounded
and resumable like any pass, and costs one extra read of the source per round. The activity
log needs no reconciliation: rows past a table's high-water mark are the trigger's, and a row
deleted before its chunk ran was, correctly, never seeded (the trigger logged its deletion).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import anyio
import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.backfill import changes
from bxbatch.backfill.chunksize import ChunkSizer
from bxbatch.backfill.planner import PartCursor, TableKeySource, plan_chunks
from bxbatch.backfill.split import clear_failed_keys
from bxbatch.backfill.worker import (
    ChunkResult,
    PassRef,
    WorkerState,
    WorkerStats,
    apply_chunk_transaction,
    warm_connection,
)
from bxbatch.db.locks import lock_budget
from bxbatch.db.session import CONNECTION_LOST_ERRORS, RETRYABLE_ERRORS, backoff_delay, connect, create_pool, qualified
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import ChangedFileError, ConnectionFailed, Interrupted, SqlFileError
from bxbatch.ledger import runs as ledger
from bxbatch.live.control import guard
from bxbatch.live.throttle import Throttle
from bxbatch.migrations.jobs import Job, load_jobs
from bxbatch.migrations.profile import GUIDE, Profile
from bxbatch.observe.observer import current as observer
from bxbatch.observe.progress import bar
from bxbatch.settings import Settings

Q = queries("engine")

# One process creates a pass at a time: advisory lock (ENGINE_LOCK_CLASS, LOCK_PASS_CREATE). A class of
# its own, so that preflight's "another bxbatch run holds the run lock" check (any lock of
# ledger.LOCK_CLASS) does not refuse a process joining a run while another one creates a pass.
ENGINE_LOCK_CLASS = ledger.LOCK_CLASS + 1
LOCK_PASS_CREATE = 20
MAX_SETTLE_ROUNDS = 8
MAX_SEGMENTS = 64  # user tables per grouped chunk (one UNION ALL statement), at most the lock group
COUNT_CAP = 2_000_000  # exact key counts of user tables up to this; beyond, pg_class.reltuples
COUNT_BATCH = 200  # user tables counted per round trip when a pass is created, at most the lock group
HEARTBEAT_SECONDS = 0.5
# What a plan step retries: the moment was bad (a lock wait past lock_timeout, a deadlock).
PLAN_RETRY_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.LockNotAvailableError,
    pgexc.DeadlockDetectedError,
    pgexc.SerializationError,
    pgexc.QueryCanceledError,
)


@dataclass(frozen=True)
class PartSpec:
    part: int
    relname: str | None
    lo: int
    hi: int
    est: int | None = None
    exact: bool = False


@dataclass
class PassResult:
    seq: int
    kind: str
    round: int
    parts: int
    lo: int | None
    hi: int | None
    rows: int
    chunks: int
    failed: int


@dataclass
class JobReport:
    name: str
    rows: int = 0  # rows written by main and catch-up passes (all processes)
    reconciled: int = 0  # rows changed by reconcile passes and settle catch-ups
    expected: int | None = None
    seconds: float = 0.0
    chunks: int = 0
    failed: int = 0
    retries: int = 0
    longest_ms: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    passes: int = 0
    attempt_rows: int = 0  # rows of ``rows`` written during this attempt (a resumed run did the rest before)

    @property
    def rows_per_s(self) -> float:
        """This attempt's rows over this attempt's time (never earlier attempts' rows over it)."""
        return self.attempt_rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_s"] = round(self.rows_per_s, 1)
        d["seconds"] = round(self.seconds, 3)
        for k in ("longest_ms", "p50_ms", "p99_ms"):
            d[k] = round(d[k], 1)
        return d


class _Signal:
    """A re-armable wake-up: ``fire`` wakes every current waiter."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, seconds: float) -> None:
        event = self._event
        with anyio.move_on_after(seconds):
            await event.wait()


@dataclass
class _PlanState:
    complete: bool = False
    more: _Signal = field(default_factory=_Signal)  # the planner wrote chunks
    consumed: _Signal = field(default_factory=_Signal)  # a worker claimed or finished a chunk


# the before-settle hook is tried again on these (connection trouble, lock timeouts)
BEFORE_SETTLE_RETRY: tuple[type[BaseException], ...] = (ConnectionFailed, *RETRYABLE_ERRORS, *CONNECTION_LOST_ERRORS)


def _left_to_plan(parts: list[PartCursor]) -> int:
    """Estimated keys not yet planned: each part's estimate times the share of its range left."""
    total = 0.0
    for p in parts:
        if p.est_rows and p.hi > p.lo:
            total += p.est_rows * max(0, p.hi - p.upto) / (p.hi - p.lo)
    return round(total)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


class Engine:
    """One process's share of a run's backfills: a pool, N workers, a planner, a heartbeat."""

    def __init__(
        self,
        *,
        conn: asyncpg.Connection,
        pool: asyncpg.Pool,
        settings: Settings,
        run_id: int,
        log: Any,
        throttle: Throttle,
        profile: Profile = GUIDE,
        install_missing: Callable[[], Awaitable[Any]] | None = None,
        history_counts: bool = True,
        before_settle: Callable[[Any], Awaitable[Any]] | None = None,
        after_main: Callable[[Job], Awaitable[Any]] | None = None,
    ) -> None:
        """``after_main(job)``: called when a job's main and catch-up passes are done (the backfill phase
        starts the builds of the job's target's indexes there, while the later jobs run).
        ``before_settle(conn)``: run (on a connection of its own) after every job's main and catch-up
        passes, before the settle rounds: the backfill phase adds the targets' foreign keys there.
        ``history_counts=False``: user tables seeded by earlier runs are seeded again (for a
        benchmark that empties the target between runs; a migration must never do that)."""
        self.history_counts = history_counts
        self.before_settle = before_settle
        self.after_main = after_main
        self.conn = conn
        self.pool = pool
        self.settings = settings
        self.run_id = run_id
        self.log = log
        self.throttle = throttle
        self.profile = profile
        self.install_missing = install_missing
        self.conn_lock = anyio.Lock()  # the main connection serves planner, heartbeat and driver
        self.workers = max(1, int(getattr(throttle, "workers", throttle.max_concurrency)))
        self.states = [WorkerState(i) for i in range(self.workers)]
        self.label = f"{settings.host}:{os.getpid()}"
        # Claimable chunks kept planned ahead of the workers: one per worker and one more, so none waits
        # for the planner, and sizes still follow the measurements closely.
        self.lookahead = self.workers + 1
        self.sizers: dict[tuple[str, str], ChunkSizer] = {}
        self.fanout: dict[str, float] = {}  # rows written per key, estimated when the job starts
        self.stats: dict[str, WorkerStats] = {}
        self.bars: dict[str, Any] = {}
        self.plan_retries = 0  # plan steps that waited past lock_timeout and were tried again
        # user tables per chunk and per counting statement: bounded by the lock budget (run_jobs)
        self.max_segments = MAX_SEGMENTS
        self.count_batch = COUNT_BATCH

    # --- ledger helpers -------------------------------------------------------------------
    def sizer(self, job: Job, kind: str) -> ChunkSizer:
        key = (job.name, "reconcile" if kind == "reconcile" else "write")
        if key not in self.sizers:
            sizer = ChunkSizer.from_settings(self.settings)
            # Chunks are cut in keys; a key may yield many rows (a member: one row per table of the
            # workspace). Start from --initial-chunk-rows *rows*, not keys.
            fanout = self.fanout.get(job.name, 1.0)
            if fanout > 1.0:
                sizer.size = sizer.next_size(1.0 / fanout)
            self.sizers[key] = sizer
        return self.sizers[key]

    async def _expected(self, job: Job) -> int | None:
        if job.per_user_table:
            return None  # known once the main pass has counted its tables
        return int(await self.conn.fetchval(job.sql("expected"), *job.extra_args(self.profile)))

    async def ensure_job(self, job: Job) -> None:
        async with self.conn_lock:
            exists = await self.conn.fetchrow(Q["get_job"], self.run_id, job.name)
            if exists is None:
                expected = await self._expected(job)
                await self.conn.execute(Q["insert_job"], self.run_id, job.name, job.order, job.sha256, expected)
            elif exists["file_sha256"] != job.sha256:
                # the chunks already done came from the old statement: mixing two versions in one
                # run would make its result neither the old nor the new job's
                raise ChangedFileError(
                    f"sql/backfill/{job.file} changed since this run started job {job.name}",
                    hint="restore the file, or finish the run with the bxbatch version that started it",
                )
            else:
                expected = exists["expected_rows"]
            if expected and job.key_table and not job.per_user_table:
                table = qualified(self.profile.schema, job.key_table)
                keys = await self.conn.fetchval(Q["reltuples"], table)
                if not keys:  # never analysed (reltuples -1): a fan-out of 1 would size the first chunks
                    # several times too big (scale 3: 5,000 members = 35,000 permissions in one chunk)
                    keys = await self.conn.fetchval(
                        f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT $1) AS k", COUNT_CAP
                    )
                if keys and keys > 0:
                    self.fanout[job.name] = max(1.0, float(expected) / float(keys))

    # --- parts of a pass ------------------------------------------------------------------
    async def _table_parts(self, job: Job, lo: int, bound_sql: str) -> list[PartSpec]:
        bound = int(await self.conn.fetchval(job.sql(bound_sql)))
        if bound <= lo:
            return []
        est = await self.conn.fetchval(Q["reltuples"], qualified(self.profile.schema, job.key_table or ""))
        return [PartSpec(0, None, lo, bound, int(est) if est is not None else None, False)]

    async def _user_table_parts(self, job: Job) -> list[PartSpec]:
        """User tables with a trigger high-water mark that no earlier pass of this job covered."""
        if self.install_missing is not None:
            await self.install_missing()
        todo = await self.conn.fetch(Q["tables_to_seed"], job.name, None if self.history_counts else self.run_id)
        parts: list[PartSpec] = []
        for start in range(0, len(todo), self.count_batch):
            batch = todo[start : start + self.count_batch]
            counts = await self._count_user_tables(batch)
            for r in batch:
                tid, rel, hw = int(r["table_id"]), str(r["relname"]), int(r["high_water"])
                n = counts.get(tid)
                if n is None or n >= COUNT_CAP:
                    est = await self.conn.fetchval(Q["reltuples"], qualified(self.profile.schema, rel))
                    parts.append(PartSpec(tid, rel, 0, hw, max(int(est or 0), n or 0), False))
                else:
                    parts.append(PartSpec(tid, rel, 0, hw, n, True))
        return parts

    async def _count_user_tables(self, batch: list[asyncpg.Record]) -> dict[int, int]:
        """Exact row counts (capped) of these user tables up to their high-water mark, one round trip."""
        tids = [int(r["table_id"]) for r in batch]
        rels = [str(r["relname"]) for r in batch]
        for _attempt in range(3):
            live = [
                int(r["i"]) - 1 for r in await self.conn.fetch(Q["live_user_tables"], tids, rels, self.profile.schema)
            ]
            if not live:
                return {}
            sql = " UNION ALL ".join(
                f"SELECT {n}::int AS i, count(*) AS n FROM (SELECT 1 FROM {qualified(self.profile.schema, rels[i])} "
                f"WHERE id <= ($1::bigint[])[{n}] LIMIT $2) AS s"
                for n, i in enumerate(live, start=1)
            )
            his = [int(batch[i]["high_water"]) for i in live]
            try:
                rows = await self.conn.fetch(sql, his, COUNT_CAP)
            except (asyncpg.UndefinedTableError, asyncpg.InvalidCachedStatementError):
                continue  # a table was dropped between the check and the count: check again
            return {tids[live[int(r["i"]) - 1]]: int(r["n"]) for r in rows}
        return {}

    async def _parts_for(self, job: Job, kind: str, after: int) -> list[PartSpec]:
        if job.per_user_table:
            return [] if kind == "reconcile" else await self._user_table_parts(job)
        if kind == "reconcile":
            return await self._table_parts(job, 0, "reconcile_bound")
        return await self._table_parts(job, after, "main_bound")

    # --- passes ---------------------------------------------------------------------------
    async def run_pass(self, job: Job, seq: int, kind: str, round_: int, after: int = 0) -> PassResult:
        """Create the pass if this is the first process to get here, work it to the end, return its totals."""
        async with self.conn_lock:
            row = await self.conn.fetchrow(Q["get_pass"], self.run_id, job.name, seq)
        if row is None:
            await self._create_pass(job, seq, kind, round_, after)
            async with self.conn_lock:
                row = await self.conn.fetchrow(Q["get_pass"], self.run_id, job.name, seq)
        assert row is not None
        if row["kind"] != kind:
            raise SqlFileError(
                f"the ledger's pass {seq} of job {job.name} is a {row['kind']} pass, this bxbatch expected {kind}",
                hint="resume with the bxbatch version that started the run",
            )
        if row["status"] != "done":
            await self._work_pass(job, seq, kind)
        return await self._pass_result(job, seq, kind, round_)

    async def _create_pass(self, job: Job, seq: int, kind: str, round_: int, after: int) -> None:
        async with self.conn_lock:
            conn = self.conn
            await conn.execute("SELECT pg_advisory_lock($1, $2)", ENGINE_LOCK_CLASS, LOCK_PASS_CREATE)
            try:
                if await conn.fetchrow(Q["get_pass"], self.run_id, job.name, seq) is not None:
                    return  # another process created it while we waited
                if kind == "main" and job.changes:
                    await self._install_capture(job)  # before the main pass exists: see engine/changes.py
                targeted = kind == "reconcile" and await changes.targeted(conn, self.run_id, job, self.profile.schema)
                parts = [] if targeted else await self._parts_for(job, kind, after)
                async with conn.transaction():
                    if targeted:
                        # the captured keys are consumed in the transaction that records the pass they feed
                        whole, keys = await changes.take(conn, job)
                        if whole:
                            parts = await self._table_parts(job, 0, "reconcile_bound")
                        else:
                            parts = [PartSpec(i, None, lo, hi) for i, (lo, hi) in enumerate(changes.ranges(keys))]
                        self.log.debug(
                            "reconcile_targeted", job=job.name, whole=whole, keys=len(keys), parts=len(parts)
                        )
                    await conn.execute(Q["insert_pass"], self.run_id, job.name, seq, kind, round_)
                    await conn.execute(
                        Q["insert_parts"],
                        self.run_id,
                        job.name,
                        seq,
                        [p.part for p in parts],
                        [p.relname for p in parts],
                        [p.lo for p in parts],
                        [p.hi for p in parts],
                        [p.est for p in parts],
                        [p.exact for p in parts],
                    )
                    if not parts:
                        await conn.execute(Q["set_pass_status"], self.run_id, job.name, seq, "done")
                    if job.per_user_table and kind != "reconcile" and parts:
                        await conn.execute(
                            "UPDATE bxbatch.job SET expected_rows = coalesce(expected_rows, 0) + $3 "
                            "WHERE run_id = $1 AND name = $2",
                            self.run_id,
                            job.name,
                            sum(p.est or 0 for p in parts),
                        )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", ENGINE_LOCK_CLASS, LOCK_PASS_CREATE)
        self.log.debug("pass_created", job=job.name, seq=seq, kind=kind, round=round_, parts=len(parts))

    async def _install_capture(self, job: Job) -> None:
        """The job's change-capture triggers, retried past lock_timeout (a busy base table)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await changes.install(self.conn, self.run_id, job, self.profile.schema, self.settings)
                return
            except PLAN_RETRY_ERRORS as exc:
                if attempt >= self.settings.max_attempts:
                    raise
                self.log.info("change_capture_retried", job=job.name, error=type(exc).__name__)
                await anyio.sleep(backoff_delay(attempt, self.settings.retry_base_ms, self.settings.retry_max_ms))

    async def _pass_result(self, job: Job, seq: int, kind: str, round_: int) -> PassResult:
        async with self.conn_lock:
            totals = await self.conn.fetchrow(Q["pass_totals"], self.run_id, job.name, seq)
            bounds = await self.conn.fetchrow(Q["pass_bounds"], self.run_id, job.name, seq)
        assert totals is not None and bounds is not None
        return PassResult(
            seq=seq,
            kind=kind,
            round=round_,
            parts=int(bounds["parts"]),
            lo=None if bounds["lo"] is None else int(bounds["lo"]),
            hi=None if bounds["hi"] is None else int(bounds["hi"]),
            rows=int(totals["rows"]),
            chunks=int(totals["done"]),
            failed=int(totals["failed"]),
        )

    async def _work_pass(self, job: Job, seq: int, kind: str) -> None:
        ref = PassRef(run_id=self.run_id, job=job, seq=seq, kind=kind, profile=self.profile)
        sizer = self.sizer(job, kind)
        state = _PlanState()
        source = TableKeySource(self.conn, self.profile.schema, job.key_table, job.key_column or "id")
        while True:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._planner, ref, source, sizer, state, name=f"planner:{job.name}:{seq}")
                for idx in range(self.workers):
                    tg.start_soon(self._worker, idx, ref, sizer, state, name=f"worker:{idx}")
            if self.throttle.stopping:
                raise Interrupted(
                    f"stopped ({self.throttle.stop_reason}); chunks in flight were committed or rolled back",
                    hint="run `bxbatch resume` to continue",
                )
            async with self.conn_lock:
                pending = int(await self.conn.fetchval(Q["count_pending"], self.run_id, job.name, seq))
                if pending == 0:
                    await self.conn.execute(Q["set_pass_status"], self.run_id, job.name, seq, "done")
                    return
            # Chunks in flight in another process (or left by a dead one: its locks went with
            # its connection). Look again shortly; our workers claim whatever becomes free.
            await anyio.sleep(0.25)

    async def _planner(self, ref: PassRef, source: TableKeySource, sizer: ChunkSizer, state: _PlanState) -> None:
        while not self.throttle.stopping:
            async with self.conn_lock:
                complete = await self._plan_step_retrying(ref, source, sizer)
            if complete:
                state.complete = True
                state.more.fire()
                self.throttle.wake()  # workers held above a cut limit may now retire
                return
            state.more.fire()
            await state.consumed.wait(0.5)

    async def _plan_step_retrying(self, ref: PassRef, source: TableKeySource, sizer: ChunkSizer) -> bool:
        """A plan step waits at most lock_timeout for a table the application locked (an ALTER TABLE
        adding a field), then backs off and tries again: the step rolled back whole, and the next one
        starts from the cursors in the ledger."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._plan_step(ref, source, sizer)
            except PLAN_RETRY_ERRORS as exc:
                if attempt >= self.settings.max_attempts:
                    raise
                self.plan_retries += 1
                self.log.info("plan_step_retried", job=ref.job.name, pass_seq=ref.seq, error=type(exc).__name__)
                await anyio.sleep(backoff_delay(attempt, self.settings.retry_base_ms, self.settings.retry_max_ms))

    async def _plan_step(self, ref: PassRef, source: TableKeySource, sizer: ChunkSizer) -> bool:
        """Write chunks until ``lookahead`` are pending. True when the whole pass is planned."""
        sizer.retarget(self.throttle.settings)  # `bxbatch set target_chunk_ms=... / *_chunk_rows=...`
        conn, run_id, job, seq = self.conn, self.run_id, ref.job.name, ref.seq
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', $1, true)", f"{int(self.settings.lock_timeout_ms)}ms")
            status = await conn.fetchval(Q["lock_pass"], run_id, job, seq)  # serialises planners
            if status != "planning":
                return True
            # A chunk in flight is still pending until it commits: ours do not count as planned ahead.
            in_flight = sum(1 for w in self.states if w.state == "working")
            want = self.lookahead + in_flight - int(await conn.fetchval(Q["count_pending"], run_id, job, seq))
            if want <= 0:
                return False
            limit = want * self.max_segments + 1
            rows = await conn.fetch(Q["open_parts"], run_id, job, seq, limit)
            parts = [
                PartCursor(
                    part=int(r["part"]),
                    relname=r["relname"],
                    lo=int(r["lo"]),
                    hi=int(r["hi"]),
                    upto=int(r["planned_upto"]),
                    est_rows=None if r["est_rows"] is None else int(r["est_rows"]),
                    est_exact=bool(r["est_exact"]),
                )
                for r in rows
            ]
            before = {p.part: p.upto for p in parts}
            scale = self.throttle.chunk_scale
            # Never more than a fair share of the pass: a small job (or a short catch-up pass) is cut
            # into at least one chunk per worker instead of one long chunk on one worker.
            # The share is of what is left to plan (keys spread evenly over each part's key range), so
            # the last chunks come out about even and no worker idles while another finishes a big one.
            keys = _left_to_plan(parts) if len(rows) < limit else 0  # 0: more parts than loaded
            fair = max(sizer.floor, -(-keys // self.workers)) if keys > 0 else sizer.ceiling
            if not sizer.observations:
                # Nothing measured yet: the initial size is a guess (a fan-out estimate, a cost per key
                # from another machine), and every chunk planned ahead of the first commit would share
                # it: all workers would start on chunks of the same wrong size at once. Split the guess
                # across the lookahead; the sizer grows 2x per measured chunk from its initial size.
                fair = min(fair, max(sizer.floor, sizer.size // self.lookahead))
            chunks = await plan_chunks(
                parts,
                source,
                min(fair, sizer.next_size(scale)),
                want,
                self.max_segments if ref.job.per_user_table else 1,  # a table job's chunk is one key range
                size_for=lambda p: min(fair, sizer.size_for(p.part if p.relname else None, scale)),
            )
            relname = {p.part: p.relname for p in parts}
            await conn.executemany(
                Q["insert_chunk"],
                [
                    (
                        run_id,
                        job,
                        seq,
                        [s.part for s in c.segments],
                        [s.lo for s in c.segments],
                        [s.hi for s in c.segments],
                        [relname[s.part] for s in c.segments] if ref.job.per_user_table else None,
                        c.planned_rows,
                    )
                    for c in chunks
                ],
            )
            await conn.executemany(
                Q["advance_part"],
                [(run_id, job, seq, p.part, p.upto) for p in parts if p.upto != before[p.part]],
            )
            if len(rows) < limit and not any(p.open for p in parts):
                await conn.execute(Q["set_pass_status"], run_id, job, seq, "planned")
                return True
            return False

    async def _worker(self, idx: int, ref: PassRef, sizer: ChunkSizer, state: _PlanState) -> None:
        me = self.states[idx]
        me.job = ref.job.name
        label = f"{self.label}:{idx}"

        def claimed(chunk_id: int) -> None:
            me.chunk_id = chunk_id
            me.state = "working"
            state.consumed.fire()  # one fewer pending: the planner tops the lookahead up while we work

        while True:
            me.state = self.throttle.wait_reason(idx) or "claiming"  # what status shows while it waits
            if not await self.throttle.gate(idx, retire=lambda: state.complete):  # held above the limit
                me.state = "stopping"
                return
            complete_before = state.complete
            me.state = "claiming"
            result = await apply_chunk_transaction(
                self.pool,
                self.settings,
                ref,
                label,
                on_claim=claimed,
                throttle=self.throttle,
                app_name=f"bxbatch:worker-{idx}",
            )
            me.chunk_id = None
            me.state = "waiting for chunks"
            if result is None:
                if complete_before:
                    return
                if state.complete:  # the planner finished (and fired) while we were claiming
                    continue
                await state.more.wait(0.25)
                continue
            state.consumed.fire()
            self._record(ref, result, sizer, me)

    def _record(self, ref: PassRef, result: ChunkResult, sizer: ChunkSizer, me: WorkerState) -> None:
        stats = self.stats.setdefault(ref.job.name, WorkerStats())
        stats.add(result)
        observer().chunk(ref.job.name, ref.kind, result.status, result.rows, result.seconds)
        if result.status == "done":
            me.chunks_done += 1
            me.rows_done += result.rows
            sizer.observe(result.planned_rows, result.seconds, result.first_part if result.segments == 1 else None)
            self.throttle.note_chunk(result.rows, result.seconds)
            if ref.kind != "reconcile" and ref.job.name in self.bars:
                self.bars[ref.job.name].update(result.rows)
            self.log.debug(
                "chunk_committed",
                job=ref.job.name,
                pass_seq=ref.seq,
                kind=ref.kind,
                chunk=result.chunk_id,
                rows=result.rows,
                keys=result.planned_rows,
                segments=result.segments,
                ms=round(result.seconds * 1000, 1),
                retries=result.retries,
                next_size=sizer.size,
            )
        elif result.status == "split":
            self.log.info(
                "chunk_bisected", job=ref.job.name, pass_seq=ref.seq, chunk=result.chunk_id, error=result.error
            )
        elif result.status == "failed":
            self.log.warning(
                "chunk_failed", job=ref.job.name, pass_seq=ref.seq, chunk=result.chunk_id, error=result.error
            )

    # --- heartbeat ------------------------------------------------------------------------
    async def heartbeat_once(self, final: bool = False) -> None:
        states = self.states
        async with self.conn_lock:
            await self.conn.execute(
                Q["heartbeat"],
                self.run_id,
                self.settings.host,
                os.getpid(),
                [s.idx for s in states],
                [s.job for s in states],
                [s.chunk_id for s in states],
                ["stopped" if final else self._shown_state(s) for s in states],
                [s.chunks_done for s in states],
                [s.rows_done for s in states],
            )

    def _shown_state(self, s: WorkerState) -> str:
        """What a worker is doing now: in a chunk, or what the throttle holds it for (held, paused...)."""
        if s.state == "working":
            return s.state
        return self.throttle.wait_reason(s.idx) or s.state

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.heartbeat_once()
            await anyio.sleep(HEARTBEAT_SECONDS)

    # --- jobs -----------------------------------------------------------------------------
    async def _seed_rows_done(self, job: Job) -> tuple[int, int | None]:
        async with self.conn_lock:
            rows = await self.conn.fetch(Q["job_totals"], self.run_id, 60.0)
        for r in rows:
            if r["name"] == job.name:
                return int(r["seed_rows"]), None if r["expected_rows"] is None else int(r["expected_rows"])
        return 0, None

    async def _main_and_catchup(self, job: Job) -> tuple[int, int]:
        """The main pass and catch-up passes until one finds nothing new. Returns (next seq, bound)."""
        result = await self.run_pass(job, 0, "main", 0)
        bound = result.hi or 0
        seq = 1
        while True:
            result = await self.run_pass(job, seq, "catchup", 0, after=bound)
            seq += 1
            if result.parts == 0:
                return seq, bound
            bound = max(bound, result.hi or bound)

    async def _analyze_targets(self, jobs: list[Job]) -> None:
        """ANALYZE each reconciled job's target before the settle rounds.

        The main pass filled it seconds ago and autovacuum has not looked yet: planned on "1 row",
        a reconcile anti join can go quadratic in its chunk (measured on PG 15: a 1.6 s chunk that
        takes 13 ms once the table is analysed). ANALYZE samples at most 30,000 rows.
        """
        for job in jobs:
            if not (job.reconcile and job.target):
                continue
            async with self.conn_lock:
                if await changes.targeted(self.conn, self.run_id, job, self.profile.schema) and not (
                    await changes.pending(self.conn, job)
                ):
                    continue  # nothing captured: its reconcile passes will have no range to read
            try:
                async with self.conn_lock, self.conn.transaction():
                    await self.conn.execute(f"SET LOCAL lock_timeout = {int(self.settings.lock_timeout_ms)}")
                    await self.conn.execute(f"ANALYZE {qualified(self.profile.schema, job.target)}")
            except (pgexc.LockNotAvailableError, pgexc.QueryCanceledError) as exc:
                # only a planner hint: the reconcile pass is correct without it
                self.log.warning("analyze_skipped", table=job.target, error=type(exc).__name__)

    async def _settle(self, jobs: list[Job], next_seq: dict[str, int], bound: dict[str, int]) -> tuple[int, bool]:
        await self._analyze_targets(jobs)
        for round_ in range(1, MAX_SETTLE_ROUNDS + 1):
            changed = 0
            for job in jobs:
                result = await self.run_pass(job, next_seq[job.name], "catchup", round_, after=bound[job.name])
                next_seq[job.name] += 1
                if result.parts:
                    bound[job.name] = max(bound[job.name], result.hi or 0)
                changed += result.rows
                if job.reconcile:
                    result = await self.run_pass(job, next_seq[job.name], "reconcile", round_)
                    next_seq[job.name] += 1
                    changed += result.rows
            self.log.debug("settle_round", round=round_, rows_changed=changed)
            if changed == 0:
                return round_, True
        self.log.warning("settle_not_converged", rounds=MAX_SETTLE_ROUNDS, hint="the application kept writing")
        return MAX_SETTLE_ROUNDS, False

    async def run_jobs(self, jobs: list[Job]) -> dict[str, Any]:
        """Every job's passes to the end, then the settle rounds. Returns the phase's figures."""
        started = time.monotonic()
        async with self.conn_lock:
            budget = await lock_budget(self.conn, self.settings, self.profile.schema)
            self.max_segments = min(MAX_SEGMENTS, budget.group_size)
            self.count_batch = min(COUNT_BATCH, budget.group_size)
            self.log.debug("lock_budget", **budget.as_dict())
            await self.conn.execute(Q["reset_failed_chunks"], self.run_id)
            await clear_failed_keys(self.conn, self.run_id)  # retried now; failing again records them again
        reports: dict[str, JobReport] = {}
        next_seq: dict[str, int] = {}
        bound: dict[str, int] = {}
        start_rows: dict[str, int] = {}
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(self._heartbeat_loop, name="heartbeat")
            try:
                for job in jobs:
                    await self.ensure_job(job)
                    t0 = time.monotonic()
                    async with self.conn_lock:
                        main_exists = await self.conn.fetchrow(Q["get_pass"], self.run_id, job.name, 0)
                    if main_exists is None:  # activity_seed counts its tables there: the bar's total
                        await self._create_pass(job, 0, "main", 0, 0)
                    done, expected = await self._seed_rows_done(job)
                    self.log.debug("job_started", job=job.name, expected_rows=expected, rows_done=done)
                    self.bars[job.name] = bar(self.settings, expected, job.name, initial=done)
                    try:
                        next_seq[job.name], bound[job.name] = await self._main_and_catchup(job)
                    finally:
                        self.bars.pop(job.name).close()
                    start_rows[job.name] = done
                    reports[job.name] = await self._job_report(job, time.monotonic() - t0, done)
                    self.log.debug("job_finished", **reports[job.name].as_dict())
                    if self.after_main is not None:
                        await self.after_main(job)
                    async with self.conn_lock:
                        await self.conn.execute(Q["set_job_status"], self.run_id, job.name, "settling", "{}")
                if self.before_settle is not None:
                    await self._run_before_settle(self.before_settle)
                rounds, converged = await self._settle(jobs, next_seq, bound)
                for job in jobs:
                    report = await self._job_report(job, reports[job.name].seconds, start_rows[job.name])
                    reports[job.name] = report
                    failed = report.failed > 0
                    async with self.conn_lock:
                        await self.conn.execute(
                            Q["set_job_status"],
                            self.run_id,
                            job.name,
                            "failed" if failed else "done",
                            '{"converged": %s}' % ("true" if converged else "false"),
                        )
                for job in jobs:
                    if job.changes:
                        async with self.conn_lock:
                            await changes.remove(self.conn, job, self.profile.schema, self.settings, self.log)
            finally:
                helpers.cancel_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.heartbeat_once(final=True)
        return {
            "jobs": {name: r.as_dict() for name, r in reports.items()},
            "rows": sum(r.rows for r in reports.values()),
            "reconciled": sum(r.reconciled for r in reports.values()),
            "chunks": sum(r.chunks for r in reports.values()),
            "failed_chunks": sum(r.failed for r in reports.values()),
            "longest_chunk_ms": round(max((r.longest_ms for r in reports.values()), default=0.0), 1),
            "settle_rounds": rounds,
            "plan_retries": self.plan_retries,
            "converged": converged,
            "concurrency": self.workers,
            "seconds_in_engine": round(time.monotonic() - started, 3),
        }

    async def _run_before_settle(self, hook: Callable[[Any], Awaitable[Any]]) -> None:
        """The hook on a connection of its own, tried again through connection trouble (it is
        idempotent: DDL files record their progress statement by statement)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = await connect(self.settings, role="ddl")
                try:
                    await hook(conn)
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        await conn.close()
                return
            except Exception as exc:
                if not isinstance(exc, BEFORE_SETTLE_RETRY):  # an isinstance() tuple (db.NetworkError), not for except
                    raise
                if attempt >= self.settings.max_attempts or self.throttle.stopping:
                    raise Interrupted(
                        f"could not add the backfill targets' keys: {type(exc).__name__}",
                        hint="run `bxbatch resume` once the server is reachable",
                    ) from exc
                self.log.info("before_settle_retried", error=type(exc).__name__, attempt=attempt)
                await anyio.sleep(backoff_delay(attempt, self.settings.retry_base_ms, self.settings.retry_max_ms))

    async def _job_report(self, job: Job, seconds: float, start_rows: int = 0) -> JobReport:
        """Figures of a job from the ledger (every process's chunks), durations from this process."""
        async with self.conn_lock:
            rows = await self.conn.fetch(Q["job_totals"], self.run_id, 60.0)
        stats = self.stats.get(job.name, WorkerStats())
        report = JobReport(name=job.name, seconds=seconds)
        for r in rows:
            if r["name"] != job.name:
                continue
            report.rows = int(r["seed_rows"])
            report.reconciled = int(r["rows_done"]) - int(r["seed_rows"])
            report.expected = None if r["expected_rows"] is None else int(r["expected_rows"])
            report.chunks = int(r["chunks_done"])
            report.failed = int(r["chunks_failed"])
            report.retries = int(r["retries"])
            report.longest_ms = float(r["longest_ms"])
            report.passes = int(r["passes"])
            report.attempt_rows = max(0, report.rows - start_rows)
        durations = sorted(d * 1000 for d in stats.durations)
        report.p50_ms = _percentile(durations, 0.50)
        report.p99_ms = _percentile(durations, 0.99)
        return report


async def run_backfill_jobs(
    conn: asyncpg.Connection,
    settings: Settings,
    run_id: int,
    log: Any,
    *,
    jobs: list[Job] | None = None,
    throttle: Throttle | None = None,
    profile: Profile = GUIDE,
    install_missing: Callable[[], Awaitable[Any]] | None = None,
    history_counts: bool = True,
    before_settle: Callable[[Any], Awaitable[Any]] | None = None,
    after_main: Callable[[Job], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """Run the backfill jobs of run ``run_id`` with ``settings.concurrency`` workers on a pool of that size."""
    throttle = throttle or Throttle(settings, log=log)
    size = max(1, int(getattr(throttle, "workers", throttle.max_concurrency)))
    pool = await create_pool(settings, size=size, role="worker")
    jobs = list(jobs if jobs is not None else load_jobs())
    warm_jobs = [j for j in jobs if not j.per_user_table]
    try:
        # Open every connection now, not in the first chunks (they would pay the connection set-up),
        # and warm each one: a fresh backend's first claim costs ~10 ms of catalog loading and
        # statement preparation, on the critical path of the first chunks.
        held = [await pool.acquire() for _ in range(size)]
        try:
            async with anyio.create_task_group() as tg:
                for c in held:
                    tg.start_soon(warm_connection, c, settings, warm_jobs, profile)
        finally:
            for c in held:
                await pool.release(c)
        engine = Engine(
            conn=conn,
            pool=pool,
            settings=settings,
            run_id=run_id,
            log=log,
            throttle=throttle,
            profile=profile,
            install_missing=install_missing,
            history_counts=history_counts,
            before_settle=before_settle,
            after_main=after_main,
        )
        async with guard(settings, run_id, throttle, log):  # health signals, control row, signals
            return await engine.run_jobs(jobs)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await pool.close()


async def run_job_once(
    dsn: str,
    job_name: str,
    concurrency: int,
    *,
    settings: Settings | None = None,
    profile: Profile = GUIDE,
) -> dict[str, Any]:
    """Run one backfill job at ``concurrency`` on ``dsn`` in a run of its own; return its figures.

    For benchmarks: the caller prepares the data and empties the job's target table before each
    call (activity_seed seeds every user table again, whatever earlier runs did; the trigger
    phase is completed here if missing). Returns rows, seconds, rows/s, chunks, the longest chunk
    transaction and p50/p99 chunk durations, retries and the settle rounds.
    """
    from contextlib import nullcontext

    from bxbatch.db.session import connect
    from bxbatch.migrations.jobs import job_by_name
    from bxbatch.observe.log import get_logger
    from bxbatch.observe.observatory import observatory
    from bxbatch.phases import triggers
    from bxbatch.phases.backfill import add_target_keys
    from bxbatch.phases.context import RunContext

    settings = (settings or Settings()).with_(dsn=dsn, concurrency=concurrency, progress=False).validate()
    job = job_by_name(job_name)
    log = get_logger("bxbatch.engine")
    conn = await connect(settings, role="bench")
    try:
        await ledger.ensure_schema(conn)
        run_id = int(
            await conn.fetchval(ledger.Q["insert_run"], f"bench:{job_name}", "bench", settings.host, os.getpid(), "{}")
        )
        ctx = RunContext(settings=settings, conn=conn, run_id=run_id, log=log, profile=profile)
        t0 = time.monotonic()
        # with settings.metrics_port set, observed as a run is: /metrics served, the time series sampled
        observing = observatory(settings, run_id, "bench", log) if settings.metrics_port is not None else nullcontext()
        async with observing as observed:
            if observed is not None:
                observed.phase("backfill", "running")
            detail = await run_backfill_jobs(
                conn,
                settings,
                run_id,
                log,
                jobs=[job],
                profile=profile,
                install_missing=partial(triggers.install_missing, ctx) if job.per_user_table else None,
                history_counts=False,  # the caller emptied the target: seed every table again
                # the targets' foreign keys, as the backfill phase adds them (the caller may have
                # dropped them and their ledger rows to measure a run from the start)
                before_settle=partial(add_target_keys, settings=settings, run_id=run_id, log=log),
            )
        seconds = time.monotonic() - t0
        await ledger.set_run_status(conn, run_id, "completed")
    finally:
        await conn.close()
    figures = dict(detail["jobs"][job_name])
    figures.update(
        run_id=run_id,
        concurrency=concurrency,
        wall_seconds=round(seconds, 3),
        settle_rounds=detail["settle_rounds"],
    )
    return figures
