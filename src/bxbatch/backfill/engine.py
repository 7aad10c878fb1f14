"""Working one pass: its planner ahead of N chunk workers on the pool, in one task group, and the heartbeat.

The ``Engine`` is one process's share of a run's backfills. ``run_pass`` creates a pass (its
parts, under the pass-creation lock, once for every process sharing the run) and works it to its
end: the planner keeps ``lookahead`` chunks pending in the ledger, each worker claims one, applies
it and marks it done in one transaction (backfill/worker.py), and the sizer learns from every
commit. Which pass comes next is decided in backfill/passes.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import asyncpg

from bxbatch.backfill import changes
from bxbatch.backfill.chunksize import ChunkSizer
from bxbatch.backfill.parts import PartFinder
from bxbatch.backfill.planner import PartCursor, TableKeySource, plan_chunks
from bxbatch.backfill.worker import (
    ChunkResult,
    PassRef,
    WorkerState,
    WorkerStats,
    apply_chunk_transaction,
)
from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import Outcome, Retry, RetryPolicy, retry
from bxbatch.errors import Interrupted, SqlFileError
from bxbatch.ledger.backfill import PartSpec, PlannedChunk
from bxbatch.live.throttle import Throttle
from bxbatch.migrations.jobs import Job
from bxbatch.migrations.profile import Profile
from bxbatch.observe.observer import current as observer
from bxbatch.settings import Settings

MAX_SEGMENTS = 64  # user tables per grouped chunk (one UNION ALL statement), at most the lock group
HEARTBEAT_SECONDS = 0.5
# A plan step, and the install of a job's change-capture triggers, retry when the moment was bad (a lock
# wait past lock_timeout, a deadlock, a serialization failure, a statement timeout), up to --max-attempts.
PLAN_RETRY = RetryPolicy(event="plan_step_retried", retry_on=frozenset({Outcome.RETRY}), level="info")
CAPTURE_RETRY = RetryPolicy(event="change_capture_retried", retry_on=frozenset({Outcome.RETRY}), level="info")


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


def _left_to_plan(parts: list[PartCursor]) -> int:
    """Estimated keys not yet planned: each part's estimate times the share of its range left."""
    total = 0.0
    for p in parts:
        if p.est_rows and p.hi > p.lo:
            total += p.est_rows * max(0, p.hi - p.upto) / (p.hi - p.lo)
    return round(total)


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
        profile: Profile,
        parts: PartFinder,
    ) -> None:
        self.conn = conn
        self.ledger = parts.ledger
        self.parts = parts
        self.pool = pool
        self.settings = settings
        self.run_id = run_id
        self.log = log
        self.throttle = throttle
        self.profile = profile
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
        # user tables per chunk: bounded by the lock budget (passes.run_jobs)
        self.max_segments = MAX_SEGMENTS

    # --- chunk sizes ----------------------------------------------------------------------
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

    # --- passes ---------------------------------------------------------------------------
    async def run_pass(self, job: Job, seq: int, kind: str, round_: int, after: int = 0) -> PassResult:
        """Create the pass if this is the first process to get here, work it to the end, return its totals."""
        async with self.conn_lock:
            row = await self.ledger.pass_row(job.name, seq)
        if row is None:
            await self.create_pass(job, seq, kind, round_, after)
            async with self.conn_lock:
                row = await self.ledger.pass_row(job.name, seq)
        assert row is not None
        if row["kind"] != kind:
            raise SqlFileError(
                f"the ledger's pass {seq} of job {job.name} is a {row['kind']} pass, this bxbatch expected {kind}",
                hint="resume with the bxbatch version that started the run",
            )
        if row["status"] != "done":
            await self._work_pass(job, seq, kind)
        return await self._pass_result(job, seq, kind, round_)

    async def create_pass(self, job: Job, seq: int, kind: str, round_: int, after: int) -> None:
        """The pass and its parts, unless another process made it first (one creates at a time)."""
        async with self.conn_lock, self.ledger.creating_passes():
            conn = self.conn
            if await self.ledger.pass_row(job.name, seq) is not None:
                return  # another process created it while we waited
            if kind == "main" and job.changes:
                await self._install_capture(job)  # before the main pass exists: see backfill/changes.py
            targeted = kind == "reconcile" and await changes.targeted(conn, self.run_id, job, self.profile.schema)
            parts = [] if targeted else await self.parts.for_pass(job, kind, after)
            async with conn.transaction():
                if targeted:
                    # the captured keys are consumed in the transaction that records the pass they feed
                    whole, keys = await changes.take(conn, job)
                    if whole:
                        parts = await self.parts.table(job, 0, "reconcile_bound")
                    else:
                        parts = [PartSpec(i, None, lo, hi) for i, (lo, hi) in enumerate(changes.ranges(keys))]
                    self.log.debug("reconcile_targeted", job=job.name, whole=whole, keys=len(keys), parts=len(parts))
                await self.ledger.add_pass(
                    job.name, seq, kind, round_, parts, counts_expected=job.per_user_table and kind != "reconcile"
                )
        self.log.debug("pass_created", job=job.name, seq=seq, kind=kind, round=round_, parts=len(parts))

    async def _install_capture(self, job: Job) -> None:
        """The job's change-capture triggers, retried past lock_timeout (a busy base table)."""
        await retry(
            partial(changes.install, self.conn, self.run_id, job, self.profile.schema, self.settings),
            CAPTURE_RETRY.for_settings(self.settings),
            log=self.log,
            fields={"job": job.name},
        )

    async def _pass_result(self, job: Job, seq: int, kind: str, round_: int) -> PassResult:
        async with self.conn_lock:
            totals = await self.ledger.pass_totals(job.name, seq)
            bounds = await self.ledger.pass_bounds(job.name, seq)
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
        source = TableKeySource(
            self.conn,
            self.profile.schema,
            job.key_table,
            job.key_column or "id",
            cut_sql=job.statements.get("cut"),
            cut_args=job.extra_args(self.profile),
            cut_weights=(f"bxbatch_cut_{job.name}", job.statements["cut_weights"])
            if "cut_weights" in job.statements
            else None,
        )
        if source.cut_sql is not None:
            async with self.conn_lock:
                if (await self.ledger.pass_bounds(job.name, seq))["parts"]:  # an empty pass cuts nothing
                    await source.prepare()
        while True:  # until no chunk of the pass is pending (not a retry: other processes' chunks finish)
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
                if await self.ledger.count_pending(job.name, seq) == 0:
                    await self.ledger.set_pass_status(job.name, seq, "done")
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

        def count(_scheduled: Retry) -> None:
            self.plan_retries += 1

        return await retry(
            partial(self._plan_step, ref, source, sizer),
            PLAN_RETRY.for_settings(self.settings),
            log=self.log,
            fields={"job": ref.job.name, "pass_seq": ref.seq},
            on_retry=count,
        )

    async def _plan_step(self, ref: PassRef, source: TableKeySource, sizer: ChunkSizer) -> bool:
        """Write chunks until ``lookahead`` are pending. True when the whole pass is planned."""
        sizer.retarget(self.throttle.settings)  # `bxbatch set target_chunk_ms=... / *_chunk_rows=...`
        conn, job, seq = self.conn, ref.job.name, ref.seq
        async with conn.transaction():
            await set_local_timeouts(conn, lock=self.settings.lock_timeout_ms)
            status = await self.ledger.lock_pass(job, seq)  # serialises planners
            if status != "planning":
                return True
            # A chunk in flight is still pending until it commits: ours do not count as planned ahead.
            in_flight = sum(1 for w in self.states if w.state == "working")
            want = self.lookahead + in_flight - await self.ledger.count_pending(job, seq)
            if want <= 0:
                return False
            limit = want * self.max_segments + 1
            rows = await self.ledger.open_parts(job, seq, limit)
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
                # rows, not keys: a key may yield thousands (the job's `cut` statement ends a range in
                # budget); a reconcile pass reads about what the main pass wrote: the write cost bounds it
                max_rows=self.sizer(ref.job, "main").row_budget(scale, self.lookahead) if source.cut_sql else None,
            )
            relname = {p.part: p.relname for p in parts}
            await self.ledger.add_chunks(
                job,
                seq,
                [
                    PlannedChunk(
                        parts=[s.part for s in c.segments],
                        los=[s.lo for s in c.segments],
                        his=[s.hi for s in c.segments],
                        relnames=[relname[s.part] for s in c.segments] if ref.job.per_user_table else None,
                        planned_rows=c.planned_rows,
                    )
                    for c in chunks
                ],
            )
            await self.ledger.advance_parts(job, seq, {p.part: p.upto for p in parts if p.upto != before[p.part]})
            if len(rows) < limit and not any(p.open for p in parts):
                await self.ledger.set_pass_status(job, seq, "planned")
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

        while True:  # a worker's chunks, one after the other (each chunk's retries: apply_chunk_transaction)
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
            sizer.observe(
                result.planned_rows,
                result.seconds,
                result.first_part if result.segments == 1 else None,
                rows=None if ref.kind == "reconcile" else result.rows,
            )
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
            await self.ledger.heartbeat(
                self.settings.host,
                os.getpid(),
                [
                    {
                        "idx": s.idx,
                        "job": s.job,
                        "chunk_id": s.chunk_id,
                        "state": "stopped" if final else self._shown_state(s),
                        "chunks_done": s.chunks_done,
                        "rows_done": s.rows_done,
                    }
                    for s in states
                ],
            )

    def _shown_state(self, s: WorkerState) -> str:
        """What a worker is doing now: in a chunk, or what the throttle holds it for (held, paused...)."""
        if s.state == "working":
            return s.state
        return self.throttle.wait_reason(s.idx) or s.state

    async def heartbeat_loop(self) -> None:
        while True:  # a poller, not a retry
            await self.heartbeat_once()
            await anyio.sleep(HEARTBEAT_SECONDS)
