"""Bisection through the ledger: a chunk that fails for a reason in its data is split, never given up whole.

A failing chunk is cut in two in one transaction: its own ledger row keeps the first half (still
pending) and a new pending row takes the second, so the ordinary workers retry both, each half in
its own chunk transaction, exactly once, resumable, in parallel. Multi-segment chunks split by
segment first, then a single segment by key range, down to a range holding one key: that chunk
is marked failed and the key recorded in ``bxbatch.failed_key`` with its error, while the rest of
the job goes on. ``(lo, hi]`` halves by key value, so isolating a key costs about log2(hi - lo)
small transactions however sparse the keys are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bxbatch.db.retry import describe, sqlstate
from bxbatch.ledger import backfill as ledger
from bxbatch.ledger.backfill import PlannedChunk


@dataclass(frozen=True)
class SplitOutcome:
    action: str  # split | failed_key | gone
    new_chunk: int | None = None
    key: int | None = None
    part: int | None = None


def _slice(values: list[str | None] | None, a: int, b: int) -> list[str | None] | None:
    return None if values is None else list(values[a:b])


async def split_or_fail(
    conn: asyncpg.Connection | PoolConnectionProxy[Any],
    chunk_id: int,
    exc: BaseException,
    worker_label: str,
    failed_range: tuple[list[int], list[int], list[int]] | None = None,
) -> SplitOutcome:
    """Split chunk ``chunk_id`` after data error ``exc``; at a single key, record the key and fail the chunk.

    ``failed_range`` (parts, los, his) is what the failing attempt ran. Between its rollback and this
    transaction another worker may have claimed the same chunk, failed too and split it first: the
    row then holds a different (smaller) range, which this error says nothing about, so it is left
    alone ("gone") for the ordinary workers to retry.
    """
    message = describe(exc)[:500]
    async with conn.transaction():
        row = await ledger.lock_chunk_for_split(conn, chunk_id)
        if row is None or row["status"] != "pending":
            return SplitOutcome("gone")
        parts = [int(p) for p in row["parts"]]
        los = [int(v) for v in row["los"]]
        his = [int(v) for v in row["his"]]
        if failed_range is not None and (parts, los, his) != failed_range:
            return SplitOutcome("gone")
        relnames = list(row["relnames"]) if row["relnames"] is not None else None
        planned = int(row["planned_rows"])
        n = len(parts)
        if n > 1:
            k = n // 2
            first_rows = max(1, planned * k // n)
            first = PlannedChunk(parts[:k], los[:k], his[:k], _slice(relnames, 0, k), first_rows)
            second = PlannedChunk(parts[k:], los[k:], his[k:], _slice(relnames, k, n), max(1, planned - first_rows))
        elif his[0] - los[0] > 1:
            lo, hi = los[0], his[0]
            mid = lo + (hi - lo) // 2
            first_rows = max(1, planned * (mid - lo) // (hi - lo))
            first = PlannedChunk([parts[0]], [lo], [mid], relnames, first_rows)
            second = PlannedChunk([parts[0]], [mid], [hi], relnames, max(1, planned - first_rows))
        else:
            await ledger.fail_chunk(conn, chunk_id, message, worker_label)
            await ledger.record_failed_key(
                conn, row, parts[0], relnames[0] if relnames else None, his[0], sqlstate(exc), message
            )
            return SplitOutcome("failed_key", key=his[0], part=parts[0])
        await ledger.shrink_chunk(conn, chunk_id, first, message)
        new_id = await ledger.add_split_chunk(conn, row["run_id"], row["job"], row["seq"], second, message)
        return SplitOutcome("split", new_chunk=new_id)
