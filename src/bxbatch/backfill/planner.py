"""The planner: cuts each part's key domain (lo, hi] into consecutive half-open ranges by walking the key index.

Ranges are contiguous by construction: a part's next range always starts at the end of the
previous one (``planned_upto``) and the last one ends at ``hi``. So the ranges of a part cover
every key in (lo, hi] exactly once whatever the keys are (gaps, none, one, or keys inserted or
deleted while the planner walks): a key can only change *which* range has how many rows, never
whether it is covered. Where a range ends is found with one index-only probe,
``WHERE key > $lo ORDER BY key OFFSET n-1 LIMIT 1``; data is never OFFSET over.

A key can yield many rows (a member: a permission per table of each of its workspaces). When
the caller gives a row budget and the source can weigh a range (the job's ``cut`` statement), a
range of the key table ends at the last key whose rows still fit the budget: a chunk of several
keys is always within budget; only a single key heavier than the budget makes a longer chunk (a
key cannot be cut).

Small parts (user tables whose exact count is known and below the chunk size) are grouped into
one chunk of several segments, so thousands of tiny tables do not cost a round trip each.

The core (``plan_chunks``) is pure over a ``KeySource`` so that property tests can drive it
with in-memory key sets; ``TableKeySource`` is the PostgreSQL one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from bxbatch.db.render import render
from bxbatch.db.sqlfiles import queries

Q = queries("engine")
_GONE = object()  # a probed user table no longer exists


@dataclass
class PartCursor:
    """One part of a pass as the planner sees it; ``upto`` advances as ranges are cut."""

    part: int
    relname: str | None
    lo: int
    hi: int
    upto: int
    est_rows: int | None = None
    est_exact: bool = False

    @property
    def open(self) -> bool:
        return self.upto < self.hi


@dataclass(frozen=True)
class Segment:
    part: int
    lo: int
    hi: int


@dataclass(frozen=True)
class ChunkPlan:
    segments: tuple[Segment, ...]
    planned_rows: int


class KeySource(Protocol):
    async def key_at(self, part: PartCursor, after: int, upto: int, offset: int) -> int | None:
        """The key ``offset`` keys after the first key > ``after`` (and <= ``upto``), or None."""

    async def count(self, part: PartCursor, after: int, upto: int, cap: int) -> int:
        """Keys in (after, upto], counted no further than ``cap``."""

    async def cut(self, part: PartCursor, after: int, upto: int, max_rows: int) -> tuple[int, int, int] | None:
        """Where a range starting after ``after`` (within ``upto``) ends to yield at most ``max_rows`` rows.

        (key, keys, rows): the largest key whose keys up to it yield at most ``max_rows`` (the first key
        if it alone yields more), the keys and rows up to it. None when the source cannot tell.
        """


async def plan_chunks(
    parts: list[PartCursor],
    source: KeySource,
    size: int,
    max_chunks: int,
    max_segments: int = 64,
    size_for: Callable[[PartCursor], int] | None = None,
    max_rows: int | None = None,
) -> list[ChunkPlan]:
    """Cut up to ``max_chunks`` chunks of about ``size`` keys from the open parts, in part order.

    ``size_for``, when given, sizes each chunk from the part it starts in (else ``size``).
    ``max_rows``, when given, caps the rows each segment yields (``KeySource.cut``): an
    overweight range is cut shorter, down to one key.

    Advances each part's ``upto``; the caller persists the chunks and the cursors together.
    """
    if size < 1 or max_chunks < 1 or max_segments < 1:
        raise ValueError("size, max_chunks and max_segments must be positive")
    chunks: list[ChunkPlan] = []
    index = 0
    while len(chunks) < max_chunks:
        segments: list[Segment] = []
        total = 0
        while index < len(parts) and not parts[index].open:
            index += 1
        if index < len(parts) and size_for is not None:
            size = max(1, size_for(parts[index]))
        while total < size and len(segments) < max_segments:
            while index < len(parts) and not parts[index].open:
                index += 1
            if index >= len(parts):
                break
            part = parts[index]
            need = size - total
            start = part.upto
            if part.est_exact and part.upto == part.lo and part.est_rows is not None and part.est_rows < need:
                got, end = part.est_rows, part.hi  # a small part counted when the pass began: no probe
            else:
                key = await source.key_at(part, start, part.hi, need - 1)
                if key is None:
                    got, end = await source.count(part, start, part.hi, need), part.hi
                else:
                    got, end = need, key
            if end <= start:  # defensive: a source must never return a key at or before `after`
                raise RuntimeError(f"key source returned {end} after {start} for part {part.part}")
            if max_rows is not None and got > 1:
                cut = await source.cut(part, start, end, max_rows)
                if cut is not None and start < cut[0] < end:
                    end, got = cut[0], max(1, cut[1])
            part.upto = end
            segments.append(Segment(part.part, start, end))
            total += got
        if not segments:
            break
        chunks.append(ChunkPlan(tuple(segments), total))
    return chunks


class TableKeySource:
    """Keys of real tables: part 0 (or any part without a relname) is the job's key table."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        schema: str,
        key_table: str | None = None,
        key_column: str = "id",
        cut_sql: str | None = None,
        cut_args: tuple[object, ...] = (),
        cut_weights: tuple[str, str] | None = None,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.key_table = key_table
        self.key_column = key_column
        self.cut_sql = cut_sql  # the job's `cut` statement: where ($1, $2] ends to write <= $3 rows
        self.cut_args = cut_args
        self.cut_weights = cut_weights  # (temporary table, query) the cut reads: made once per pass

    async def prepare(self) -> None:
        """Materialise the job's ``cut_weights`` query on this session, once per pass, before the first cut."""
        if self.cut_sql is None or self.cut_weights is None:
            return
        table, query = self.cut_weights
        await self.conn.execute(render("DROP TABLE IF EXISTS {t}", t=("pg_temp", table)))
        await self.conn.execute(render("CREATE TEMPORARY TABLE {t} AS ", t=table) + query)
        await self.conn.execute(render("ANALYZE {t}", t=("pg_temp", table)))

    def _sql(self, name: str, part: PartCursor) -> str:
        table = part.relname or self.key_table
        if table is None:
            raise ValueError(f"part {part.part} has no table")
        return render(Q[name], table=(self.schema, table), key=self.key_column if part.relname is None else "id")

    async def _probe(self, name: str, part: PartCursor, *args: int) -> Any:
        if part.relname is None:
            return await self.conn.fetchval(self._sql(name, part), *args)
        # A user table can be dropped by the application at any moment: probe it in a savepoint, so
        # that its disappearance does not abort the planner's transaction.
        try:
            async with self.conn.transaction():
                return await self.conn.fetchval(self._sql(name, part), *args)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidCachedStatementError):
            return _GONE

    async def key_at(self, part: PartCursor, after: int, upto: int, offset: int) -> int | None:
        value = await self._probe("walk_key", part, after, upto, offset)
        # None: no key that far; _GONE: dropped meanwhile, the rest of the part is one (empty) range
        return None if value is None or value is _GONE else int(value)

    async def count(self, part: PartCursor, after: int, upto: int, cap: int) -> int:
        value = await self._probe("count_keys", part, after, upto, cap)
        return 0 if value is _GONE else int(value)

    async def cut(self, part: PartCursor, after: int, upto: int, max_rows: int) -> tuple[int, int, int] | None:
        if self.cut_sql is None or part.relname is not None:
            return None
        row = await self.conn.fetchrow(self.cut_sql, after, upto, max_rows, *self.cut_args)
        return None if row is None else (int(row["key"]), int(row["keys"]), int(row["rows"]))
