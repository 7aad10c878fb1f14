"""The key domains a new pass covers: a table's key range, or the user tables a per-table job has yet to cover.

A part is what the planner walks: ``(lo, hi]`` of one key column, with an estimate of its rows.
A table job has one part per pass; a per-user-table job (activity seeding) one per user table
whose trigger high-water mark no earlier pass covered, counted exactly when cheap (one UNION ALL
statement per group of tables, the group bounded by the lock budget) so the planner can cut
chunks of several small tables at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from bxbatch.backfill.worker import live_user_tables_sql
from bxbatch.db.render import render, union_all
from bxbatch.db.retry import RetryPolicy, retry
from bxbatch.db.session import qualified
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger.backfill import BackfillLedger, PartSpec
from bxbatch.migrations.jobs import Job
from bxbatch.migrations.profile import Profile

Q = queries("engine")

COUNT_CAP = 2_000_000  # exact key counts of user tables up to this; beyond, pg_class.reltuples
COUNT_BATCH = 200  # user tables counted per round trip when a pass is created, at most the lock group
# A table dropped between the liveness check and the count (or altered under a cached plan): check and
# count again at once, three times in all.
COUNT_RETRY = RetryPolicy(
    retry_on=frozenset(),
    also=(asyncpg.UndefinedTableError, asyncpg.InvalidCachedStatementError),
    max_attempts=3,
    base_ms=0,
    max_ms=0,
)


class PartFinder:
    """Finds the parts of a job's next pass on the driver's connection."""

    def __init__(
        self,
        ledger: BackfillLedger,
        profile: Profile,
        *,
        install_missing: Callable[[], Awaitable[object]] | None = None,
        history_counts: bool = True,
    ) -> None:
        """``install_missing``: installs the trigger on user tables created since the trigger phase, so
        they get a high-water mark before a pass looks for them. ``history_counts=False``: user tables
        seeded by earlier runs are seeded again (a benchmark that empties the target between runs)."""
        self.ledger = ledger
        self.conn = ledger.conn
        self.profile = profile
        self.install_missing = install_missing
        self.history_counts = history_counts
        self.count_batch = COUNT_BATCH  # lowered to the lock budget's group size by the engine

    async def for_pass(self, job: Job, kind: str, after: int) -> list[PartSpec]:
        if job.per_user_table:
            return [] if kind == "reconcile" else await self.user_tables(job)
        if kind == "reconcile":
            return await self.table(job, 0, "reconcile_bound")
        return await self.table(job, after, "main_bound")

    async def table(self, job: Job, lo: int, bound_sql: str) -> list[PartSpec]:
        """The job's key table from ``lo`` to the bound its file's ``bound_sql`` statement reads now."""
        bound = int(await self.conn.fetchval(job.sql(bound_sql)))
        if bound <= lo:
            return []
        est = await self.reltuples(job.key_table or "")
        return [PartSpec(0, None, lo, bound, est, False)]

    async def reltuples(self, relname: str) -> int | None:
        est = await self.conn.fetchval(Q["reltuples"], qualified(self.profile.schema, relname))
        return None if est is None else int(est)

    async def row_count(self, relname: str) -> int:
        """Rows of a table, counted no further than ``COUNT_CAP`` (for a table never analysed)."""
        sql = render("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT $1) AS k", table=(self.profile.schema, relname))
        return int(await self.conn.fetchval(sql, COUNT_CAP))

    async def user_tables(self, job: Job) -> list[PartSpec]:
        """User tables with a trigger high-water mark that no earlier pass of this job covered."""
        if self.install_missing is not None:
            await self.install_missing()
        todo = await self.ledger.tables_to_seed(job.name, only_this_run=not self.history_counts)
        parts: list[PartSpec] = []
        for start in range(0, len(todo), self.count_batch):
            batch = todo[start : start + self.count_batch]
            counts = await self.count_user_tables(batch)
            for r in batch:
                tid, rel, hw = int(r["table_id"]), str(r["relname"]), int(r["high_water"])
                n = counts.get(tid)
                if n is None or n >= COUNT_CAP:
                    est = await self.reltuples(rel)
                    parts.append(PartSpec(tid, rel, 0, hw, max(est or 0, n or 0), False))
                else:
                    parts.append(PartSpec(tid, rel, 0, hw, n, True))
        return parts

    async def count_user_tables(self, batch: list[asyncpg.Record]) -> dict[int, int]:
        """Exact row counts (capped) of these user tables up to their high-water mark, one round trip."""
        tids = [int(r["table_id"]) for r in batch]
        rels = [str(r["relname"]) for r in batch]

        async def count() -> dict[int, int]:
            live = [
                int(r["i"]) - 1
                for r in await self.conn.fetch(live_user_tables_sql(self.profile), tids, rels, self.profile.schema)
            ]
            if not live:
                return {}
            sql = union_all(
                "SELECT {n}::int AS i, count(*) AS n "
                "FROM (SELECT 1 FROM {table} WHERE id <= ($1::bigint[])[{n}] LIMIT $2) AS s",
                ({"n": n, "table": (self.profile.schema, rels[i])} for n, i in enumerate(live, start=1)),
            )
            his = [int(batch[i]["high_water"]) for i in live]
            rows = await self.conn.fetch(sql, his, COUNT_CAP)
            return {tids[live[int(r["i"]) - 1]]: int(r["n"]) for r in rows}

        try:
            return await retry(count, COUNT_RETRY)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidCachedStatementError):
            return {}  # tables keep vanishing: their estimates stand in for the counts
