"""Pass sequencing: which pass of which job runs next (main, catch-ups, settle rounds), decided from the ledger.

A job is a sequence of passes, numbered in the ledger (``bxbatch.pass.seq``) in the order the
driver creates them:

1. ``main``: the key domain as it is when the job starts, (0, max key] (for activity_seed, each
   user table's (0, high-water]).
2. ``catchup`` passes: keys that appeared after the previous pass's bound (new views, new
   users; for activity_seed, user tables created since, which get the trigger first), repeated
   until a pass finds nothing new.
3. settle rounds, across all jobs: a catch-up pass, then for jobs that support it a
   ``reconcile`` pass, until a whole round changes no row (at most ``MAX_SETTLE_ROUNDS``).

The sequence is deterministic given the ledger: a pass is created once (under an advisory lock,
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

import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import asyncpg.exceptions as pgexc

from bxbatch.backfill import changes
from bxbatch.backfill.engine import MAX_SEGMENTS, Engine
from bxbatch.backfill.parts import COUNT_BATCH
from bxbatch.backfill.worker import WorkerStats
from bxbatch.db.idents import qualified, quote_ident
from bxbatch.db.locks import lock_budget
from bxbatch.db.render import render, set_local_timeouts
from bxbatch.db.retry import RetryPolicy, retry
from bxbatch.db.session import connect
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import ChangedFileError, ConnectionFailed, Interrupted
from bxbatch.ledger.backfill import clear_failed_keys
from bxbatch.migrations.jobs import Job
from bxbatch.observe.progress import bar

Q = queries("engine")
MAX_SETTLE_ROUNDS = 8
# The before-settle hook (the targets' keys) on a fresh connection each try, through connection trouble
# and lock timeouts; past --max-attempts or once stopping, the run stops resumable.
BEFORE_SETTLE_RETRY = RetryPolicy(event="before_settle_retried", also=(ConnectionFailed,), level="info")


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


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


async def analyze_target(conn: Any, schema: str, table: str, lock_timeout_ms: int, log: Any) -> bool:
    """``ANALYZE`` a target the backfill has just filled, under ``lock_timeout``; False if it was skipped.

    Only a planner hint (every query is correct without it), so a lock wait past the timeout or a
    cancel skips it with a warning. ANALYZE samples at most 300 x ``default_statistics_target`` rows.
    Its JSON columns are left out: no key, check or validation query filters on them, their statistics
    were a third of the activity log's ANALYZE (its ``details``: 0.28 s against 0.18 s at scale 0.3,
    on the critical path), and the cleanup phase's ``VACUUM (ANALYZE)`` covers every column.
    """
    columns = [str(r["attname"]) for r in await conn.fetch(Q["analyzed_columns"], qualified(schema, table))]
    column_list = f" ({', '.join(quote_ident(c) for c in columns)})" if columns else ""
    try:
        async with conn.transaction():
            await set_local_timeouts(conn, lock=lock_timeout_ms)
            await conn.execute(render("ANALYZE {table}", table=(schema, table)) + column_list)
    except (pgexc.LockNotAvailableError, pgexc.QueryCanceledError) as exc:
        log.warning("analyze_skipped", table=table, error=type(exc).__name__)
        return False
    return True


class Sequencer:
    """Runs a run's backfill jobs on one ``Engine``: each job's main and catch-up passes, then the settle rounds."""

    def __init__(
        self,
        engine: Engine,
        *,
        before_settle: Callable[[Any, Job | None], Awaitable[Any]] | None = None,
        after_main: Callable[[Job], Awaitable[Any]] | None = None,
        keyed_jobs: frozenset[str] = frozenset(),
    ) -> None:
        """``before_settle(conn, job)``: run on a connection of its own. With each job of
        ``keyed_jobs`` (those a ``phase=backfill`` file names with ``after=``) as soon as its main and
        catch-up passes are done, and with ``None`` after every job's, before the settle rounds: the
        backfill phase adds the targets' foreign keys there.
        ``after_main(job)``: called for every job once its main and catch-up passes are done and its
        keys are in (a keyed job: right after its own; any other: after every job's), so the backfill
        phase starts the builds of the job's target's indexes there, while the other jobs and the
        settle rounds run. The keyed jobs run first: their keys and index builds then overlap the
        other jobs' loads (the activity log's builds are the longest step of the Baserow run)."""
        self.engine = engine
        self.ledger = engine.ledger
        self.conn = engine.conn
        self.settings = engine.settings
        self.run_id = engine.run_id
        self.log = engine.log
        self.profile = engine.profile
        self.before_settle = before_settle
        self.after_main = after_main
        self.keyed_jobs = keyed_jobs

    async def _expected(self, job: Job) -> int | None:
        if job.per_user_table:
            return None  # known once the main pass has counted its tables
        return int(await self.conn.fetchval(job.sql("expected"), *job.extra_args(self.profile)))

    async def ensure_job(self, job: Job) -> None:
        async with self.engine.conn_lock:
            exists = await self.ledger.job(job.name)
            if exists is None:
                expected = await self._expected(job)
                await self.ledger.add_job(job.name, job.order, job.sha256, expected)
            elif exists["file_sha256"] != job.sha256:
                # the chunks already done came from the old statement: mixing two versions in one
                # run would make its result neither the old nor the new job's
                raise ChangedFileError(
                    f"backfill/{job.file} changed since this run started job {job.name}",
                    hint="restore the file, or finish the run with the bxbatch version that started it",
                )
            else:
                expected = exists["expected_rows"]
            if expected and job.key_table and not job.per_user_table:
                keys = await self.engine.parts.reltuples(job.key_table)
                if not keys:  # never analysed (reltuples -1): a fan-out of 1 would size the first chunks
                    # several times too big (scale 3: 5,000 members = 35,000 permissions in one chunk)
                    keys = await self.engine.parts.row_count(job.key_table)
                if keys and keys > 0:
                    self.engine.fanout[job.name] = max(1.0, float(expected) / float(keys))

    async def _seed_rows_done(self, job: Job) -> tuple[int, int | None]:
        async with self.engine.conn_lock:
            rows = await self.ledger.job_totals(60.0)
        for r in rows:
            if r["name"] == job.name:
                return int(r["seed_rows"]), None if r["expected_rows"] is None else int(r["expected_rows"])
        return 0, None

    async def main_and_catchup(self, job: Job) -> tuple[int, int]:
        """The main pass and catch-up passes until one finds nothing new. Returns (next seq, bound)."""
        result = await self.engine.run_pass(job, 0, "main", 0)
        bound = result.hi or 0
        seq = 1
        while True:  # catch-up passes until one finds nothing new (not a retry)
            result = await self.engine.run_pass(job, seq, "catchup", 0, after=bound)
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
            async with self.engine.conn_lock:
                if await changes.targeted(self.conn, self.run_id, job, self.profile.schema) and not (
                    await changes.pending(self.conn, job)
                ):
                    continue  # nothing captured: its reconcile passes will have no range to read
            async with self.engine.conn_lock:
                await analyze_target(
                    self.conn, self.profile.schema, job.target, self.settings.lock_timeout_ms, self.log
                )

    async def settle(self, jobs: list[Job], next_seq: dict[str, int], bound: dict[str, int]) -> tuple[int, bool]:
        await self._analyze_targets(jobs)
        for round_ in range(1, MAX_SETTLE_ROUNDS + 1):
            changed = 0
            for job in jobs:
                result = await self.engine.run_pass(job, next_seq[job.name], "catchup", round_, after=bound[job.name])
                next_seq[job.name] += 1
                if result.parts:
                    bound[job.name] = max(bound[job.name], result.hi or 0)
                changed += result.rows
                if job.reconcile:
                    result = await self.engine.run_pass(job, next_seq[job.name], "reconcile", round_)
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
        async with self.engine.conn_lock:
            budget = await lock_budget(self.conn, self.settings, self.profile.schema)
            self.engine.max_segments = min(MAX_SEGMENTS, budget.group_size)
            self.engine.parts.count_batch = min(COUNT_BATCH, budget.group_size)
            self.log.debug("lock_budget", **budget.as_dict())
            await self.ledger.reset_failed_chunks()
            await clear_failed_keys(self.conn, self.run_id)  # retried now; failing again records them again
        reports: dict[str, JobReport] = {}
        next_seq: dict[str, int] = {}
        bound: dict[str, int] = {}
        start_rows: dict[str, int] = {}
        # the keyed jobs first (stable: file order otherwise), so their early work overlaps the others' loads
        order = sorted(jobs, key=lambda j: j.name not in self.keyed_jobs)
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(self.engine.heartbeat_loop, name="heartbeat")
            try:
                for job in order:
                    await self.ensure_job(job)
                    t0 = time.monotonic()
                    async with self.engine.conn_lock:
                        main_exists = await self.ledger.pass_row(job.name, 0)
                    if main_exists is None:  # activity_seed counts its tables there: the bar's total
                        await self.engine.create_pass(job, 0, "main", 0, 0)
                    done, expected = await self._seed_rows_done(job)
                    self.log.debug("job_started", job=job.name, expected_rows=expected, rows_done=done)
                    self.engine.bars[job.name] = bar(self.settings, expected, job.name, initial=done)
                    try:
                        next_seq[job.name], bound[job.name] = await self.main_and_catchup(job)
                    finally:
                        self.engine.bars.pop(job.name).close()
                    start_rows[job.name] = done
                    reports[job.name] = await self._job_report(job, time.monotonic() - t0, done)
                    self.log.debug("job_finished", **reports[job.name].as_dict())
                    async with self.engine.conn_lock:
                        await self.ledger.set_job_status(job.name, "settling")
                    # After the target's keys: adding a key to a table waits for a CONCURRENTLY build on
                    # it (SHARE ROW EXCLUSIVE against SHARE UPDATE EXCLUSIVE).
                    if self._keyed_early(job):
                        assert self.before_settle is not None
                        await self._run_before_settle(self.before_settle, job)
                        if self.after_main is not None:
                            await self.after_main(job)
                if self.before_settle is not None:
                    await self._run_before_settle(self.before_settle, None)
                if self.after_main is not None:
                    for job in jobs:
                        if not self._keyed_early(job):
                            await self.after_main(job)
                rounds, converged = await self.settle(jobs, next_seq, bound)
                for job in jobs:
                    report = await self._job_report(job, reports[job.name].seconds, start_rows[job.name])
                    reports[job.name] = report
                    failed = report.failed > 0
                    async with self.engine.conn_lock:
                        await self.ledger.set_job_status(
                            job.name, "failed" if failed else "done", json.dumps({"converged": converged})
                        )
                for job in jobs:
                    if job.changes:
                        async with self.engine.conn_lock:
                            await changes.remove(self.conn, job, self.profile.schema, self.settings, self.log)
            finally:
                helpers.cancel_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.engine.heartbeat_once(final=True)
        return {
            "jobs": {name: r.as_dict() for name, r in reports.items()},
            "rows": sum(r.rows for r in reports.values()),
            "reconciled": sum(r.reconciled for r in reports.values()),
            "chunks": sum(r.chunks for r in reports.values()),
            "failed_chunks": sum(r.failed for r in reports.values()),
            "longest_chunk_ms": round(max((r.longest_ms for r in reports.values()), default=0.0), 1),
            "settle_rounds": rounds,
            "plan_retries": self.engine.plan_retries,
            "converged": converged,
            "concurrency": self.engine.workers,
            "seconds_in_engine": round(time.monotonic() - started, 3),
        }

    def _keyed_early(self, job: Job) -> bool:
        """Whether ``job``'s keys (and early work) come straight after its own passes, not every job's."""
        return self.before_settle is not None and job.name in self.keyed_jobs

    async def _run_before_settle(self, hook: Callable[[Any, Job | None], Awaitable[Any]], job: Job | None) -> None:
        """The hook on a connection of its own, tried again through connection trouble (it is
        idempotent: DDL files record their progress statement by statement)."""

        async def once() -> None:
            conn = await connect(self.settings, role="ddl")
            try:
                await hook(conn, job)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await conn.close()

        policy = BEFORE_SETTLE_RETRY.for_settings(self.settings)
        try:
            await retry(once, policy, log=self.log, stop=lambda: self.engine.throttle.stopping)
        except Exception as exc:
            if not policy.covers(exc):
                raise
            raise Interrupted(
                f"could not add the backfill targets' keys: {type(exc).__name__}",
                hint="run `bxbatch resume` once the server is reachable",
            ) from exc

    async def _job_report(self, job: Job, seconds: float, start_rows: int = 0) -> JobReport:
        """Figures of a job from the ledger (every process's chunks), durations from this process."""
        async with self.engine.conn_lock:
            rows = await self.ledger.job_totals(60.0)
        stats = self.engine.stats.get(job.name, WorkerStats())
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
