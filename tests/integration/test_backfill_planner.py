"""The planner against PostgreSQL: the index walk (`OFFSET n-1 LIMIT 1`) cuts ranges that cover every key once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bxbatch.backfill.planner import PartCursor, TableKeySource, plan_chunks


async def _plan(dsn: str, keys: list[int], size: int, per_call: int, inserts: list[int]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS planner_keys; CREATE TABLE planner_keys (id bigint PRIMARY KEY)")
        await conn.execute("INSERT INTO planner_keys SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING", keys)
        hi = max([*keys, *inserts, 1])
        source = TableKeySource(conn, "public", "planner_keys", "id")
        part = PartCursor(0, None, 0, hi, 0)
        ranges: list[tuple[int, int]] = []
        pending = list(inserts)
        while part.open:
            for chunk in await plan_chunks([part], source, size, per_call):
                ranges.extend((s.lo, s.hi) for s in chunk.segments)
            # the application inserts keys while the planner walks
            if pending:
                await conn.execute("INSERT INTO planner_keys VALUES ($1) ON CONFLICT DO NOTHING", pending.pop())
        final = [r["id"] for r in await conn.fetch("SELECT id FROM planner_keys ORDER BY id")]
    finally:
        await conn.close()
    assert ranges[0][0] == 0 and ranges[-1][1] == hi
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for key in final:
        assert sum(1 for lo, up in ranges if lo < key <= up) == 1, key


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.integers(1, 5_000), max_size=300),
    size=st.integers(1, 60),
    per_call=st.integers(1, 4),
    inserts=st.lists(st.integers(1, 5_000), max_size=10),
)
def test_walk_covers_every_key_once(
    fresh_db: str, keys: list[int], size: int, per_call: int, inserts: list[int]
) -> None:
    asyncio.run(_plan(fresh_db, keys, size, per_call, inserts))


async def test_dropped_user_table_mid_plan(fresh_db: str) -> None:
    """A user table dropped while the planner walks it: the rest of it is one range, the plan goes on."""
    conn = await asyncpg.connect(fresh_db)
    try:
        for name in ("database_table_1", "database_table_2"):
            await conn.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY)")
        await conn.execute("INSERT INTO database_table_1 SELECT FROM generate_series(1, 50)")
        await conn.execute("INSERT INTO database_table_2 SELECT FROM generate_series(1, 50)")
        parts = [PartCursor(1, "database_table_1", 0, 50, 0), PartCursor(2, "database_table_2", 0, 50, 0)]
        source = TableKeySource(conn, "public")
        async with conn.transaction():
            first = await plan_chunks(parts, source, 10, 1)
            await conn.execute("DROP TABLE database_table_1")  # (in our transaction: same effect for the probe)
            rest = await plan_chunks(parts, source, 10, 10)
        segments: list[Any] = [(s.part, s.lo, s.hi) for c in [*first, *rest] for s in c.segments]
        assert segments[0] == (1, 0, 10) and segments[1] == (1, 10, 50)  # the gone table's rest: one range
        assert [s for s in segments if s[0] == 2][-1][2] == 50
    finally:
        await conn.close()
